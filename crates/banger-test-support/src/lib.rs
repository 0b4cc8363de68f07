//! What banger's tests share (a dev-dependency only; release builds never carry it).
//!
//! A test that needs what a machine lacks (root, a VMM binary, a Debian package) says so with
//! [`skip!`] and returns: a visible `SKIP:` line on the test's output, and the test passes. Where
//! everything is installed (CI: `.ci/run` sets `BANGER_REQUIRE_VM_TESTS=1`), the same call fails
//! the test instead, so a prerequisite that went missing cannot turn a real test into a silent
//! pass.
//!
//! Every wait of a test has a deadline and says what it waited for: [`wait_until`] and
//! [`wait_for`] (threads), [`wait_until_async`] and [`wait_for_async`] (tokio tests).
//!
//! [`fake_vmlinux`] is a kernel image as small as banger's kernel checks accept.
//!
//! With the `fixtures` feature, [`fixtures`] builds the API's records (VMs, images,
//! snapshots) that the CLI's, the TUI's, the web pages' and the store's tests all show or keep.

use std::fmt;
use std::time::{Duration, Instant};

#[cfg(feature = "fixtures")]
pub mod fixtures;

/// The environment variable that turns every skip into a failure.
pub const REQUIRE: &str = "BANGER_REQUIRE_VM_TESTS";

/// Whether skipping is refused here ([`REQUIRE`] is `1`).
pub fn skipping_refused() -> bool {
    std::env::var(REQUIRE).is_ok_and(|v| v == "1")
}

/// A test cannot run here because of `reason`: prints `SKIP: reason`, or panics when
/// [`REQUIRE`] is set. The caller returns afterwards.
#[track_caller]
pub fn skip_because(reason: fmt::Arguments<'_>) {
    if skipping_refused() {
        panic!("{REQUIRE}=1, but this test would skip: {reason}");
    }
    println!("SKIP: {reason}");
}

/// `skip!("{program} not found")`: [`skip_because`] with a formatted reason.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {
        $crate::skip_because(format_args!($($arg)*))
    };
}

/// A test cannot run because a prerequisite is absent that a machine may lack even where
/// everything else is installed: Firecracker and its jailer, which no package registry holds
/// (they are built by hand and put on `PATH`, see the project's testing notes). Always a
/// visible `SKIP:` line, never a failure: where they are on `PATH`, the tests that need them
/// run.
pub fn skip_absent(reason: fmt::Arguments<'_>) {
    println!("SKIP: {reason}");
}

/// `skip_absent!("firecracker not found")`: [`skip_absent`] with a formatted reason.
#[macro_export]
macro_rules! skip_absent {
    ($($arg:tt)*) => {
        $crate::skip_absent(format_args!($($arg)*))
    };
}

/// Checks `condition` every `every` until it holds or `timeout` has passed (then once more);
/// whether it held.
pub fn poll_until(timeout: Duration, every: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(every);
    }
    condition()
}

/// [`poll_until`] every 20 ms: for what a test then asserts on with its own words.
pub fn wait_until(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    poll_until(timeout, Duration::from_millis(20), condition)
}

/// [`poll_until`], failing the test with `timed out waiting for WHAT` when `check` never held.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, every: Duration, check: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, every, check),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// [`wait_until`] in a tokio test: the runtime goes on (it may run what is awaited) while
/// the wait sleeps on tokio's timer.
pub async fn wait_until_async(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// [`wait_for`] in a tokio test: `check` may await, and the wait sleeps on tokio's timer.
pub async fn wait_for_async(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// How many times a benchmark measures: `BENCH_RUNS`, else `default`, and at least once.
pub fn bench_runs(default: usize) -> usize {
    bench_setting("BENCH_RUNS", default)
}

/// A benchmark's numeric setting from the environment variable `name`, else `default`; at
/// least 1.
pub fn bench_setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// An ELF64 x86_64 executable header and the banner of kernel `version`: all that banger
/// reads of a kernel when it registers or archives an image (4 KiB).
pub fn fake_vmlinux(version: &str) -> Vec<u8> {
    let mut elf = vec![0u8; 4096];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1; // ELF version
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    let banner = format!("Linux version {version} (test@banger) #1 SMP");
    elf[1024..1024 + banner.len()].copy_from_slice(banner.as_bytes());
    elf
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn waits_end_when_the_condition_holds_or_at_the_deadline() {
        let mut calls = 0;
        assert!(crate::wait_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        // Never true: false, after one last look at the deadline.
        let mut looked = 0;
        assert!(!crate::poll_until(
            Duration::from_millis(30),
            Duration::from_millis(10),
            || {
                looked += 1;
                false
            }
        ));
        assert!(looked >= 2, "{looked}");
        let failed = std::panic::catch_unwind(|| {
            crate::wait_for("nothing", Duration::ZERO, Duration::ZERO, || false)
        });
        let message = *failed.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(message, "timed out after 0ns waiting for nothing");
    }

    /// The only test of this crate that touches the variable, so nothing else reads it
    /// meanwhile.
    #[test]
    fn a_skip_passes_unless_skipping_is_refused() {
        // SAFETY: no other thread of this test binary reads or writes the environment.
        unsafe { std::env::remove_var(super::REQUIRE) };
        assert!(std::panic::catch_unwind(|| crate::skip!("{} not found", "tool")).is_ok());
        // SAFETY: as above.
        unsafe { std::env::set_var(super::REQUIRE, "1") };
        let refused = std::panic::catch_unwind(|| crate::skip!("{} not found", "tool"));
        // SAFETY: as above.
        unsafe { std::env::remove_var(super::REQUIRE) };
        let message = *refused.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(
            message,
            "BANGER_REQUIRE_VM_TESTS=1, but this test would skip: tool not found"
        );
    }
}

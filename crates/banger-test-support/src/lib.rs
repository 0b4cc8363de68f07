//! What banger's tests share (a dev-dependency only; release builds never carry it).
//!
//! A test that needs what a machine lacks (root, a VMM binary, a Debian package) says so with
//! [`skip!`] and returns: a visible `SKIP:` line on the test's output, and the test passes. Where
//! everything is installed (CI: `.ci/run` sets `BANGER_REQUIRE_VM_TESTS=1`), the same call fails
//! the test instead, so a prerequisite that went missing cannot turn a real test into a silent
//! pass.

use std::fmt;

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

#[cfg(test)]
mod tests {
    /// The only test of this crate, so nothing else reads the variable meanwhile.
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

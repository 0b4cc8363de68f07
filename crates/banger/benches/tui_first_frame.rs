//! Benchmark: how soon `banger tui` shows something, with the daemon down (the TUI starts it)
//! and with it up. Each run starts `banger tui` in a pseudo-terminal of its own (100×30, the
//! TUI's controlling terminal), reads what it writes and notes when the first frame is
//! complete (its status line, the last row, has arrived) and when the VM list is on screen,
//! then types `q`.
//!
//! Run with `cargo bench -p banger --bench tui_first_frame`. It prints figures and asserts
//! nothing about time; the target is a first frame within 50 ms either way.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};

const RUNS: usize = 10;
/// On the last row of every frame, including the first (the bootstrap's first stage).
const FIRST_FRAME: &[u8] = "find daemon".as_bytes();
/// A VM name: the list has loaded.
const VM_LISTED: &[u8] = b"bench-vm-1";
const GIVE_UP: Duration = Duration::from_secs(15);

#[path = "../tests/support/mod.rs"]
mod support;

use support::Sandbox;

/// `banger tui` on the slave side of a new pseudo-terminal; returns the child and the master.
fn spawn_in_pty(env: &Sandbox) -> (Child, File) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    tcsetwinsize(
        &master,
        Winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("set the window size");
    let slave_path = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = File::options()
        .read(true)
        .write(true)
        .open(Path::new(slave_path.to_str().unwrap()))
        .expect("open the pty slave");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_banger"));
    cmd.arg("tui")
        .envs(env.env())
        .env("TERM", "xterm-256color")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: between fork and exec the closure only makes two system calls (setsid, ioctl),
    // which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            // A session of its own with the pty as controlling terminal: the TUI asks
            // /dev/tty for its size, which must be this pty and not the benchmark's terminal.
            rustix::process::setsid()?;
            // SAFETY: stdio is set up before this closure runs, so fd 0 is the pty slave.
            let stdin = BorrowedFd::borrow_raw(0);
            rustix::process::ioctl_tiocsctty(stdin)?;
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start banger tui");
    (child, File::from(master))
}

/// Reads from `master` until `patterns` appear in order; returns when each appeared.
fn watch(master: &mut File, started: Instant, patterns: &[&[u8]]) -> Vec<Duration> {
    let mut seen = Vec::new();
    let mut found = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while found.len() < patterns.len() {
        let left = GIVE_UP.saturating_sub(started.elapsed());
        if left.is_zero() {
            panic!(
                "gave up after {GIVE_UP:?}; banger wrote:\n{}",
                String::from_utf8_lossy(&seen)
            );
        }
        let timeout = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let ready = {
            let mut fds = [PollFd::new(&*master, PollFlags::IN)];
            poll(&mut fds, Some(&timeout)).expect("poll")
        };
        if ready == 0 {
            continue;
        }
        let n = match master.read(&mut buf) {
            Ok(0) | Err(_) => panic!(
                "banger tui closed its terminal early; it wrote:\n{}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => n,
        };
        seen.extend_from_slice(&buf[..n]);
        while let Some(pattern) = patterns.get(found.len()) {
            if seen.windows(pattern.len()).any(|w| w == *pattern) {
                found.push(started.elapsed());
            } else {
                break;
            }
        }
    }
    found
}

/// Quits the TUI and waits for it, draining its output so it never blocks on a full pty.
fn quit(mut child: Child, mut master: File) {
    master.write_all(b"q").expect("type q");
    let deadline = Instant::now() + GIVE_UP;
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "banger tui exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "banger tui did not quit");
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        let ready = {
            let mut fds = [PollFd::new(&master, PollFlags::IN)];
            poll(&mut fds, Some(&timeout)).unwrap_or(0)
        };
        if ready > 0 {
            let _ = master.read(&mut buf);
        }
    }
}

fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.1} ms, min {:.1} ms, max {:.1} ms ({} runs)",
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}

fn measure(env: &Sandbox, daemon_up: bool, runs: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut first = Vec::with_capacity(runs);
    let mut listed = Vec::with_capacity(runs);
    for _ in 0..runs {
        if daemon_up {
            env.ok(&["daemon", "start"]);
        } else {
            env.ok(&["daemon", "stop"]);
        }
        let started = Instant::now();
        let (child, mut master) = spawn_in_pty(env);
        let times = watch(&mut master, started, &[FIRST_FRAME, VM_LISTED]);
        quit(child, master);
        first.push(times[0]);
        listed.push(times[1]);
    }
    (first, listed)
}

fn main() {
    let env = Sandbox::new();
    env.register("bench");
    for i in 1..=3 {
        env.ok(&[
            "vm",
            "create",
            "--no-start",
            "--name",
            &format!("bench-vm-{i}"),
            "--image",
            "bench",
        ]);
    }
    // Warm the page cache for both binaries.
    measure(&env, true, 2);

    let (down_first, down_listed) = measure(&env, false, RUNS);
    let (up_first, up_listed) = measure(&env, true, RUNS);
    println!(
        "banger tui, first frame, daemon down: {}   [target <= 50 ms]",
        stats(down_first)
    );
    println!(
        "banger tui, first frame, daemon up:   {}   [target <= 50 ms]",
        stats(up_first)
    );
    println!(
        "banger tui, VM list shown, daemon down (TUI starts it): {}",
        stats(down_listed)
    );
    println!(
        "banger tui, VM list shown, daemon up:                   {}",
        stats(up_listed)
    );
}

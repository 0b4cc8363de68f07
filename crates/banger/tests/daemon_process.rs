//! bangerd as a process: SIGTERM ends it gracefully (socket removed, lock released, the exit
//! logged), a hard-killed daemon's stale socket does not fool the next command, and several
//! first commands at once end up sharing one daemon.

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use banger_host::process::{Signal, pid_alive, signal, wait_for_exit};

fn banger(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_banger"));
    cmd.args(args)
        .env("HOME", root)
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("XDG_RUNTIME_DIR", root.join("run"))
        .env("BANGER_DAEMON_BIN", env!("CARGO_BIN_EXE_bangerd"))
        .timeout(Duration::from_secs(30));
    cmd
}

fn daemon_pid(root: &Path) -> u32 {
    let out = banger(root, &["daemon", "status", "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let info: serde_json::Value = serde_json::from_slice(&out).unwrap();
    info["pid"].as_u64().unwrap() as u32
}

/// Stops the daemon of a sandbox whatever happened in the test.
struct Guard<'a>(&'a Path);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = banger(self.0, &["daemon", "stop"]).ok();
    }
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _guard = Guard(root);
    let socket = root.join("run/banger/bangerd.sock");

    banger(root, &["daemon", "start"]).assert().success();
    let pid = daemon_pid(root);
    assert!(socket.exists());
    signal(pid, Signal::Term).unwrap();
    assert!(
        wait_for_exit(pid, Duration::from_secs(10)),
        "bangerd did not exit on SIGTERM"
    );
    assert!(!socket.exists(), "socket left behind after SIGTERM");
    let log = std::fs::read_to_string(root.join("state/banger/bangerd.log")).unwrap();
    assert!(log.contains("signal received"), "{log}");
    assert!(log.contains("bangerd stopped"), "{log}");
    // The lock was released: status says not running, and a new daemon starts.
    banger(root, &["daemon", "status"]).assert().code(6);
    banger(root, &["daemon", "start"]).assert().success();
    assert_ne!(daemon_pid(root), pid);
}

#[test]
fn a_hard_killed_daemon_is_replaced_on_the_next_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _guard = Guard(root);

    banger(root, &["daemon", "start"]).assert().success();
    let pid = daemon_pid(root);
    signal(pid, Signal::Kill).unwrap();
    assert!(wait_for_exit(pid, Duration::from_secs(10)));
    assert!(!pid_alive(pid));
    // SIGKILL leaves the socket file behind; the next command must not be fooled by it.
    assert!(root.join("run/banger/bangerd.sock").exists());
    banger(root, &["vm", "list"]).assert().success();
    assert_ne!(daemon_pid(root), pid);
}

/// Guards the race where two first commands both start bangerd: the loser's daemon exits on
/// the lock, and its command must use the winner instead of failing.
#[test]
fn concurrent_first_commands_share_one_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let _guard = Guard(&root);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || banger(&root, &["vm", "list", "-o", "json"]).output())
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "a concurrent first command failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    daemon_pid(&root);
}

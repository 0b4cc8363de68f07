//! bangerd as a process: SIGTERM ends it gracefully (socket removed, lock released, the exit
//! logged), a hard-killed daemon's stale socket does not fool the next command, and several
//! first commands at once end up sharing one daemon.

use std::time::Duration;

use banger_host::process::{Signal, pid_alive, signal, wait_for_exit};

mod support;

use support::Sandbox;

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let sandbox = Sandbox::new();
    let root = sandbox.root();
    let socket = root.join("run/banger/bangerd.sock");

    sandbox.ok(&["daemon", "start"]);
    let pid = sandbox.daemon_pid();
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
    sandbox.run(&["daemon", "status"], 6);
    sandbox.ok(&["daemon", "start"]);
    assert_ne!(sandbox.daemon_pid(), pid);
}

#[test]
fn a_hard_killed_daemon_is_replaced_on_the_next_command() {
    let sandbox = Sandbox::new();
    sandbox.ok(&["daemon", "start"]);
    let pid = sandbox.daemon_pid();
    signal(pid, Signal::Kill).unwrap();
    assert!(wait_for_exit(pid, Duration::from_secs(10)));
    assert!(!pid_alive(pid));
    // SIGKILL leaves the socket file behind; the next command must not be fooled by it.
    assert!(sandbox.root().join("run/banger/bangerd.sock").exists());
    sandbox.ok(&["vm", "list"]);
    assert_ne!(sandbox.daemon_pid(), pid);
}

/// Guards the race where two first commands both start bangerd: the loser's daemon exits on
/// the lock, and its command must use the winner instead of failing.
#[test]
fn concurrent_first_commands_share_one_daemon() {
    let sandbox = Sandbox::new();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let mut list = sandbox.banger(["vm", "list", "-o", "json"]);
            std::thread::spawn(move || list.output())
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
    sandbox.daemon_pid();
    // No loser takes over once the winner stops: it gave up at once on the winner's lock
    // instead of waiting out the lock's grace period (it outlived the test before).
    sandbox.ok(&["daemon", "stop"]);
    std::thread::sleep(Duration::from_secs(1));
    sandbox.run(&["daemon", "status"], 6);
}

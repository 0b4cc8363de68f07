//! bangerd as a process: SIGTERM ends it gracefully (socket removed, lock released, the exit
//! logged), a hard-killed daemon's stale socket does not fool the next command, several first
//! commands at once end up sharing one daemon, and a daemon killed in the middle of a bootstrap
//! leaves nothing behind and the next one reports the bootstrap failed.

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

/// SIGKILL of bangerd at several points of an image bootstrap (from the shared download cache):
/// each time, the next daemon (started by the next command) has no half-recorded image, no
/// staging and no journal left, and reports the bootstrap failed, with the stage it was in, to
/// a client that asks for it by id. Needs root and debootstrap; prints `SKIP:` without them.
#[test]
fn a_daemon_killed_during_a_bootstrap_leaves_nothing_and_the_next_reports_it() {
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("root not available (debootstrap needs it)");
        return;
    }
    if !support::netns::have("debootstrap", "--version") {
        banger_test_support::skip!("debootstrap not found");
        return;
    }
    let cache = std::env::var_os("BANGER_TEST_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/banger-test".into());
    let sandbox = Sandbox::new();
    sandbox.config(&format!(
        "cache_dir = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
        cache.display()
    ));
    let state = sandbox.root().join("state/banger");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = banger_api::Client::new(sandbox.root().join("run/banger/bangerd.sock"));
    let request = banger_api::BootstrapImageRequest {
        distro: "debian".into(),
        suite: None,
        name: Some("base".into()),
    };
    for stage in ["debootstrap", "configure guest", "make rootfs"] {
        sandbox.ok(&["daemon", "start"]);
        let pid = sandbox.daemon_pid();
        // The first time through the CLI, which is told its daemon went away.
        let cli = (stage == "debootstrap").then(|| {
            let mut bootstrap = sandbox.banger(["image", "bootstrap", "debian", "--name", "base"]);
            bootstrap.timeout(Duration::from_secs(300));
            std::thread::spawn(move || bootstrap.output())
        });
        let op = match cli {
            None => runtime.block_on(client.bootstrap_image(&request)).unwrap(),
            Some(_) => loop {
                let ops = runtime.block_on(client.list_operations()).unwrap();
                if let Some(op) = ops
                    .into_iter()
                    .find(|op| op.kind == banger_api::OperationKind::BootstrapImage)
                {
                    break op;
                }
                std::thread::sleep(Duration::from_millis(20));
            },
        };
        // Until the stage runs (or a later one: a stage may pass between two polls).
        let index = op.stages.iter().position(|s| s.name == stage).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        let reached = loop {
            let now = runtime.block_on(client.get_operation(&op.id)).unwrap();
            assert!(!now.state.is_finished(), "{stage}: ended first: {now:?}");
            if let Some(at) = now
                .stages
                .iter()
                .rposition(|s| s.state == banger_api::StageState::Running)
                && at >= index
            {
                break now.stages[at].name.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{stage}: never reached: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        signal(pid, Signal::Kill).unwrap();
        assert!(wait_for_exit(pid, Duration::from_secs(10)));
        if let Some(cli) = cli {
            let out = cli.join().unwrap().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(6), "{err}");
            assert!(
                err.contains(&format!("bangerd went away while operation {} ran", op.id)),
                "{err}"
            );
        }

        // The next command starts the next daemon, which cleans up before it answers.
        let images = sandbox.json(&["image", "list"]);
        assert_eq!(images, serde_json::json!([]), "{stage}");
        let after = runtime.block_on(client.get_operation(&op.id)).unwrap();
        assert_eq!(after.state, banger_api::OperationState::Failed, "{after:?}");
        let error = after.error.unwrap();
        assert!(error.message.contains("killed or crashed"), "{error:?}");
        assert!(
            error.message.contains(&format!("stage {reached:?}")),
            "{reached}: {error:?}"
        );
        println!("killed during {reached:?}: {}", error.message);
        let left = |dir: &str| -> Vec<String> {
            std::fs::read_dir(state.join(dir))
                .map(|d| {
                    d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert!(left("staging").is_empty(), "{stage}: {:?}", left("staging"));
        assert!(left("images").is_empty(), "{stage}: {:?}", left("images"));
        assert!(
            left("operations").is_empty(),
            "{stage}: {:?}",
            left("operations")
        );
        sandbox.ok(&["daemon", "stop"]);
    }
}

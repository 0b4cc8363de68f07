//! The Firecracker backend against the real `firecracker` binary: real process, real API socket,
//! real signals. The guest is the tiny kernel of [`banger_vmm::testing`] (a stock kernel cannot
//! boot under the paravirtual KVM of banger's build machines), so everything asserted is what
//! Firecracker itself reports: the instance state through its API, its sockets and files, its
//! process. Without the binary or an accessible `/dev/kvm` each test prints a visible `SKIP:`
//! line and passes. The network test also needs root and iproute2: its tap lives in a
//! throw-away network namespace, and Firecracker is started from a thread inside it.

use banger_test_support::wait_until;
use std::time::{Duration, Instant};

use banger_host::network::netns::Netns;
use banger_host::{CommandRunner, CommandSpec, Signal};
use banger_vmm::FirecrackerError;
use banger_vmm::firecracker::metrics::latest_metrics;
use banger_vmm::firecracker::snapshot::{SnapshotCreateParams, SnapshotType};
use banger_vmm::reconcile::{self, Action, Record, StopReason};
use banger_vmm::testing::{
    self, Fixture, GRACEFUL, GUEST_HELLO, KillOnDrop, console_has, is_socket, mode,
};
use banger_vmm::{
    Firecracker, InstanceState, NetSpec, StopOutcome, Vmm, VmmError, console_tail,
    exit_code_from_log, watch_exit,
};

macro_rules! require_firecracker {
    () => {
        match testing::firecracker_or_skip() {
            Some(binary) => binary,
            None => return,
        }
    };
}

#[test]
fn launch_pause_resume_snapshot_and_stop() {
    let binary = require_firecracker!();
    let fx = Fixture::new();
    let spec = fx.spec("life", None);
    let fc = Firecracker::new(binary);

    let vm = fc.launch(&spec).unwrap();
    let _guard = KillOnDrop(vm.pid);
    assert!(banger_host::pid_alive(vm.pid));
    let api = fc.client(&vm.api_socket);
    let info = api.describe_instance().unwrap();
    assert_eq!(info.state, InstanceState::Running, "{info:?}");
    assert_eq!(info.id, "life");
    assert_eq!(info.app_name, "Firecracker");
    assert!(is_socket(&vm.api_socket));
    assert!(
        is_socket(vm.vsock_socket.as_ref().unwrap()),
        "vsock socket bound"
    );
    assert!(
        wait_until(Duration::from_secs(10), || console_has(&spec, GUEST_HELLO)),
        "the guest's serial output reaches the console log: {:?}",
        console_tail(&spec.paths.console_log, 50)
    );
    for file in [
        &spec.paths.console_log,
        &spec.paths.vmm_log,
        &spec.paths.metrics,
    ] {
        assert_eq!(mode(file), 0o600, "{} is the user's alone", file.display());
    }

    // What Firecracker holds is what banger sent.
    let config = api.vm_config().unwrap();
    // (A started Firecracker lists its drives by id; the guest sees them in the order sent.)
    let mut drives: Vec<_> = config
        .drives
        .iter()
        .map(|d| (d.drive_id.as_str(), d.is_read_only, d.is_root_device))
        .collect();
    drives.sort();
    assert_eq!(
        drives,
        [
            ("overlay", Some(false), false),
            ("rootfs", Some(true), false),
            ("work", Some(false), false)
        ]
    );
    assert_eq!(
        config.vsock.unwrap().uds_path,
        spec.vsock.as_ref().unwrap().uds_path
    );
    let machine = config.machine_config.unwrap();
    assert_eq!((machine.vcpu_count, machine.mem_size_mib), (1, 64));

    fc.pause(&vm).unwrap();
    assert_eq!(fc.state(&vm).unwrap(), InstanceState::Paused);
    let snapshot = SnapshotCreateParams {
        snapshot_type: Some(SnapshotType::Full),
        snapshot_path: fx.path().join("life.vmstate"),
        mem_file_path: fx.path().join("life.mem"),
    };
    fc.snapshot(&vm, &snapshot).unwrap();
    assert!(std::fs::metadata(&snapshot.snapshot_path).unwrap().len() > 0);
    assert_eq!(
        std::fs::metadata(&snapshot.mem_file_path).unwrap().len(),
        64 << 20
    );
    fc.resume(&vm).unwrap();
    assert_eq!(fc.state(&vm).unwrap(), InstanceState::Running);

    fc.flush_metrics(&vm).unwrap();
    let metrics = latest_metrics(&spec.paths.metrics)
        .unwrap()
        .expect("flushed");
    assert!(metrics.get("api_server").is_some(), "{metrics}");

    let outcome = fc.stop(&vm, GRACEFUL).unwrap();
    assert_eq!(
        outcome,
        StopOutcome::Terminated,
        "the tiny guest ignores Ctrl-Alt-Del"
    );
    assert!(!banger_host::pid_alive(vm.pid), "no process");
    assert!(!vm.api_socket.exists(), "no API socket");
    assert!(!vm.vsock_socket.unwrap().exists(), "no vsock socket");
    assert!(fc.scan(fx.path()).processes.is_empty());
    let log = std::fs::read_to_string(&spec.paths.vmm_log).unwrap();
    assert!(
        log.contains("InstanceStart"),
        "Firecracker's own log: {log}"
    );
}

#[test]
fn a_firecracker_killed_from_outside_is_noticed_and_cleaned_up() {
    let binary = require_firecracker!();
    let fx = Fixture::new();
    let spec = fx.spec("crash", None);
    let fc = Firecracker::new(binary);
    let vm = fc.launch(&spec).unwrap();
    let _guard = KillOnDrop(vm.pid);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let noticed_after = runtime.block_on(async {
        let watch = tokio::spawn(watch_exit(vm.pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!watch.is_finished(), "running VMs are not reported");
        let killed = Instant::now();
        banger_host::signal(vm.pid, Signal::Kill).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("the exit is noticed")
            .unwrap();
        killed.elapsed()
    });
    println!("kill -9 noticed after {noticed_after:?}");
    assert!(noticed_after < Duration::from_secs(1), "{noticed_after:?}");
    assert_eq!(
        exit_code_from_log(&spec.paths.vmm_log),
        None,
        "a killed Firecracker leaves no exit code"
    );

    assert!(
        is_socket(&vm.api_socket),
        "a dead Firecracker leaves its sockets"
    );
    assert!(matches!(fc.state(&vm), Err(VmmError::NotRunning { .. })));
    assert_eq!(fc.stop(&vm, GRACEFUL).unwrap(), StopOutcome::AlreadyExited);
    assert!(!vm.api_socket.exists());
    assert!(!vm.vsock_socket.unwrap().exists());
}

#[test]
fn a_new_daemon_adopts_running_firecrackers_and_reconciles_the_dead() {
    let binary = require_firecracker!();
    let fx = Fixture::new();
    let first = Firecracker::new(binary.clone());
    let kept = first.launch(&fx.spec("kept", None)).unwrap();
    let _kept_guard = KillOnDrop(kept.pid);
    let dead = first.launch(&fx.spec("dead", None)).unwrap();
    banger_host::signal(dead.pid, Signal::Kill).unwrap();
    assert!(banger_host::wait_for_exit(dead.pid, Duration::from_secs(5)));
    drop(first);

    // The next daemon knows only what its store recorded.
    let next = Firecracker::new(binary);
    assert_eq!(next.adopt(kept.pid, &kept.api_socket), Some(kept.clone()));
    assert_eq!(next.adopt(dead.pid, &dead.api_socket), None);
    assert_eq!(
        next.adopt(kept.pid, &fx.path().join("elsewhere.sock")),
        None,
        "a pid serving another socket is not this VM"
    );
    assert_eq!(next.state(&kept).unwrap(), InstanceState::Running);

    let records: Vec<Record> = [&kept, &dead]
        .iter()
        .map(|vm| Record {
            vm_id: vm.vm_id.clone(),
            state: banger_api::VmState::Running,
            pid: Some(vm.pid),
            api_socket: Some(vm.api_socket.clone()),
            vsock_socket: vm.vsock_socket.clone(),
            identity_pending: false,
        })
        .collect();
    let observations: Vec<_> = [&kept, &dead]
        .iter()
        .map(|vm| Some(next.observe(vm.pid, &vm.api_socket)))
        .collect();
    let actions = reconcile::decide(&records, &observations, &next.scan(fx.path()));
    assert_eq!(
        actions,
        vec![
            Action::Adopt {
                vm_id: "kept".into(),
                pid: kept.pid,
                state: InstanceState::Running
            },
            Action::MarkStopped {
                vm_id: "dead".into(),
                reason: StopReason::ProcessGone
            },
            Action::RemoveSocket {
                path: dead.api_socket.clone()
            },
            Action::RemoveSocket {
                path: dead.vsock_socket.clone().unwrap()
            },
        ]
    );

    next.stop(&kept, GRACEFUL).unwrap();
    assert!(!banger_host::pid_alive(kept.pid));
    next.stop(&dead, GRACEFUL).unwrap();
    assert!(next.scan(fx.path()).sockets.is_empty());
}

#[test]
fn a_refused_configuration_is_reported_verbatim_and_rolled_back() {
    let binary = require_firecracker!();
    let fx = Fixture::new();
    let mut spec = fx.spec("refused", None);
    spec.kernel = fx.path().join("no-such-vmlinux");
    let fc = Firecracker::new(binary);

    let err = fc.launch(&spec).unwrap_err();
    println!("{}", banger_vmm::error_chain(&err));
    match err.root() {
        VmmError::Firecracker(FirecrackerError::Api {
            resource,
            status,
            fault_message,
        }) => {
            assert_eq!(resource, "PUT /boot-source");
            assert_eq!(*status, 400);
            assert!(
                fault_message.contains("No such file or directory"),
                "Firecracker's own words: {fault_message}"
            );
        }
        other => panic!("expected Firecracker's refusal, got {other:?}"),
    }
    assert!(matches!(&err, VmmError::Launch { cleanup, .. } if cleanup.is_empty()));
    let scan = fc.scan(fx.path());
    assert!(scan.processes.is_empty(), "rolled back: {scan:?}");
    assert!(scan.sockets.is_empty(), "rolled back: {scan:?}");
}

#[test]
fn a_firecracker_that_cannot_start_is_explained_by_its_own_output() {
    let binary = require_firecracker!();
    let fx = Fixture::new();
    let mut spec = fx.spec("unbound", None);
    // Firecracker cannot bind a socket in a directory that does not exist, and exits.
    spec.paths.api_socket = fx.path().join("no-such-dir/unbound.sock");
    let err = Firecracker::new(binary).launch(&spec).unwrap_err();
    let text = banger_vmm::error_chain(&err);
    println!("{text}");
    match err.root() {
        VmmError::Firecracker(FirecrackerError::Exited {
            during, console, ..
        }) => {
            assert_eq!(during, "before opening its API socket");
            assert!(
                console.iter().any(|l| l.contains("Failed to bind")),
                "Firecracker's last words: {console:?}"
            );
        }
        other => panic!("expected an early exit, got {other:?}"),
    }
}

#[test]
fn launch_with_a_tap_in_a_throwaway_network_namespace() {
    let binary = require_firecracker!();
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("a tap needs root");
        return;
    }
    let netns = match Netns::create("banger-test-") {
        Ok(netns) => netns,
        Err(error) => {
            banger_test_support::skip!("cannot create a network namespace: {error}");
            return;
        }
    };
    let tap = "bt-fctest0";
    netns
        .runner()
        .run(&CommandSpec::new("ip").args(["tuntap", "add", "dev", tap, "mode", "tap"]))
        .unwrap();

    let fx = Fixture::new();
    let spec = fx.spec(
        "net",
        Some(NetSpec {
            tap: tap.into(),
            mac: "06:00:ac:1e:00:02".into(),
        }),
    );
    let fc = Firecracker::new(binary);
    // Firecracker inherits the network namespace of the thread that starts it.
    let (vm, config) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                netns.enter().unwrap();
                let vm = fc.launch(&spec).unwrap();
                let config = fc.client(&vm.api_socket).vm_config().unwrap();
                (vm, config)
            })
            .join()
            .unwrap()
    });
    let _guard = KillOnDrop(vm.pid);
    assert_eq!(fc.state(&vm).unwrap(), InstanceState::Running);
    let iface = &config.network_interfaces[0];
    assert_eq!(iface.host_dev_name, tap);
    assert_eq!(iface.guest_mac.as_deref(), Some("06:00:ac:1e:00:02"));

    fc.stop(&vm, GRACEFUL).unwrap();
    assert!(!banger_host::pid_alive(vm.pid));
    assert!(!vm.api_socket.exists());
}

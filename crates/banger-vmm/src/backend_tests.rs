//! What both backends do alike, tested once and run by each backend's tests on its fake host
//! with the same VM ([`spec`]): the stop sequence (ask the guest, terminate, kill, then remove
//! the sockets), a stop after a crash or with a zero timeout, a pid another process reused, a
//! socket removal that fails, a spec refused or a live socket found before anything runs, and
//! what reconcile decides after a daemon restart. A backend's tests implement [`Harness`] for
//! its [`FakeVmm`] and call these with it; [`shared_stop_tests!`] makes the stop tests a
//! backend adds nothing to into its own `#[test]`s.

use std::path::Path;
use std::time::Duration;

use crate::fake::{FakeHost, FakeVmm, INJECTED};
use crate::reconcile::{self, Action, HostScan, KillReason, Observation, Record, StopReason};
use crate::testing;
use crate::{InstanceState, NetSpec, StopOutcome, VmHandle, VmSpec, Vmm, VmmError, VsockSpec};

/// The VM the backends' tests run: [`testing::vm_spec`]'s `vm-1` with 2 vCPUs and 1 GiB, the
/// image's boot set in `image`, the VM's disks and console log in `vm_dir` with its VMM's log
/// `vmm_log` there too, a tap and a vsock.
pub(crate) fn spec(
    image: &str,
    vm_dir: &str,
    boot_args: &str,
    api_socket: &str,
    vmm_log: &str,
) -> VmSpec {
    let vm = Path::new(vm_dir);
    let mut spec = testing::vm_spec("vm-1", Path::new(image), vm, api_socket.into());
    spec.vcpus = 2;
    spec.memory_mib = 1024;
    spec.boot_args = boot_args.into();
    spec.net = Some(NetSpec {
        tap: "bt-0123456789ab".into(),
        mac: "06:00:ac:1e:00:02".into(),
    });
    spec.vsock = Some(VsockSpec {
        cid: 3,
        uds_path: "/run/banger/vms/vm-1.vsock".into(),
    });
    spec.paths.vmm_log = vm.join(vmm_log);
    spec
}

/// A backend on its fake host, as the shared tests drive it.
pub(crate) trait Harness: FakeVmm {
    /// The backend running on `fake`, with short timeouts.
    fn backend(fake: &FakeHost<Self>) -> Box<dyn Vmm>;

    /// The VM of the backend's tests, launched on `fake`.
    fn launched(fake: &FakeHost<Self>) -> VmHandle;

    /// The steps `fake` journalled after [`launched`](Self::launched).
    fn after_launch(fake: &FakeHost<Self>) -> Vec<String>;

    /// `fake` with a guest that ignores the request to shut down.
    fn ignoring_the_request(fake: FakeHost<Self>) -> FakeHost<Self>;

    /// The steps that ask the guest to shut down: the state query, then the request.
    const REQUEST: [&'static str; 2];

    /// The paths of the VM's sockets, in the order stop removes them.
    fn sockets() -> Vec<String>;
}

fn removals<H: Harness>() -> Vec<String> {
    H::sockets()
        .iter()
        .map(|socket| format!("remove {socket}"))
        .collect()
}

/// Expected journal lines, as owned strings.
pub(crate) fn strings(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

/// A stop asks the guest first, and the guest that shuts down leaves only its sockets to remove.
pub(crate) fn stop_asks_the_guest_first<H: Harness>() -> FakeHost<H> {
    let fake = FakeHost::<H>::new();
    let vm = H::launched(&fake);
    let outcome = H::backend(&fake).stop(&vm, Duration::from_secs(5)).unwrap();
    assert_eq!(outcome, StopOutcome::ShutDown);
    let mut expected = strings(&H::REQUEST);
    expected.push(format!("wait-exit {}", vm.pid));
    expected.extend(removals::<H>());
    assert_eq!(H::after_launch(&fake), expected);
    assert!(fake.sockets().is_empty());
    fake
}

/// A guest that does not shut down is terminated, and a VMM that ignores that is killed.
pub(crate) fn stop_terminates_then_kills_a_guest_that_does_not_listen<H: Harness>() {
    let fake = H::ignoring_the_request(FakeHost::new());
    let vm = H::launched(&fake);
    let outcome = H::backend(&fake).stop(&vm, Duration::from_secs(5)).unwrap();
    assert_eq!(outcome, StopOutcome::Terminated);
    let pid = vm.pid;
    let mut expected = strings(&H::REQUEST);
    expected.extend([
        format!("wait-exit {pid}"),
        format!("signal {pid} SIGTERM"),
        format!("wait-exit {pid}"),
    ]);
    expected.extend(removals::<H>());
    assert_eq!(H::after_launch(&fake), expected);

    let fake = H::ignoring_the_request(FakeHost::new()).ignoring_term();
    let vm = H::launched(&fake);
    let outcome = H::backend(&fake).stop(&vm, Duration::from_secs(5)).unwrap();
    assert_eq!(outcome, StopOutcome::Killed);
    let pid = vm.pid;
    let mut expected = vec![
        format!("signal {pid} SIGTERM"),
        format!("wait-exit {pid}"),
        format!("signal {pid} SIGKILL"),
        format!("wait-exit {pid}"),
    ];
    expected.extend(removals::<H>());
    assert_eq!(H::after_launch(&fake)[3..], expected);
    assert!(fake.running().is_empty());
    assert!(
        fake.sockets().is_empty(),
        "a killed VMM's sockets are removed"
    );
}

/// A zero timeout does not ask the guest: the VMM is terminated at once.
pub(crate) fn stop_with_a_zero_timeout_terminates_at_once<H: Harness>() {
    let fake = FakeHost::<H>::new();
    let vm = H::launched(&fake);
    let outcome = H::backend(&fake).stop(&vm, Duration::ZERO).unwrap();
    assert_eq!(outcome, StopOutcome::Terminated);
    assert_eq!(
        H::after_launch(&fake)[0],
        format!("signal {} SIGTERM", vm.pid)
    );
}

/// Stopping a VMM that crashed only removes its sockets.
pub(crate) fn stopping_a_crashed_vmm_only_releases_its_sockets<H: Harness>() {
    let fake = FakeHost::<H>::new();
    let vm = H::launched(&fake);
    fake.crash(vm.pid);
    let outcome = H::backend(&fake).stop(&vm, Duration::from_secs(5)).unwrap();
    assert_eq!(outcome, StopOutcome::AlreadyExited);
    assert_eq!(H::after_launch(&fake), removals::<H>());
    assert!(fake.sockets().is_empty());
}

/// A process that took the pid of a VMM that died is left alone.
pub(crate) fn a_reused_pid_is_never_signalled<H: Harness>(
    add_other_process: fn(&FakeHost<H>) -> u32,
) {
    let fake = FakeHost::<H>::new();
    let mut vm = H::launched(&fake);
    fake.crash(vm.pid);
    vm.pid = add_other_process(&fake);
    assert_eq!(
        H::backend(&fake).stop(&vm, Duration::from_secs(5)).unwrap(),
        StopOutcome::AlreadyExited
    );
    assert!(fake.alive(vm.pid), "the other process lives on");
    assert!(
        !H::after_launch(&fake)
            .iter()
            .any(|s| s.starts_with("signal"))
    );
}

/// A socket that cannot be removed fails the stop, and the other sockets are removed anyway.
pub(crate) fn a_failing_socket_removal_is_reported_by_stop<H: Harness>() {
    let sockets = H::sockets();
    let fake = FakeHost::<H>::new().fail(format!("remove {}", sockets[0]));
    let vm = H::launched(&fake);
    let err = H::backend(&fake).stop(&vm, Duration::ZERO).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot release cannot remove {}: {INJECTED}", sockets[0])
    );
    let journal = H::after_launch(&fake);
    assert_eq!(journal[journal.len() - sockets.len()..], removals::<H>());
}

/// The stop tests a backend has nothing of its own to add to, as `#[test]`s of the backend
/// whose [`Harness`] is `$vmm` (its fake can add a process that is not a VMM).
macro_rules! shared_stop_tests {
    ($vmm:ty) => {
        #[test]
        fn stop_with_a_zero_timeout_terminates_at_once() {
            $crate::backend_tests::stop_with_a_zero_timeout_terminates_at_once::<$vmm>();
        }

        #[test]
        fn stopping_a_crashed_vmm_only_releases_its_sockets() {
            $crate::backend_tests::stopping_a_crashed_vmm_only_releases_its_sockets::<$vmm>();
        }

        #[test]
        fn a_reused_pid_is_never_signalled() {
            $crate::backend_tests::a_reused_pid_is_never_signalled::<$vmm>(|fake| {
                fake.add_other_process(&["/usr/bin/sleep", "1000"])
            });
        }

        #[test]
        fn a_failing_socket_removal_is_reported_by_stop() {
            $crate::backend_tests::a_failing_socket_removal_is_reported_by_stop::<$vmm>();
        }
    };
}
pub(crate) use shared_stop_tests;

/// A launch that failed at step `failing` left no process and no socket behind, and says so:
/// a launch error of `vm-1` whose every cleanup step succeeded.
pub(crate) fn assert_rolled_back<V: FakeVmm>(fake: &FakeHost<V>, err: &VmmError, failing: &str) {
    assert!(fake.running().is_empty(), "no process after {failing}");
    assert!(
        fake.sockets().is_empty(),
        "no socket left after {failing}: {:?}",
        fake.sockets()
    );
    match err {
        VmmError::Launch { vm_id, cleanup, .. } => {
            assert_eq!(vm_id, "vm-1");
            assert!(cleanup.is_empty(), "{failing}: {cleanup:?}");
        }
        other => panic!("{failing}: expected a launch error, got {other:?}"),
    }
}

/// A change to the spec the backend would misread.
pub(crate) type SpecChange = fn(&mut VmSpec);

/// Each of `changes` to `spec` is refused as an invalid spec whose message holds the text
/// paired with it, before the backend does anything.
pub(crate) fn misread_specs_are_refused_before_anything_runs<H: Harness>(
    spec: &VmSpec,
    changes: &[(SpecChange, &str)],
) {
    for (change, message) in changes {
        let mut spec = spec.clone();
        change(&mut spec);
        let fake = FakeHost::<H>::new();
        let err = H::backend(&fake).launch(&spec).unwrap_err();
        assert!(matches!(err, VmmError::InvalidSpec(_)), "{err:?}");
        assert!(err.to_string().contains(message), "{err} lacks {message:?}");
        assert!(fake.journal().is_empty());
    }
}

/// A launch whose API socket a live process listens on is refused before anything starts.
pub(crate) fn a_live_socket_is_refused<H: Harness>(spec: &VmSpec) {
    let socket = &spec.paths.api_socket;
    let fake = FakeHost::<H>::new().with_listener(socket);
    let err = H::backend(&fake).launch(spec).unwrap_err();
    assert!(
        matches!(err.root(), VmmError::SocketInUse { path } if path == socket),
        "{err:?}"
    );
    assert!(
        fake.journal().is_empty(),
        "nothing started: {:?}",
        fake.journal()
    );
}

/// What a restarted daemon decides about the VM `alive` that runs on, the VM `crashed` whose
/// VMM died, and the VMM `orphan` (serving `lost.sock` in `dir`) that no VM records, from the
/// backend's `observe` and `scan` of `dir`.
pub(crate) fn reconcile_after_a_daemon_restart(
    dir: &Path,
    alive: &VmHandle,
    crashed: &VmHandle,
    orphan: u32,
    observe: impl Fn(u32, &Path) -> Observation,
    scan: HostScan,
) {
    let records = vec![
        Record {
            vm_id: "vm-1".into(),
            state: banger_api::VmState::Running,
            pid: Some(alive.pid),
            api_socket: Some(alive.api_socket.clone()),
            vsock_socket: alive.vsock_socket.clone(),
            identity_pending: false,
        },
        Record {
            vm_id: "vm-2".into(),
            state: banger_api::VmState::Running,
            pid: Some(crashed.pid),
            api_socket: Some(crashed.api_socket.clone()),
            vsock_socket: None,
            identity_pending: false,
        },
    ];
    let observations: Vec<_> = records
        .iter()
        .map(|r| Some(observe(r.pid.unwrap(), r.api_socket.as_deref().unwrap())))
        .collect();
    assert_eq!(
        reconcile::decide(&records, &observations, &scan),
        vec![
            Action::Adopt {
                vm_id: "vm-1".into(),
                pid: alive.pid,
                state: InstanceState::Running
            },
            Action::MarkStopped {
                vm_id: "vm-2".into(),
                reason: StopReason::ProcessGone
            },
            Action::Kill {
                pid: orphan,
                api_socket: dir.join("lost.sock"),
                reason: KillReason::Orphan
            },
            Action::RemoveSocket {
                path: dir.join("lost.sock")
            },
            Action::RemoveSocket {
                path: dir.join("vm-2.sock")
            },
        ]
    );
}

//! What both backends do alike, tested once and run by each backend's tests on its fake host
//! with the same VM ([`spec`]): the stop sequence (ask the guest, terminate, kill, then remove
//! the sockets), a stop after a crash or with a zero timeout, a pid another process reused, a
//! socket removal that fails, and what reconcile decides after a daemon restart. A backend's
//! tests implement [`Harness`] for its [`FakeVmm`] and call these with it.

use std::path::Path;
use std::time::Duration;

use crate::fake::{FakeHost, FakeVmm, INJECTED};
use crate::reconcile::{self, Action, HostScan, KillReason, Observation, Record, StopReason};
use crate::{
    DriveSpec, InstanceState, NetSpec, StopOutcome, VmHandle, VmPaths, VmSpec, Vmm, VsockSpec,
};

/// The VM the backends' tests run: `vm-1` with 2 vCPUs and 1 GiB, the kernel, initrd and
/// read-only root of the image in `image`, an overlay and a work disk in `vm_dir`, a tap, a
/// vsock, its console log in `vm_dir` and its VMM's log `vmm_log` there too.
pub(crate) fn spec(
    image: &str,
    vm_dir: &str,
    boot_args: &str,
    api_socket: &str,
    vmm_log: &str,
) -> VmSpec {
    let image = Path::new(image);
    let vm = Path::new(vm_dir);
    VmSpec {
        vm_id: "vm-1".into(),
        vcpus: 2,
        memory_mib: 1024,
        kernel: image.join("vmlinux"),
        initrd: Some(image.join("initrd")),
        boot_args: boot_args.into(),
        drives: vec![
            DriveSpec {
                id: "rootfs".into(),
                path: image.join("rootfs.ext4"),
                read_only: true,
                is_root: false,
            },
            DriveSpec {
                id: "overlay".into(),
                path: vm.join("overlay.ext4"),
                read_only: false,
                is_root: false,
            },
            DriveSpec {
                id: "work".into(),
                path: vm.join("work.ext4"),
                read_only: false,
                is_root: false,
            },
        ],
        net: Some(NetSpec {
            tap: "bt-0123456789ab".into(),
            mac: "06:00:ac:1e:00:02".into(),
        }),
        vsock: Some(VsockSpec {
            cid: 3,
            uds_path: "/run/banger/vms/vm-1.vsock".into(),
        }),
        paths: VmPaths {
            api_socket: api_socket.into(),
            console_log: vm.join("console.log"),
            vmm_log: vm.join(vmm_log),
            metrics: vm.join("metrics.json"),
        },
    }
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

fn steps(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

/// A stop asks the guest first, and the guest that shuts down leaves only its sockets to remove.
pub(crate) fn stop_asks_the_guest_first<H: Harness>() -> FakeHost<H> {
    let fake = FakeHost::<H>::new();
    let vm = H::launched(&fake);
    let outcome = H::backend(&fake).stop(&vm, Duration::from_secs(5)).unwrap();
    assert_eq!(outcome, StopOutcome::ShutDown);
    let mut expected = steps(&H::REQUEST);
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
    let mut expected = steps(&H::REQUEST);
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

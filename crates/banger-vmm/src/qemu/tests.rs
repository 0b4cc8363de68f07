//! The QEMU backend on [`FakeQemu`]: the command line of a full spec, the rollback of every
//! launch step, stop sequences, pause/resume and state, adoption and reconcile observations.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fake::{FIRST_PID, FakeQemu, INJECTED, QemuVmm};
use super::*;
use crate::QemuError;
use crate::backend_tests::{self, Harness, SpecChange, strings};

const QMP: &str = "/run/banger/vms/vm-1.sock";
const VM_DIR: &str = "/var/lib/banger/vms/vm-1";

fn spec() -> VmSpec {
    backend_tests::spec(
        "/var/lib/banger/images/01j9image",
        VM_DIR,
        "console=ttyS0 reboot=k panic=1 quiet",
        QMP,
        "qemu.log",
    )
}

fn lines(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_command_line_of_a_full_spec() {
    let args = command_line::process_args(&spec(), Accel::Tcg, false, Default::default());
    insta::assert_snapshot!(lines(&args));
}

#[test]
fn kvm_vsock_and_commas_change_only_their_arguments() {
    let tcg = command_line::process_args(&spec(), Accel::Tcg, true, Default::default());
    let kvm = command_line::process_args(&spec(), Accel::Kvm, true, Default::default());
    let differing: Vec<(String, String)> = tcg
        .iter()
        .zip(&kvm)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (a.to_string_lossy().into(), b.to_string_lossy().into()))
        .collect();
    assert_eq!(
        differing,
        [
            ("tcg".into(), "kvm".into()),
            ("max".into(), "host".into()),
            (
                "console=ttyS0 reboot=k panic=1 quiet tsc_early_khz=2000000".into(),
                "console=ttyS0 reboot=k panic=1 quiet".into()
            ),
        ]
    );
    assert!(
        tcg.windows(2)
            .any(|w| w[0] == "-device" && w[1] == "vhost-vsock-device,guest-cid=3"),
        "{tcg:?}"
    );

    let mut odd = spec();
    odd.drives[1].path = "/var/lib/banger/vms/a,b/overlay.ext4".into();
    odd.paths.api_socket = "/run/banger/vms/a,b.sock".into();
    odd.boot_args = "console=ttyS0 tsc_early_khz=3000000".into();
    let args = command_line::process_args(&odd, Accel::Tcg, false, Default::default());
    assert!(args.contains(&OsString::from(
        "id=overlay,file=/var/lib/banger/vms/a,,b/overlay.ext4,format=raw,if=none"
    )));
    assert!(args.contains(&OsString::from("console=ttyS0 tsc_early_khz=3000000")));
    assert_eq!(
        command_line::qmp_socket(
            &std::iter::once(OsString::from("qemu-system-x86_64"))
                .chain(args)
                .collect::<Vec<_>>()
        ),
        Some(PathBuf::from("/run/banger/vms/a,b.sock"))
    );
}

/// The journal of a successful launch of [`spec`].
fn launch_journal() -> Vec<String> {
    let args = lines(&command_line::process_args(
        &spec(),
        Accel::Tcg,
        false,
        Default::default(),
    ))
    .replace('\n', " ");
    vec![
        format!("create {VM_DIR}/qemu.log"),
        format!("create {VM_DIR}/console.log"),
        format!("spawn /usr/bin/qemu-system-x86_64 {args} >> {VM_DIR}/qemu.log"),
        format!("wait-socket {QMP}"),
        "qmp cont".into(),
        "qmp query-status".into(),
    ]
}

#[test]
fn launch_starts_paused_then_runs_the_guest() {
    let fake = FakeQemu::new();
    let qemu = fake.backend(Accel::Tcg);
    let handle = qemu.launch(&spec()).unwrap();
    assert_eq!(
        handle,
        VmHandle {
            vm_id: "vm-1".into(),
            pid: FIRST_PID,
            api_socket: QMP.into(),
            vsock_socket: None,
        },
        "no /dev/vhost-vsock: no vsock, silently"
    );
    assert!(!qemu.attaches_vsock());
    assert_eq!(qemu.vsock_cid(&handle), None);
    assert_eq!(fake.journal(), launch_journal());
    assert_eq!(qemu.state(&handle).unwrap(), InstanceState::Running);
    assert!(
        !fake
            .argv(handle.pid)
            .unwrap()
            .iter()
            .any(|a| a.to_string_lossy().contains("vsock"))
    );

    let fake = FakeQemu::new().with_vhost_vsock();
    let qemu = fake.backend(Accel::Kvm);
    let handle = qemu.launch(&spec()).unwrap();
    assert!(qemu.attaches_vsock());
    assert_eq!(qemu.vsock_cid(&handle), Some(3));
    assert_eq!(handle.vsock_socket, None);
    fake.crash(handle.pid);
    assert_eq!(qemu.vsock_cid(&handle), None, "not running: no vsock");
}

#[test]
fn a_confined_qemu_drops_to_a_uid_of_its_own_under_the_sandbox() {
    use super::Confinement;
    let arg = |fake: &FakeQemu, pid: u32, flag: &str| {
        let argv = fake.argv(pid).unwrap();
        argv.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].to_string_lossy().into_owned())
    };
    // Unconfined: neither.
    let fake = FakeQemu::new();
    let vm = fake.backend(Accel::Tcg).launch(&spec()).unwrap();
    assert_eq!(arg(&fake, vm.pid, "-runas"), None);
    assert_eq!(arg(&fake, vm.pid, "-sandbox"), None);

    // Each QEMU takes the lowest uid of the range no running QEMU holds; its gid is the same.
    let fake = FakeQemu::new();
    let qemu = fake.backend(Accel::Tcg).confined(Confinement {
        uids: Some((901_000, 901_001)),
        sandbox: true,
        cgroups: None,
    });
    let mut other = spec();
    other.vm_id = "vm-2".into();
    other.paths.api_socket = "/run/banger/vm-2.qmp".into();
    let mut third = spec();
    third.vm_id = "vm-3".into();
    third.paths.api_socket = "/run/banger/vm-3.qmp".into();
    let first = qemu.launch(&spec()).unwrap();
    let second = qemu.launch(&other).unwrap();
    assert_eq!(arg(&fake, first.pid, "-runas").unwrap(), "901000:901000");
    assert_eq!(arg(&fake, second.pid, "-runas").unwrap(), "901001:901001");
    assert_eq!(qemu.uid_of(second.pid), Some(901_001));
    // A QEMU that drops its uid may not raise it again: dropping needs setuid first.
    assert_eq!(
        arg(&fake, first.pid, "-sandbox").unwrap(),
        "on,obsolete=deny,spawn=deny,resourcecontrol=deny"
    );
    // The range is used up: refused before anything is made.
    let before = fake.journal().len();
    let err = qemu.launch(&third).unwrap_err();
    assert!(
        crate::error_chain(&err).contains("every uid of qemu_uids 901000-901001 is taken"),
        "{err}"
    );
    assert_eq!(fake.journal().len(), before);
    // A stopped QEMU gives its uid back.
    qemu.stop(&first, Duration::ZERO).unwrap();
    let again = qemu.launch(&third).unwrap();
    assert_eq!(arg(&fake, again.pid, "-runas").unwrap(), "901000:901000");

    // A daemon that is not root keeps its uid; the sandbox then refuses raising privileges.
    let fake = FakeQemu::new();
    let qemu = fake.backend(Accel::Tcg).confined(Confinement {
        uids: None,
        sandbox: true,
        cgroups: None,
    });
    let vm = qemu.launch(&spec()).unwrap();
    assert_eq!(arg(&fake, vm.pid, "-runas"), None);
    assert_eq!(
        arg(&fake, vm.pid, "-sandbox").unwrap(),
        "on,obsolete=deny,spawn=deny,resourcecontrol=deny,elevateprivileges=deny"
    );
}

/// The whole journal of a launch whose step `failing` (an index into [`launch_journal`]) fails:
/// the steps taken, then what is undone, newest first.
fn expected_journal(failing: usize) -> Vec<String> {
    let steps = launch_journal();
    let pid = FIRST_PID;
    let undo = if steps[failing].starts_with("create") || steps[failing].starts_with("spawn") {
        // Nothing was acquired yet; the logs are kept, they are how failures are read.
        Vec::new()
    } else {
        vec![
            format!("remove {QMP}"),
            format!("signal {pid} SIGKILL"),
            format!("wait-exit {pid}"),
        ]
    };
    steps[..=failing].iter().cloned().chain(undo).collect()
}

#[test]
fn every_failing_launch_step_is_rolled_back_exactly() {
    let steps = launch_journal();
    for (i, failing) in steps.iter().enumerate() {
        let fake = FakeQemu::new().fail_step(i + 1);
        let err = fake.backend(Accel::Tcg).launch(&spec()).unwrap_err();
        assert_eq!(fake.journal(), expected_journal(i), "when {failing} fails");
        backend_tests::assert_rolled_back(&fake, &err, failing);
    }
}

#[test]
fn a_refused_qmp_command_is_reported_with_qemus_words() {
    let fake = FakeQemu::new().fail("qmp cont");
    let err = fake.backend(Accel::Tcg).launch(&spec()).unwrap_err();
    assert_eq!(
        crate::error_chain(&err),
        format!("cannot launch VM vm-1: QMP cont on {QMP}: QEMU answered GenericError: {INJECTED}")
    );
}

#[test]
fn a_guest_that_crashes_at_once_fails_the_launch() {
    let fake = FakeQemu::new().crashing_guest("internal-error");
    let err = fake.backend(Accel::Kvm).launch(&spec()).unwrap_err();
    assert!(
        matches!(err.root(), VmmError::GuestStopped { status } if status == "internal-error"),
        "{err:?}"
    );
    assert!(fake.running().is_empty());
    assert!(fake.sockets().is_empty());
    assert_eq!(
        crate::error_chain(&err),
        "cannot launch VM vm-1: the guest is not running: the VMM reports \"internal-error\""
    );
}

#[test]
fn a_failing_cleanup_step_does_not_stop_the_others() {
    let fake = FakeQemu::new()
        .fail("qmp query-status")
        .fail(format!("remove {QMP}"))
        .fail(format!("wait-exit {FIRST_PID}"));
    let err = fake.backend(Accel::Tcg).launch(&spec()).unwrap_err();
    let journal = fake.journal();
    assert_eq!(
        journal[journal.len() - 3..],
        strings(&[
            &format!("remove {QMP}"),
            &format!("signal {FIRST_PID} SIGKILL"),
            &format!("wait-exit {FIRST_PID}"),
        ])
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cannot launch VM vm-1 (cleanup also failed: cannot remove {QMP}: injected \
             failure; QEMU (pid {FIRST_PID}) is still running after SIGKILL)"
        )
    );

    let fake = FakeQemu::new()
        .fail("qmp cont")
        .fail(format!("signal {FIRST_PID} SIGKILL"));
    let err = fake.backend(Accel::Tcg).launch(&spec()).unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "(cleanup also failed: cannot kill QEMU (pid {FIRST_PID}): cannot send SIGKILL to \
             process {FIRST_PID}: injected failure)"
        )),
        "{err}"
    );
    assert!(fake.sockets().is_empty(), "the socket went anyway");
}

#[test]
fn a_qemu_that_dies_at_start_is_reported_with_its_log() {
    let fake = FakeQemu::new().dying_at_start();
    let err = fake.backend(Accel::Tcg).launch(&spec()).unwrap_err();
    assert!(
        matches!(err.root(), VmmError::Qemu(QemuError::Exited { pid, during, .. })
            if *pid == FIRST_PID && during == "before opening its QMP socket"),
        "{err:?}"
    );
    assert_eq!(
        fake.journal()[4..],
        strings(&[
            &format!("remove {QMP}"),
            &format!("signal {FIRST_PID} SIGKILL"),
            &format!("wait-exit {FIRST_PID}"),
        ])
    );
    assert!(matches!(&err, VmmError::Launch { cleanup, .. } if cleanup.is_empty()));
}

#[test]
fn a_qemu_that_exits_while_starting_is_reported_as_exited() {
    let fake = FakeQemu::new().exiting_on_cont();
    let err = fake.backend(Accel::Tcg).launch(&spec()).unwrap_err();
    assert!(
        matches!(err.root(), VmmError::Qemu(QemuError::Exited { pid, during, .. })
            if *pid == FIRST_PID && during == "while starting the guest"),
        "{err:?}"
    );
    assert_eq!(
        fake.journal()[4..],
        strings(&[
            "qmp cont",
            &format!("wait-exit {FIRST_PID}"),
            &format!("remove {QMP}"),
            &format!("signal {FIRST_PID} SIGKILL"),
            &format!("wait-exit {FIRST_PID}"),
        ])
    );
    assert!(fake.sockets().is_empty());
}

#[test]
fn a_stale_socket_is_removed_and_a_live_one_refused() {
    let fake = FakeQemu::new().with_stale_socket(QMP);
    fake.backend(Accel::Tcg).launch(&spec()).unwrap();
    assert_eq!(fake.journal()[0], format!("remove {QMP}"));

    backend_tests::a_live_socket_is_refused::<QemuVmm>(&spec());
}

#[test]
fn specs_qemu_would_misread_are_refused_before_anything_runs() {
    let cases: [(SpecChange, &str); 9] = [
        (
            |s| s.boot_args.push_str(" ip=dhcp"),
            "must not configure the network",
        ),
        (
            |s| s.vm_id = "a,b".into(),
            "ASCII letters, digits or dashes",
        ),
        (|s| s.vcpus = 0, "at least one vCPU"),
        (|s| s.vcpus = 256, "too many"),
        (|s| s.memory_mib = 0, "needs memory"),
        (|s| s.drives[0].id = "1root".into(), "start with a letter"),
        (|s| s.drives[0].id = "root,fs".into(), "start with a letter"),
        (
            |s| s.net.as_mut().unwrap().mac = "06:00:ac:1e:00".into(),
            "six hex octets",
        ),
        (
            |s| s.paths.api_socket = PathBuf::from(format!("/run/{}.sock", "d".repeat(100))),
            "Unix sockets allow 107",
        ),
    ];
    backend_tests::misread_specs_are_refused_before_anything_runs::<QemuVmm>(&spec(), &cases);
}

fn launched(fake: &FakeQemu) -> VmHandle {
    let vm = fake.backend(Accel::Tcg).launch(&spec()).unwrap();
    assert_eq!(fake.journal().len(), launch_journal().len());
    vm
}

fn after_launch(fake: &FakeQemu) -> Vec<String> {
    fake.journal()[launch_journal().len()..].to_vec()
}

impl Harness for QemuVmm {
    fn backend(fake: &FakeQemu) -> Box<dyn Vmm> {
        Box::new(fake.backend(Accel::Tcg))
    }

    fn launched(fake: &FakeQemu) -> VmHandle {
        launched(fake)
    }

    fn after_launch(fake: &FakeQemu) -> Vec<String> {
        after_launch(fake)
    }

    fn ignoring_the_request(fake: FakeQemu) -> FakeQemu {
        fake.ignoring_powerdown()
    }

    const REQUEST: [&'static str; 2] = ["qmp query-status", "qmp system_powerdown"];

    fn sockets() -> Vec<String> {
        strings(&[QMP])
    }
}

#[test]
fn stop_presses_the_power_button_first() {
    backend_tests::stop_asks_the_guest_first::<QemuVmm>();
}

#[test]
fn stop_terminates_then_kills_a_guest_that_does_not_listen() {
    backend_tests::stop_terminates_then_kills_a_guest_that_does_not_listen::<QemuVmm>();
}

#[test]
fn stop_skips_the_button_for_a_paused_guest() {
    let fake = FakeQemu::new();
    let qemu = fake.backend(Accel::Tcg);
    let vm = launched(&fake);
    qemu.pause(&vm).unwrap();
    assert_eq!(
        qemu.stop(&vm, Duration::from_secs(5)).unwrap(),
        StopOutcome::Terminated
    );
    assert_eq!(
        after_launch(&fake)[..4],
        strings(&[
            "qmp stop",
            "qmp query-status",
            &format!("signal {FIRST_PID} SIGTERM"),
            &format!("wait-exit {FIRST_PID}")
        ])
    );
}

backend_tests::shared_stop_tests!(QemuVmm);

#[test]
fn pause_resume_and_state() {
    let fake = FakeQemu::new();
    let qemu = fake.backend(Accel::Tcg);
    let vm = launched(&fake);
    qemu.pause(&vm).unwrap();
    assert_eq!(qemu.state(&vm).unwrap(), InstanceState::Paused);
    qemu.resume(&vm).unwrap();
    assert_eq!(qemu.state(&vm).unwrap(), InstanceState::Running);
    assert_eq!(
        after_launch(&fake),
        strings(&[
            "qmp stop",
            "qmp query-status",
            "qmp cont",
            "qmp query-status"
        ])
    );

    fake.crash(vm.pid);
    let err = qemu.pause(&vm).unwrap_err();
    assert!(
        matches!(err, VmmError::NotRunning { pid } if pid == vm.pid),
        "{err:?}"
    );
    assert!(matches!(
        qemu.state(&vm).unwrap_err(),
        VmmError::NotRunning { .. }
    ));
}

#[test]
fn a_fresh_backend_adopts_what_another_launched() {
    let fake = FakeQemu::new().with_vhost_vsock();
    let vm = fake.backend(Accel::Tcg).launch(&spec()).unwrap();
    // A new daemon: a new backend value that knows nothing but the recorded pid and socket.
    let next = fake.backend(Accel::Tcg);
    assert_eq!(next.adopt(vm.pid, &vm.api_socket), Some(vm.clone()));
    assert_eq!(next.state(&vm).unwrap(), InstanceState::Running);
    assert_eq!(next.vsock_cid(&vm), Some(3), "the command line remembers");

    assert_eq!(
        next.adopt(vm.pid, Path::new("/run/banger/vms/other.sock")),
        None
    );
    let other = fake.add_other_process(&["/usr/bin/sleep", "1000"]);
    assert_eq!(next.adopt(other, &vm.api_socket), None);
    // A Firecracker is not this backend's to adopt, even on the same socket path.
    let firecracker = fake.add_running(&["firecracker", "--api-sock", QMP], "running");
    assert_eq!(next.adopt(firecracker, &vm.api_socket), None);
    fake.crash(vm.pid);
    assert_eq!(next.adopt(vm.pid, &vm.api_socket), None);
}

#[test]
fn observations_say_what_reconcile_needs() {
    let fake = FakeQemu::new();
    let qemu = fake.backend(Accel::Tcg);
    let vm = launched(&fake);
    let seen = qemu.observe(vm.pid, &vm.api_socket);
    assert_eq!(
        (seen.alive, seen.owned, seen.socket_exists, seen.answer),
        (true, true, true, Some(InstanceState::Running))
    );
    qemu.pause(&vm).unwrap();
    assert_eq!(
        qemu.observe(vm.pid, &vm.api_socket).answer,
        Some(InstanceState::Paused)
    );

    // A QEMU whose guest died of an emulation error runs on but cannot be driven back.
    let broken = fake.add_running(
        &[
            "qemu-system-x86_64",
            "-name",
            "vm-9",
            "-chardev",
            "socket,id=qmp,path=/run/banger/vms/vm-9.sock,server=on,wait=off",
        ],
        "internal-error",
    );
    let seen = qemu.observe(broken, Path::new("/run/banger/vms/vm-9.sock"));
    assert!(seen.owned && seen.socket_exists, "{seen:?}");
    assert_eq!(seen.answer, None, "reconcile ends it as not answering");

    fake.crash(vm.pid);
    let seen = qemu.observe(vm.pid, &vm.api_socket);
    assert_eq!(
        (seen.alive, seen.owned, seen.socket_exists, seen.answer),
        (false, false, true, None)
    );
}

#[test]
fn reconcile_after_a_daemon_restart() {
    let fake = FakeQemu::new();
    let qemu = fake.backend(Accel::Tcg);
    let dir = Path::new("/run/banger/vms");
    let alive = qemu.launch(&spec()).unwrap();
    let mut crashed_spec = spec();
    crashed_spec.vm_id = "vm-2".into();
    crashed_spec.paths.api_socket = dir.join("vm-2.sock");
    let crashed = qemu.launch(&crashed_spec).unwrap();
    fake.crash(crashed.pid);
    let orphan = fake.add_running(
        &[
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "lost",
            "-chardev",
            "socket,id=qmp,path=/run/banger/vms/lost.sock,server=on,wait=off",
        ],
        "running",
    );
    // Not banger's: a QEMU serving a socket elsewhere.
    fake.add_running(
        &[
            "qemu-system-x86_64",
            "-chardev",
            "socket,id=qmp,path=/tmp/mine.sock,server=on,wait=off",
        ],
        "running",
    );

    backend_tests::reconcile_after_a_daemon_restart(
        dir,
        &alive,
        &crashed,
        orphan,
        |pid, socket| qemu.observe(pid, socket),
        qemu.scan(dir),
    );
}

/// With cgroups, each QEMU runs in `banger/<vm id>` with its memory and CPU limits, written
/// before QEMU starts; the cgroup goes with the VM. A launch failing at any step of it leaves
/// no process and no cgroup.
#[test]
fn qemus_run_in_cgroups_of_their_own_and_leave_none() {
    use crate::cgroup::Hierarchy;
    let confined = |fake: &FakeQemu, hierarchy: Hierarchy| {
        fake.backend(Accel::Tcg).confined(Confinement {
            uids: None,
            sandbox: false,
            cgroups: Some(super::QemuCgroups {
                hierarchy,
                memory_overhead_mib: 64,
            }),
        })
    };
    let v2 = || Hierarchy::V2 { root: "/cg".into() };
    let fake = FakeQemu::new();
    let qemu = confined(&fake, v2());
    let vm = qemu.launch(&spec()).unwrap();
    let dir = std::path::PathBuf::from("/cg/banger").join(&vm.vm_id);
    assert_eq!(
        fake.written(&dir.join("memory.max")).unwrap(),
        ((u64::from(spec().memory_mib) + 64) << 20).to_string()
    );
    assert_eq!(
        fake.written(&dir.join("cpu.max")).unwrap(),
        format!("{} 100000", u64::from(spec().vcpus) * 100_000)
    );
    assert_eq!(
        fake.written(&std::path::PathBuf::from(
            "/cg/banger/cgroup.subtree_control"
        ))
        .unwrap(),
        "+memory +cpu"
    );
    assert_eq!(
        fake.written(&dir.join("cgroup.procs")).unwrap(),
        vm.pid.to_string()
    );
    let (memory_dir, memory, cpu) = qemu.cgroup_of(&vm.vm_id).unwrap();
    assert_eq!(memory_dir, dir);
    assert_eq!(memory, (u64::from(spec().memory_mib) + 64) << 20);
    assert!(cpu.ends_with(" 100000"), "{cpu}");
    qemu.stop(&vm, Duration::ZERO).unwrap();
    assert_eq!(fake.dirs(), [std::path::PathBuf::from("/cg/banger")]);
    assert!(fake.running().is_empty());

    // cgroup v1: a directory under each controller, the limits in v1's files.
    let fake = FakeQemu::new();
    let qemu = confined(
        &fake,
        Hierarchy::V1 {
            memory: "/m".into(),
            cpu: "/c".into(),
        },
    );
    let vm = qemu.launch(&spec()).unwrap();
    let memory = std::path::PathBuf::from("/m/banger").join(&vm.vm_id);
    let cpu = std::path::PathBuf::from("/c/banger").join(&vm.vm_id);
    assert_eq!(
        fake.written(&memory.join("memory.limit_in_bytes")).unwrap(),
        ((u64::from(spec().memory_mib) + 64) << 20).to_string()
    );
    assert_eq!(
        fake.written(&cpu.join("cpu.cfs_period_us")).unwrap(),
        "100000"
    );
    for dir in [&memory, &cpu] {
        assert_eq!(
            fake.written(&dir.join("cgroup.procs")).unwrap(),
            vm.pid.to_string()
        );
    }
    qemu.stop(&vm, Duration::ZERO).unwrap();
    assert!(!fake.dirs().contains(&memory) && !fake.dirs().contains(&cpu));

    // A restarted daemon removes the cgroups of its VMs that no longer run, and only those:
    // not another daemon's, not one a QEMU still runs in.
    let fake = FakeQemu::new();
    let qemu = confined(&fake, v2());
    let mut other = spec();
    other.vm_id = "vm-2".into();
    other.paths.api_socket = "/run/banger/vm-2.qmp".into();
    let live = qemu.launch(&spec()).unwrap();
    let dead = qemu.launch(&other).unwrap();
    fake.crash(dead.pid);
    let stranger = std::path::PathBuf::from("/cg/banger/0123456789abcdef");
    fake.create_dir(&stranger, 0o755).unwrap();
    let idle = |id: &str| id == "vm-2" || id == live.vm_id;
    assert!(qemu.release_idle_cgroups(&idle).is_empty());
    let dirs = fake.dirs();
    assert!(
        !dirs.contains(&std::path::PathBuf::from("/cg/banger/vm-2")),
        "{dirs:?}"
    );
    assert!(
        dirs.contains(&std::path::PathBuf::from("/cg/banger").join(&live.vm_id)),
        "{dirs:?}"
    );
    assert!(dirs.contains(&stranger), "{dirs:?}");

    // Every step of the cgroup's making, and QEMU's move into it, failing in turn.
    let steps = {
        let fake = FakeQemu::new();
        confined(&fake, v2()).launch(&spec()).unwrap();
        fake.journal()
    };
    for (n, step) in steps.iter().enumerate() {
        if !(step.starts_with("mkdir") || step.starts_with("write") || step.starts_with("spawn")) {
            continue;
        }
        let fake = FakeQemu::new().fail_step(n + 1);
        let err = confined(&fake, v2()).launch(&spec()).unwrap_err();
        assert!(
            crate::error_chain(&err).contains(INJECTED),
            "step {step}: {err}"
        );
        assert!(fake.running().is_empty(), "step {step}: a QEMU is left");
        let vm_dir = std::path::PathBuf::from("/cg/banger").join(&spec().vm_id);
        assert!(
            !fake.dirs().contains(&vm_dir),
            "step {step}: its cgroup is left: {:?}",
            fake.journal()
        );
    }
}

//! The Firecracker backend behind the real `jailer`: a jailed launch up to `InstanceStart` and
//! beyond (pause, resume, snapshot, adoption, stop), checked from the host's side: the process
//! runs as the jail's uid, chrooted into its jail and in a pid namespace of its own, its files
//! are hard links (or bind mounts, from another filesystem) given to that uid, its cgroup holds
//! the limits where cgroup v2 offers them; and a stop, like a failed launch, leaves nothing.
//! Needs root, the `firecracker` binary, a `jailer` of its release and `/dev/kvm`; prints a
//! visible `SKIP:` line and passes without them.

use banger_test_support::wait_until;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::RealRunner;
use banger_vmm::cgroup::{Cgroups, Hierarchy};
use banger_vmm::firecracker::jail::{self, JailConfig, JailerBinary};
use banger_vmm::firecracker::restore::{DriveCopy, SnapshotTarget};
use banger_vmm::testing::{self, Fixture, GRACEFUL, GUEST_HELLO, KillOnDrop, console_has};
use banger_vmm::{Firecracker, FirecrackerBinary, InstanceState, Vmm};

const UIDS: (u32, u32) = (900_900, 900_909);

fn jail_or_skip() -> Option<(FirecrackerBinary, JailerBinary)> {
    // As bangerd runs: whatever a jail needs others to reach must not depend on the umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let binary = testing::firecracker_or_skip()?;
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("the jailer needs root");
        return None;
    }
    let configured = std::env::var_os("JAILER_BIN").map(PathBuf::from);
    match JailerBinary::detect(configured.as_deref(), &binary, &RealRunner) {
        Ok(jailer) => Some((binary, jailer)),
        Err(error) => {
            banger_test_support::skip_absent!("no usable jailer: {error}");
            None
        }
    }
}

fn config(jailer: JailerBinary, firecracker: &FirecrackerBinary, base: &Path) -> JailConfig {
    JailConfig {
        jailer,
        chroot_base: base.to_owned(),
        uids: UIDS,
        cgroup: Cgroups::detect(),
        memory_overhead_mib: 32,
        libraries: jail::libraries_of(&firecracker.path, &RealRunner),
    }
}

/// Removes a jail base whatever a failing test left in it: mounts first, then the tree.
struct CleanBase(PathBuf);

impl Drop for CleanBase {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for point in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if Path::new(point).starts_with(&self.0) {
                let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

/// Launches `id` jailed under `base`, checks the jail from outside, pauses, snapshots, adopts
/// and stops it, and checks that nothing is left. A jail on another filesystem (`expect_binds`)
/// has its files bind-mounted, and refuses a snapshot (the mount would not reach it).
fn jailed_life(base: &Path, id: &str, expect_binds: bool) {
    let Some((binary, jailer)) = jail_or_skip() else {
        return;
    };
    let _clean = CleanBase(base.to_owned());
    let fx = Fixture::new();
    let spec = fx.spec(id, None);
    let jail = config(jailer, &binary, base);
    let cgroup = jail.cgroup.clone();
    let fc = Firecracker::new(binary.clone()).with_jail(jail);

    let vm = fc.launch(&spec).unwrap();
    let _guard = KillOnDrop(vm.pid);
    let dir = base.join("firecracker").join(id);
    let root = dir.join("root");
    assert_eq!(vm.api_socket, root.join("api.sock"));
    assert_eq!(
        vm.vsock_socket.as_deref(),
        Some(root.join("v.sock").as_path())
    );
    assert_eq!(
        fc.client(&vm.api_socket).describe_instance().unwrap().state,
        InstanceState::Running
    );

    // As whom and where it runs.
    let record = fc.jail_record(&vm).unwrap();
    assert!((UIDS.0..=UIDS.1).contains(&record.uid), "{record:?}");
    let uids = status_field(vm.pid, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == record.uid.to_string()),
        "Firecracker runs as the jail's uid: {uids}"
    );
    let nspid = status_field(vm.pid, "NSpid");
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "Firecracker is the first process of its own pid namespace: {nspid}"
    );
    // Its root is the jail: what it sees at / is what the host sees in the chroot.
    let seen = Path::new("/proc").join(vm.pid.to_string()).join("root");
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(inode(&seen.join("api.sock")), inode(&vm.api_socket));
    assert!(
        seen.join("firecracker").exists(),
        "the jailer's copy of the binary"
    );
    assert!(
        !seen.join("etc/passwd").exists(),
        "nothing of the host's own tree"
    );
    assert!(
        std::fs::symlink_metadata(&vm.api_socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    // Its files: the same inodes as the VM's own, given to its uid while it runs.
    let overlay = &spec.drives[1].path;
    let inside = root.join("drive-overlay");
    assert_eq!(std::fs::metadata(overlay).unwrap().uid(), record.uid);
    if expect_binds {
        assert!(
            mounts_under(&root).len() >= 5,
            "bind mounts: {:?}",
            mounts_under(&root)
        );
    } else {
        assert_eq!(inode(&inside), inode(overlay), "a hard link");
        assert!(mounts_under(&root).is_empty());
    }
    // Its cgroup, under cgroup v2 or v1's controllers, whichever the host offers.
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap().trim().to_owned();
    let memory = ((64 + 32) * 1024 * 1024).to_string();
    match (&cgroup, &record.cgroup) {
        (Cgroups::Usable(hierarchy), Some(limits)) => {
            let own = std::fs::read_to_string(format!("/proc/{}/cgroup", vm.pid)).unwrap();
            assert!(own.contains(&format!("/banger/{id}\n")), "{own}");
            match hierarchy {
                Hierarchy::V2 { .. } => {
                    assert_eq!(read(limits.path.join("memory.max")), memory);
                    assert_eq!(read(limits.path.join("cpu.max")), "100000 100000");
                }
                Hierarchy::V1 { .. } => {
                    assert_eq!(read(limits.path.join("memory.limit_in_bytes")), memory);
                    let cpu = limits.v1_cpu_path.clone().unwrap();
                    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "100000");
                    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
                }
            }
            println!("its cgroup: {:?}", limits.dirs());
        }
        (Cgroups::Unusable(why), None) => {
            println!("note: cgroup limits not checked here: {why}")
        }
        other => panic!("the record does not follow the host's cgroups: {other:?}"),
    }
    assert!(
        wait_until(Duration::from_secs(10), || console_has(&spec, GUEST_HELLO)),
        "the guest's serial output reaches the console log"
    );

    // Pause (Firecracker 1.16 is frozen with SIGSTOP, which reaches a namespace's init) and a
    // snapshot written inside the chroot, landing in the snapshot's directory.
    fc.pause(&vm).unwrap();
    assert_eq!(fc.state(&vm).unwrap(), InstanceState::Paused);
    let snap = fx.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    let target = SnapshotTarget {
        state: snap.join("state"),
        memory: snap.join("memory"),
        drives: vec![DriveCopy {
            id: "overlay".into(),
            live: overlay.clone(),
            copy: snap.join("overlay.ext4"),
        }],
    };
    let (from, to) = (overlay.clone(), snap.join("overlay.ext4"));
    let taken = fc.snapshot_vm(&vm, &target, &mut || {
        std::fs::copy(&from, &to)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    if expect_binds {
        let message = banger_vmm::error_chain(&taken.unwrap_err());
        assert!(
            message.contains("put jail_dir on the filesystem"),
            "{message}"
        );
    } else {
        taken.unwrap();
        assert!(std::fs::metadata(&target.state).unwrap().len() > 0);
        assert_eq!(std::fs::metadata(&target.memory).unwrap().len(), 64 << 20);
        assert_eq!(
            std::fs::metadata(&target.state).unwrap().uid(),
            0,
            "given back"
        );
    }
    assert!(
        !root.join("snapshot-state").exists(),
        "taken out of the jail"
    );
    fc.resume(&vm).unwrap();
    assert_eq!(fc.state(&vm).unwrap(), InstanceState::Running);

    // A daemon started afresh, even one with jailing off, finds and adopts it.
    let fresh = Firecracker::new(binary).with_chroot_base(base.to_owned());
    let adopted = fresh.adopt(vm.pid, &vm.api_socket).unwrap();
    assert_eq!(adopted.vsock_socket, vm.vsock_socket);
    assert_eq!(
        fresh
            .scan(&fx.path().join("sockets"))
            .processes
            .iter()
            .map(|p| p.pid)
            .collect::<Vec<_>>(),
        [vm.pid]
    );

    fresh.stop(&adopted, GRACEFUL).unwrap();
    assert!(!banger_host::pid_alive(vm.pid), "no process");
    assert!(!dir.exists(), "no jail left");
    assert!(mounts_under(base).is_empty(), "no mount left");
    assert_eq!(
        std::fs::metadata(overlay).unwrap().uid(),
        0,
        "the disk is root's again"
    );
    if let Some(limits) = &record.cgroup {
        for dir in limits.dirs() {
            assert!(!dir.exists(), "no cgroup left: {}", dir.display());
        }
    }
    assert!(
        overlay.exists() && spec.paths.vmm_log.exists(),
        "the VM's own files stay"
    );
}

#[test]
fn a_jailed_firecracker_runs_as_its_uid_in_its_chroot_and_leaves_nothing() {
    let base = tempfile::Builder::new().prefix("bjail").tempdir().unwrap();
    jailed_life(&base.path().join("j"), "jailed", false);
}

#[test]
fn across_filesystems_the_jail_binds_the_files_and_unmounts_them() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        banger_test_support::skip!("no /dev/shm for a jail on another filesystem");
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("bjail")
        .tempdir_in(shm)
        .unwrap();
    jailed_life(&base.path().join("j"), "bound", true);
}

#[test]
fn a_refused_jailed_launch_leaves_no_jail() {
    let Some((binary, jailer)) = jail_or_skip() else {
        return;
    };
    let base = tempfile::Builder::new().prefix("bjail").tempdir().unwrap();
    let _clean = CleanBase(base.path().to_owned());
    let fx = Fixture::new();
    let mut spec = fx.spec("refused", None);
    // Not an ELF kernel: Firecracker refuses the boot source.
    std::fs::write(fx.path().join("vmlinux"), b"not a kernel").unwrap();
    spec.kernel = fx.path().join("vmlinux");
    let fc = Firecracker::new(binary.clone()).with_jail(config(jailer, &binary, base.path()));
    let err = fc.launch(&spec).unwrap_err();
    let message = banger_vmm::error_chain(&err);
    assert!(message.contains("Firecracker answered 400"), "{message}");
    assert!(
        !base.path().join("firecracker/refused").exists(),
        "the jail is gone: {message}"
    );
    assert!(fc.scan(fx.path()).processes.is_empty());
    assert_eq!(std::fs::metadata(&spec.drives[1].path).unwrap().uid(), 0);
}

//! The jailed Firecracker on [`FakeFirecracker`]: the jail's layout and the jailer's command
//! line, the rollback of every step of a jailed launch (links or bind mounts, owners, the jail
//! directory, the cgroup), stop, snapshots, restores, and the cgroup v2 decision.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fake::{FIRST_PID, FakeFirecracker};
use super::jail::{CgroupSupport, JailConfig, JailFile, JailerBinary};
use super::restore::{DriveCopy, SnapshotSource, SnapshotTarget};
use super::*;
use crate::VmSpec;
use crate::cgroup::{Cgroups, Hierarchy};

const BASE: &str = "/var/lib/banger/jail";
const JAIL: &str = "/var/lib/banger/jail/firecracker/vm-1";
const ROOT: &str = "/var/lib/banger/jail/firecracker/vm-1/root";
const IMAGE: &str = "/var/lib/banger/images/img";
const VM: &str = "/var/lib/banger/vms/vm-1";
const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

fn spec() -> VmSpec {
    let mut spec = crate::backend_tests::spec(
        IMAGE,
        VM,
        "console=ttyS0 reboot=k",
        "/run/banger/vms/vm-1.api",
        "vmm.log",
    );
    // No work disk.
    spec.drives.truncate(2);
    spec
}

fn config(cgroup: bool) -> JailConfig {
    JailConfig {
        jailer: JailerBinary {
            path: "/usr/bin/jailer".into(),
            version: Version::new(1, 16, 1),
        },
        chroot_base: BASE.into(),
        uids: (900_000, 900_001),
        cgroup: if cgroup {
            Cgroups::Usable(Hierarchy::V2 {
                root: "/sys/fs/cgroup".into(),
            })
        } else {
            Cgroups::Unusable("no cgroup v2 hierarchy is mounted".into())
        },
        memory_overhead_mib: 64,
        libraries: vec![JailFile {
            source: LIBC.into(),
            inside: "/lib/x86_64-linux-gnu/libc.so.6".into(),
            writable: false,
        }],
    }
}

/// A fake host with the VM's files in place: the image's readable by root only.
fn host() -> FakeFirecracker {
    FakeFirecracker::new()
        .with_file(format!("{IMAGE}/vmlinux"), 0o600)
        .with_file(format!("{IMAGE}/initrd"), 0o600)
        .with_file(format!("{IMAGE}/rootfs.ext4"), 0o600)
        .with_file(format!("{VM}/overlay.ext4"), 0o600)
        .with_file(LIBC, 0o644)
}

fn jailed(fake: &FakeFirecracker, cgroup: bool) -> Firecracker {
    fake.backend().with_jail(config(cgroup))
}

fn strings(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_jail_holds_every_file_under_its_own_name_and_the_jailer_gets_the_limits() {
    let config = config(true);
    let plan = config
        .plan(&spec(), &FakeFirecracker::binary(), &[])
        .unwrap();
    assert_eq!(plan.dir, Path::new(JAIL));
    assert_eq!(plan.root, Path::new(ROOT));
    assert_eq!(plan.api_socket, Path::new(ROOT).join("api.sock"));
    assert_eq!(
        plan.vsock_socket.as_deref(),
        Some(Path::new(ROOT).join("v.sock").as_path())
    );
    assert_eq!(plan.pid_file, Path::new(ROOT).join("firecracker.pid"));
    let inner = &plan.inner;
    assert_eq!(inner.kernel, Path::new("/vmlinux"));
    assert_eq!(inner.initrd.as_deref(), Some(Path::new("/initrd")));
    assert_eq!(
        inner
            .drives
            .iter()
            .map(|d| d.path.clone())
            .collect::<Vec<_>>(),
        [
            PathBuf::from("/drive-rootfs"),
            PathBuf::from("/drive-overlay")
        ]
    );
    assert_eq!(inner.paths.vmm_log, Path::new("/vmm.log"));
    assert_eq!(inner.paths.metrics, Path::new("/metrics.json"));
    assert_eq!(inner.vsock.as_ref().unwrap().uds_path, Path::new("/v.sock"));
    assert_eq!(
        plan.files
            .iter()
            .map(|f| format!(
                "{} -> {}{}",
                f.source.display(),
                f.inside.display(),
                if f.writable { " rw" } else { "" }
            ))
            .collect::<Vec<_>>(),
        strings(&[
            "/var/lib/banger/images/img/vmlinux -> /vmlinux",
            "/var/lib/banger/images/img/initrd -> /initrd",
            "/var/lib/banger/images/img/rootfs.ext4 -> /drive-rootfs",
            "/var/lib/banger/vms/vm-1/overlay.ext4 -> /drive-overlay rw",
            "/var/lib/banger/vms/vm-1/vmm.log -> /vmm.log rw",
            "/var/lib/banger/vms/vm-1/metrics.json -> /metrics.json rw",
            "/usr/lib/x86_64-linux-gnu/libc.so.6 -> /lib/x86_64-linux-gnu/libc.so.6",
        ])
    );
    let limits = plan.cgroup.as_ref().unwrap();
    assert_eq!(limits.path, Path::new("/sys/fs/cgroup/banger/vm-1"));
    assert_eq!(limits.memory_max, (1024 + 64) * 1024 * 1024);
    assert_eq!(limits.cpu_max, "200000 100000");

    let args: Vec<String> = config
        .jailer_args(&plan, &FakeFirecracker::binary(), 900_000)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args.join(" "),
        "--id vm-1 --exec-file /usr/bin/firecracker --uid 900000 --gid 900000 \
         --chroot-base-dir /var/lib/banger/jail --new-pid-ns --cgroup-version 2 \
         --parent-cgroup banger --cgroup memory.max=1140850688 --cgroup cpu.max=200000 100000 \
         -- --api-sock /api.sock"
    );
    let without = self::config(false)
        .plan(&spec(), &FakeFirecracker::binary(), &[])
        .unwrap();
    assert!(without.cgroup.is_none());
    let args = self::config(false).jailer_args(&without, &FakeFirecracker::binary(), 1);
    assert!(!args.iter().any(|a| a == "--cgroup"), "{args:?}");

    // cgroup v1 (a hybrid host): the same limits in v1's files, a directory per controller.
    let mut v1 = self::config(false);
    v1.cgroup = Cgroups::Usable(Hierarchy::V1 {
        memory: "/sys/fs/cgroup/memory".into(),
        cpu: "/sys/fs/cgroup/cpu".into(),
    });
    let plan = v1.plan(&spec(), &FakeFirecracker::binary(), &[]).unwrap();
    let limits = plan.cgroup.as_ref().unwrap();
    assert_eq!(
        limits.dirs(),
        [
            PathBuf::from("/sys/fs/cgroup/memory/banger/vm-1"),
            PathBuf::from("/sys/fs/cgroup/cpu/banger/vm-1")
        ]
    );
    let args: Vec<String> = v1
        .jailer_args(&plan, &FakeFirecracker::binary(), 900_000)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(
        args.join(" ").contains(
            "--new-pid-ns --cgroup-version 1 --parent-cgroup banger \
             --cgroup memory.limit_in_bytes=1140850688 --cgroup cpu.cfs_period_us=100000 \
             --cgroup cpu.cfs_quota_us=200000 -- --api-sock"
        ),
        "{args:?}"
    );
}

#[test]
fn a_socket_path_too_long_for_unix_sockets_is_refused_before_anything_runs() {
    let mut config = config(false);
    config.chroot_base = PathBuf::from(format!("/{}", "j".repeat(80)));
    let err = config
        .plan(&spec(), &FakeFirecracker::binary(), &[])
        .unwrap_err();
    assert!(err.to_string().contains("jail_dir"), "{err}");
}

/// The journal of a jailed launch of [`spec`] with cgroup limits, up to `InstanceStart`.
fn jailed_launch_journal() -> Vec<String> {
    let child = FIRST_PID + 1;
    let _ = child;
    strings(&[
        "create /var/lib/banger/vms/vm-1/vmm.log",
        "create /var/lib/banger/vms/vm-1/metrics.json",
        "mkdir /var/lib/banger/jail/firecracker/vm-1 700",
        "write /var/lib/banger/jail/firecracker/vm-1/jail.json",
        "mkdir /var/lib/banger/jail/firecracker/vm-1/root 700",
        "link /var/lib/banger/images/img/vmlinux /var/lib/banger/jail/firecracker/vm-1/root/vmlinux",
        "chmod 604 /var/lib/banger/jail/firecracker/vm-1/root/vmlinux",
        "write /var/lib/banger/jail/firecracker/vm-1/jail.json",
        "link /var/lib/banger/images/img/initrd /var/lib/banger/jail/firecracker/vm-1/root/initrd",
        "chmod 604 /var/lib/banger/jail/firecracker/vm-1/root/initrd",
        "write /var/lib/banger/jail/firecracker/vm-1/jail.json",
        "link /var/lib/banger/images/img/rootfs.ext4 /var/lib/banger/jail/firecracker/vm-1/root/drive-rootfs",
        "chmod 604 /var/lib/banger/jail/firecracker/vm-1/root/drive-rootfs",
        "write /var/lib/banger/jail/firecracker/vm-1/jail.json",
        "link /var/lib/banger/vms/vm-1/overlay.ext4 /var/lib/banger/jail/firecracker/vm-1/root/drive-overlay",
        "chown 900000:900000 /var/lib/banger/jail/firecracker/vm-1/root/drive-overlay",
        "write /var/lib/banger/jail/firecracker/vm-1/jail.json",
        "link /var/lib/banger/vms/vm-1/vmm.log /var/lib/banger/jail/firecracker/vm-1/root/vmm.log",
        "chown 900000:900000 /var/lib/banger/jail/firecracker/vm-1/root/vmm.log",
        "write /var/lib/banger/jail/firecracker/vm-1/jail.json",
        "link /var/lib/banger/vms/vm-1/metrics.json /var/lib/banger/jail/firecracker/vm-1/root/metrics.json",
        "chown 900000:900000 /var/lib/banger/jail/firecracker/vm-1/root/metrics.json",
        "write /var/lib/banger/jail/firecracker/vm-1/jail.json",
        "mkdir /var/lib/banger/jail/firecracker/vm-1/root/lib/x86_64-linux-gnu 755",
        "link /usr/lib/x86_64-linux-gnu/libc.so.6 /var/lib/banger/jail/firecracker/vm-1/root/lib/x86_64-linux-gnu/libc.so.6",
        "write /var/lib/banger/jail/firecracker/vm-1/jail.json",
        "write /var/lib/banger/jail/firecracker/vm-1/jail.json",
        "spawn /usr/bin/jailer --id vm-1 --exec-file /usr/bin/firecracker --uid 900000 --gid 900000 \
         --chroot-base-dir /var/lib/banger/jail --new-pid-ns --cgroup-version 2 --parent-cgroup banger \
         --cgroup memory.max=1140850688 --cgroup cpu.max=200000 100000 -- --api-sock /api.sock \
         >> /var/lib/banger/vms/vm-1/console.log",
        "give-tap bt-0123456789ab 900000",
        "wait-socket /var/lib/banger/jail/firecracker/vm-1/root/api.sock",
        "PUT /logger",
        "PUT /metrics",
        "PUT /machine-config",
        "PUT /boot-source",
        "PUT /drives/rootfs",
        "PUT /drives/overlay",
        "PUT /network-interfaces/eth0",
        "PUT /vsock",
        "PUT /actions",
    ])
}

/// The host holds nothing of the jail: no jail directory, no process, no socket, no mount, and
/// the VM's files belong to root again.
fn assert_nothing_left(fake: &FakeFirecracker, when: &str) {
    assert!(fake.running().is_empty(), "{when}: {:?}", fake.running());
    assert!(fake.sockets().is_empty(), "{when}: {:?}", fake.sockets());
    assert!(fake.mounts().is_empty(), "{when}: {:?}", fake.mounts());
    let left: Vec<_> = fake
        .dirs()
        .into_iter()
        .chain(fake.files())
        .filter(|p| p.starts_with(JAIL))
        .collect();
    assert!(left.is_empty(), "{when}: {left:?}");
    for file in ["overlay.ext4", "vmm.log", "metrics.json"] {
        let path = Path::new(VM).join(file);
        if let Some((uid, gid, _)) = fake.owner_of(&path) {
            assert_eq!((uid, gid), (0, 0), "{when}: {}", path.display());
        }
    }
}

#[test]
fn a_jailed_launch_places_the_files_spawns_the_jailer_and_configures_paths_inside_the_chroot() {
    let fake = host();
    let fc = jailed(&fake, true);
    let vm = fc.launch(&spec()).unwrap();
    assert_eq!(fake.journal(), jailed_launch_journal());
    // The jailer exits; the pid is Firecracker's, read from the file the jailer wrote.
    assert_eq!(vm.pid, FIRST_PID + 1);
    assert_eq!(vm.api_socket, Path::new(ROOT).join("api.sock"));
    assert_eq!(
        vm.vsock_socket.as_deref(),
        Some(Path::new(ROOT).join("v.sock").as_path())
    );
    assert!(
        fc.owns(vm.pid, &vm.api_socket),
        "the jailed command line is recognised"
    );
    assert!(!fc.owns(vm.pid, Path::new("/api.sock")));
    let argv: Vec<String> = fake
        .argv(vm.pid)
        .unwrap()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(argv[0], "/firecracker");

    let boot = fake
        .requests()
        .into_iter()
        .find(|r| r.request.path == "/boot-source")
        .unwrap();
    let body = String::from_utf8(boot.request.body.unwrap()).unwrap();
    assert!(body.contains(r#""kernel_image_path":"/vmlinux""#), "{body}");
    assert_eq!(
        fake.drive_path(vm.pid, "overlay").as_deref(),
        Some(Path::new("/drive-overlay"))
    );

    let record = fc.jail_record(&vm).unwrap();
    assert_eq!((record.uid, record.gid), (900_000, 900_000));
    assert_eq!(
        record.cgroup.as_ref().unwrap().path,
        Path::new("/sys/fs/cgroup/banger/vm-1")
    );
    assert_eq!(
        fake.owner_of(&Path::new(ROOT).join("drive-overlay")),
        Some((900_000, 900_000, 0o600))
    );

    // A second VM gets the next uid of the range; a third finds none.
    let mut second = spec();
    second.vm_id = "vm-2".into();
    let fake2 = fake.clone().with_file(format!("{VM}/overlay.ext4"), 0o600);
    let vm2 = jailed(&fake2, false).launch(&second).unwrap();
    assert_eq!(fc.jail_record(&vm2).unwrap().uid, 900_001);
    let mut third = spec();
    third.vm_id = "vm-3".into();
    let err = crate::error_chain(&jailed(&fake, false).launch(&third).unwrap_err());
    assert!(err.contains("jail_uids"), "{err}");

    // Stop releases everything the launch acquired, the cgroup and the jail included.
    fc.stop(&vm, Duration::ZERO).unwrap();
    let journal = fake.journal();
    let tail: Vec<&String> = journal
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("signal"))
        .collect();
    assert!(
        tail.iter()
            .any(|l| *l == "rmdir /sys/fs/cgroup/banger/vm-1"),
        "{journal:#?}"
    );
    assert!(!fake.exists(Path::new(JAIL)));
    assert_eq!(
        fake.owner_of(&Path::new(VM).join("overlay.ext4"))
            .map(|o| (o.0, o.1)),
        Some((0, 0))
    );
    assert!(!fake.alive(vm.pid));
}

#[test]
fn every_failing_step_of_a_jailed_launch_is_rolled_back_exactly() {
    let steps = jailed_launch_journal();
    for (i, failing) in steps.iter().enumerate() {
        let fake = host().fail_step(i + 1);
        let err = jailed(&fake, true).launch(&spec()).unwrap_err();
        let when = format!("when step {} ({failing}) fails", i + 1);
        assert_nothing_left(&fake, &when);
        match &err {
            VmmError::Launch { cleanup, .. } => assert!(cleanup.is_empty(), "{when}: {cleanup:?}"),
            // Before the jail: nothing acquired yet.
            other => assert!(i < 2, "{when}: {other:?}"),
        }
        let journal = fake.journal();
        // The cgroup is removed once the jailer may have created it.
        let spawned = i >= steps.iter().position(|s| s.starts_with("spawn")).unwrap();
        assert_eq!(
            journal
                .iter()
                .any(|l| l == "rmdir /sys/fs/cgroup/banger/vm-1"),
            spawned,
            "{when}: {journal:#?}"
        );
    }
    // Spelled out once: a refused drive undoes the jail newest first.
    let fake = host().fail("PUT /drives/overlay");
    jailed(&fake, true).launch(&spec()).unwrap_err();
    let journal = fake.journal();
    let from = journal.iter().position(|l| l == "PUT /vsock").unwrap();
    let child = FIRST_PID + 1;
    assert_eq!(
        journal[from + 1..],
        strings(&[
            "remove /var/lib/banger/jail/firecracker/vm-1/root/v.sock",
            "remove /var/lib/banger/jail/firecracker/vm-1/root/api.sock",
            &format!("signal {child} SIGKILL"),
            &format!("wait-exit {child}"),
            "rmdir /sys/fs/cgroup/banger/vm-1",
            "remove /var/lib/banger/jail/firecracker/vm-1/root/lib/x86_64-linux-gnu/libc.so.6",
            "chown 0:0 /var/lib/banger/jail/firecracker/vm-1/root/metrics.json",
            "remove /var/lib/banger/jail/firecracker/vm-1/root/metrics.json",
            "chown 0:0 /var/lib/banger/jail/firecracker/vm-1/root/vmm.log",
            "remove /var/lib/banger/jail/firecracker/vm-1/root/vmm.log",
            "chown 0:0 /var/lib/banger/jail/firecracker/vm-1/root/drive-overlay",
            "remove /var/lib/banger/jail/firecracker/vm-1/root/drive-overlay",
            "remove /var/lib/banger/jail/firecracker/vm-1/root/drive-rootfs",
            "remove /var/lib/banger/jail/firecracker/vm-1/root/initrd",
            "remove /var/lib/banger/jail/firecracker/vm-1/root/vmlinux",
            "rm -r /var/lib/banger/jail/firecracker/vm-1",
        ])
    );
}

#[test]
fn across_filesystems_files_are_bind_mounted_and_unmounted_on_every_rollback() {
    let steps: Vec<String> = {
        let fake = host().cross_device();
        jailed(&fake, false).launch(&spec()).unwrap();
        let journal = fake.journal();
        assert!(
            journal.iter().any(|l| l
                == "bind /var/lib/banger/vms/vm-1/overlay.ext4 \
                    /var/lib/banger/jail/firecracker/vm-1/root/drive-overlay"),
            "{journal:#?}"
        );
        assert_eq!(fake.mounts().len(), 7, "{:?}", fake.mounts());
        journal
    };
    for (i, failing) in steps.iter().enumerate() {
        let fake = host().cross_device().fail_step(i + 1);
        // The hard link attempts are steps too, and fail by design.
        if failing.starts_with("link ") {
            continue;
        }
        let _ = jailed(&fake, false).launch(&spec());
        assert_nothing_left(&fake, &format!("when step {} ({failing}) fails", i + 1));
    }
}

#[test]
fn a_jail_with_a_mount_it_cannot_undo_is_kept_rather_than_removed() {
    let fake = host().cross_device().fail("umount");
    let fc = jailed(&fake, false);
    let vm = fc.launch(&spec()).unwrap();
    let err = fc.stop(&vm, Duration::ZERO).unwrap_err();
    let message = crate::error_chain(&err);
    assert!(message.contains("still has"), "{message}");
    assert!(
        !fake.journal().iter().any(|l| l.starts_with("rm -r")),
        "the tree is never removed over a mount"
    );
}

#[test]
fn a_jailed_firecracker_that_outlives_its_guest_is_killed_without_sigterm() {
    let fake = host().ignoring_ctrl_alt_del();
    let fc = jailed(&fake, false);
    let vm = fc.launch(&spec()).unwrap();
    fc.stop(&vm, Duration::from_millis(10)).unwrap();
    let journal = fake.journal();
    assert!(
        !journal.iter().any(|l| l.ends_with("SIGTERM")),
        "{journal:#?}"
    );
    assert!(journal.contains(&format!("signal {} SIGKILL", vm.pid)));
}

#[test]
fn a_restarted_daemon_adopts_a_jailed_vm_and_finds_its_vsock_socket_in_the_chroot() {
    let fake = host();
    let fc = jailed(&fake, false);
    let vm = fc.launch(&spec()).unwrap();
    let adopted = fc.adopt(vm.pid, &vm.api_socket).unwrap();
    assert_eq!(adopted.vsock_socket, vm.vsock_socket);
    // A daemon whose configuration turned jailing off still recognises it.
    let unjailed = fake.backend().with_chroot_base(BASE.into());
    assert!(unjailed.owns(vm.pid, &vm.api_socket));
    let scan = unjailed.scan(Path::new("/run/banger/vms"));
    assert_eq!(
        scan.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
        [vm.pid]
    );
    // Jails of VMs that do not run are released.
    fake.crash(vm.pid);
    let failures = unjailed.release_idle_jails(&|id| id != "vm-1");
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!fake.exists(Path::new(JAIL)));
}

#[test]
fn a_jailed_snapshot_is_written_inside_the_chroot_and_its_files_taken_out_after() {
    let fake = host().with_version("1.17.0");
    let fc = jailed(&fake, false);
    let vm = fc.launch(&spec()).unwrap();
    let snap = Path::new("/var/lib/banger/snapshots/s1");
    let target = SnapshotTarget {
        state: snap.join("state"),
        memory: snap.join("memory"),
        drives: vec![DriveCopy {
            id: "overlay".into(),
            live: Path::new(VM).join("overlay.ext4"),
            copy: snap.join("overlay.ext4"),
        }],
    };
    let copier = fake.clone();
    let copy = snap.join("overlay.ext4");
    fc.snapshot_vm(&vm, &target, &mut || {
        copier.create_file(&copy).map_err(|e| e.to_string())
    })
    .unwrap();
    let create = fake
        .requests()
        .into_iter()
        .find(|r| r.request.path == "/snapshot/create")
        .unwrap();
    let body = String::from_utf8(create.request.body.unwrap()).unwrap();
    assert!(
        body.contains(r#""snapshot_path":"/snapshot-state""#),
        "{body}"
    );
    assert!(
        body.contains(r#""mem_file_path":"/snapshot-memory""#),
        "{body}"
    );
    let patched: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.request.path == "/drives/overlay")
        .map(|r| {
            String::from_utf8_lossy(r.request.body.as_deref().unwrap_or_default()).into_owned()
        })
        .collect();
    assert!(patched[1].contains("/snapshot-overlay"), "{patched:?}");
    assert!(patched[2].contains("/drive-overlay"), "{patched:?}");
    for name in ["snapshot-state", "snapshot-memory", "snapshot-overlay"] {
        assert!(
            !fake.exists(&Path::new(ROOT).join(name)),
            "{name} taken out"
        );
    }
    assert!(fake.exists(&snap.join("state")), "written through the link");
    let journal = fake.journal();
    for name in ["snapshot-state", "snapshot-memory", "snapshot-overlay"] {
        let chown = format!("chown 0:0 {ROOT}/{name}");
        assert!(journal.contains(&chown), "{chown} in {journal:#?}");
    }
    fc.stop(&vm, Duration::ZERO).unwrap();

    // A jailed restore finds the state, the memory and the drives where the state names them.
    let fake = host()
        .with_file(snap.join("state"), 0o600)
        .with_file(snap.join("memory"), 0o600);
    let fc = jailed(&fake, false);
    let vm = fc
        .restore(
            &spec(),
            &SnapshotSource {
                state: snap.join("state"),
                memory: snap.join("memory"),
            },
            &mut || Ok(()),
        )
        .unwrap();
    let load = fake
        .requests()
        .into_iter()
        .find(|r| r.request.path == "/snapshot/load")
        .unwrap();
    let body = String::from_utf8(load.request.body.unwrap()).unwrap();
    assert!(
        body.contains(r#""snapshot_path":"/snapshot-state""#),
        "{body}"
    );
    assert!(body.contains(r#""uds_path":"/v.sock""#), "{body}");
    assert!(fake.exists(&Path::new(ROOT).join("snapshot-overlay")));

    // The restored VM is snapshotted in turn: the links its restore read are taken out first,
    // or the snapshot's own would find their names taken.
    let snap2 = Path::new("/var/lib/banger/snapshots/s2");
    let target2 = SnapshotTarget {
        state: snap2.join("state"),
        memory: snap2.join("memory"),
        drives: vec![DriveCopy {
            id: "overlay".into(),
            live: Path::new(VM).join("overlay.ext4"),
            copy: snap2.join("overlay.ext4"),
        }],
    };
    let copier = fake.clone();
    let copy = snap2.join("overlay.ext4");
    fc.snapshot_vm(&vm, &target2, &mut || {
        copier.create_file(&copy).map_err(|e| e.to_string())
    })
    .unwrap();
    assert!(
        fake.exists(&snap2.join("state")),
        "written through the link"
    );

    // What a snapshot the daemon died in leaves in the chroot goes; the VM's drives stay.
    for name in ["snapshot-state", "snapshot-memory", "snapshot-work"] {
        fake.create_file(&Path::new(ROOT).join(name)).unwrap();
    }
    fc.forget_snapshot_links(&vm.api_socket).unwrap();
    for name in ["snapshot-state", "snapshot-memory", "snapshot-work"] {
        assert!(!fake.exists(&Path::new(ROOT).join(name)), "{name} left");
    }
    assert!(fake.exists(&Path::new(ROOT).join("drive-overlay")));
    fc.stop(&vm, Duration::ZERO).unwrap();
    assert_nothing_left(&fake, "after the restored VM stopped");
}

#[test]
fn cgroup_v2_is_usable_only_with_its_memory_and_cpu_controllers() {
    // This kind of host: cgroup v1 controllers, and a unified hierarchy beside them that
    // offers none of the two.
    let hybrid = "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                  cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                  cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
    assert_eq!(
        CgroupSupport::from_mounts(hybrid, |_| Some("hugetlb\n".into())),
        CgroupSupport::Unusable(
            "the cgroup v2 hierarchy at /sys/fs/cgroup/unified offers hugetlb, not memory or cpu \
             (this host mounts them as cgroup v1 controllers)"
                .into()
        )
    );
    let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
    assert_eq!(
        CgroupSupport::from_mounts(unified, |root| {
            assert_eq!(root, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory pids\n".into())
        }),
        CgroupSupport::Usable("/sys/fs/cgroup".into())
    );
    assert_eq!(
        CgroupSupport::from_mounts("proc /proc proc rw 0 0\n", |_| None),
        CgroupSupport::Unusable("no cgroup v2 hierarchy is mounted".into())
    );
}

#[test]
fn command_lines_and_tool_output_are_read() {
    let argv = |args: &[&str]| {
        args.iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        jail::jailed_api_socket(
            &argv(&[
                "/firecracker",
                "--id",
                "vm-1",
                "--start-time-us",
                "5",
                "--api-sock",
                "/api.sock"
            ]),
            Path::new(BASE)
        ),
        Some(Path::new(ROOT).join("api.sock"))
    );
    assert_eq!(
        jail::jailed_api_socket(
            &argv(&["/usr/bin/firecracker", "--api-sock", "/s", "--id", "x"]),
            Path::new(BASE)
        ),
        None,
        "not jailed"
    );
    assert_eq!(
        jail::jailed_api_socket(
            &argv(&[
                "/firecracker",
                "--id",
                "../x",
                "--start-time-us",
                "1",
                "--api-sock",
                "/a"
            ]),
            Path::new(BASE)
        ),
        None
    );
    assert_eq!(
        jail::parse_ldd(
            "\tlinux-vdso.so.1 (0x00007ffd)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f93)\n\
             \t/lib64/ld-linux-x86-64.so.2 (0x00007f93)\n"
        ),
        [
            PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
            PathBuf::from("/lib64/ld-linux-x86-64.so.2")
        ]
    );
    assert!(jail::parse_ldd("\tnot a dynamic executable\n").is_empty());
    assert_eq!(
        jail::parse_uid_range("900000-900999"),
        Ok((900_000, 900_999))
    );
    assert!(jail::parse_uid_range("0-5").is_err());
    assert!(jail::parse_uid_range("9-5").is_err());
    assert!(jail::parse_uid_range("x").is_err());
}

#[test]
fn the_jailer_must_be_firecrackers_own_release() {
    use banger_host::{CommandOutput, FakeRunner};
    let runner =
        FakeRunner::new().respond("jailer", CommandOutput::with_stdout("Jailer v1.16.1\n\n"));
    let jailer =
        JailerBinary::check("/opt/jailer".into(), &FakeFirecracker::binary(), &runner).unwrap();
    assert_eq!(jailer.version, Version::new(1, 16, 1));
    let runner =
        FakeRunner::new().respond("jailer", CommandOutput::with_stdout("Jailer v1.15.0\n"));
    let err =
        JailerBinary::check("/opt/jailer".into(), &FakeFirecracker::binary(), &runner).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/opt/jailer is the jailer of Firecracker 1.15.0, but Firecracker is 1.16.1; the jailer \
         must be the same release"
    );
}

/// The work beside a jailed launch (the daemon's tap) fails after the jailer forked Firecracker:
/// the Firecracker it forked is the one killed, not only the jailer that already exited.
#[test]
fn a_failure_beside_a_jailed_launch_kills_the_forked_firecracker() {
    let fake = host();
    let err = jailed(&fake, false)
        .launch_beside(&spec(), &mut || Err("no tap".into()))
        .unwrap_err();
    assert!(
        matches!(err.root(), VmmError::Beside(m) if m == "no tap"),
        "{err:?}"
    );
    assert!(
        fake.journal()
            .contains(&format!("signal {} SIGKILL", FIRST_PID + 1)),
        "{:#?}",
        fake.journal()
    );
    assert_nothing_left(&fake, "after the failure beside");
}

#[test]
fn a_jailed_vms_drives_are_named_inside_its_chroot() {
    let fake = host();
    let fc = jailed(&fake, false);
    let vm = fc.launch(&spec()).unwrap();
    let own = Path::new(VM).join("overlay.ext4");
    assert_eq!(
        fc.drive_path(&vm.api_socket, "overlay", &own),
        Path::new("/drive-overlay")
    );
    assert_eq!(
        fc.drive_path(Path::new("/run/banger/vms/x.api"), "overlay", &own),
        own
    );
}

/// A daemon that dies half way through building a jail leaves its record behind; the next
/// daemon releases exactly what it lists, ownership included.
#[test]
fn a_jail_left_by_a_daemon_that_died_is_released_from_its_record() {
    let fake = host();
    let config = config(false);
    let plan = config
        .plan(&spec(), &FakeFirecracker::binary(), &[])
        .unwrap();
    for file in [&spec().paths.vmm_log, &spec().paths.metrics] {
        fake.create_file(file).unwrap();
    }
    let mut acquired = Vec::new();
    config.build(&fake, &plan, &mut acquired).unwrap();
    // The daemon dies here: nothing is rolled back.
    assert_eq!(
        fake.owner_of(&Path::new(ROOT).join("drive-overlay"))
            .map(|o| o.0),
        Some(900_000)
    );
    let fresh = fake.backend().with_chroot_base(BASE.into());
    let failures = fresh.release_idle_jails(&|_| false);
    assert!(failures.is_empty(), "{failures:?}");
    assert_nothing_left(&fake, "after the next daemon's reconcile");
    let journal = fake.journal();
    assert!(
        journal.contains(&format!("chown 0:0 {ROOT}/drive-overlay")),
        "{journal:#?}"
    );
}

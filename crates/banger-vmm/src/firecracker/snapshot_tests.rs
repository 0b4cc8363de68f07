//! Snapshots and restores of a VM on [`FakeFirecracker`]: the disks copied while the VM is
//! paused and recorded in the state file, the VM back on its own disks whatever step failed,
//! and a restore onto the VM's own tap, vsock and disks rolled back step by step. The VM and its
//! launch are those of the backend's other tests.

use std::path::Path;

use super::fake::FakeFirecracker;
use super::tests::{VSOCK, after_launch, launch_journal, launched, spec};
use super::*;
use crate::backend_tests::{self, strings};

fn snapshot_target() -> restore::SnapshotTarget {
    let vm = Path::new("/var/lib/banger/vms/vm-1");
    let snap = Path::new("/var/lib/banger/snapshots/s-1");
    restore::SnapshotTarget {
        state: snap.join("vmstate"),
        memory: snap.join("memory"),
        drives: ["overlay", "work"]
            .iter()
            .map(|id| restore::DriveCopy {
                id: (*id).into(),
                live: vm.join(format!("{id}.ext4")),
                copy: snap.join(format!("{id}.ext4")),
            })
            .collect(),
    }
}

/// The bodies of the `PATCH /drives` requests a fake received, in order: `id path`.
fn drive_patches(fake: &FakeFirecracker) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|sent| {
            sent.request.method == client::Method::Patch
                && sent.request.path.starts_with("/drives/")
        })
        .map(|sent| {
            let body: serde_json::Value =
                serde_json::from_slice(sent.request.body.as_ref().unwrap()).unwrap();
            format!(
                "{} {}",
                body["drive_id"].as_str().unwrap(),
                body["path_on_host"].as_str().unwrap()
            )
        })
        .collect()
}

/// A snapshot copies the disks while the VM is paused, records the copies in the state file
/// (the drives point at them while Firecracker writes it), points the drives back, and resumes.
#[test]
fn a_snapshot_records_the_disk_copies_and_leaves_the_vm_on_its_own_disks() {
    let fake = FakeFirecracker::new().with_version("1.17.0");
    let fc = fake.backend();
    let vm = launched(&fake);
    let mut copied = 0;
    fc.snapshot_vm(&vm, &snapshot_target(), &mut || {
        copied += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(copied, 1);
    assert_eq!(
        after_launch(&fake),
        strings(&[
            "GET /",
            "PATCH /vm",
            "PATCH /drives/overlay",
            "PATCH /drives/work",
            "PUT /snapshot/create",
            "PATCH /drives/work",
            "PATCH /drives/overlay",
            "PATCH /vm",
        ])
    );
    let (vm_dir, snap) = ("/var/lib/banger/vms/vm-1", "/var/lib/banger/snapshots/s-1");
    assert_eq!(
        drive_patches(&fake),
        vec![
            format!("overlay {snap}/overlay.ext4"),
            format!("work {snap}/work.ext4"),
            format!("work {vm_dir}/work.ext4"),
            format!("overlay {vm_dir}/overlay.ext4"),
        ]
    );
    assert_eq!(fc.state(&vm).unwrap(), InstanceState::Running);

    // A VM the user paused stays paused.
    let fake = FakeFirecracker::new().with_version("1.17.0");
    let fc = fake.backend();
    let vm = launched(&fake);
    fc.pause(&vm).unwrap();
    fc.snapshot_vm(&vm, &snapshot_target(), &mut || Ok(()))
        .unwrap();
    assert_eq!(after_launch(&fake).last().unwrap(), "PATCH /drives/overlay");
    assert_eq!(fc.state(&vm).unwrap(), InstanceState::Paused);
}

/// Whatever step of a snapshot fails, the VM ends on its own disks and running again; only a
/// drive that cannot be pointed back leaves it paused, and the error says so.
#[test]
fn every_failing_snapshot_step_leaves_the_vm_on_its_own_disks() {
    let steps = [
        "GET /",
        "PATCH /vm",
        "copy",
        "PATCH /drives/overlay",
        "PATCH /drives/work",
        "PUT /snapshot/create",
    ];
    for failing in steps {
        let fake = FakeFirecracker::new().with_version("1.17.0");
        let vm = launched(&fake);
        // The copy is the caller's, not a step of the fake.
        let nth = steps
            .iter()
            .filter(|s| **s != "copy")
            .position(|s| *s == failing);
        let fc = match nth {
            Some(n) => fake
                .clone()
                .fail_step(launch_journal().len() + n + 1)
                .backend(),
            None => fake.backend(),
        };
        let err = fc
            .snapshot_vm(&vm, &snapshot_target(), &mut || {
                if failing == "copy" {
                    Err("no space left on device".into())
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        if failing == "copy" {
            assert!(crate::error_chain(&err).contains("no space left"), "{err}");
        }
        for id in ["overlay", "work"] {
            assert_eq!(
                fake.drive_path(vm.pid, id).unwrap(),
                Path::new(&format!("/var/lib/banger/vms/vm-1/{id}.ext4")),
                "{id} after {failing}"
            );
        }
        assert_eq!(
            fc.state(&vm).unwrap(),
            InstanceState::Running,
            "after {failing}"
        );
    }

    // A drive cannot be pointed back (the last pointed, the first back): the VM stays paused.
    let fake = FakeFirecracker::new().with_version("1.17.0");
    let vm = launched(&fake);
    let base = launch_journal().len();
    let fc = fake.clone().fail_step(base + 6).backend();
    let err = fc
        .snapshot_vm(&vm, &snapshot_target(), &mut || Ok(()))
        .unwrap_err();
    let text = crate::error_chain(&err);
    assert!(
        text.contains("drive work still uses the snapshot's copy") && text.contains("stop it"),
        "{text}"
    );
    assert_eq!(fc.state(&vm).unwrap(), InstanceState::Paused);
}

fn snapshot_source() -> restore::SnapshotSource {
    restore::SnapshotSource {
        state: "/var/lib/banger/snapshots/s-1/vmstate".into(),
        memory: "/var/lib/banger/snapshots/s-1/memory".into(),
    }
}

/// The journal of a successful restore of [`spec`].
fn restore_journal() -> Vec<String> {
    let mut journal = launch_journal()[..4].to_vec();
    journal.extend(strings(&[
        "PUT /logger",
        "PUT /metrics",
        "PUT /snapshot/load",
        "PATCH /drives/rootfs",
        "PATCH /drives/overlay",
        "PATCH /drives/work",
        "PATCH /vm",
    ]));
    journal
}

#[test]
fn a_restore_loads_onto_the_vms_own_tap_vsock_and_disks_then_resumes() {
    let fake = FakeFirecracker::new();
    let fc = fake.backend();
    let vm = fc
        .restore(&spec(), &snapshot_source(), &mut || Ok(()))
        .unwrap();
    assert_eq!(fake.journal(), restore_journal());
    assert_eq!(vm.vsock_socket, Some(VSOCK.into()));
    assert_eq!(fc.state(&vm).unwrap(), InstanceState::Running);
    let load = fake
        .requests()
        .into_iter()
        .find(|sent| sent.request.path == "/snapshot/load")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&load.request.body.unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "snapshot_path": "/var/lib/banger/snapshots/s-1/vmstate",
            "mem_backend": {
                "backend_type": "File",
                "backend_path": "/var/lib/banger/snapshots/s-1/memory",
            },
            "resume_vm": false,
            "network_overrides": [{"iface_id": "eth0", "host_dev_name": "bt-0123456789ab"}],
            "vsock_override": {"uds_path": VSOCK},
        })
    );
    assert_eq!(
        drive_patches(&fake),
        vec![
            "rootfs /var/lib/banger/images/01j9image/rootfs.ext4",
            "overlay /var/lib/banger/vms/vm-1/overlay.ext4",
            "work /var/lib/banger/vms/vm-1/work.ext4",
        ]
    );
}

#[test]
fn every_failing_restore_step_is_rolled_back_exactly() {
    let steps = restore_journal();
    for (i, failing) in steps.iter().enumerate() {
        let fake = FakeFirecracker::new().fail_step(i + 1);
        let err = fake
            .backend()
            .restore(&spec(), &snapshot_source(), &mut || Ok(()))
            .unwrap_err();
        backend_tests::assert_rolled_back(&fake, &err, failing);
        let journal = fake.journal();
        assert_eq!(journal[..=i], steps[..=i], "{failing}");
        if i >= 3 {
            assert!(
                journal[i + 1..].iter().all(|s| s.starts_with("remove")
                    || s.starts_with("signal")
                    || s.starts_with("wait-exit")),
                "after {failing}, only releases: {journal:?}"
            );
        }
    }
    // A Firecracker too old to restore onto another vsock socket is refused before it runs.
    let fake = FakeFirecracker::new();
    let mut binary = FakeFirecracker::binary();
    binary.version = Version::new(1, 15, 0);
    let fc = Firecracker::with_host(
        binary,
        std::sync::Arc::new(fake.clone()),
        std::sync::Arc::new(fake.clone()),
    );
    let err = fc
        .restore(&spec(), &snapshot_source(), &mut || Ok(()))
        .unwrap_err();
    assert!(err.to_string().contains("needs Firecracker 1.16"), "{err}");
    assert!(fake.journal().is_empty());
}

//! What a start needs before its VMM runs: the doctor's checks it depends on, and the VMM's
//! spec (kernel, drives, network, vsock, paths) built from the VM and its image.

use std::path::PathBuf;

use banger_api::{ApiError, ErrorCode, Image, Vm};
use banger_host::network;
use banger_host::{Doctor, Preflight};
use banger_vmm::{DriveSpec, NetSpec, VmPaths, VmSpec, VsockSpec};

use super::disks;
use crate::Daemon;

/// The doctor's checks a start depends on, failing with every failed check's fix.
pub(super) fn preflight(d: &Daemon, vm: &Vm) -> Result<(), ApiError> {
    let m = &d.machines;
    // No backend checks: availability is the backend choice's business, with its own message.
    let doctor = Doctor::new(&*m.runner, m.net.clone(), d.paths.state_dir.clone());
    let mut checks = doctor.preflight(Preflight::Host);
    if vm.nat {
        checks.extend(doctor.preflight(Preflight::Nat));
    }
    let failed: Vec<_> = checks
        .into_iter()
        .filter(|c| c.status == banger_host::CheckStatus::Fail)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let message = failed
        .iter()
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect::<Vec<_>>()
        .join("; ");
    let fixes = failed
        .iter()
        .filter_map(|c| c.fix.clone())
        .collect::<Vec<_>>()
        .join("; ");
    Err(ApiError::new(
        crate::doctor::refusal_code(&failed),
        format!("this host cannot start VM {} now: {message}", vm.name),
    )
    .with_hint(fixes))
}

/// The doctor's checks a disk resize depends on (e2fsprogs, free space).
pub fn preflight_resize(d: &Daemon) -> Result<(), ApiError> {
    let m = &d.machines;
    if !m.preflight {
        return Ok(());
    }
    let doctor = Doctor::new(&*m.runner, m.net.clone(), d.paths.state_dir.clone());
    let failed: Vec<_> = doctor
        .preflight(Preflight::Resize)
        .into_iter()
        .filter(|c| c.status == banger_host::CheckStatus::Fail && c.name != "sudo")
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        crate::doctor::refusal_code(&failed),
        format!(
            "cannot grow the work disk now: {}",
            failed
                .iter()
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    )
    .with_hint(
        failed
            .iter()
            .filter_map(|c| c.fix.clone())
            .collect::<Vec<_>>()
            .join("; "),
    ))
}

/// The complete description of `vm` for its VMM (public for the start benchmark, which
/// launches the same VM with a raw Firecracker).
pub fn vm_spec(d: &Daemon, vm: &Vm, image: &Image) -> Result<VmSpec, ApiError> {
    let dir = d.paths.vm_dir(&vm.id);
    let image_file = |p: &str| PathBuf::from(p);
    let kernel = image_file(&image.files.kernel.path);
    let initrd = image.files.initrd.as_ref().map(|f| image_file(&f.path));
    let rootfs = image_file(&image.files.rootfs.path);
    let overlay = dir.join(disks::OVERLAY_DISK);
    let work = dir.join(disks::WORK_DISK);
    // VMs made before config drives, or of an image whose init reads none, have their files
    // on the overlay disk.
    let config_drive = Some(dir.join(disks::CONFIG_DRIVE)).filter(|p| p.exists());
    for (what, path) in [
        ("kernel", &kernel),
        ("root filesystem", &rootfs),
        ("overlay disk", &overlay),
        ("work disk", &work),
    ] {
        if !path.exists() {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("VM {}'s {what} {} is missing", vm.name, path.display()),
            )
            .with_hint("the file was removed outside banger; delete the VM and create it again"));
        }
    }
    // Firecracker's recommended console and reboot settings; no `ip=`: banger's init (or the
    // image's own) configures the network from the overlay's files.
    let mut boot_args = String::from("console=ttyS0 reboot=k panic=1 pci=off");
    if initrd.is_none() {
        boot_args.push_str(" root=/dev/vda ro");
    }
    if config_drive.is_some() {
        boot_args.push_str(" banger.config=LABEL=");
        boot_args.push_str(banger_init::config_drive::LABEL);
    }
    let mut drives = vec![
        DriveSpec {
            id: "rootfs".into(),
            path: rootfs,
            read_only: true,
            is_root: initrd.is_none(),
        },
        DriveSpec {
            id: "overlay".into(),
            path: overlay,
            read_only: false,
            is_root: false,
        },
        DriveSpec {
            id: "work".into(),
            path: work,
            read_only: false,
            is_root: false,
        },
    ];
    if let Some(path) = config_drive {
        drives.push(DriveSpec {
            id: "config".into(),
            path,
            read_only: true,
            is_root: false,
        });
    }
    Ok(VmSpec {
        vm_id: vm.id.clone(),
        vcpus: vm.vcpus,
        memory_mib: vm.memory_mib,
        kernel,
        initrd: initrd.clone(),
        boot_args,
        drives,
        net: Some(NetSpec {
            tap: network::tap_name(&vm.id),
            mac: vm.network.mac.clone(),
        }),
        vsock: Some(VsockSpec {
            cid: vm.network.vsock_cid,
            uds_path: d.paths.vm_vsock_socket(&vm.id),
        }),
        paths: VmPaths {
            api_socket: d.paths.vm_api_socket(&vm.id),
            console_log: dir.join(disks::CONSOLE_LOG),
            vmm_log: dir.join(disks::VMM_LOG),
            metrics: dir.join(disks::METRICS),
        },
    })
}

//! The VM service: creating, changing and deleting VMs. Every request is validated here,
//! against the shared rules, the host's limits and admission control, before the store is
//! touched; a create that starts its VM is admitted in the transaction that records it.
//! Running VMs are [`crate::machine`]'s business.

use std::sync::Arc;

use banger_api::{
    ApiError, CreateVmRequest, CreatedVm, ErrorCode, Image, OperationKind, PoolRole,
    UpdateVmRequest, Vm, VmState, VmmKind, WorkSeedStatus, validate,
};
use banger_store::{Demand, NewVm, StoreError, VmResources};

use crate::Daemon;
use crate::admission::Ask;
use crate::machine::{self, disks};

/// `POST /v1/vms`: records the VM, makes its disks and, unless `start` is false, starts it
/// (the operation comes back with the VM). On failure neither the record nor any file remains.
pub fn create(d: &Arc<Daemon>, req: CreateVmRequest) -> Result<CreatedVm, ApiError> {
    // A ready VM of the warm pool, when it has one that fits.
    if let Some(created) = crate::warm::take(d, &req)? {
        return Ok(created);
    }
    create_in(d, req, None)
}

/// [`create`] of a VM that is `pool` to the warm pool (hidden), or a user's (`None`).
pub fn create_in(
    d: &Arc<Daemon>,
    req: CreateVmRequest,
    pool: Option<PoolRole>,
) -> Result<CreatedVm, ApiError> {
    let start = req.start.unwrap_or(true);
    let state = if start {
        VmState::Starting
    } else {
        VmState::Stopped
    };
    // A VM restored from a snapshot is the snapshot's image and sizes, on Firecracker.
    let snapshot = match &req.from_snapshot {
        Some(name) => Some(crate::snapshot::show(d, name)?),
        None => None,
    };
    let req = match &snapshot {
        Some(snapshot) => crate::snapshot::restore_request(d, snapshot, req)?,
        None => req,
    };
    // A user's VM goes before the warm pool's: ready pool VMs holding the room it needs give
    // way. The pool's own VMs do not push each other out.
    let (vm, image) = match pool {
        None => crate::warm::admit_giving_way(d, || record(d, req.clone(), state, None))?,
        Some(_) => record(d, req, state, pool)?,
    };
    let snapshot_dir = snapshot.as_ref().map(|s| d.paths.snapshot_dir(&s.id));
    let make_files = |d: &Daemon, vm: &Vm, image: &Image, dir: &std::path::Path| {
        make_files(d, vm, image, dir, snapshot_dir.as_deref())?;
        match &snapshot {
            Some(snapshot) => crate::snapshot::restore_files(d, snapshot, dir),
            None => Ok(()),
        }
    };
    let dir = d.paths.vm_dir(&vm.id);
    let made_dir = std::fs::create_dir_all(d.paths.vms_dir())
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot create {}: {e}",
                d.paths.vms_dir().display()
            ))
        })
        .and_then(|()| disks::make_vm_dir(&dir))
        .and_then(|()| disks::mark_making(&dir));
    if let Err(e) = made_dir {
        forget(d, &vm, &dir);
        return Err(e);
    }
    // A restore's start takes its stages from the restore files: they are made first.
    if !start || snapshot.is_some() {
        if let Err(e) = make_files(d, &vm, &image, &dir) {
            forget(d, &vm, &dir);
            return Err(e);
        }
        tracing::info!(vm = %vm.name, id = %vm.id, ip = %vm.network.ip, "VM created");
        let operation = start.then(|| machine::spawn_start(d, vm.clone(), OperationKind::StartVm));
        return Ok(CreatedVm {
            vm: find(d, &vm.id)?,
            operation,
        });
    }
    // The start runs its checks while the files are made here, and goes on once they are.
    // The answer still waits for the files, so a failure to make them is this request's error,
    // as it would be without the start.
    let (made, pending) = machine::pending_files();
    let operation =
        machine::spawn_start_pending(d, vm.clone(), OperationKind::StartVm, Some(pending));
    if let Err(e) = make_files(d, &vm, &image, &dir) {
        made.send(Err(e.message.clone()));
        // The start fails at the files and rolls back what it acquired; then the VM goes.
        wait_ended(d, &operation.id);
        forget(d, &vm, &dir);
        return Err(e);
    }
    made.send(Ok(()));
    tracing::info!(vm = %vm.name, id = %vm.id, ip = %vm.network.ip, "VM created");
    let vm = find(d, &vm.id)?;
    Ok(CreatedVm {
        vm,
        operation: Some(operation),
    })
}

/// Validates a create request and records the VM in `state`, with its image.
fn record(
    d: &Daemon,
    req: CreateVmRequest,
    state: VmState,
    pool: Option<PoolRole>,
) -> Result<(Vm, Image), ApiError> {
    if let Some(name) = &req.name {
        validate::name("VM", name)?;
    }
    let defaults = &d.config.defaults;
    let vcpus = match req.vcpus {
        Some(v) => validate::vcpus(v)?,
        None => defaults.vcpus,
    };
    let memory_mib = match req.memory_mib {
        Some(m) => validate::memory_mib(m)?,
        None => defaults.memory_mib,
    };
    d.host.check_vcpus(vcpus)?;
    d.host.check_memory(memory_mib)?;
    // Even with --no-start: a VM that can never start is no use.
    d.admission
        .check_fits_idle(req.name.as_deref(), vcpus, memory_mib, Ask::Create)?;
    let disk_bytes = match req.disk_bytes {
        Some(b) => validate::disk_bytes("disk", b, validate::MIN_DISK_BYTES)?,
        None => defaults.disk_bytes,
    };
    let work_disk_bytes = match req.work_disk_bytes {
        Some(b) => validate::disk_bytes("work disk", b, validate::MIN_WORK_DISK_BYTES)?,
        None => defaults.work_disk_bytes,
    };
    let mut published_ports = crate::ports::check_new(d, &req.publish)?;
    let image_name = req.image.as_deref().unwrap_or(&d.config.default_image);
    let image = d.store.find_image(image_name)?.ok_or_else(|| {
        let mut e = ApiError::invalid(format!("unknown image {image_name:?}"));
        e.hint = Some(if req.image.is_none() {
            "no --image was given and the configured default_image does not exist; list images \
             with `banger image list` or register one with `banger image register`"
                .into()
        } else {
            "list images with `banger image list` or register one with `banger image register`"
                .into()
        });
        e
    })?;
    // The ports the image publishes by default, where the request did not publish them.
    let defaults = crate::ports::image_defaults(d, &image, &published_ports)?;
    published_ports.extend(defaults);
    // A VM that starts now on Firecracker is named after the spare Firecracker it will take
    // over, so the process's command line names it.
    let vmm = req.vmm.unwrap_or(d.config.vmm);
    // A restore starts its own Firecracker: a spare is configured for a boot.
    let spare = (state == VmState::Starting && vmm != VmmKind::Qemu && req.from_snapshot.is_none())
        .then(|| d.spare.claim())
        .flatten();
    let admit = |demand: &Demand<'_>, reserved| d.admission.check(Ask::Create, demand, reserved);
    let created = d.store.create_vm_admitted(
        &NewVm {
            name: req.name,
            image_id: image.id.clone(),
            vcpus,
            memory_mib,
            disk_bytes,
            work_disk_bytes,
            nat: req.nat.unwrap_or(false),
            vmm,
            state,
            published_ports,
            pool,
        },
        &d.pool,
        spare.as_deref(),
        Some(&admit),
    );
    if let Some(id) = &spare
        && created.as_ref().map_or(true, |vm| vm.id != *id)
    {
        d.spare.forget(id);
    }
    let vm = created.map_err(|e| match e {
        StoreError::AlreadyExists { name, .. } => ApiError::new(
            ErrorCode::AlreadyExists,
            format!("a VM named {name:?} already exists"),
        )
        .with_hint("pick another --name, or delete the old VM with `banger vm delete`"),
        other => other.into(),
    })?;
    Ok((vm, image))
}

/// Makes the VM's disks and files in its directory `dir` (its disks copies of those in
/// `disks_from`, a snapshot's, when given) and records its work seed.
fn make_files(
    d: &Daemon,
    vm: &Vm,
    image: &Image,
    dir: &std::path::Path,
    disks_from: Option<&std::path::Path>,
) -> Result<(), ApiError> {
    let key = disks::banger_public_key(d.config.ssh_key.as_deref(), &d.paths.state_dir)?;
    let seed = disks::make_vm_files(
        &disks::VmFileSources {
            runner: &*d.machines.runner,
            pool: &d.disks,
            image,
            image_dir: &d.paths.image_dir(&image.id),
            authorized_key: &key,
            resolver: d
                .dns
                .guest_resolver(d.machines.net.host_address, disks::host_dns),
            disks_from,
        },
        vm,
        dir,
    )?;
    d.store.set_vm_work_seed(&vm.id, &seed)?;
    disks::made(dir)
}

/// Removes a VM whose create failed: its directory, its record, the spare claimed for it.
fn forget(d: &Daemon, vm: &Vm, dir: &std::path::Path) {
    d.spare.forget(&vm.id);
    disks::remove_tree(dir);
    if let Err(store) = d.store.delete_vm(&vm.id) {
        tracing::error!(vm = %vm.name, error = %store, "cannot remove the record of a VM whose create failed");
    }
    crate::image::collect_retired(d);
}

/// Waits for operation `id` to end (a start that cannot get past its files ends within its
/// rollback's timeouts).
fn wait_ended(d: &Daemon, id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while d.ops.get(id).is_some_and(|op| !op.state.is_finished()) {
        if std::time::Instant::now() >= deadline {
            tracing::error!(
                operation = id,
                "a failed create's start did not end within 60 s"
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// `GET /v1/vms/{name}`: the VM with how its work disk relates to its image's work seed, or,
/// when its image was retired, to the seed of the image that took its name: what a VM made
/// now would get.
pub fn show(d: &Daemon, name: &str) -> Result<Vm, ApiError> {
    let mut vm = find(d, name)?;
    let recorded = d.store.vm_work_seed(&vm.id)?;
    let replaced_by = d
        .store
        .find_image(&vm.image.id)?
        .and_then(|image| image.retired)
        .and_then(|retired| retired.replaced_by);
    let seed_image = replaced_by.as_ref().map_or(&vm.image.id, |r| &r.id);
    let seed_dir = d.paths.image_dir(seed_image).join(disks::WORK_SEED_DIR);
    let seed = seed_dir.is_dir().then_some(seed_dir.as_path());
    // Read from the seed itself, not the manifest: what matters is what a new VM would get.
    match seed_fingerprint(seed) {
        Ok(image) => {
            vm.work_seed = Some(Box::new(WorkSeedStatus {
                changed: recorded.as_ref().is_some_and(|r| *r != image),
                vm: recorded,
                image,
                seed_dir: seed.map(|p| p.display().to_string()),
                replaced_by,
            }));
        }
        // Showing the VM matters more than this detail; the log says why it is missing.
        Err(e) => tracing::warn!(vm = %vm.name, error = %e, "cannot read the image's work seed"),
    }
    Ok(vm)
}

/// The fingerprint of an image's work seed, computed once per seed directory: an image is
/// immutable, and a seed made of a VM's work disk can be large, so `vm show` does not hash it
/// again each time. An image made before fingerprints existed gets its own here, the first
/// time it is needed.
fn seed_fingerprint(
    seed: Option<&std::path::Path>,
) -> Result<String, banger_image::vmdisk::VmDiskError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KNOWN: OnceLock<Mutex<HashMap<std::path::PathBuf, String>>> = OnceLock::new();
    let Some(dir) = seed else {
        return banger_image::vmdisk::seed_fingerprint(None);
    };
    let known = KNOWN.get_or_init(Mutex::default);
    if let Some(found) = known.lock().ok().and_then(|k| k.get(dir).cloned()) {
        return Ok(found);
    }
    let computed = banger_image::vmdisk::seed_fingerprint(Some(dir))?;
    if let Ok(mut k) = known.lock() {
        k.insert(dir.to_owned(), computed.clone());
    }
    Ok(computed)
}

/// A VM by name or id, as the store has it. The warm pool's own VMs are found by id only:
/// their names are nobody's.
pub fn find(d: &Daemon, name: &str) -> Result<Vm, ApiError> {
    d.store
        .find_vm(name)?
        .filter(|vm| !hidden(vm) || vm.id == name)
        .ok_or_else(|| not_found(name))
}

/// Whether `vm` is one of the warm pool's own, hidden from users.
pub fn hidden(vm: &Vm) -> bool {
    matches!(vm.pool, Some(PoolRole::Template | PoolRole::Ready))
}

/// `GET /v1/vms`: every VM but the warm pool's own.
pub fn list(d: &Daemon) -> Result<Vec<Vm>, ApiError> {
    let mut vms = d.store.list_vms()?;
    vms.retain(|vm| !hidden(vm));
    Ok(vms)
}

/// `PATCH /v1/vms/{name}`: resources of a stopped VM.
pub fn update(d: &Daemon, name: &str, req: UpdateVmRequest) -> Result<Vm, ApiError> {
    if req.vcpus.is_none() && req.memory_mib.is_none() && req.work_disk_bytes.is_none() {
        return Err(ApiError::invalid("nothing to change").with_hint(
            "give at least one of vcpus, memory_mib, work_disk_bytes (--vcpus, --memory, --work-disk)",
        ));
    }
    let vcpus = req.vcpus.map(validate::vcpus).transpose()?;
    let memory_mib = req.memory_mib.map(validate::memory_mib).transpose()?;
    let work_disk_bytes = req
        .work_disk_bytes
        .map(|b| validate::disk_bytes("work disk", b, validate::MIN_WORK_DISK_BYTES))
        .transpose()?;
    if let Some(v) = vcpus {
        d.host.check_vcpus(v)?;
    }
    if let Some(m) = memory_mib {
        d.host.check_memory(m)?;
    }
    let vm = find(d, name)?;
    d.admission.check_fits_idle(
        Some(&vm.name),
        vcpus.unwrap_or(vm.vcpus),
        memory_mib.unwrap_or(vm.memory_mib),
        Ask::Set,
    )?;
    if vm.state != VmState::Stopped {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "VM {:?} is {}; resources change only while it is stopped",
                vm.name, vm.state
            ),
        ));
    }
    if let Some(bytes) = work_disk_bytes
        && bytes < vm.work_disk_bytes
    {
        return Err(ApiError::invalid(format!(
            "the work disk can only grow: it is {}, asked for {}",
            validate::format_size(vm.work_disk_bytes),
            validate::format_size(bytes)
        ))
        .with_hint("shrinking would lose what is stored in /root; create a new VM instead"));
    }
    if let Some(bytes) = work_disk_bytes
        && bytes > vm.work_disk_bytes
    {
        let disk = d.paths.vm_dir(&vm.id).join(disks::WORK_DISK);
        if disk.exists() {
            machine::preflight_resize(d)?;
            disks::grow_work_disk(&*d.machines.runner, &disk, bytes)?;
        }
    }
    let vm = d.store.update_vm_resources(
        &vm.id,
        &VmResources {
            vcpus,
            memory_mib,
            work_disk_bytes,
        },
    )?;
    tracing::info!(vm = %vm.name, "VM resources changed");
    Ok(vm)
}

/// `POST /v1/vms/{name}/reset`: a stopped VM's root goes back to its image (a blank overlay
/// disk, see [`disks::reset_overlay`]); its work disk, identity and spec stay.
pub fn reset(d: &Daemon, name: &str) -> Result<Vm, ApiError> {
    // Held until the new overlay is in place: a start meanwhile is refused.
    let (vm, _claim) = d.machines.claim_stopped(
        d,
        name,
        "being reset",
        "only a stopped VM's root can be reset",
    )?;
    let image = d.store.find_image(&vm.image.id)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidState,
            format!("VM {}'s image {} no longer exists", vm.name, vm.image.name),
        )
    })?;
    disks::reset_overlay(
        &*d.machines.runner,
        &d.disks,
        &image,
        &d.paths.vm_dir(&vm.id),
        vm.disk_bytes,
    )?;
    tracing::info!(vm = %vm.name, "VM root reset to its image");
    find(d, &vm.id)
}

/// `DELETE /v1/vms/{name}`: stops a running VM first, then removes the record, its
/// allocations and its files.
pub fn delete(d: &Daemon, name: &str) -> Result<Vm, ApiError> {
    let vm = find(d, name)?;
    let vm = machine::stop_for_delete(d, &vm, d.config.defaults.stop_timeout)?;
    remove(d, &vm)
}

/// Deletes `vm` after ending its VMM at once, without asking its guest (a VM of the warm
/// pool, whose guest holds nobody's work).
pub fn discard(d: &Daemon, vm: &Vm) -> Result<Vm, ApiError> {
    let vm = machine::stop_for_delete(d, vm, std::time::Duration::ZERO)?;
    remove(d, &vm)
}

/// Removes stopped `vm`'s record, files and sockets.
fn remove(d: &Daemon, vm: &Vm) -> Result<Vm, ApiError> {
    d.machines.forwards.close(&vm.id);
    let vm = d.store.delete_vm(&vm.id)?;
    disks::remove_tree(&d.paths.vm_dir(&vm.id));
    crate::image::collect_retired(d);
    for socket in [
        d.paths.vm_api_socket(&vm.id),
        d.paths.vm_vsock_socket(&vm.id),
    ] {
        if let Err(e) = std::fs::remove_file(&socket)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %socket.display(), error = %e, "cannot remove a deleted VM's socket");
        }
    }
    tracing::info!(vm = %vm.name, id = %vm.id, "VM deleted");
    Ok(vm)
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no VM named {name:?}")).with_hint("list VMs with `banger vm list`")
}

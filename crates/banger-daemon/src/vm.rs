//! The VM service: creating, changing and deleting VM records. Every request is validated
//! here, against the shared rules and the host's limits, before the store is touched.

use banger_api::{ApiError, CreateVmRequest, ErrorCode, UpdateVmRequest, Vm, VmState, validate};
use banger_store::{NewVm, VmResources};

use crate::Daemon;

/// `POST /v1/vms`.
pub fn create(d: &Daemon, req: CreateVmRequest) -> Result<Vm, ApiError> {
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
    let disk_bytes = match req.disk_bytes {
        Some(b) => validate::disk_bytes("disk", b, validate::MIN_DISK_BYTES)?,
        None => defaults.disk_bytes,
    };
    let work_disk_bytes = match req.work_disk_bytes {
        Some(b) => validate::disk_bytes("work disk", b, validate::MIN_WORK_DISK_BYTES)?,
        None => defaults.work_disk_bytes,
    };
    if req.start.unwrap_or(true) {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            "this build of banger records VMs but has no VMM backend to start them",
        )
        .with_hint(
            "create the VM without starting it: `start: false` (banger vm create --no-start)",
        ));
    }
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
    if let Some(name) = &req.name
        && d.store.find_vm(name)?.is_some()
    {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("a VM named {name:?} already exists"),
        )
        .with_hint("pick another --name, or delete the old VM with `banger vm delete`"));
    }
    let vm = d.store.create_vm(
        &NewVm {
            name: req.name,
            image_id: image.id,
            vcpus,
            memory_mib,
            disk_bytes,
            work_disk_bytes,
            nat: req.nat.unwrap_or(false),
            vmm: req.vmm.unwrap_or(d.config.vmm),
            state: VmState::Stopped,
        },
        &d.pool,
    )?;
    tracing::info!(vm = %vm.name, id = %vm.id, ip = %vm.network.ip, "VM created");
    Ok(vm)
}

/// `GET /v1/vms/{name}`.
pub fn find(d: &Daemon, name: &str) -> Result<Vm, ApiError> {
    d.store.find_vm(name)?.ok_or_else(|| not_found(name))
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

/// `DELETE /v1/vms/{name}`: the record, its allocations and its directory.
pub fn delete(d: &Daemon, name: &str) -> Result<Vm, ApiError> {
    let vm = find(d, name)?;
    let vm = d.store.delete_vm(&vm.id)?;
    let dir = d.paths.vm_dir(&vm.id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot remove a deleted VM's files")
        }
    }
    tracing::info!(vm = %vm.name, id = %vm.id, "VM deleted");
    Ok(vm)
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no VM named {name:?}")).with_hint("list VMs with `banger vm list`")
}

//! The warm pool: Firecracker VMs of an image restored from a snapshot ahead of need and kept
//! paused, so that `vm create` hands one over (new name, hostname, SSH host key and agent token
//! told to its running guest) instead of booting a VM.
//!
//! Per image (by name) the pool keeps a *template*: a snapshot, hidden from `snapshot list`,
//! of a VM of the image booted once for it and deleted again. *Ready* VMs are restored from
//! the template like `vm create --from-snapshot` (each with its own IP, MAC, tap, vsock, agent
//! token and SSH host key, taking its identity through the agent), then paused. Both are VM
//! records with `pool` set, hidden from `vm list` and from lookups by name, and counted like
//! any VM by admission control and the capacity bars: a paused VM holds its memory.
//!
//! A keeper thread (nice 10) fills the pools one VM at a time and is woken by every take and
//! every `pool set`. Each fill step is a create, start, snapshot or pause of the daemon's
//! own services, and a step that fails discards what it made (the VM is stopped and deleted
//! like `vm delete`, a half-written snapshot directory removed): nothing is left behind, and
//! the image's pool waits [`RETRY`] before trying again, its error shown by `pool list`. A
//! daemon killed mid-fill leaves VM records and processes that the next daemon's reconcile
//! adopts or ends, and whose hidden VMs the keeper then discards (a template VM, or a ready VM
//! that is not paused), and at most a snapshot directory without a record, which the snapshot
//! sweep removes. Paused ready VMs are adopted across daemon restarts.
//!
//! A template is dropped, with its ready VMs, when its image's name now names another image (a
//! rebuilt image), when the default VM spec changed, and when Firecracker's version or the
//! host's CPU differ from those that wrote it. Deleting an image drains its pool first.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use banger_api::{
    ApiError, CreateVmRequest, CreatedVm, ErrorCode, Image, PoolEntry, PoolRole, Snapshot, VmState,
    VmmKind, validate,
};
use banger_store::{PoolSpec, StoreError};

use crate::Daemon;
use crate::machine::backend::Backend;

/// How long an image's pool waits after a failed fill before trying again.
pub const RETRY: Duration = Duration::from_secs(30);
/// How often the keeper looks again without being woken (a ready VM whose VMM died).
const TICK: Duration = Duration::from_secs(5);

/// The daemon's warm pool keeper.
#[derive(Debug, Default)]
pub struct WarmPool {
    state: Mutex<State>,
    wake: Condvar,
    /// One fill step, or drain of an image, at a time.
    work: Mutex<()>,
    keeper: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct State {
    closed: bool,
    woken: bool,
    /// Why the last fill of an image's pool failed, and when to try again.
    failed: BTreeMap<String, (String, Instant)>,
}

impl WarmPool {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) -> MutexGuard<'_, ()> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the keeper (after reconcile, which adopts or ends what the last daemon left).
    /// Called from within the daemon's tokio runtime, which the keeper's operations run on.
    pub fn start(&self, d: &Arc<Daemon>) {
        let d = d.clone();
        let runtime = tokio::runtime::Handle::current();
        let spawned = std::thread::Builder::new()
            .name("warm-pool".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                run(&d);
            });
        match spawned {
            Ok(handle) => *self.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle),
            Err(e) => tracing::error!(error = %e, "cannot start the warm pool's keeper"),
        }
    }

    /// Wakes the keeper: a VM was taken, or a size changed.
    pub fn kick(&self) {
        self.state().woken = true;
        self.wake.notify_all();
    }

    /// Stops the keeper once its current step is over. Ready VMs keep running (paused) for the
    /// next daemon to adopt.
    pub fn stop(&self) {
        self.state().closed = true;
        self.wake.notify_all();
        let keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(keeper) = keeper
            && keeper.join().is_err()
        {
            tracing::error!("the warm pool's keeper panicked");
        }
    }

    fn closed(&self, d: &Daemon) -> bool {
        self.state().closed || *d.shutdown.borrow()
    }
}

fn run(d: &Arc<Daemon>) {
    // Its boots and restores compete with nobody's create.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(error = %e, "cannot lower the warm pool's priority");
    }
    loop {
        if d.warm.closed(d) {
            return;
        }
        let more = fill_once(d);
        let mut state = d.warm.state();
        if !more && !state.woken && !state.closed {
            state = d
                .warm
                .wake
                .wait_timeout(state, TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.woken = false;
    }
}

/// How many ready VMs each image's pool is to keep: `[pool]` in config.toml, overridden by
/// `banger pool set` (stored, 0 included).
pub fn sizes(d: &Daemon) -> Result<BTreeMap<String, u32>, ApiError> {
    let mut sizes = d.config.pool.clone();
    sizes.extend(d.store.pool_sizes()?);
    sizes.retain(|_, size| *size > 0);
    Ok(sizes)
}

/// The spec of every pooled VM: the configured defaults.
pub fn spec(d: &Daemon) -> PoolSpec {
    let defaults = &d.config.defaults;
    PoolSpec {
        vcpus: defaults.vcpus,
        memory_mib: defaults.memory_mib,
        disk_bytes: defaults.disk_bytes,
        work_disk_bytes: defaults.work_disk_bytes,
    }
}

fn spec_of(snapshot: &Snapshot) -> PoolSpec {
    PoolSpec {
        vcpus: snapshot.vcpus,
        memory_mib: snapshot.memory_mib,
        disk_bytes: snapshot.disk_bytes,
        work_disk_bytes: snapshot.work_disk_bytes,
    }
}

/// Refuses the pool on a host whose VMs do not run on Firecracker.
fn check_firecracker(d: &Daemon) -> Result<(), ApiError> {
    if d.config.vmm == VmmKind::Qemu {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            "the warm pool keeps Firecracker VMs, and this daemon creates VMs on QEMU (vmm = \"qemu\")",
        )
        .with_hint("set vmm = \"auto\" or \"firecracker\" in config.toml on a host whose KVM runs Firecracker"));
    }
    match d.machines.backends.for_start(d.config.vmm)? {
        (Backend::Firecracker(_), _) => Ok(()),
        (Backend::Qemu(_), why) => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "the warm pool keeps Firecracker VMs, and this host runs VMs on QEMU{}",
                why.map(|w| format!(" ({w})")).unwrap_or_default()
            ),
        )
        .with_hint("`banger doctor` says why Firecracker cannot run here")),
    }
}

/// `PUT /v1/pool/{image}`.
pub fn set(d: &Daemon, image: &str, size: i64) -> Result<PoolEntry, ApiError> {
    validate::name("image", image)?;
    let size = validate::pool_size(size)?;
    if size > 0 {
        check_firecracker(d)?;
        if d.store.find_image(image)?.is_none() {
            return Err(ApiError::not_found(format!("no image named {image:?}"))
                .with_hint("list images with `banger image list`"));
        }
    }
    d.store.set_pool_size(image, size)?;
    d.warm.state().failed.remove(image);
    d.warm.kick();
    tracing::info!(image, size, "warm pool size set");
    entry(d, image, size)
}

/// `GET /v1/pool`: every image whose pool keeps VMs.
pub fn list(d: &Daemon) -> Result<Vec<PoolEntry>, ApiError> {
    sizes(d)?
        .into_iter()
        .map(|(image, size)| entry(d, &image, size))
        .collect()
}

fn entry(d: &Daemon, image: &str, size: u32) -> Result<PoolEntry, ApiError> {
    let found = d.store.find_image(image)?;
    let spec = spec(d);
    let ready = match &found {
        Some(found) => d
            .store
            .pool_vms()?
            .iter()
            .filter(|vm| is_ready(vm, &found.id, &spec))
            .count() as u32,
        None => 0,
    };
    let template_bytes = d
        .store
        .pool_templates()?
        .into_iter()
        .find(|(name, _)| name == image)
        .map(|(_, s)| s.size_bytes);
    Ok(PoolEntry {
        image: image.to_owned(),
        size,
        ready,
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        disk_bytes: spec.disk_bytes,
        work_disk_bytes: spec.work_disk_bytes,
        template_bytes,
        last_error: d.warm.state().failed.get(image).map(|(e, _)| e.clone()),
    })
}

fn is_ready(vm: &banger_api::Vm, image_id: &str, spec: &PoolSpec) -> bool {
    vm.pool == Some(PoolRole::Ready)
        && vm.state == VmState::Paused
        && vm.image.id == image_id
        && !vm.nat
        && vm.vcpus == spec.vcpus
        && vm.memory_mib == spec.memory_mib
        && vm.disk_bytes == spec.disk_bytes
        && vm.work_disk_bytes == spec.work_disk_bytes
}

/// One pass: drops what is stale, then makes at most one template or ready VM. Returns
/// whether more is to be made at once.
fn fill_once(d: &Arc<Daemon>) -> bool {
    let _work = d.warm.work();
    let wanted = match sizes(d) {
        Ok(sizes) => sizes,
        Err(e) => {
            tracing::warn!(error = %e.message, "cannot read the warm pool's sizes");
            return false;
        }
    };
    let spec = spec(d);
    // Templates still good for their pool.
    let mut templates: BTreeMap<String, Snapshot> = BTreeMap::new();
    for (image, template) in d.store.pool_templates().unwrap_or_default() {
        let current = d.store.find_image(&image).ok().flatten();
        let why = if !wanted.contains_key(&image) {
            Some("its pool is off".to_owned())
        } else if current.as_ref().is_none_or(|i| i.id != template.image.id) {
            Some("its image was deleted or replaced".to_owned())
        } else if spec_of(&template) != spec {
            Some("the default VM spec changed".to_owned())
        } else if templates.contains_key(&image) {
            Some("another template serves the pool".to_owned())
        } else {
            crate::snapshot::check_restorable(d, &template)
                .err()
                .map(|e| e.message)
        };
        match why {
            Some(why) => {
                tracing::info!(image, snapshot = %template.name, why, "dropping a warm pool template");
                drop_template(d, &template);
            }
            None => {
                templates.insert(image, template);
            }
        }
    }
    // Ready VMs of a kept template, paused, up to the pool's size; the rest goes.
    let mut ready: BTreeMap<String, u32> = BTreeMap::new();
    for vm in d.store.pool_vms().unwrap_or_default() {
        let pool = templates
            .iter()
            .find(|(_, t)| t.image.id == vm.image.id)
            .map(|(image, _)| image.clone());
        let keep = match &pool {
            Some(image) if is_ready(&vm, &vm.image.id, &spec) => {
                let have = ready.entry(image.clone()).or_default();
                *have += 1;
                *have <= wanted.get(image).copied().unwrap_or(0)
            }
            _ => false,
        };
        if !keep {
            tracing::info!(vm = %vm.name, state = %vm.state, "discarding a warm pool VM");
            discard(d, &vm);
        }
    }
    if d.warm.closed(d) {
        return false;
    }
    for (image, size) in &wanted {
        if ready.get(image).copied().unwrap_or(0) >= *size {
            continue;
        }
        if let Some((_, retry_at)) = d.warm.state().failed.get(image)
            && Instant::now() < *retry_at
        {
            continue;
        }
        let made = match templates.get(image) {
            Some(template) => make_ready(d, image, template),
            None => make_template(d, image).map(drop),
        };
        match made {
            Ok(()) => {
                d.warm.state().failed.remove(image);
                return true;
            }
            Err(e) => {
                let message = match &e.hint {
                    Some(hint) => format!("{} ({hint})", e.message),
                    None => e.message.clone(),
                };
                tracing::warn!(image, error = %message, "cannot fill a warm pool");
                d.warm
                    .state()
                    .failed
                    .insert(image.clone(), (message, Instant::now() + RETRY));
            }
        }
    }
    false
}

fn pool_name() -> String {
    format!("pool-{:016x}", rand::random::<u64>())
}

/// Boots a VM of `image` and snapshots it as the template of its pool; the VM goes either way.
fn make_template(d: &Arc<Daemon>, image: &str) -> Result<Snapshot, ApiError> {
    check_firecracker(d)?;
    let found = d
        .store
        .find_image(image)?
        .ok_or_else(|| ApiError::not_found(format!("no image named {image:?}")))?;
    let created = crate::vm::create_in(
        d,
        CreateVmRequest {
            name: Some(pool_name()),
            image: Some(found.id.clone()),
            vmm: Some(VmmKind::Firecracker),
            ..CreateVmRequest::default()
        },
        Some(PoolRole::Template),
    )?;
    let made = wait_started(d, &created)
        .and_then(|()| crate::snapshot::create_for_pool(d, &created.vm.id, image));
    if let Ok(Some(vm)) = d.store.find_vm(&created.vm.id) {
        discard(d, &vm);
    }
    let template = made?;
    tracing::info!(image, snapshot = %template.name, bytes = template.size_bytes, "warm pool template made");
    Ok(template)
}

/// Restores a VM from `template` and pauses it, ready to be taken; discarded on failure.
fn make_ready(d: &Arc<Daemon>, image: &str, template: &Snapshot) -> Result<(), ApiError> {
    let created = crate::vm::create_in(
        d,
        CreateVmRequest {
            name: Some(pool_name()),
            from_snapshot: Some(template.id.clone()),
            ..CreateVmRequest::default()
        },
        Some(PoolRole::Ready),
    )?;
    let made = wait_started(d, &created)
        .and_then(|()| crate::machine::pause_or_resume(d, &created.vm.id, true).map(drop));
    if let Err(e) = made {
        if let Ok(Some(vm)) = d.store.find_vm(&created.vm.id) {
            discard(d, &vm);
        }
        return Err(e);
    }
    tracing::info!(image, vm = %created.vm.name, "warm pool VM ready");
    Ok(())
}

/// Waits for the start of a VM the keeper created, within the readiness timeout and a minute.
fn wait_started(d: &Daemon, created: &CreatedVm) -> Result<(), ApiError> {
    let Some(op) = &created.operation else {
        return Err(ApiError::internal(
            "a warm pool VM was created without a start",
        ));
    };
    let limit = d.config.defaults.ready_timeout + Duration::from_secs(60);
    let Some(mut updates) = d.ops.subscribe(&op.id) else {
        return Err(ApiError::internal("a warm pool VM's start disappeared"));
    };
    // Woken by the operation's own updates, not by polling.
    let ended = d.machines.block_on(async {
        tokio::time::timeout(limit, updates.wait_for(|op| op.state.is_finished()))
            .await
            .map(|seen| seen.map(|op| op.clone()))
    });
    let now = match ended {
        Ok(Ok(now)) => now,
        Ok(Err(_)) => return Err(ApiError::internal("a warm pool VM's start disappeared")),
        Err(_) => {
            return Err(ApiError::internal(format!(
                "a warm pool VM's start did not end within {} s",
                limit.as_secs()
            )));
        }
    };
    match now.error {
        None if now.state == banger_api::OperationState::Succeeded => Ok(()),
        Some(e) => Err(e),
        None => Err(ApiError::new(
            ErrorCode::Cancelled,
            "the start was cancelled",
        )),
    }
}

/// Makes room for a user's VM that admission control would refuse: discards one ready VM of
/// the pool (paused, it holds its memory), which the keeper makes again once there is room.
/// Returns whether one went.
pub fn give_way(d: &Daemon) -> bool {
    let _work = d.warm.work();
    let ready = d
        .store
        .pool_vms()
        .unwrap_or_default()
        .into_iter()
        .find(|vm| vm.pool == Some(PoolRole::Ready) && vm.state == VmState::Paused);
    let Some(vm) = ready else {
        return false;
    };
    tracing::info!(vm = %vm.name, "a ready VM of the warm pool gives way to a VM that would not fit");
    discard(d, &vm);
    true
}

/// Runs `admit` (a create's or a start's admission), and again each time a ready VM of the
/// warm pool gives way, while admission control refuses it for want of room.
pub fn admit_giving_way<T>(
    d: &Daemon,
    mut admit: impl FnMut() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    loop {
        match admit() {
            Err(e) if e.code == ErrorCode::OverCapacity && give_way(d) => continue,
            other => return other,
        }
    }
}

/// Ends a hidden VM of the pool at once (no graceful shutdown: nobody's work is in it) and
/// deletes it with its files.
fn discard(d: &Daemon, vm: &banger_api::Vm) {
    if let Err(e) = crate::vm::discard(d, vm) {
        tracing::error!(vm = %vm.name, error = %e.message, "cannot discard a warm pool VM");
    }
}

fn drop_template(d: &Daemon, template: &Snapshot) {
    if let Err(e) = crate::snapshot::delete(d, &template.id) {
        tracing::error!(snapshot = %template.name, error = %e.message, "cannot delete a warm pool template");
    }
}

/// Before image `image` is deleted: its pool's ready VMs and template go (the pool's size
/// stays, for a new image of that name).
pub fn drain_image(d: &Daemon, image: &Image) {
    let _work = d.warm.work();
    for vm in d.store.pool_vms().unwrap_or_default() {
        if vm.image.id == image.id {
            discard(d, &vm);
        }
    }
    for (_, template) in d.store.pool_templates().unwrap_or_default() {
        if template.image.id == image.id {
            drop_template(d, &template);
        }
    }
}

/// `vm create` of a VM the pool can give: a ready VM of the image with the asked spec, no NAT,
/// no published port, on Firecracker and started. `None` when the request or the pool does not
/// allow it (the create then boots a VM as usual).
pub fn take(d: &Arc<Daemon>, req: &CreateVmRequest) -> Result<Option<CreatedVm>, ApiError> {
    if req.from_snapshot.is_some()
        || req.start == Some(false)
        || req.nat == Some(true)
        || !req.publish.is_empty()
        || req.vmm == Some(VmmKind::Qemu)
        || (req.vmm.is_none() && d.config.vmm == VmmKind::Qemu)
    {
        return Ok(None);
    }
    // Invalid values get the cold create's errors.
    let defaults = spec(d);
    let spec = PoolSpec {
        vcpus: match req.vcpus.map(validate::vcpus) {
            Some(Ok(v)) => v,
            Some(Err(_)) => return Ok(None),
            None => defaults.vcpus,
        },
        memory_mib: match req.memory_mib.map(validate::memory_mib) {
            Some(Ok(m)) => m,
            Some(Err(_)) => return Ok(None),
            None => defaults.memory_mib,
        },
        disk_bytes: match req.disk_bytes {
            Some(b) => match validate::disk_bytes("disk", b, validate::MIN_DISK_BYTES) {
                Ok(b) => b,
                Err(_) => return Ok(None),
            },
            None => defaults.disk_bytes,
        },
        work_disk_bytes: match req.work_disk_bytes {
            Some(b) => match validate::disk_bytes("work disk", b, validate::MIN_WORK_DISK_BYTES) {
                Ok(b) => b,
                Err(_) => return Ok(None),
            },
            None => defaults.work_disk_bytes,
        },
    };
    if let Some(name) = &req.name {
        validate::name("VM", name)?;
    }
    let image_name = req.image.as_deref().unwrap_or(&d.config.default_image);
    let Some(image) = d.store.find_image(image_name)? else {
        return Ok(None);
    };
    // Ports the image publishes by default are opened by a start; a pooled VM had its start.
    if !crate::ports::image_defaults(d, &image, &[])?.is_empty() {
        return Ok(None);
    }
    let vm = match d
        .store
        .take_pooled_vm(&image.id, &spec, req.name.as_deref())
    {
        Ok(Some(vm)) => vm,
        Ok(None) => return Ok(None),
        Err(StoreError::AlreadyExists { name, .. }) => {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("a VM named {name:?} already exists"),
            )
            .with_hint("pick another --name, or delete the old VM with `banger vm delete`"));
        }
        Err(e) => return Err(e.into()),
    };
    d.warm.kick();
    tracing::info!(vm = %vm.name, id = %vm.id, image = %image.name, "VM taken from the warm pool");
    let operation = crate::machine::spawn_take(d, vm.clone(), &image);
    Ok(Some(CreatedVm {
        vm: crate::vm::find(d, &vm.id)?,
        operation: Some(operation),
    }))
}

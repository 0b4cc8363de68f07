//! Starting a VM: the request and its admission, the start operation (preflight, network,
//! VMM, each released newest first when a later step fails), a start that waits for files
//! still being made, and the take of a ready VM from the warm pool.

use std::sync::Arc;
use std::time::Duration;

use banger_api::{
    ApiError, ErrorCode, Image, Operation, OperationKind, Timestamp, Vm, VmRuntime, VmState,
};
use banger_host::network::{self, VmNet};
use banger_store::Demand;
use banger_vmm::{InstanceState, VmHandle};

use super::backend::Backend;
use super::ready::wait_until_ready;
use super::spec::{preflight, vm_spec};
use super::supervise::supervise;
use super::{IDENTITY_STAGE, START_STAGES, handle_of, vmm_error};
use super::{console, disks};
use crate::Daemon;
use crate::admission::Ask;
use crate::operation::OperationContext;

/// `POST /v1/vms/{name}/start`: checks the VM may start and starts the operation.
pub fn request_start(d: &Arc<Daemon>, name: &str) -> Result<Operation, ApiError> {
    let vm = crate::vm::find(d, name)?;
    if !vm.state.holds_resources() {
        d.admission
            .check_fits_idle(Some(&vm.name), vm.vcpus, vm.memory_mib, Ask::Start)?;
    }
    crate::warm::admit_giving_way(d, || {
        admit_start(
            d,
            &vm.id,
            &[VmState::Stopped, VmState::Failed],
            "only a stopped or failed VM can be started",
            start_hint(vm.state),
        )
    })?;
    Ok(spawn_start(d, vm, OperationKind::StartVm))
}

/// Moves VM `id` from one of `from` to `starting` once admission control lets it hold its
/// vCPUs and memory next to the other VMs', in one store transaction.
pub(super) fn admit_start(
    d: &Daemon,
    id: &str,
    from: &[VmState],
    action: &str,
    hint: Option<&str>,
) -> Result<Vm, ApiError> {
    let admit = |demand: &Demand<'_>, reserved| d.admission.check(Ask::Start, demand, reserved);
    // Under the claims' lock: a VM whose files are being changed does not start meanwhile.
    let claims = d
        .machines
        .claims
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(what) = claims.get(id) {
        let vm = crate::vm::find(d, id)?;
        return Err(claimed(&vm.name, what));
    }
    Ok(d.store
        .transition_vm_admitted(id, from, VmState::Starting, action, hint, Some(&admit))?)
}

/// The refusal of a request on a VM that another request holds.
pub(super) fn claimed(name: &str, what: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidState, format!("VM {name:?} is {what}")).with_hint(format!(
        "try again when that is over (`banger vm show {name}`)"
    ))
}

fn start_hint(state: VmState) -> Option<&'static str> {
    match state {
        VmState::Running | VmState::Paused => {
            Some("it is already up; `banger vm restart` restarts it")
        }
        VmState::Starting | VmState::Stopping => {
            Some("wait for the operation in progress (`banger vm show NAME`)")
        }
        _ => None,
    }
}

/// The stages of `vm`'s start: the fixed ones, then one per service its image declares (the
/// guest agent first when it has one).
pub fn start_stages(d: &Daemon, vm: &Vm) -> Vec<String> {
    let mut stages: Vec<String> = START_STAGES.iter().map(|s| (*s).to_owned()).collect();
    // A start that restores a snapshot tells the guest its identity before it counts as
    // started.
    if crate::snapshot::pending_restore(&d.paths.vm_dir(&vm.id)).is_some() {
        stages.insert(3, IDENTITY_STAGE.to_owned());
    }
    if let Ok(Some(image)) = d.store.find_image(&vm.image.id) {
        stages.extend(image.manifest.services.iter().map(|s| s.name.clone()));
    }
    stages
}

/// Starts the start operation of `vm`, which the caller moved to `starting`.
pub fn spawn_start(d: &Arc<Daemon>, vm: Vm, kind: OperationKind) -> Operation {
    spawn_start_pending(d, vm, kind, None)
}

/// [`spawn_start`] for a VM whose files `pending` are still being made.
pub fn spawn_start_pending(
    d: &Arc<Daemon>,
    vm: Vm,
    kind: OperationKind,
    pending: Option<PendingFiles>,
) -> Operation {
    let stages = start_stages(d, &vm);
    let stages: Vec<&str> = stages.iter().map(String::as_str).collect();
    let d2 = d.clone();
    d.ops.spawn(kind, &vm.name.clone(), &stages, move |cx| {
        let vm = start_vm_pending(&d2, cx, &vm, pending)?;
        serde_json::to_value(&vm).map_err(|e| ApiError::internal(e.to_string()))
    })
}

/// The files (disks, config drive) a `vm create` is still making for the VM its start
/// operation starts: the start runs its checks meanwhile and waits for them at the end of its
/// `checks` stage. Made with [`pending_files`].
#[derive(Debug)]
pub struct PendingFiles {
    made: std::sync::mpsc::Receiver<Result<(), String>>,
}

/// The create's side of [`PendingFiles`]: says whether the files were made. Dropped unsent,
/// it fails the start.
#[derive(Debug)]
pub struct FilesMade(std::sync::mpsc::SyncSender<Result<(), String>>);

impl FilesMade {
    pub fn send(self, outcome: Result<(), String>) {
        // A start that already failed no longer listens.
        let _ = self.0.send(outcome);
    }
}

/// A pair for files being made.
pub fn pending_files() -> (FilesMade, PendingFiles) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    (FilesMade(tx), PendingFiles { made: rx })
}

/// Why a start did not end with a ready VM.
enum StartError {
    /// It was rolled back: nothing of it remains.
    Failed(ApiError),
    /// The VM runs, but did not become ready (or banger stopped waiting): it is left running
    /// for the user to look at.
    NotReady(ApiError),
}

impl From<ApiError> for StartError {
    fn from(e: ApiError) -> Self {
        StartError::Failed(e)
    }
}

/// Starts `vm` (in state `starting`). On failure the VM is back to `stopped` with the error
/// recorded, and nothing it acquired is left.
pub fn start_vm(d: &Arc<Daemon>, cx: &OperationContext, vm: &Vm) -> Result<Vm, ApiError> {
    start_vm_pending(d, cx, vm, None)
}

/// [`start_vm`] for a VM whose files `pending` are still being made.
fn start_vm_pending(
    d: &Arc<Daemon>,
    cx: &OperationContext,
    vm: &Vm,
    pending: Option<PendingFiles>,
) -> Result<Vm, ApiError> {
    let started = try_start(d, cx, vm, pending);
    // A spare claimed for this VM that its launch did not take (it failed before, or the VM
    // runs on QEMU) is ended.
    d.spare.forget(&vm.id);
    match started {
        Ok(vm) => Ok(vm),
        Err(StartError::NotReady(e)) => {
            tracing::warn!(vm = %vm.name, error = %e.message, "VM started but is not ready");
            Err(e)
        }
        Err(StartError::Failed(e)) => {
            let reason = match &e.hint {
                Some(hint) => format!("{} ({hint})", e.message),
                None => e.message.clone(),
            };
            if let Err(store) =
                d.store
                    .set_vm_run_state(&vm.id, VmState::Stopped, None, Some(&reason))
            {
                tracing::error!(vm = %vm.name, error = %store, "cannot record a failed start");
            }
            tracing::warn!(vm = %vm.name, error = %reason, "VM start failed");
            Err(e)
        }
    }
}

fn try_start(
    d: &Arc<Daemon>,
    cx: &OperationContext,
    vm: &Vm,
    pending: Option<PendingFiles>,
) -> Result<Vm, StartError> {
    let launched = launch(d, cx, vm, pending);
    if launched.is_err() {
        // Its published ports, when the launch got as far as opening them.
        d.machines.forwards.close(&vm.id);
    }
    let (running, image, backend, runtime) = launched?;
    wait_until_ready(d, cx, &running, &image, &backend, runtime).map_err(StartError::NotReady)
}

/// The start up to a running instance, recorded and supervised; rolled back on failure.
fn launch(
    d: &Arc<Daemon>,
    cx: &OperationContext,
    vm: &Vm,
    pending: Option<PendingFiles>,
) -> Result<(Vm, Image, Backend, VmRuntime), ApiError> {
    let m = &d.machines;
    cx.begin("checks");
    let (backend, note) = m.backends.for_start(vm.vmm)?;
    if m.preflight {
        preflight(d, vm)?;
    }
    let image = d.store.find_image(&vm.image.id)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidState,
            format!("VM {}'s image {} no longer exists", vm.name, vm.image.name),
        )
    })?;
    // The files a create made meanwhile (the checks above ran beside them).
    if let Some(files) = pending {
        let made = files
            .made
            .recv()
            .unwrap_or_else(|_| Err("the create ended before making them".into()));
        if let Err(why) = made {
            return Err(ApiError::internal(format!(
                "VM {}'s files were not made: {why}",
                vm.name
            )));
        }
    }
    let spec = vm_spec(d, vm, &image)?;
    cx.done("checks", note);
    cx.check_cancelled()?;

    cx.begin("network");
    let net = VmNet::new(
        &vm.id,
        vm.network.ip.parse().map_err(|_| {
            ApiError::internal(format!(
                "VM {} has an invalid IP {:?}",
                vm.name, vm.network.ip
            ))
        })?,
        vm.nat,
    );
    // Before the tap: a host port that cannot be bound fails the start while nothing else
    // is acquired. `try_start` closes them if a later step fails.
    crate::ports::open_for_start(d, vm)?;
    std::fs::create_dir_all(d.paths.vm_sockets_dir()).map_err(|e| {
        ApiError::internal(format!(
            "cannot create {}: {e}",
            d.paths.vm_sockets_dir().display()
        ))
    })?;
    let undo_network = |e: ApiError| -> ApiError {
        if let Err(cleanup) = m.teardown_network(vm, &net.tap) {
            return ApiError::new(
                e.code,
                format!(
                    "{}; cleaning up also failed: {}",
                    e.message, cleanup.message
                ),
            );
        }
        e
    };
    // The tap is made while the VMM process starts up (Firecracker takes a few milliseconds
    // to open its API); the VMM is configured once both are ready.
    let mut network_up = false;
    let mut network_error = None;
    console::rotate(&d.paths.vm_dir(&vm.id));
    let restore = crate::snapshot::pending_restore(&d.paths.vm_dir(&vm.id));
    let mut beside = || {
        let setup = {
            let _guard = m.net_guard();
            // A restored guest keeps the snapshot's MAC and address until it is told its own:
            // its tap joins the bridge only then.
            if restore.is_some() {
                network::setup_vm_network_isolated(&*m.runner, &*m.links, &m.net, &net)
            } else {
                network::setup_vm_network(&*m.runner, &*m.links, &m.net, &net)
            }
        };
        if let Err(e) = setup {
            let error = ApiError::new(
                ErrorCode::Internal,
                format!(
                    "cannot put VM {} on the network: {}",
                    vm.name,
                    banger_vmm::error_chain(&e)
                ),
            )
            .with_hint("`banger doctor` checks the bridge, taps, nftables and sudo");
            let message = error.message.clone();
            network_error = Some(error);
            return Err(message);
        }
        network_up = true;
        // The bridge is up now: its names with it (at once when already served).
        d.dns.bridge_up(d);
        if let Err(e) = cx.check_cancelled() {
            let message = e.message.clone();
            network_error = Some(e);
            return Err(message);
        }
        cx.begin("vmm");
        Ok(())
    };
    let launched = match (&backend, &restore) {
        (Backend::Firecracker(fc), Some(files)) => {
            let restored = fc.restore(
                &spec,
                &banger_vmm::firecracker::restore::SnapshotSource {
                    state: files.state.clone(),
                    memory: files.memory.clone(),
                },
                &mut beside,
            );
            // Used once: later starts boot. A running guest keeps its memory mapped.
            match &restored {
                Ok(_) => files.consume(),
                Err(_) => files.finish(),
            }
            restored
        }
        // A Firecracker started ahead of need saves this start the few milliseconds of
        // starting one.
        (Backend::Firecracker(fc), None) => {
            fc.launch_with_spare(&spec, d.spare.take(&vm.id), &mut beside)
        }
        (Backend::Qemu(_), _) => backend.vmm().launch_beside(&spec, &mut beside),
    };
    let handle = match launched {
        Ok(handle) => handle,
        Err(e) => {
            let error = network_error.unwrap_or_else(|| {
                let mut error = vmm_error("start", vm, &e);
                error.hint = Some(format!(
                    "the VMM's own log is {}, the guest console {}",
                    spec.paths.vmm_log.display(),
                    spec.paths.console_log.display()
                ));
                error
            });
            return Err(if network_up {
                undo_network(error)
            } else {
                error
            });
        }
    };
    let runtime = VmRuntime {
        vmm: backend.kind(),
        pid: handle.pid,
        api_socket: handle.api_socket.display().to_string(),
        vsock_socket: handle
            .vsock_socket
            .as_ref()
            .map(|p| p.display().to_string()),
        tap: net.tap.clone(),
        started_at: Timestamp::now(),
        boot: Vec::new(),
        jail: match &backend {
            Backend::Firecracker(fc) => jail_of(fc, &handle),
            Backend::Qemu(_) => None,
        },
        qemu: match &backend {
            Backend::Firecracker(_) => None,
            Backend::Qemu(qemu) => {
                let cgroup = qemu.cgroup_of(&handle.vm_id);
                Some(Box::new(banger_api::VmQemuConfinement {
                    uid: qemu.uid_of(handle.pid),
                    sandbox: qemu.confinement().sandbox,
                    cgroup: cgroup.as_ref().map(|(dir, _, _)| dir.display().to_string()),
                    memory_max: cgroup.as_ref().map(|(_, memory, _)| *memory),
                    cpu_max: cgroup.map(|(_, _, cpu)| cpu),
                }))
            }
        },
    };
    let release_all = |e: ApiError| -> ApiError {
        if let Err(stop) = backend.vmm().stop(&handle, Duration::ZERO) {
            tracing::error!(vm = %vm.name, error = %banger_vmm::error_chain(&stop), "cannot stop a VMM during rollback");
        }
        undo_network(e)
    };
    if let Err(e) = d
        .store
        .set_vm_run_state(&vm.id, VmState::Starting, Some(&runtime), None)
    {
        return Err(release_all(e.into()));
    }
    cx.done(
        "vmm",
        Some(format!("{} pid {}", backend.kind(), handle.pid)),
    );
    if let Err(e) = cx.check_cancelled() {
        return Err(release_all(e));
    }

    if let (Some(files), Some(vsock)) = (&restore, &handle.vsock_socket) {
        cx.begin(IDENTITY_STAGE);
        let deadline = std::time::Instant::now() + d.config.defaults.ready_timeout;
        let applied = crate::snapshot::apply_identity(d, vm, vsock, files, deadline);
        files.finish();
        let summary = match applied {
            Ok(summary) => summary,
            Err(e) => return Err(release_all(e)),
        };
        let attached = {
            let _guard = m.net_guard();
            network::attach_vm_tap(&*m.runner, &*m.links, &m.net, &net)
        };
        if let Err(e) = attached {
            return Err(release_all(ApiError::internal(format!(
                "cannot put VM {} on the network: {}",
                vm.name,
                banger_vmm::error_chain(&e)
            ))));
        }
        cx.done(IDENTITY_STAGE, Some(summary));
    }

    cx.begin("started");
    match backend.vmm().state(&handle) {
        Ok(InstanceState::Running) => {}
        Ok(state) => {
            return Err(release_all(ApiError::internal(format!(
                "VM {}'s VMM reports the instance {state} right after starting it",
                vm.name
            ))));
        }
        Err(e) => return Err(release_all(vmm_error("start", vm, &e))),
    }
    if let Err(e) = d
        .store
        .set_vm_run_state(&vm.id, VmState::Running, Some(&runtime), None)
    {
        return Err(release_all(e.into()));
    }
    supervise(
        d,
        &vm.id,
        handle.pid,
        backend.kind(),
        handle.api_socket.clone(),
    );
    tracing::info!(vm = %vm.name, pid = handle.pid, vmm = %backend.kind(), "VM started");
    Ok((crate::vm::find(d, &vm.id)?, image, backend, runtime))
}

/// What `vm show` says of a jailed VM's VMM.
fn jail_of(fc: &banger_vmm::Firecracker, handle: &VmHandle) -> Option<Box<banger_api::VmJail>> {
    let record = fc.jail_record(handle)?;
    let chroot = handle.api_socket.parent()?.display().to_string();
    Some(Box::new(banger_api::VmJail {
        uid: record.uid,
        gid: record.gid,
        chroot,
        cgroup: record.cgroup.as_ref().map(|c| c.path.display().to_string()),
        memory_max: record.cgroup.as_ref().map(|c| c.memory_max),
        cpu_max: record.cgroup.as_ref().map(|c| c.cpu_max.clone()),
    }))
}

/// The first stage of a create that took a ready VM from the warm pool.
pub const POOL_STAGE: &str = "pool";

/// Starts the operation that makes `vm`, just taken from the warm pool (state `starting`,
/// paused, renamed), the user's VM: a new identity on its config drive, told to the resumed
/// guest through its agent, then the image's readiness stages.
pub fn spawn_take(d: &Arc<Daemon>, vm: Vm, image: &Image) -> Operation {
    let mut stages = vec![
        POOL_STAGE.to_owned(),
        IDENTITY_STAGE.to_owned(),
        "started".to_owned(),
    ];
    stages.extend(image.manifest.services.iter().map(|s| s.name.clone()));
    let stages: Vec<&str> = stages.iter().map(String::as_str).collect();
    let d2 = d.clone();
    let image = image.clone();
    d.ops.spawn(
        OperationKind::StartVm,
        &vm.name.clone(),
        &stages,
        move |cx| {
            let vm = take_vm(&d2, cx, &vm, &image)?;
            serde_json::to_value(&vm).map_err(|e| ApiError::internal(e.to_string()))
        },
    )
}

/// [`spawn_take`]'s work. A failure before the guest is ready ends its VMM, takes it off the
/// network and records it stopped with the error (its next start boots it, as itself); a
/// guest that runs but does not become ready is left running, as after any start.
fn take_vm(d: &Arc<Daemon>, cx: &OperationContext, vm: &Vm, image: &Image) -> Result<Vm, ApiError> {
    let runtime = vm
        .runtime
        .clone()
        .ok_or_else(|| ApiError::internal(format!("pooled VM {} has no VMM", vm.name)))?;
    let backend = d.machines.backends.for_running(runtime.vmm)?;
    let handle = handle_of(vm, &runtime);
    let dir = d.paths.vm_dir(&vm.id);
    // The guest answers to its current token until it is told the new one.
    let files = crate::snapshot::RestoreFiles::in_dir(&dir);
    let release = |e: ApiError| -> ApiError {
        files.finish();
        if let Err(stop) = backend.vmm().stop(&handle, Duration::ZERO) {
            tracing::error!(vm = %vm.name, error = %banger_vmm::error_chain(&stop), "cannot stop a VMM during rollback");
        }
        let e = match d.machines.teardown_network(vm, &runtime.tap) {
            Ok(()) => e,
            Err(cleanup) => ApiError::new(
                e.code,
                format!(
                    "{}; cleaning up also failed: {}",
                    e.message, cleanup.message
                ),
            ),
        };
        let reason = match &e.hint {
            Some(hint) => format!("{} ({hint})", e.message),
            None => e.message.clone(),
        };
        if let Err(store) = d
            .store
            .set_vm_run_state(&vm.id, VmState::Stopped, None, Some(&reason))
        {
            tracing::error!(vm = %vm.name, error = %store, "cannot record a failed take");
        }
        tracing::warn!(vm = %vm.name, error = %reason, "taking a VM from the warm pool failed");
        e
    };
    cx.begin(POOL_STAGE);
    let renewed = (|| {
        std::fs::copy(dir.join(disks::AGENT_TOKEN), &files.token).map_err(|e| {
            ApiError::internal(format!("cannot keep VM {}'s agent token: {e}", vm.name))
        })?;
        let key = disks::banger_public_key(d.config.ssh_key.as_deref(), &d.paths.state_dir)?;
        let resolver = d
            .dns
            .guest_resolver(d.machines.net.host_address, disks::host_dns);
        disks::renew_identity(vm, &dir, &key, &resolver)?;
        backend
            .vmm()
            .resume(&handle)
            .map_err(|e| vmm_error("resume", vm, &e))
    })();
    if let Err(e) = renewed {
        return Err(release(e));
    }
    cx.done(
        POOL_STAGE,
        Some(format!("a ready VM of {} from the warm pool", image.name)),
    );
    cx.begin(IDENTITY_STAGE);
    let Some(vsock) = &handle.vsock_socket else {
        return Err(release(ApiError::internal(format!(
            "pooled VM {} has no vsock socket",
            vm.name
        ))));
    };
    let deadline = std::time::Instant::now() + d.config.defaults.ready_timeout;
    let summary = match crate::snapshot::apply_identity(d, vm, vsock, &files, deadline) {
        Ok(summary) => summary,
        Err(e) => return Err(release(e)),
    };
    files.finish();
    cx.done(IDENTITY_STAGE, Some(summary));
    cx.begin("started");
    let mut runtime = runtime.clone();
    runtime.started_at = Timestamp::now();
    if let Err(e) = d
        .store
        .set_vm_run_state(&vm.id, VmState::Running, Some(&runtime), None)
    {
        return Err(release(e.into()));
    }
    tracing::info!(vm = %vm.name, pid = handle.pid, "VM from the warm pool started");
    let vm = crate::vm::find(d, &vm.id)?;
    wait_until_ready(d, cx, &vm, image, &backend, runtime)
}

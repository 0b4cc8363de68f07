//! Running VMs: start, stop, restart, pause and resume, the supervision that notices a VMM
//! exiting on its own, and the reconcile a starting daemon does with what the last one left
//! running. Starting a VM acquires, in order, its place on the network (tap, NAT rules) and its
//! VMM process; each step that fails releases what the earlier ones acquired, newest first, and
//! the VM is left stopped with the reason recorded. Stopping, a VMM's own exit and reconcile
//! release through the same two paths: [`banger_vmm::Vmm::stop`] for the process and its
//! sockets, [`banger_host::network::teardown_vm_network`] for the tap and rules.
//!
//! Who may change a VM is decided by its recorded state, moved in one store transaction
//! ([`banger_store::Store::transition_vm`]): only one request can take a stopped VM to
//! `starting` or a running one to `stopping`, so a start never races a stop. The move to
//! `starting` is also where admission control decides, in the same transaction
//! ([`admit_start`]), so two starts cannot both take the last room.

pub mod backend;
pub mod console;
pub mod disks;
pub mod guest;
pub mod pool;
pub mod reconcile;
pub mod spare;
pub mod sshkey;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_api::{
    ApiError, ErrorCode, Image, Operation, OperationKind, Timestamp, Vm, VmRuntime, VmState,
};
use banger_host::network::{self, IpLinks, Links, NetConfig, NetlinkLinks, VmNet};
use banger_host::{CommandRunner, Doctor, Preflight};
use banger_store::Demand;
use banger_vmm::{DriveSpec, InstanceState, NetSpec, VmHandle, VmPaths, VmSpec, VsockSpec};

use crate::Daemon;
use crate::admission::Ask;
use crate::operation::OperationContext;
use backend::{Backend, Backends};

/// The stages of a start, in order.
pub const START_STAGES: &[&str] = &["checks", "network", "vmm", "started"];
/// The stage of a start that restores a snapshot, after `vmm`: the guest is told its identity.
pub const IDENTITY_STAGE: &str = "identity";
/// The stages of a stop, in order.
pub const STOP_STAGES: &[&str] = &["vmm", "network"];
/// The stage a restart stops the VM in, before the start stages.
pub const RESTART_STOP_STAGE: &str = "stop";

/// How many console lines a failed VM's error carries.
const CONSOLE_LINES: usize = 10;

/// What the daemon needs from the host to run VMs; tests swap in fakes.
#[derive(Debug, Clone)]
pub struct HostDeps {
    pub runner: Arc<dyn CommandRunner>,
    /// A prepared Firecracker backend (tests: one on a fake host); `None` detects the binary.
    pub firecracker: Option<banger_vmm::Firecracker>,
    /// The same for QEMU.
    pub qemu: Option<banger_vmm::Qemu>,
    /// Run the doctor's checks before starting a VM (off for tests on fakes).
    pub preflight: bool,
    /// Overrides how privileged network commands are run (default: detected).
    pub privilege: Option<network::Privilege>,
    /// Overrides the host's CPU count and memory (default: read from /proc), which the
    /// per-VM caps and admission control's limits follow.
    pub host: Option<crate::host::HostFacts>,
}

impl HostDeps {
    /// The real host.
    pub fn real() -> HostDeps {
        HostDeps {
            runner: Arc::new(banger_host::RealRunner),
            firecracker: None,
            qemu: None,
            preflight: true,
            privilege: None,
            host: None,
        }
    }
}

/// The VM runtime service's state, one per daemon.
#[derive(Debug)]
pub struct Machines {
    pub runner: Arc<dyn CommandRunner>,
    /// How VMs' taps are made and links listed: in-process (netlink) when the daemon is root
    /// and its runner the real one, `ip` commands through the runner otherwise.
    pub links: Arc<dyn Links>,
    pub net: NetConfig,
    pub backends: Backends,
    /// The listeners of running VMs' published ports.
    pub forwards: crate::ports::Forwards,
    preflight: bool,
    /// Network setups and teardowns share the bridge, the nftables table and `ip_forward`:
    /// one at a time.
    net_lock: Mutex<()>,
    /// Stopped VMs whose files a request is changing (a reset), with what it does: a start
    /// of one is refused until the change is over (see [`Machines::claim_stopped`]).
    claims: Mutex<std::collections::HashMap<String, &'static str>>,
    runtime: tokio::runtime::Handle,
}

/// A stopped VM held for a change of its files; released when dropped.
pub struct Claim<'a> {
    machines: &'a Machines,
    id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.machines
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Machines {
    pub fn new(
        deps: HostDeps,
        net: NetConfig,
        firecracker_bin: Option<PathBuf>,
        qemu_bin: Option<PathBuf>,
        runtime: tokio::runtime::Handle,
    ) -> Machines {
        let mut net = net;
        if let Some(privilege) = deps.privilege {
            net.privilege = privilege;
        }
        let links: Arc<dyn Links> = if net.privilege.manages_network() && deps.runner.is_real() {
            Arc::new(NetlinkLinks)
        } else {
            Arc::new(IpLinks)
        };
        tracing::debug!(?links, privilege = ?net.privilege, "how taps are made");
        Machines {
            backends: Backends::new(
                deps.runner.clone(),
                firecracker_bin,
                qemu_bin,
                deps.firecracker,
                deps.qemu,
            ),
            runner: deps.runner,
            links,
            net,
            forwards: crate::ports::Forwards::new(runtime.clone()),
            preflight: deps.preflight,
            net_lock: Mutex::new(()),
            claims: Mutex::new(std::collections::HashMap::new()),
            runtime,
        }
    }

    /// Holds VM `name` while it is `what` (e.g. "being reset"), if it is stopped or failed and
    /// nothing else holds it (`action` completes the refusal of a VM that runs: "only a
    /// stopped VM's root can be reset"): found, checked and claimed under the lock that
    /// [`admit_start`] takes, so a start either comes first (and the VM is no longer stopped)
    /// or is refused until the claim is dropped.
    pub fn claim_stopped(
        &self,
        d: &Daemon,
        name: &str,
        what: &'static str,
        action: &str,
    ) -> Result<(Vm, Claim<'_>), ApiError> {
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let vm = crate::vm::find(d, name)?;
        if let Some(other) = claims.get(&vm.id) {
            return Err(claimed(&vm.name, other));
        }
        if !matches!(vm.state, VmState::Stopped | VmState::Failed) {
            let hint = match vm.state {
                VmState::Starting | VmState::Stopping => format!(
                    "wait for the operation in progress (`banger vm show {}`), then stop it",
                    vm.name
                ),
                _ => format!("stop it first: `banger vm stop {}`", vm.name),
            };
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("VM {:?} is {}; {action}", vm.name, vm.state),
            )
            .with_hint(hint));
        }
        claims.insert(vm.id.clone(), what);
        let id = vm.id.clone();
        Ok((vm, Claim { machines: self, id }))
    }

    /// Runs `future` to completion from a blocking thread (operations run on those).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn net_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.net_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `vm` off the network: its tap and NAT rules.
    fn teardown_network(&self, vm: &Vm, tap: &str) -> Result<(), ApiError> {
        let _guard = self.net_guard();
        network::teardown_vm_network(
            &*self.runner,
            &*self.links,
            &self.net,
            &vm_net(vm, tap),
            &[],
        )
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot take VM {} off the network: {}",
                vm.name,
                banger_vmm::error_chain(&e)
            ))
        })
    }
}

fn vm_net(vm: &Vm, tap: &str) -> VmNet {
    VmNet {
        id: vm.id.clone(),
        tap: tap.to_owned(),
        // Validated when the VM was created.
        ip: vm
            .network
            .ip
            .parse()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        nat: vm.nat,
    }
}

pub(crate) fn handle_of(vm: &Vm, runtime: &VmRuntime) -> VmHandle {
    VmHandle {
        vm_id: vm.id.clone(),
        pid: runtime.pid,
        api_socket: PathBuf::from(&runtime.api_socket),
        vsock_socket: runtime.vsock_socket.as_ref().map(PathBuf::from),
    }
}

pub(crate) fn vmm_error(what: &str, vm: &Vm, e: &banger_vmm::VmmError) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!(
            "cannot {what} VM {}: {}",
            vm.name,
            banger_vmm::error_chain(e)
        ),
    )
}

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
fn admit_start(
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
fn claimed(name: &str, what: &str) -> ApiError {
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

/// Waits for the guest agent and the image's services (the stages after `started`), then
/// records the start's stage timings with the VM. A VM that does not become ready is left
/// running, with the diagnosis as its `last_error`.
fn wait_until_ready(
    d: &Arc<Daemon>,
    cx: &OperationContext,
    vm: &Vm,
    image: &Image,
    backend: &Backend,
    mut runtime: VmRuntime,
) -> Result<Vm, ApiError> {
    let checks = &image.manifest.services;
    if checks.is_empty() {
        cx.done(
            "started",
            Some("instance started; the image declares no services to wait for".into()),
        );
    } else {
        cx.done("started", None);
    }
    let api_socket = PathBuf::from(&runtime.api_socket);
    let waited = guest::wait_ready(
        d,
        vm,
        checks,
        std::time::Instant::now(),
        d.config.defaults.ready_timeout,
        |stage| cx.begin(stage),
        || cx.cancelled(),
        || backend.owns(runtime.pid, &api_socket),
    );
    if let Err(error) = waited {
        let error = not_ready(d, vm, &runtime, backend, error);
        if let Ok(Some(now)) = d.store.find_vm(&vm.id)
            && now.state == VmState::Running
            && let Err(e) = d.store.set_vm_run_state(
                &vm.id,
                VmState::Running,
                Some(&runtime),
                Some(&error.message),
            )
        {
            tracing::error!(vm = %vm.name, error = %e, "cannot record why a VM is not ready");
        }
        return Err(error);
    }
    if let Some(last) = checks.last() {
        cx.done(&last.name, None);
    }
    runtime.boot = cx
        .snapshot()
        .stages
        .iter()
        .filter_map(|stage| {
            let (start, end) = (stage.started_at?, stage.ended_at?);
            Some(banger_api::BootTiming {
                stage: stage.name.clone(),
                ms: start.until(end).as_millis() as u64,
            })
        })
        .collect();
    d.store
        .set_vm_run_state(&vm.id, VmState::Running, Some(&runtime), None)?;
    crate::vm::find(d, &vm.id)
}

/// The error of a start whose VM runs but is not ready, with what banger can see of it.
fn not_ready(
    d: &Daemon,
    vm: &Vm,
    runtime: &VmRuntime,
    backend: &Backend,
    error: guest::ReadyError,
) -> ApiError {
    let (headline, seen) = match error {
        guest::ReadyError::Setup(e) => return e,
        guest::ReadyError::Cancelled => {
            return ApiError::new(
                ErrorCode::Cancelled,
                format!(
                    "stopped waiting for VM {} to become ready; it keeps running",
                    vm.name
                ),
            )
            .with_hint(format!("stop it with `banger vm stop {}`", vm.name));
        }
        guest::ReadyError::Died { check, seen } => (
            format!(
                "VM {}'s VMM exited while banger waited for {} (port {})",
                vm.name, check.name, check.port
            ),
            seen,
        ),
        guest::ReadyError::Timeout {
            check,
            seen,
            waited,
        } if check.name != guest::AGENT_SERVICE && check.name != guest::SSH_SERVICE => {
            let mut headline = format!(
                "VM {} did not become ready within {}: service {} (port {}) never answered",
                vm.name,
                humantime::format_duration(waited),
                check.name,
                check.port
            );
            let log = format!(
                "/{}",
                banger_image::bootstrap::guest::service_log(&check.name)
            );
            let tail = guest::agent(d, vm)
                .map_err(|e| format!("the guest agent cannot be reached to show {log}: {e}"))
                .and_then(|agent| {
                    d.machines
                        .block_on(guest::service_log_tail(&agent, &check.name))
                });
            match tail {
                Ok(lines) if lines.is_empty() => {
                    headline.push_str(&format!("\nservice {}'s log {log} is empty", check.name));
                }
                Ok(lines) => {
                    headline.push_str(&format!(
                        "\nlast lines of service {}'s log {log}:",
                        check.name
                    ));
                    for line in lines {
                        headline.push_str(&format!("\n    {line}"));
                    }
                }
                Err(why) => headline.push_str(&format!("\n{why}")),
            }
            (headline, seen)
        }
        guest::ReadyError::Timeout {
            check,
            seen,
            waited,
        } => (
            format!(
                "VM {} did not become ready within {}: {} (port {}) never answered",
                vm.name,
                humantime::format_duration(waited),
                check.name,
                check.port
            ),
            seen,
        ),
    };
    let dir = d.paths.vm_dir(&vm.id);
    let api_socket = PathBuf::from(&runtime.api_socket);
    let mut lines = vec![
        headline,
        format!("last attempt: {seen}"),
        format!(
            "VMM: {} pid {} {}",
            runtime.vmm,
            runtime.pid,
            if backend.owns(runtime.pid, &api_socket) {
                "running"
            } else {
                "not running"
            }
        ),
        format!(
            "control socket {}: {}",
            api_socket.display(),
            if api_socket.exists() {
                "present"
            } else {
                "missing"
            }
        ),
    ];
    let tap = d
        .machines
        .runner
        .run(&banger_host::CommandSpec::new("ip").args([
            "-br",
            "link",
            "show",
            "dev",
            &runtime.tap,
        ]))
        .map(|out| {
            out.stdout_lossy()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| format!("{} missing", runtime.tap));
    lines.push(format!("tap: {tap}"));
    lines.push(format!(
        "guest network: {}/{} via {}{}",
        vm.network.ip,
        vm.network.prefix_len,
        vm.network.gateway,
        if vm.nat { ", NAT on" } else { "" }
    ));
    if vm.nat {
        let listing = d.machines.runner.run(
            &d.machines
                .net
                .privilege
                .net_command("nft", ["-j", "list", "table", "inet", network::NFT_TABLE]),
        );
        let comment = network::vm_comment(&vm.id);
        lines.push(match listing {
            Ok(out) => {
                let rules = out.stdout_lossy().matches(comment.as_str()).count();
                format!(
                    "NAT rules ({comment}): {rules} in table inet {}",
                    network::NFT_TABLE
                )
            }
            Err(e) => format!("NAT rules: cannot list them: {e}"),
        });
    }
    let console = banger_vmm::console_tail(&dir.join(disks::CONSOLE_LOG), 15).unwrap_or_default();
    if console.is_empty() {
        lines.push("the guest console is empty".into());
    } else {
        lines.push("last console lines:".into());
        lines.extend(console.into_iter().map(|l| format!("    {l}")));
    }
    ApiError::new(ErrorCode::Unavailable, lines.join("\n")).with_hint(format!(
        "the VM is still running: `banger vm logs {0}` shows its whole console, `banger vm \
         stop {0}` stops it",
        vm.name
    ))
}

/// The doctor's checks a start depends on, failing with every failed check's fix.
fn preflight(d: &Daemon, vm: &Vm) -> Result<(), ApiError> {
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

/// `POST /v1/vms/{name}/stop`.
pub fn request_stop(d: &Arc<Daemon>, name: &str) -> Result<Operation, ApiError> {
    let vm = begin_stop(d, name)?;
    let d2 = d.clone();
    Ok(d.ops.spawn(
        OperationKind::StopVm,
        &vm.name.clone(),
        STOP_STAGES,
        move |cx| {
            let vm = stop_vm(&d2, Some(cx), &vm, d2.config.defaults.stop_timeout)?;
            serde_json::to_value(&vm).map_err(|e| ApiError::internal(e.to_string()))
        },
    ))
}

/// Moves a running or paused VM to `stopping`; returns it as it was.
fn begin_stop(d: &Daemon, name: &str) -> Result<Vm, ApiError> {
    let vm = crate::vm::find(d, name)?;
    let hint = match vm.state {
        VmState::Starting | VmState::Stopping => {
            Some("wait for the operation in progress (`banger vm show NAME`)")
        }
        _ => None,
    };
    Ok(d.store.transition_vm(
        &vm.id,
        &[VmState::Running, VmState::Paused],
        VmState::Stopping,
        "only a running or paused VM can be stopped",
        hint,
    )?)
}

/// Stops `vm` (in state `stopping`): asks the guest to shut down for up to `graceful`, ends
/// its VMM, takes it off the network and records it stopped. Stopping is not cancellable: a
/// half-stopped VM helps nobody.
pub fn stop_vm(
    d: &Daemon,
    cx: Option<&OperationContext>,
    vm: &Vm,
    graceful: Duration,
) -> Result<Vm, ApiError> {
    stop_vm_noting(d, cx, vm, graceful).map(|(vm, _)| vm)
}

/// [`stop_vm`], also saying how the VMM ended (`None` when the VM had none).
fn stop_vm_noting(
    d: &Daemon,
    cx: Option<&OperationContext>,
    vm: &Vm,
    graceful: Duration,
) -> Result<(Vm, Option<banger_vmm::StopOutcome>), ApiError> {
    let m = &d.machines;
    let mut ended = None;
    let begin = |stage: &str| {
        if let Some(cx) = cx {
            cx.begin(stage);
        }
    };
    begin("vmm");
    // The forwards go first: nothing should connect to a guest that is shutting down.
    m.forwards.close(&vm.id);
    let mut errors = Vec::new();
    if let Some(runtime) = &vm.runtime {
        match m.backends.for_running(runtime.vmm) {
            Ok(backend) => match stop_guest(d, vm, runtime, &backend, graceful) {
                Ok(outcome) => {
                    tracing::info!(vm = %vm.name, ?outcome, "VMM stopped");
                    ended = Some(outcome);
                    if let Some(cx) = cx {
                        cx.done("vmm", Some(stop_note(outcome).into()));
                    }
                }
                Err(e) => errors.push(vmm_error("stop", vm, &e).message),
            },
            Err(e) => errors.push(e.message),
        }
        begin("network");
        if let Err(e) = m.teardown_network(vm, &runtime.tap) {
            errors.push(e.message);
        }
    }
    if let Some(cx) = cx {
        cx.done("network", None);
    }
    if errors.is_empty() {
        d.store
            .set_vm_run_state(&vm.id, VmState::Stopped, None, None)?;
        tracing::info!(vm = %vm.name, "VM stopped");
        Ok((crate::vm::find(d, &vm.id)?, ended))
    } else {
        let message = errors.join("; ");
        // The VMM or tap may still exist: `failed` keeps the record pointing at them for the
        // next stop or the next daemon's reconcile.
        d.store
            .set_vm_run_state(&vm.id, VmState::Failed, vm.runtime.as_ref(), Some(&message))?;
        Err(ApiError::internal(message)
            .with_hint("stop it again with `banger vm stop`; `banger doctor` checks the host"))
    }
}

/// Ends a VM's VMM: first through the guest agent when the image has one (it syncs the
/// guest's disks and powers it off, which works the same on every backend, where an ACPI power
/// button needs a daemon in the guest to listen), then through the backend, which asks the
/// guest once more and ends the VMM after what is left of `graceful`.
fn stop_guest(
    d: &Daemon,
    vm: &Vm,
    runtime: &VmRuntime,
    backend: &Backend,
    graceful: Duration,
) -> Result<banger_vmm::StopOutcome, banger_vmm::VmmError> {
    let handle = handle_of(vm, runtime);
    let started = std::time::Instant::now();
    let has_agent = d
        .store
        .find_image(&vm.image.id)
        .ok()
        .flatten()
        .is_some_and(|image| {
            image
                .manifest
                .services
                .iter()
                .any(|s| s.name == guest::AGENT_SERVICE)
        });
    if has_agent && !graceful.is_zero() && vm.state == VmState::Running {
        let asked = guest::agent(d, vm).ok().is_some_and(|agent| {
            d.machines
                .block_on(tokio::time::timeout(
                    graceful.min(Duration::from_secs(3)),
                    agent.shutdown(),
                ))
                .is_ok_and(|answer| answer.is_ok())
        });
        if asked {
            let api_socket = handle.api_socket.clone();
            while backend.owns(runtime.pid, &api_socket) && started.elapsed() < graceful {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !backend.owns(runtime.pid, &api_socket) {
                // Only the sockets are left to remove.
                backend.vmm().stop(&handle, Duration::ZERO)?;
                return Ok(banger_vmm::StopOutcome::ShutDown);
            }
        }
    }
    backend
        .vmm()
        .stop(&handle, graceful.saturating_sub(started.elapsed()))
}

fn stop_note(outcome: banger_vmm::StopOutcome) -> &'static str {
    match outcome {
        banger_vmm::StopOutcome::AlreadyExited => "the VMM had already exited",
        banger_vmm::StopOutcome::ShutDown => "the guest shut down",
        banger_vmm::StopOutcome::Terminated => {
            "the guest did not shut down in time; its VMM was terminated"
        }
        banger_vmm::StopOutcome::Killed => "the VMM had to be killed",
    }
}

/// `POST /v1/vms/{name}/restart`: stop, then start, as one operation.
pub fn request_restart(d: &Arc<Daemon>, name: &str) -> Result<Operation, ApiError> {
    // A VM that could not start again (the limits were lowered since it started) is not
    // stopped for nothing.
    let found = crate::vm::find(d, name)?;
    d.admission
        .check_fits_idle(Some(&found.name), found.vcpus, found.memory_mib, Ask::Start)?;
    let vm = begin_stop(d, name)?;
    let start = start_stages(d, &vm);
    let mut stages = vec![RESTART_STOP_STAGE];
    stages.extend(start.iter().map(String::as_str));
    let d2 = d.clone();
    Ok(d.ops.spawn(
        OperationKind::RestartVm,
        &vm.name.clone(),
        &stages,
        move |cx| {
            cx.begin(RESTART_STOP_STAGE);
            stop_vm(&d2, None, &vm, d2.config.defaults.stop_timeout)?;
            cx.done(RESTART_STOP_STAGE, None);
            // Admitted again: what it held was released by the stop, and another start may
            // have taken the room meanwhile. Refused, it stays stopped and says why.
            let vm = admit_start(
                &d2,
                &vm.id,
                &[VmState::Stopped],
                "it changed while restarting",
                None,
            )
            .inspect_err(|e| {
                if e.code == ErrorCode::OverCapacity
                    && let Err(store) = d2.store.set_vm_run_state(
                        &vm.id,
                        VmState::Stopped,
                        None,
                        Some(&e.message),
                    )
                {
                    tracing::error!(vm = %vm.name, error = %store, "cannot record a refused restart");
                }
            })?;
            let vm = start_vm(&d2, cx, &vm)?;
            serde_json::to_value(&vm).map_err(|e| ApiError::internal(e.to_string()))
        },
    ))
}

/// `POST /v1/vms/{name}/pause` (`pause = true`) and `/resume`.
pub fn pause_or_resume(d: &Daemon, name: &str, pause: bool) -> Result<Vm, ApiError> {
    let vm = crate::vm::find(d, name)?;
    let (from, to, verb) = if pause {
        (VmState::Running, VmState::Paused, "pause")
    } else {
        (VmState::Paused, VmState::Running, "resume")
    };
    let runtime = match (&vm.runtime, vm.state == from) {
        (Some(runtime), true) => runtime,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "VM {:?} is {}; only a {from} VM can be {verb}d",
                    vm.name, vm.state
                ),
            ));
        }
    };
    let backend = d.machines.backends.for_running(runtime.vmm)?;
    let handle = handle_of(&vm, runtime);
    let result = if pause {
        backend.vmm().pause(&handle)
    } else {
        backend.vmm().resume(&handle)
    };
    result.map_err(|e| vmm_error(verb, &vm, &e))?;
    d.store.transition_vm(
        &vm.id,
        &[from],
        to,
        &format!("it changed while being {verb}d"),
        None,
    )?;
    tracing::info!(vm = %vm.name, "VM {verb}d");
    crate::vm::find(d, &vm.id)
}

/// Stops a build's VM, which must be running, giving its guest at least a minute to power
/// off cleanly (its root becomes an image); the stopped VM and how its VMM ended.
pub fn stop_for_build(d: &Daemon, vm: &Vm) -> Result<(Vm, &'static str), ApiError> {
    let vm = begin_stop(d, &vm.id)?;
    let graceful = d.config.defaults.stop_timeout.max(Duration::from_secs(60));
    let (vm, outcome) = stop_vm_noting(d, None, &vm, graceful)?;
    Ok((vm, outcome.map_or("the VM had no VMM", stop_note)))
}

/// Stops a running or paused VM before it is deleted, giving its guest `graceful` to power
/// off; returns it as stored afterwards.
pub fn stop_for_delete(d: &Daemon, vm: &Vm, graceful: Duration) -> Result<Vm, ApiError> {
    match vm.state {
        VmState::Running | VmState::Paused => {
            let vm = begin_stop(d, &vm.id)?;
            stop_vm(d, None, &vm, graceful)
        }
        VmState::Starting | VmState::Stopping => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "VM {:?} is {}; it can be deleted once that finishes",
                vm.name, vm.state
            ),
        )),
        VmState::Failed if vm.runtime.is_some() => {
            // A failed stop left a runtime behind: finish that stop first.
            stop_vm(d, None, vm, Duration::ZERO)
        }
        VmState::Stopped | VmState::Failed => Ok(vm.clone()),
    }
}

/// Watches the VMM process `pid` of VM `vm_id` and records the VM stopped (or failed) when the
/// process exits without banger having stopped it. The kernel tells (pidfd) the moment a
/// process exits; the backend then confirms its process is gone, which also covers a backend
/// whose processes are not the host's (a fake in tests), checked every 200 ms.
pub fn supervise(
    d: &Arc<Daemon>,
    vm_id: &str,
    pid: u32,
    kind: banger_api::VmmKind,
    api_socket: PathBuf,
) {
    let d = d.clone();
    let vm_id = vm_id.to_owned();
    d.machines.runtime.clone().spawn(async move {
        banger_vmm::watch_exit(pid).await;
        if let Ok(backend) = d.machines.backends.for_running(kind) {
            while backend.owns(pid, &api_socket) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let d2 = d.clone();
        let _ = tokio::task::spawn_blocking(move || on_exit(&d2, &vm_id, pid)).await;
    });
}

/// When the kernel's OOM killer killed a process of the VM's cgroup (a VMM that outgrew its
/// memory limit): the limit, e.g. `1280 MiB`. Read before the cgroup is removed.
fn out_of_memory(runtime: &VmRuntime) -> Option<String> {
    let (dir, limit) = match (&runtime.qemu, &runtime.jail) {
        (Some(qemu), _) => (qemu.cgroup.as_deref()?, qemu.memory_max),
        (None, Some(jail)) => (jail.cgroup.as_deref()?, jail.memory_max),
        (None, None) => return None,
    };
    let killed = banger_vmm::cgroup::oom_kills(std::path::Path::new(dir))?;
    (killed > 0).then(|| match limit {
        Some(bytes) => format!("{} MiB", bytes / (1024 * 1024)),
        None => "its limit".to_owned(),
    })
}

/// The VMM `pid` of VM `vm_id` exited. Unless a stop is under way (it releases everything
/// itself), release the VM's resources and record why it ended.
fn on_exit(d: &Daemon, vm_id: &str, pid: u32) {
    let vm = match d.store.find_vm(vm_id) {
        Ok(Some(vm)) => vm,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(vm = vm_id, error = %e, "cannot read a VM whose VMM exited");
            return;
        }
    };
    let Some(runtime) = vm.runtime.clone().filter(|r| r.pid == pid) else {
        return;
    };
    let Ok(vm) = d.store.transition_vm(
        &vm.id,
        &[VmState::Running, VmState::Paused],
        VmState::Stopping,
        "its VMM exited",
        None,
    ) else {
        // Starting (the start sees the exit itself) or stopping (the stop releases).
        return;
    };
    let dir = d.paths.vm_dir(&vm.id);
    let backend = d.machines.backends.for_running(runtime.vmm);
    let exit_code = backend
        .as_ref()
        .ok()
        .and_then(|b| b.exit_code(&dir.join(disks::VMM_LOG), &dir.join(disks::CONSOLE_LOG)));
    let console =
        banger_vmm::console_tail(&dir.join(disks::CONSOLE_LOG), CONSOLE_LINES).unwrap_or_default();
    let reason = match exit_code {
        Some(0) => None,
        Some(code) => Some(format!("its VMM (pid {pid}) exited with code {code}")),
        None => Some(match out_of_memory(&runtime) {
            Some(limit) => format!(
                "its VMM (pid {pid}) was killed by the kernel's OOM killer: it reached its \
                 cgroup's memory limit ({limit}; the guest's memory plus the VMM's overhead, \
                 `qemu_memory_overhead` or `jail_memory_overhead` in config.toml)"
            ),
            None => format!("its VMM (pid {pid}) was killed or crashed"),
        }),
    };
    let reason = reason.map(|r| {
        if console.is_empty() {
            r
        } else {
            format!("{r}; last console lines:\n{}", console.join("\n"))
        }
    });
    tracing::warn!(vm = %vm.name, pid, reason = reason.as_deref().unwrap_or("guest shut down"), "VMM exited on its own");
    let graceful = Duration::ZERO;
    match stop_vm(d, None, &vm, graceful) {
        Ok(_) => {
            if let Some(reason) = &reason
                && let Err(e) =
                    d.store
                        .set_vm_run_state(&vm.id, VmState::Failed, None, Some(reason))
            {
                tracing::error!(vm = %vm.name, error = %e, "cannot record a VM's failure");
            }
        }
        Err(e) => tracing::error!(vm = %vm.name, error = %e.message, "cannot release an exited VM"),
    }
}

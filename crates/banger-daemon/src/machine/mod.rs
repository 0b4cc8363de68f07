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
//!
//! Here are the host's dependencies, the claims on a VM and what start and stop share; `start`
//! (with the take from the warm pool), `spec` (preflight and the VMM's spec), `ready` (waiting
//! for the guest and diagnosing one that is not ready), `stop` (with restart, pause and
//! resume) and `supervise` (a VMM's own exit) hold the rest, re-exported here.

pub mod backend;
pub mod console;
pub mod disks;
pub mod guest;
pub mod pool;
pub mod reconcile;
pub mod spare;
pub mod sshkey;

mod ready;
mod spec;
mod start;
mod stop;
mod supervise;

pub use spec::*;
pub use start::*;
pub use stop::*;
pub use supervise::*;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use banger_api::{ApiError, ErrorCode, Vm, VmRuntime, VmState};
use banger_host::CommandRunner;
use banger_host::network::{self, IpLinks, Links, NetConfig, NetlinkLinks, VmNet};
use banger_vmm::VmHandle;

use crate::Daemon;
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

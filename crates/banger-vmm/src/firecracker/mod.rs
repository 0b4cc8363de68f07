//! The Firecracker backend: one Firecracker process per VM, started with only `--api-sock` and
//! `--id`, configured request by request over its API socket, supervised by pid.
//!
//! The request types follow Firecracker's swagger (`src/firecracker/swagger/firecracker.yaml`),
//! one module per API resource like Firecracker's own `vmm_config`: [`machine_config`],
//! [`boot_source`], [`drive`], [`network_interface`], [`vsock`], [`actions`], [`logger`],
//! [`metrics`], [`vm`] (pause/resume), [`instance_info`], [`snapshot`] and [`vm_config`]. The
//! snapshots of running VMs and the VMs restored from them are [`restore`]'s. The
//! [`client`] sends them; [`launch`] orders them and rolls back; the process and file side
//! effects go through [`crate::host`]; `fake` stands in for both in tests; [`hybrid_vsock`]
//! connects to a guest port through the vsock socket; [`binary`] finds and checks the
//! executable; [`jail`] runs it behind Firecracker's jailer (own uid, chroot, pid namespace,
//! cgroup limits). Its own failures are [`crate::FirecrackerError`]s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod actions;
pub mod binary;
pub mod boot_source;
pub mod client;
pub mod drive;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod hybrid_vsock;
pub mod instance_info;
pub mod jail;
pub mod launch;
pub mod logger;
pub mod machine_config;
pub mod metrics;
pub mod network_interface;
pub mod rate_limiter;
pub mod restore;
pub mod snapshot;
pub mod spare;
pub mod vm;
pub mod vm_config;
pub mod vsock;

#[cfg(test)]
mod jail_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;

pub use binary::{BinaryError, FirecrackerBinary, MIN_VERSION, Version};
pub use client::{ApiClient, Transport, TransportError, UnixTransport};
pub use jail::{CgroupSupport, JailConfig, JailRecord, JailerBinary, JailerError};
pub use launch::{CleanupFailure, Resource, configuration, release, release_all};
pub use logger::LogLevel;
pub use spare::Spare;

use crate::FirecrackerError;
use crate::escalate::{self, Stubborn};
use crate::host::{ProcessHost, RealHost};
use crate::reconcile::{HostScan, Observation};
use crate::{InstanceState, StopOutcome, VmHandle, VmSpec, Vmm, VmmError};
use actions::ActionType;
use banger_host::Signal;
use launch::firecracker_api_socket;
use snapshot::{SnapshotCreateParams, SnapshotLoadParams};

/// How long stop, adopt and reconcile give a request to a Firecracker that may be hung.
const QUICK_REQUEST: Duration = Duration::from_secs(2);

/// How long a restarting daemon waits for a Firecracker it left writing a snapshot to answer
/// ([`Firecracker::observe_within`]): writing a large guest's memory takes a while, all the
/// more on a loaded host.
pub const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(120);

/// How long the backend waits for Firecracker at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From spawn until the API socket accepts connections.
    pub api_socket: Duration,
    /// From SIGTERM until the process must have exited.
    pub term_grace: Duration,
    /// From SIGKILL until the process must have exited.
    pub kill_wait: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            api_socket: Duration::from_secs(5),
            term_grace: Duration::from_secs(3),
            kill_wait: Duration::from_secs(5),
        }
    }
}

/// The Firecracker [`Vmm`].
#[derive(Debug, Clone)]
pub struct Firecracker {
    binary: FirecrackerBinary,
    host: Arc<dyn ProcessHost>,
    transport: Arc<dyn Transport>,
    timeouts: Timeouts,
    log_level: LogLevel,
    /// How VMs are jailed; `None` runs Firecracker directly.
    jail: Option<Arc<JailConfig>>,
    /// Where jails are, to recognise jailed Firecrackers (also those started while jailing
    /// was on, when it is off now).
    chroot_base: Option<PathBuf>,
}

impl Firecracker {
    /// The backend for a checked binary, on the real host.
    pub fn new(binary: FirecrackerBinary) -> Self {
        Firecracker::with_host(
            binary,
            Arc::new(RealHost),
            Arc::new(UnixTransport::default()),
        )
    }

    /// The backend with its side effects and API transport supplied by the caller (a fake in
    /// tests).
    pub fn with_host(
        binary: FirecrackerBinary,
        host: Arc<dyn ProcessHost>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        Firecracker {
            binary,
            host,
            transport,
            timeouts: Timeouts::default(),
            log_level: LogLevel::Info,
            jail: None,
            chroot_base: None,
        }
    }

    /// Runs every VM launched from now on behind the jailer.
    pub fn with_jail(mut self, jail: JailConfig) -> Self {
        self.chroot_base = Some(jail.chroot_base.clone());
        self.jail = Some(Arc::new(jail));
        self
    }

    /// Recognises jailed Firecrackers under `chroot_base` (when jailing is off, those a
    /// previous configuration started).
    pub fn with_chroot_base(mut self, chroot_base: PathBuf) -> Self {
        self.chroot_base = Some(chroot_base);
        self
    }

    /// How VMs are jailed, when they are.
    pub fn jail(&self) -> Option<&JailConfig> {
        self.jail.as_deref()
    }

    /// The jail directory of the VM whose API socket is `api_socket`, when it is jailed.
    pub fn jail_dir_of(&self, api_socket: &Path) -> Option<PathBuf> {
        let jails = self
            .chroot_base
            .as_ref()?
            .join(jail::exec_name(&self.binary));
        jail::jail_of(&jails, api_socket)
    }

    /// The path by which the Firecracker serving `api_socket` knows the VM's drive `id`, whose
    /// file is `host_path`: the same path, or its name inside the chroot of a jailed one.
    pub fn drive_path(&self, api_socket: &Path, id: &str, host_path: &Path) -> PathBuf {
        match self.jail_dir_of(api_socket) {
            Some(_) => Path::new("/").join(jail::drive_name(id)),
            None => host_path.to_owned(),
        }
    }

    /// The record of a jailed VM's jail (its uid, cgroup and files).
    pub fn jail_record(&self, vm: &VmHandle) -> Option<JailRecord> {
        let dir = self.jail_dir_of(&vm.api_socket)?;
        jail::read_record(&*self.host, &dir).ok()
    }

    /// The host path of the API socket a Firecracker command line serves: its `--api-sock`,
    /// or for a jailed one that socket inside its chroot.
    pub fn socket_of(&self, argv: &[std::ffi::OsString]) -> Option<PathBuf> {
        if let Some(base) = &self.chroot_base
            && let Some(socket) = jail::jailed_api_socket(argv, base)
        {
            return Some(socket);
        }
        firecracker_api_socket(argv)
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The level of Firecracker's own log (default `Info`).
    pub fn with_log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    pub fn binary(&self) -> &FirecrackerBinary {
        &self.binary
    }

    /// The typed API client of the Firecracker serving `socket`.
    pub fn client<'a>(&'a self, socket: &'a Path) -> ApiClient<'a> {
        ApiClient::new(&*self.transport, socket)
    }

    /// Whether `pid` is alive and is the Firecracker serving `api_socket`: a pid taken over by
    /// another process after Firecracker died must never be signalled.
    pub fn owns(&self, pid: u32, api_socket: &Path) -> bool {
        self.host.pid_alive(pid)
            && self
                .host
                .cmdline(pid)
                .and_then(|argv| self.socket_of(&argv))
                .is_some_and(|socket| socket == api_socket)
    }

    /// [`Firecracker::observe`], asking again until `patience` has passed while the process
    /// runs but does not answer: a Firecracker left in the middle of writing a snapshot answers
    /// only once the snapshot is written, and must not be taken for a hung one meanwhile.
    pub fn observe_within(&self, pid: u32, api_socket: &Path, patience: Duration) -> Observation {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let seen = self.observe(pid, api_socket);
            let busy = seen.owned && seen.socket_exists && seen.answer.is_none();
            if !busy || std::time::Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What a restarting daemon needs to know about a VMM it recorded, for
    /// [`crate::reconcile::decide`].
    pub fn observe(&self, pid: u32, api_socket: &Path) -> Observation {
        let alive = self.host.pid_alive(pid);
        let owned = alive && self.owns(pid, api_socket);
        let socket_exists = self.host.exists(api_socket);
        let answer = if owned && socket_exists && self.host.is_stopped(pid) {
            // Frozen by a pause (SIGSTOP): it answers nothing, and is paused.
            Some(InstanceState::Paused)
        } else if owned && socket_exists {
            self.client(api_socket)
                .with_timeout(QUICK_REQUEST)
                .describe_instance()
                .map(|info| info.state)
                .ok()
        } else {
            None
        };
        Observation {
            alive,
            owned,
            socket_exists,
            answer,
        }
    }

    /// The Unix sockets in `socket_dir` and the Firecracker processes serving a socket there:
    /// what a restarting daemon compares with its records to find orphans. `socket_dir` must
    /// hold nothing but VM sockets (not the daemon's own).
    /// The chroots of jailed VMs are scanned the same way.
    pub fn scan(&self, socket_dir: &Path) -> HostScan {
        let socket_of = |argv: &[std::ffi::OsString]| self.socket_of(argv);
        let mut scan = HostScan::of(&*self.host, socket_dir, socket_of);
        for root in self.jail_roots() {
            scan = scan.merge(HostScan::of(&*self.host, &root, socket_of));
        }
        scan
    }

    /// The chroot of every jail there is.
    fn jail_roots(&self) -> Vec<PathBuf> {
        let Some(base) = &self.chroot_base else {
            return Vec::new();
        };
        self.host
            .list_dir(&base.join(jail::exec_name(&self.binary)))
            .unwrap_or_default()
            .into_iter()
            .map(|dir| dir.join("root"))
            .collect()
    }

    /// Releases the jails of VMs that do not run: those for which `running` (given a VM id)
    /// says no. A restarted daemon calls it once its reconcile has released what it found.
    pub fn release_idle_jails(&self, running: &dyn Fn(&str) -> bool) -> Vec<CleanupFailure> {
        let mut failures = Vec::new();
        for root in self.jail_roots() {
            let Some(dir) = root.parent() else { continue };
            let id = dir.file_name().unwrap_or_default().to_string_lossy();
            if running(&id) {
                continue;
            }
            tracing::info!(jail = %dir.display(), "releasing the jail of a VM that does not run");
            failures.extend(jail::release_jail(
                &*self.host,
                dir,
                self.timeouts.kill_wait,
            ));
        }
        failures
    }

    /// Writes a snapshot of a paused VM. A VM paused with `SIGSTOP` is paused through the API
    /// first (Firecracker only snapshots what it paused itself, and its process must run to
    /// write); a snapshot publishes the vsock reset event, so the API resume that follows
    /// keeps the guest's vsock even on the releases [`resume_breaks_vsock`] names.
    pub fn snapshot(&self, vm: &VmHandle, params: &SnapshotCreateParams) -> Result<(), VmmError> {
        let api = self.client(&vm.api_socket);
        if self.host.is_stopped(vm.pid) {
            self.host
                .signal(vm.pid, Signal::Cont)
                .map_err(FirecrackerError::Signal)?;
            api.patch_vm(vm::VmState::Paused)
                .map_err(|e| self.not_running_or(vm, e))?;
        }
        api.create_snapshot(params)
    }

    /// Loads a snapshot into a fresh, unconfigured Firecracker (`vsock_override` needs 1.16).
    pub fn load_snapshot(
        &self,
        api_socket: &Path,
        params: &SnapshotLoadParams,
    ) -> Result<(), VmmError> {
        if params.vsock_override.is_some() && !self.binary.supports(&binary::VSOCK_OVERRIDE_VERSION)
        {
            return Err(VmmError::InvalidSpec(format!(
                "restoring onto another vsock socket needs Firecracker {} or newer; this is {}",
                binary::VSOCK_OVERRIDE_VERSION,
                self.binary.version
            )));
        }
        self.client(api_socket).load_snapshot(params)
    }

    /// Asks Firecracker to write its metrics now.
    pub fn flush_metrics(&self, vm: &VmHandle) -> Result<(), VmmError> {
        self.client(&vm.api_socket).action(ActionType::FlushMetrics)
    }

    /// Ends the process: Ctrl-Alt-Del and a wait (unless paused or `graceful` is zero), then
    /// SIGTERM, then SIGKILL.
    fn terminate(&self, vm: &VmHandle, graceful: Duration) -> Result<StopOutcome, VmmError> {
        let pid = vm.pid;
        // A process frozen by a pause must run again to hear a signal it can handle; its
        // guest is still paused as far as the user knows, so it gets no key press.
        let frozen = self.host.is_stopped(pid);
        if frozen {
            self.host
                .signal(pid, Signal::Cont)
                .map_err(FirecrackerError::Signal)?;
        }
        let ask_guest = || {
            if frozen {
                return false;
            }
            let api = self
                .client(&vm.api_socket)
                .with_timeout(graceful.min(QUICK_REQUEST));
            // A paused guest cannot see the key press; waiting for it would only waste time.
            if api
                .describe_instance()
                .is_ok_and(|info| info.state == InstanceState::Paused)
            {
                return false;
            }
            api.action(ActionType::SendCtrlAltDel)
                .inspect_err(|error| {
                    tracing::warn!(pid, error = %crate::error_chain(error), "Ctrl-Alt-Del refused")
                })
                .is_ok()
        };
        // A jailed Firecracker is the init of its pid namespace, which SIGTERM from outside
        // does not reach.
        let term = self.jail_dir_of(&vm.api_socket).is_none();
        escalate::end_process(
            &*self.host,
            pid,
            graceful,
            &self.timeouts,
            "Firecracker",
            term,
            ask_guest,
        )
        .map_err(|e| match e {
            Stubborn::Signal(e) => FirecrackerError::Signal(e).into(),
            Stubborn::StillRunning => FirecrackerError::StillRunning { pid }.into(),
        })
    }

    /// The files a stopped VMM leaves behind, in the order a launch acquired them.
    fn sockets_of(vm: &VmHandle) -> Vec<Resource> {
        let mut resources = vec![Resource::ApiSocket {
            path: vm.api_socket.clone(),
        }];
        if let Some(path) = &vm.vsock_socket {
            resources.push(Resource::VsockSocket { path: path.clone() });
        }
        resources
    }

    /// [`Vmm::launch_beside`], taking over `spare` instead of starting a process when it can
    /// (see [`spare`]); a spare it cannot use is released.
    pub fn launch_with_spare(
        &self,
        spec: &VmSpec,
        spare: Option<Spare>,
        beside: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<VmHandle, VmmError> {
        self.launch_vm(spec, spare, beside)
    }

    fn not_running_or(&self, vm: &VmHandle, error: VmmError) -> VmmError {
        match error {
            VmmError::Firecracker(FirecrackerError::Transport { .. })
                if !self.host.pid_alive(vm.pid) =>
            {
                VmmError::NotRunning { pid: vm.pid }
            }
            other => other,
        }
    }
}

/// How long a frozen pause or its resume may take to show in the process's state.
const SETTLE: Duration = Duration::from_secs(2);

impl Firecracker {
    /// Waits until `pid` shows the effect of `sent` (stopped after SIGSTOP, running after
    /// SIGCONT): the kernel delivers a signal after `kill` returns, and a pause is only done
    /// when the process is frozen (a state query right after would otherwise ask the API of a
    /// process about to stop).
    fn settle(&self, pid: u32, sent: Signal) -> Result<(), VmmError> {
        let want_stopped = sent == Signal::Stop;
        let deadline = std::time::Instant::now() + SETTLE;
        while self.host.is_stopped(pid) != want_stopped {
            if !self.host.pid_alive(pid) {
                return Err(VmmError::NotRunning { pid });
            }
            if std::time::Instant::now() >= deadline {
                return Err(FirecrackerError::Signal(banger_host::ProcessError::Signal {
                    pid,
                    signal: sent,
                    source: std::io::Error::other(format!(
                        "the process did not {} within {SETTLE:?}",
                        if want_stopped { "stop" } else { "continue" }
                    )),
                })
                .into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// The first release whose plain resume keeps the guest's vsock working.
pub const RESUME_KEEPS_VSOCK_VERSION: Version = Version::new(1, 17, 0);
/// The first release with the vsock reset gate that a plain resume arms by mistake.
const RESUME_GATE_VERSION: Version = Version::new(1, 16, 0);

/// Whether a `PATCH /vm Resumed` of Firecracker `version` leaves the guest's vsock dead:
/// 1.16.0 and 1.16.1 arm, on every resume, a gate on host-to-guest vsock traffic that only the
/// guest's acknowledgement of a snapshot's reset event lifts, and without a snapshot there is
/// no such event, so every later connection to the guest agent hangs (fixed upstream for
/// 1.17.0, Firecracker PR #6100). banger pauses those releases with `SIGSTOP` instead.
pub fn resume_breaks_vsock(version: &Version) -> bool {
    version.at_least(&RESUME_GATE_VERSION) && !version.at_least(&RESUME_KEEPS_VSOCK_VERSION)
}

impl Vmm for Firecracker {
    fn launch(&self, spec: &VmSpec) -> Result<VmHandle, VmmError> {
        self.launch_vm(spec, None, &mut || Ok(()))
    }

    /// `beside` runs right after the spawn, while Firecracker starts up and opens its API
    /// socket (a couple of milliseconds the launch would otherwise only wait through).
    fn launch_beside(
        &self,
        spec: &VmSpec,
        beside: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<VmHandle, VmmError> {
        self.launch_vm(spec, None, beside)
    }

    /// Pauses through the API (`PATCH /vm`), except on a Firecracker whose resume would cut
    /// the guest's vsock for good ([`resume_breaks_vsock`]): that one is frozen with `SIGSTOP`,
    /// which stops the guest's vCPUs and devices just as well. The version asked is the running
    /// process's own, not the binary's on disk (which may have been upgraded since).
    fn pause(&self, vm: &VmHandle) -> Result<(), VmmError> {
        let api = self.client(&vm.api_socket);
        if self.host.is_stopped(vm.pid) {
            return Ok(());
        }
        let version = api
            .version()
            .map_err(|e| self.not_running_or(vm, e))?
            .firecracker_version;
        if version
            .parse()
            .is_ok_and(|v: Version| resume_breaks_vsock(&v))
        {
            tracing::info!(pid = vm.pid, %version, "pausing Firecracker with SIGSTOP");
            self.host
                .signal(vm.pid, Signal::Stop)
                .map_err(FirecrackerError::Signal)?;
            return self.settle(vm.pid, Signal::Stop);
        }
        api.patch_vm(vm::VmState::Paused)
            .map_err(|e| self.not_running_or(vm, e))
    }

    /// Undoes whichever pause [`Vmm::pause`] chose: `SIGCONT` for a frozen process, the API
    /// otherwise.
    fn resume(&self, vm: &VmHandle) -> Result<(), VmmError> {
        if self.host.is_stopped(vm.pid) {
            self.host
                .signal(vm.pid, Signal::Cont)
                .map_err(FirecrackerError::Signal)?;
            return self.settle(vm.pid, Signal::Cont);
        }
        self.client(&vm.api_socket)
            .patch_vm(vm::VmState::Resumed)
            .map_err(|e| self.not_running_or(vm, e))
    }

    fn stop(&self, vm: &VmHandle, graceful_timeout: Duration) -> Result<StopOutcome, VmmError> {
        let outcome = if self.owns(vm.pid, &vm.api_socket) {
            self.terminate(vm, graceful_timeout)?
        } else {
            StopOutcome::AlreadyExited
        };
        let mut failures = release_all(&*self.host, Self::sockets_of(vm), self.timeouts.kill_wait);
        if let Some(dir) = self.jail_dir_of(&vm.api_socket) {
            failures.extend(jail::release_jail(
                &*self.host,
                &dir,
                self.timeouts.kill_wait,
            ));
        }
        tracing::info!(vm = %vm.vm_id, pid = vm.pid, ?outcome, "Firecracker stopped");
        if failures.is_empty() {
            Ok(outcome)
        } else {
            Err(VmmError::Release(failures))
        }
    }

    fn state(&self, vm: &VmHandle) -> Result<InstanceState, VmmError> {
        if self.host.pid_alive(vm.pid) && self.host.is_stopped(vm.pid) {
            return Ok(InstanceState::Paused);
        }
        self.client(&vm.api_socket)
            .describe_instance()
            .map(|info| info.state)
            .map_err(|e| self.not_running_or(vm, e))
    }

    fn adopt(&self, pid: u32, api_socket: &Path) -> Option<VmHandle> {
        if !self.owns(pid, api_socket) {
            return None;
        }
        let api = self.client(api_socket).with_timeout(QUICK_REQUEST);
        // A Firecracker paused by SIGSTOP answers nothing: it runs just long enough to say
        // what it is, then stops again.
        let frozen = self.host.is_stopped(pid);
        if frozen {
            self.host.signal(pid, Signal::Cont).ok()?;
        }
        let info = api
            .describe_instance()
            .inspect_err(|e| tracing::warn!(pid, error = %crate::error_chain(e), "cannot adopt"));
        // Where the vsock socket is was decided by the daemon that launched it; Firecracker
        // remembers.
        // A jailed one names it inside its chroot.
        let root = self
            .jail_dir_of(api_socket)
            .and_then(|_| api_socket.parent().map(Path::to_owned));
        let vsock_socket: Option<PathBuf> = api
            .vm_config()
            .ok()
            .and_then(|config| config.vsock)
            .map(|vsock| match &root {
                Some(root) => {
                    root.join(vsock.uds_path.strip_prefix("/").unwrap_or(&vsock.uds_path))
                }
                None => vsock.uds_path,
            });
        if frozen && let Err(e) = self.host.signal(pid, Signal::Stop) {
            tracing::warn!(pid, error = %crate::error_chain(&e), "cannot pause it again");
        }
        let mut info = info.ok()?;
        if frozen {
            info.state = InstanceState::Paused;
        }
        tracing::info!(vm = %info.id, pid, state = %info.state, "adopted a running Firecracker");
        Some(VmHandle {
            vm_id: info.id,
            pid,
            api_socket: api_socket.to_owned(),
            vsock_socket,
        })
    }
}

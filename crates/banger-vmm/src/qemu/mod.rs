//! The QEMU backend: one `qemu-system-x86_64 -M microvm` process per VM, configured by its
//! command line ([`command_line`]), driven over QMP ([`qmp`]), supervised by pid like a
//! Firecracker. It boots the same kernel, initrd and disks from the same [`VmSpec`] and keeps the
//! same lifecycle semantics: a launch that fails leaves nothing behind, a stop asks the guest
//! first (the ACPI power button) and then terminates and kills, a VM survives a daemon restart
//! and is found again by its pid and QMP socket, and [`crate::reconcile`] decides about QEMU VMs
//! from the same observations.
//!
//! It exists for hosts where Firecracker cannot boot a guest: no `/dev/kvm`, or a paravirtual
//! `kvm_pvm` that crashes stock kernels. There it runs with TCG ([`Accel`]). [`binary`] finds
//! and checks the executable; [`launch`] orders the steps and rolls back; `fake` stands in for
//! the process and QMP in tests. Process side effects go through [`crate::host`], as
//! Firecracker's do; its own failures are [`crate::QemuError`]s.
//!
//! A root daemon confines each QEMU ([`Confinement`]): once QEMU has opened what it needs (its
//! disks, tap, log files, QMP socket and `/dev/kvm` or `/dev/vhost-vsock`), it drops to a uid
//! and gid of its own from a configured range (`-runas`), and it runs under QEMU's seccomp
//! sandbox (`-sandbox`), which refuses obsolete system calls, spawning processes and changing
//! resource limits or scheduling. The uid is in its command line, which is how the next launch
//! knows it is taken.
//!
//! Differences from Firecracker a caller sees: no snapshots or metrics (the `metrics` path of
//! [`crate::VmPaths`] is unused), and vsock only where the host has `/dev/vhost-vsock`, reached
//! over `AF_VSOCK` at [`Qemu::vsock_cid`] rather than through a Unix socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::QemuError;
use crate::escalate::{self, Stubborn};

pub mod accel;
pub mod binary;
pub mod command_line;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod launch;
pub mod qmp;

#[cfg(test)]
mod tests;

pub use accel::Accel;
pub use binary::{QemuBinary, QemuBinaryError};
pub use launch::{Resource, release, release_all};
pub use qmp::{QmpClient, QmpError, QmpTransport, UnixQmp};

use crate::host::{ProcessHost, RealHost};
use crate::reconcile::{HostScan, Observation};
use crate::{InstanceState, StopOutcome, Timeouts, VmHandle, VmSpec, Vmm, VmmError};
use command_line::{guest_cid, qmp_socket, vm_name};

/// How long stop, adopt and reconcile give a QMP command of a QEMU that may be hung.
const QUICK_REQUEST: Duration = Duration::from_secs(2);

/// How long the launch, pause, resume and state give a QMP command. QEMU answers from its main
/// loop, which guest load under TCG can slow down but not stop.
const LAUNCH_REQUEST: Duration = Duration::from_secs(10);

/// How a QEMU is confined beyond being a process of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// The uids (and gids, the same numbers) QEMUs drop to, first and last included: each
    /// gets the lowest one no running QEMU holds. Only a root daemon can give them; `None`
    /// keeps the daemon's.
    pub uids: Option<(u32, u32)>,
    /// QEMU's seccomp sandbox.
    pub sandbox: bool,
    /// A cgroup per QEMU with memory and CPU limits; `None` runs QEMU in bangerd's.
    pub cgroups: Option<QemuCgroups>,
}

/// Where QEMUs' cgroups go and how much memory a QEMU needs beyond its guest's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCgroups {
    pub hierarchy: crate::cgroup::Hierarchy,
    /// Added to the guest's memory for the cgroup's memory limit: QEMU's own code, device
    /// state, I/O buffers and, under TCG, its translation cache.
    pub memory_overhead_mib: u32,
}

/// The QEMU [`Vmm`].
#[derive(Debug, Clone)]
pub struct Qemu {
    binary: QemuBinary,
    accel: Accel,
    host: Arc<dyn ProcessHost>,
    qmp: Arc<dyn QmpTransport>,
    timeouts: Timeouts,
    confinement: Confinement,
}

impl Qemu {
    /// The backend for a checked binary and an accelerator (see [`Accel::detect`]), on the real
    /// host.
    pub fn new(binary: QemuBinary, accel: Accel) -> Self {
        Qemu::with_host(binary, accel, Arc::new(RealHost), Arc::new(UnixQmp))
    }

    /// The backend with its side effects and QMP transport supplied by the caller (a fake in
    /// tests).
    pub fn with_host(
        binary: QemuBinary,
        accel: Accel,
        host: Arc<dyn ProcessHost>,
        qmp: Arc<dyn QmpTransport>,
    ) -> Self {
        Qemu {
            binary,
            accel,
            host,
            qmp,
            timeouts: Timeouts::default(),
            confinement: Confinement::default(),
        }
    }

    /// Confines the QEMUs this backend launches.
    pub fn confined(mut self, confinement: Confinement) -> Self {
        self.confinement = confinement;
        self
    }

    pub fn confinement(&self) -> &Confinement {
        &self.confinement
    }

    /// VM `vm_id`'s cgroup (its memory directory), memory limit in bytes and CPU quota
    /// (`QUOTA PERIOD`), when its QEMU runs in one.
    pub fn cgroup_of(&self, vm_id: &str) -> Option<(PathBuf, u64, String)> {
        let cgroups = self.confinement.cgroups.as_ref()?;
        let (memory, cpu) = cgroups.hierarchy.limits_of(&*self.host, vm_id)?;
        Some((cgroups.hierarchy.memory_dir(vm_id), memory, cpu))
    }

    /// Removes the cgroups of VMs that `idle` names (this daemon's VMs that do not run): left
    /// by a daemon that died before it could remove them. Another daemon's cgroups (whose VMs
    /// `idle` does not know) are never touched, and a cgroup something still runs in is kept.
    pub fn release_idle_cgroups(&self, idle: &dyn Fn(&str) -> bool) -> Vec<String> {
        let Some(cgroups) = &self.confinement.cgroups else {
            return Vec::new();
        };
        let mut failures = Vec::new();
        for parent in cgroups.hierarchy.parents() {
            for dir in self.host.list_dir(&parent).unwrap_or_default() {
                let Some(id) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                if !idle(&id) {
                    continue;
                }
                match crate::cgroup::remove(
                    &*self.host,
                    std::slice::from_ref(&dir),
                    std::time::Duration::ZERO,
                ) {
                    Ok(()) => {
                        tracing::info!(cgroup = %dir.display(), "removed the cgroup of a VM that does not run")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {}
                    Err(e) => failures.push(e.to_string()),
                }
            }
        }
        failures
    }

    /// The uid the QEMU `pid` runs as when it was confined to one (read from its command line).
    pub fn uid_of(&self, pid: u32) -> Option<u32> {
        self.host
            .cmdline(pid)
            .and_then(|argv| command_line::runas_uid(&argv))
    }

    /// `api_socket` bounds the wait for the QMP socket.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn binary(&self) -> &QemuBinary {
        &self.binary
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Whether a launch gives the VM the vsock device its spec asks for: only where the host
    /// has `/dev/vhost-vsock`. Without it the VM has no vsock and its agent is reached over the
    /// VM's network.
    pub fn attaches_vsock(&self) -> bool {
        self.host.exists(Path::new(command_line::VHOST_VSOCK))
    }

    /// The vsock context id the host reaches `vm`'s guest at over `AF_VSOCK`, `None` when its
    /// QEMU runs without a vsock device (or is not running). Read from the process's command
    /// line, so it holds for an adopted VM too.
    pub fn vsock_cid(&self, vm: &VmHandle) -> Option<u32> {
        if !self.owns(vm.pid, &vm.api_socket) {
            return None;
        }
        self.host.cmdline(vm.pid).and_then(|argv| guest_cid(&argv))
    }

    /// The typed QMP client of the QEMU serving `socket`.
    pub fn qmp<'a>(&'a self, socket: &'a Path, timeout: Duration) -> QmpClient<'a> {
        QmpClient::new(&*self.qmp, socket, timeout)
    }

    /// Whether `pid` is alive and is the QEMU serving `qmp_socket`: a pid taken over by another
    /// process after QEMU died must never be signalled.
    pub fn owns(&self, pid: u32, qmp_socket_path: &Path) -> bool {
        self.host.pid_alive(pid)
            && self
                .host
                .cmdline(pid)
                .and_then(|argv| qmp_socket(&argv))
                .is_some_and(|socket| socket == qmp_socket_path)
    }

    /// What a restarting daemon needs to know about a QEMU it recorded, for
    /// [`crate::reconcile::decide`]. A guest QEMU says cannot run again (crashed, panicked)
    /// counts as not answering, so that reconcile ends it.
    pub fn observe(&self, pid: u32, qmp_socket_path: &Path) -> Observation {
        let alive = self.host.pid_alive(pid);
        let owned = alive && self.owns(pid, qmp_socket_path);
        let socket_exists = self.host.exists(qmp_socket_path);
        let answer = if owned && socket_exists {
            self.qmp(qmp_socket_path, QUICK_REQUEST).state().ok()
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

    /// The Unix sockets in `socket_dir` and the QEMU processes serving a QMP socket there. The
    /// daemon merges this with the Firecracker backend's scan of the same directory: each
    /// backend lists only its own processes, and both list every socket.
    pub fn scan(&self, socket_dir: &Path) -> HostScan {
        HostScan::of(&*self.host, socket_dir, qmp_socket)
    }

    /// Ends the process: the ACPI power button and a wait (unless the guest is paused or
    /// `graceful` is zero), then SIGTERM, then SIGKILL.
    fn terminate(&self, vm: &VmHandle, graceful: Duration) -> Result<StopOutcome, VmmError> {
        let pid = vm.pid;
        let ask_guest = || {
            let qmp = self.qmp(&vm.api_socket, graceful.min(QUICK_REQUEST));
            // A paused or never started guest cannot see the button; waiting for it would
            // only waste time.
            if matches!(
                qmp.state(),
                Ok(InstanceState::Paused | InstanceState::NotStarted)
            ) {
                return false;
            }
            qmp.system_powerdown()
                .inspect_err(|error| {
                    tracing::warn!(pid, error = %crate::error_chain(error), "system_powerdown refused")
                })
                .is_ok()
        };
        escalate::end_process(
            &*self.host,
            pid,
            graceful,
            &self.timeouts,
            "QEMU",
            true,
            ask_guest,
        )
        .map_err(|e| match e {
            Stubborn::Signal(e) => QemuError::Signal(e).into(),
            Stubborn::StillRunning => QemuError::StillRunning { pid }.into(),
        })
    }

    fn not_running_or(&self, vm: &VmHandle, error: VmmError) -> VmmError {
        match error {
            VmmError::Qemu(QemuError::Qmp {
                source: QmpError::Connect(_) | QmpError::Closed,
                ..
            }) if !self.host.pid_alive(vm.pid) => VmmError::NotRunning { pid: vm.pid },
            other => other,
        }
    }
}

impl Vmm for Qemu {
    fn launch(&self, spec: &VmSpec) -> Result<VmHandle, VmmError> {
        self.launch_vm(spec)
    }

    fn pause(&self, vm: &VmHandle) -> Result<(), VmmError> {
        self.qmp(&vm.api_socket, LAUNCH_REQUEST)
            .stop()
            .map_err(|e| self.not_running_or(vm, e))
    }

    fn resume(&self, vm: &VmHandle) -> Result<(), VmmError> {
        self.qmp(&vm.api_socket, LAUNCH_REQUEST)
            .cont()
            .map_err(|e| self.not_running_or(vm, e))
    }

    fn stop(&self, vm: &VmHandle, graceful_timeout: Duration) -> Result<StopOutcome, VmmError> {
        let outcome = if self.owns(vm.pid, &vm.api_socket) {
            self.terminate(vm, graceful_timeout)?
        } else {
            StopOutcome::AlreadyExited
        };
        let mut held = Vec::new();
        // Its cgroup goes once QEMU is gone (the VM's, whatever settings started it).
        if let Some(cgroups) = &self.confinement.cgroups {
            held.push(Resource::Cgroup {
                dirs: cgroups.hierarchy.dirs(&vm.vm_id),
            });
        }
        held.push(Resource::QmpSocket {
            path: vm.api_socket.clone(),
        });
        let failures = release_all(&*self.host, held, self.timeouts.kill_wait);
        tracing::info!(vm = %vm.vm_id, pid = vm.pid, ?outcome, "QEMU stopped");
        if failures.is_empty() {
            Ok(outcome)
        } else {
            Err(VmmError::Release(failures))
        }
    }

    fn state(&self, vm: &VmHandle) -> Result<InstanceState, VmmError> {
        self.qmp(&vm.api_socket, LAUNCH_REQUEST)
            .state()
            .map_err(|e| self.not_running_or(vm, e))
    }

    fn adopt(&self, pid: u32, api_socket: &Path) -> Option<VmHandle> {
        if !self.owns(pid, api_socket) {
            return None;
        }
        let argv = self.host.cmdline(pid)?;
        let state = self
            .qmp(api_socket, QUICK_REQUEST)
            .state()
            .inspect_err(|e| tracing::warn!(pid, error = %crate::error_chain(e), "cannot adopt"))
            .ok()?;
        let vm_id = vm_name(&argv)?;
        tracing::info!(vm = %vm_id, pid, %state, "adopted a running QEMU");
        Some(VmHandle {
            vm_id,
            pid,
            api_socket: api_socket.to_owned(),
            vsock_socket: None,
        })
    }
}

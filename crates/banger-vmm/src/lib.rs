//! The virtual machine monitors banger runs VMs with, behind one small [`Vmm`] trait: launch a
//! VM from a [`VmSpec`] (spawn, configure, start), pause, resume, stop, ask its state, and adopt
//! a VMM process a previous daemon left running. The Firecracker backend lives in
//! [`firecracker`], the QEMU microvm backend in [`qemu`]; both reach the host (processes,
//! sockets, files) through [`host`], which `fake` (built for tests and with the `fake` feature)
//! stands in for, each backend's fake VMM on top; [`auto`] says which of them
//! `vmm = "auto"` picks on this host and why; [`availability`] checks both binaries the way a
//! launch does and words the result as `banger doctor`'s backend checks; [`supervise`] notices
//! VMM processes that exit on their own and reads their console; [`reconcile`] decides, as a
//! pure function, what a starting daemon does with the VMs its store says are running. Nothing
//! here decides policy (names, paths, which VM runs where, what state a VM is in): the daemon
//! passes complete specs and records what it is told. Process creation goes through
//! `banger-host`, the only crate allowed to create processes.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod auto;
pub mod availability;
#[cfg(test)]
mod backend_tests;
pub mod cgroup;
mod escalate;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod firecracker;
pub mod host;
pub mod qemu;
pub mod reconcile;
pub mod supervise;
#[cfg(any(test, feature = "fake"))]
pub mod testing;

pub use auto::{VmmChoice, auto_choice};
pub use availability::Availability;
pub use firecracker::{
    BinaryError, CleanupFailure, Firecracker, FirecrackerBinary, JailerBinary, MIN_VERSION,
    Resource, Timeouts, TransportError, Version,
};
pub use host::{ProcessHost, RealHost};
pub use qemu::{Accel, Qemu, QemuBinary, QemuBinaryError, QmpError};
pub use supervise::{console_tail, exit_code_from_log, watch_exit};

/// Everything a VMM needs to run one VM. Paths are absolute and already decided by the caller;
/// the files named by `drives`, `kernel` and `initrd` exist, the sockets do not (or are stale).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// The VM's id; Firecracker accepts ASCII letters, digits and `-`, at most 64 of them.
    pub vm_id: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// An uncompressed ELF kernel (`vmlinux`).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The kernel command line. banger's guests configure their network themselves, so it must
    /// not carry `ip=` autoconfiguration.
    pub boot_args: String,
    /// In the order the guest sees them (`vda`, `vdb`, ...).
    pub drives: Vec<DriveSpec>,
    pub net: Option<NetSpec>,
    pub vsock: Option<VsockSpec>,
    pub paths: VmPaths,
}

/// One block device of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveSpec {
    /// Firecracker's drive id (e.g. `rootfs`, `overlay`, `work`).
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
    /// Whether the kernel mounts it as `/` (`root=/dev/vda`); false when an initramfs assembles
    /// the root itself.
    pub is_root: bool,
}

/// The VM's network interface: a tap that already exists on the host, and the guest's MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    pub tap: String,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// The VM's vsock device: its context id and the host Unix socket the VMM listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockSpec {
    pub cid: u32,
    pub uds_path: PathBuf,
}

/// Where the VMM's sockets and files go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPaths {
    /// The VMM's API socket (at most 107 bytes: a Unix socket path limit).
    pub api_socket: PathBuf,
    /// The guest's serial console, appended to across starts.
    pub console_log: PathBuf,
    /// The VMM's own log.
    pub vmm_log: PathBuf,
    /// The VMM's metrics (JSON lines).
    pub metrics: PathBuf,
}

/// A running VMM process, as much as is needed to drive it and to find it again after a daemon
/// restart. The daemon stores `pid` and `api_socket` with the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHandle {
    pub vm_id: String,
    pub pid: u32,
    pub api_socket: PathBuf,
    /// The Unix socket through which the host reaches the guest's vsock (Firecracker's hybrid
    /// vsock). Always `None` under QEMU, whose vsock (where the host has one) is reached over
    /// `AF_VSOCK`: see [`Qemu::vsock_cid`].
    pub vsock_socket: Option<PathBuf>,
}

/// What the VMM says about its guest (Firecracker's `InstanceInfo.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Configured (or being configured), `InstanceStart` not yet accepted.
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::NotStarted => "not started",
            InstanceState::Running => "running",
            InstanceState::Paused => "paused",
        })
    }
}

/// How a [`Vmm::stop`] ended the VMM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// It was not running any more; only its sockets were removed.
    AlreadyExited,
    /// The guest shut down after Ctrl-Alt-Del within the graceful timeout.
    ShutDown,
    /// It exited on SIGTERM.
    Terminated,
    /// It had to be killed.
    Killed,
}

/// A VMM backend. Calls block (they talk to a local socket and wait for processes with
/// deadlines); an async caller runs them on a blocking thread.
pub trait Vmm: Send + Sync + fmt::Debug {
    /// Spawns the VMM, configures the VM and starts it. On failure everything acquired so far
    /// (process, sockets) is released again, newest first.
    fn launch(&self, spec: &VmSpec) -> Result<VmHandle, VmmError>;

    /// [`launch`](Self::launch), running `beside` (work the VM needs before it is configured,
    /// such as making its tap) while the VMM process starts up: a VMM that takes milliseconds
    /// to open its API after the spawn runs it right after the spawn, one that needs it at the
    /// spawn (the tap on QEMU's command line) before. When `beside` fails the launch fails
    /// with [`VmmError::Beside`] and releases what it acquired; `beside` cleans up after itself.
    fn launch_beside(
        &self,
        spec: &VmSpec,
        beside: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<VmHandle, VmmError> {
        beside().map_err(VmmError::Beside)?;
        self.launch(spec)
    }

    fn pause(&self, vm: &VmHandle) -> Result<(), VmmError>;

    fn resume(&self, vm: &VmHandle) -> Result<(), VmmError>;

    /// Asks the guest to shut down, waits up to `graceful_timeout`, then terminates and finally
    /// kills the VMM; removes its sockets. Stopping a VMM that already exited only removes its
    /// sockets, which makes this the release path after a crash too. A zero timeout skips the
    /// request to the guest.
    fn stop(&self, vm: &VmHandle, graceful_timeout: Duration) -> Result<StopOutcome, VmmError>;

    /// The guest's state as the VMM reports it.
    fn state(&self, vm: &VmHandle) -> Result<InstanceState, VmmError>;

    /// A handle for the VMM process `pid` when it is alive, is this backend's VMM serving
    /// `api_socket` (not a process that reused the pid) and answers on that socket.
    fn adopt(&self, pid: u32, api_socket: &Path) -> Option<VmHandle>;
}

/// A VMM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("invalid VM spec: {0}")]
    InvalidSpec(String),

    /// What only the Firecracker backend runs into.
    #[error(transparent)]
    Firecracker(#[from] FirecrackerError),

    /// What only the QEMU backend runs into.
    #[error(transparent)]
    Qemu(#[from] QemuError),

    #[error("{} belongs to a running process", path.display())]
    SocketInUse { path: PathBuf },

    #[error("cannot prepare {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the VMM process {pid} is not running")]
    NotRunning { pid: u32 },

    /// What [`Vmm::launch_beside`] ran beside the launch failed.
    #[error("{0}")]
    Beside(String),

    /// A launch failed and was rolled back; `cleanup` lists the rollback steps that failed too.
    #[error("cannot launch VM {vm_id}{}", cleanup_suffix(cleanup))]
    Launch {
        vm_id: String,
        #[source]
        error: Box<VmmError>,
        cleanup: Vec<CleanupFailure>,
    },

    /// The VM's cgroup could not be made, or its VMM not moved into it.
    #[error("cannot confine the VMM to its cgroup: {0}")]
    Cgroup(#[source] std::io::Error),

    /// The VMM runs but its guest does not, and cannot be resumed (it crashed, panicked or
    /// hit an emulation error); `status` is the VMM's own word for it.
    #[error("the guest is not running: the VMM reports {status:?}")]
    GuestStopped { status: String },

    /// A snapshot could not be written.
    #[error("cannot snapshot the VM: {0}")]
    Snapshot(String),

    /// Releasing a stopped VMM's resources failed for some of them.
    #[error("cannot release {}", join_failures(.0))]
    Release(Vec<CleanupFailure>),
}

/// A failure of the Firecracker backend: its binary, its API, its process.
#[derive(Debug, thiserror::Error)]
pub enum FirecrackerError {
    #[error(transparent)]
    Binary(#[from] BinaryError),

    /// Firecracker refused a request; `fault_message` is its own words, verbatim.
    #[error("{resource}: Firecracker answered {status}: {fault_message}")]
    Api {
        /// Method and path, e.g. `PUT /boot-source`.
        resource: String,
        status: u16,
        fault_message: String,
    },

    #[error("cannot talk to Firecracker on {}", socket.display())]
    Transport {
        socket: PathBuf,
        #[source]
        source: TransportError,
    },

    #[error("{resource}: Firecracker sent an answer banger cannot read: {detail}")]
    BadAnswer { resource: String, detail: String },

    #[error("cannot start Firecracker")]
    Spawn(#[source] banger_host::ProcessError),

    #[error("Firecracker did not open its API socket {} within {timeout:?}", socket.display())]
    SocketTimeout { socket: PathBuf, timeout: Duration },

    /// Firecracker went away while it was being set up.
    #[error("Firecracker (pid {pid}) exited {during}{}", console_suffix(console))]
    Exited {
        pid: u32,
        during: String,
        /// The last lines of the console log, where Firecracker prints why it exits.
        console: Vec<String>,
    },

    #[error("cannot signal Firecracker")]
    Signal(#[source] banger_host::ProcessError),

    #[error("Firecracker (pid {pid}) is still running after SIGKILL")]
    StillRunning { pid: u32 },
}

/// A failure of the QEMU backend: its binary, QMP, its process.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error(transparent)]
    Binary(#[from] QemuBinaryError),

    /// A QMP command failed: QEMU refused it, or could not be reached or understood.
    #[error("QMP {command} on {}", socket.display())]
    Qmp {
        socket: PathBuf,
        command: String,
        #[source]
        source: QmpError,
    },

    #[error("cannot start QEMU")]
    Spawn(#[source] banger_host::ProcessError),

    #[error("QEMU did not open its QMP socket {} within {timeout:?}", socket.display())]
    SocketTimeout { socket: PathBuf, timeout: Duration },

    /// QEMU went away while it was being set up.
    #[error("QEMU (pid {pid}) exited {during}{}", log_suffix(log))]
    Exited {
        pid: u32,
        during: String,
        /// The last lines of QEMU's own log, where it prints why it exits.
        log: Vec<String>,
    },

    #[error("cannot signal QEMU")]
    Signal(#[source] banger_host::ProcessError),

    #[error("QEMU (pid {pid}) is still running after SIGKILL")]
    StillRunning { pid: u32 },
}

impl From<BinaryError> for VmmError {
    fn from(error: BinaryError) -> Self {
        VmmError::Firecracker(error.into())
    }
}

impl From<QemuBinaryError> for VmmError {
    fn from(error: QemuBinaryError) -> Self {
        VmmError::Qemu(error.into())
    }
}

impl VmmError {
    /// For a rolled-back launch, the error that stopped it; otherwise `self`.
    pub fn root(&self) -> &VmmError {
        match self {
            VmmError::Launch { error, .. } => error.root(),
            other => other,
        }
    }
}

fn console_suffix(console: &[String]) -> String {
    if console.is_empty() {
        String::new()
    } else {
        format!("; last console lines:\n{}", console.join("\n"))
    }
}

fn log_suffix(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; last lines of its log:\n{}", log.join("\n"))
    }
}

fn cleanup_suffix(cleanup: &[CleanupFailure]) -> String {
    if cleanup.is_empty() {
        String::new()
    } else {
        format!(" (cleanup also failed: {})", join_failures(cleanup))
    }
}

fn join_failures(failures: &[CleanupFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub use banger_host::error_chain;

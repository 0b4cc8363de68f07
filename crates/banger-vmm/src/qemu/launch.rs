//! Launching one VM in a fresh QEMU process, with the same ledger discipline as the Firecracker
//! launch: each step records what it acquired, a failing step releases the ledger newest first,
//! a release that fails does not stop the others, and all their errors travel with the launch
//! error. Stop and post-crash cleanup release the same [`Resource`] values through [`release`].
//!
//! The steps: refuse a QMP socket a live process serves (remove a stale one), create the logs
//! mode 0600, spawn QEMU paused (`-S`) with its stderr in the VMM log, wait for the QMP socket,
//! `cont`, and check `query-status` says the guest runs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::QemuError;
use crate::escalate::{self, Stubborn};

use super::command_line::{self, VHOST_VSOCK};
use super::qmp::{QmpClient, QmpError};
use super::{LAUNCH_REQUEST, Qemu};
use crate::firecracker::CleanupFailure;
use crate::host::{ProcessHost, SocketWaitError};
use crate::{InstanceState, VmHandle, VmSpec, VmmError};

/// How many lines of QEMU's log an error about a dead QEMU carries.
const LOG_LINES: usize = 20;

/// How long a launch whose QMP connection broke waits for QEMU to finish exiting, so that the
/// error can say it exited and why.
const DYING_WAIT: Duration = Duration::from_secs(1);

/// One thing a QEMU launch acquired that must be released when the VM goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// The QEMU process.
    Process { pid: u32 },
    /// Its QMP socket file: QEMU removes it when it exits cleanly, nobody when it is killed.
    QmpSocket { path: PathBuf },
    /// Its cgroup's directories, made before QEMU starts.
    Cgroup { dirs: Vec<PathBuf> },
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Process { pid } => write!(f, "QEMU process {pid}"),
            Resource::QmpSocket { path } => write!(f, "QMP socket {}", path.display()),
            Resource::Cgroup { dirs } => match dirs.first() {
                Some(dir) => write!(f, "cgroup {}", dir.display()),
                None => write!(f, "a cgroup"),
            },
        }
    }
}

/// Releases one resource; releasing something already gone succeeds. A process is killed
/// outright (a graceful stop is [`crate::Vmm::stop`]'s business, before it releases).
pub fn release(
    host: &dyn ProcessHost,
    resource: &Resource,
    kill_wait: Duration,
) -> Result<(), CleanupFailure> {
    tracing::debug!(%resource, "releasing");
    match resource {
        Resource::Process { pid } => escalate::kill(host, *pid, kill_wait).map_err(|e| match e {
            Stubborn::Signal(source) => CleanupFailure::Kill {
                vmm: "QEMU",
                pid: *pid,
                source,
            },
            Stubborn::StillRunning => CleanupFailure::StillRunning {
                vmm: "QEMU",
                pid: *pid,
            },
        }),
        Resource::QmpSocket { path } => {
            host.remove_file(path)
                .map_err(|source| CleanupFailure::Remove {
                    path: path.clone(),
                    source,
                })
        }
        Resource::Cgroup { dirs } => crate::cgroup::remove(host, dirs, crate::cgroup::LEAVE_WAIT)
            .map_err(|source| CleanupFailure::Remove {
                path: dirs.first().cloned().unwrap_or_default(),
                source,
            }),
    }
}

/// Releases `acquired` newest first, returning every failure.
pub fn release_all(
    host: &dyn ProcessHost,
    acquired: Vec<Resource>,
    kill_wait: Duration,
) -> Vec<CleanupFailure> {
    escalate::release_newest_first(acquired, |resource| release(host, resource, kill_wait))
}

/// The rules every backend holds a spec to, plus QEMU's own: drive ids QEMU accepts as ids.
pub fn validate(spec: &VmSpec) -> Result<(), VmmError> {
    crate::firecracker::launch::validate(spec)?;
    if spec.vcpus > 255 {
        return Err(VmmError::InvalidSpec(format!(
            "{} vCPUs is too many",
            spec.vcpus
        )));
    }
    for drive in &spec.drives {
        let id = &drive.id;
        let valid = id.starts_with(|c: char| c.is_ascii_alphabetic())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(VmmError::InvalidSpec(format!(
                "drive id {id:?} must start with a letter and hold only letters, digits, \
                 '-', '.' or '_'"
            )));
        }
    }
    if let Some(net) = &spec.net {
        let octets: Vec<&str> = net.mac.split(':').collect();
        if octets.len() != 6
            || !octets
                .iter()
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(VmmError::InvalidSpec(format!(
                "MAC address {:?} is not six hex octets separated by ':'",
                net.mac
            )));
        }
    }
    Ok(())
}

/// Serializes the choice of a QEMU's uid with the spawn that shows it in the process list.
static UIDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Qemu {
    /// The lowest uid of `range` that no running QEMU's command line names.
    fn free_uid(&self, range: (u32, u32)) -> Result<u32, VmmError> {
        let taken: Vec<u32> = self
            .host
            .processes()
            .iter()
            .filter_map(|(_, argv)| command_line::runas_uid(argv))
            .collect();
        crate::firecracker::jail::lowest_free_uid(range, &taken, "qemu_uids")
    }

    pub(crate) fn launch_vm(&self, spec: &VmSpec) -> Result<VmHandle, VmmError> {
        validate(spec)?;
        let mut acquired = Vec::new();
        match self.launch_steps(spec, &mut acquired) {
            Ok(handle) => Ok(handle),
            Err(error) => {
                let error = self.explain(error, &acquired, &spec.paths.vmm_log);
                let cleanup = release_all(&*self.host, acquired, self.timeouts.kill_wait);
                Err(VmmError::Launch {
                    vm_id: spec.vm_id.clone(),
                    error: Box::new(error),
                    cleanup,
                })
            }
        }
    }

    fn launch_steps(
        &self,
        spec: &VmSpec,
        acquired: &mut Vec<Resource>,
    ) -> Result<VmHandle, VmmError> {
        let host = &*self.host;
        let qmp_socket = &spec.paths.api_socket;
        // One uid per QEMU: its choice and the spawn that shows it in the process list are one
        // step, and a range used up refuses the launch before anything is made.
        let uids = UIDS.lock().unwrap_or_else(|e| e.into_inner());
        let confined = command_line::Confined {
            uid: match self.confinement.uids {
                Some(range) => Some(self.free_uid(range)?),
                None => None,
            },
            sandbox: self.confinement.sandbox,
        };
        escalate::clear_stale_socket(&*self.host, qmp_socket)?;
        // Created here, mode 0600, so that they are the user's alone (QEMU would create the
        // console log world-readable). They outlive the VM: they are how a failure is read.
        for file in [&spec.paths.vmm_log, &spec.paths.console_log] {
            host.create_file(file).map_err(|source| VmmError::File {
                path: file.clone(),
                source,
            })?;
        }
        // Without the device the guest simply has no vsock and its agent answers on the VM's
        // network instead; that is the normal case on hosts without vhost-vsock.
        let vsock = spec.vsock.is_some() && self.attaches_vsock();
        if spec.vsock.is_some() && !vsock {
            tracing::info!(vm = %spec.vm_id, "no {VHOST_VSOCK}: the VM gets no vsock device");
        }
        let args = command_line::process_args(spec, self.accel, vsock, confined);
        // The cgroup and its limits before QEMU exists, so that releasing newest first ends
        // QEMU before its cgroup goes.
        if let Some(cgroups) = &self.confinement.cgroups {
            let limits = crate::cgroup::Limits {
                memory_bytes: (u64::from(spec.memory_mib) + u64::from(cgroups.memory_overhead_mib))
                    << 20,
                cpus: spec.vcpus,
            };
            cgroups
                .hierarchy
                .create(host, &spec.vm_id, limits)
                .map_err(VmmError::Cgroup)?;
            record(
                acquired,
                Resource::Cgroup {
                    dirs: cgroups.hierarchy.dirs(&spec.vm_id),
                },
            );
        }
        let pid = host
            .spawn(&self.binary.path, &args, &spec.paths.vmm_log)
            .map_err(QemuError::Spawn)?;
        drop(uids);
        record(acquired, Resource::Process { pid });
        // QEMU starts paused (-S): in its cgroup before its guest touches any memory.
        if let Some(cgroups) = &self.confinement.cgroups {
            cgroups
                .hierarchy
                .enter(host, &spec.vm_id, pid)
                .map_err(VmmError::Cgroup)?;
        }
        // QEMU binds the socket while it starts; recorded before the wait so that a socket
        // which appears late is still removed.
        record(
            acquired,
            Resource::QmpSocket {
                path: qmp_socket.clone(),
            },
        );
        host.wait_for_socket(qmp_socket, pid, self.timeouts.api_socket)
            .map_err(|e| match e {
                SocketWaitError::Exited => QemuError::Exited {
                    pid,
                    during: "before opening its QMP socket".into(),
                    log: Vec::new(),
                },
                SocketWaitError::TimedOut(timeout) => QemuError::SocketTimeout {
                    socket: qmp_socket.clone(),
                    timeout,
                },
            })?;

        let qmp = QmpClient::new(&*self.qmp, qmp_socket, LAUNCH_REQUEST);
        qmp.cont()?;
        let state = qmp.state()?;
        if state != InstanceState::Running {
            return Err(VmmError::GuestStopped {
                status: state.to_string(),
            });
        }
        tracing::info!(vm = %spec.vm_id, pid, accel = %self.accel, vsock, "QEMU guest running");
        Ok(VmHandle {
            vm_id: spec.vm_id.clone(),
            pid,
            api_socket: qmp_socket.clone(),
            vsock_socket: None,
        })
    }

    /// A step that failed because QEMU died says so, with QEMU's last words (it prints why it
    /// exits on stderr, which is the VMM log).
    fn explain(&self, error: VmmError, acquired: &[Resource], vmm_log: &Path) -> VmmError {
        let Some(pid) = acquired.iter().find_map(|r| match r {
            Resource::Process { pid } => Some(*pid),
            _ => None,
        }) else {
            return error;
        };
        let log = || crate::console_tail(vmm_log, LOG_LINES).unwrap_or_default();
        match error {
            VmmError::Qemu(QemuError::Exited { pid, during, .. }) => QemuError::Exited {
                pid,
                during,
                log: log(),
            }
            .into(),
            // QEMU opens its QMP socket before it checks the rest of its command line, and
            // a connection it drops is often the first sign that it is exiting.
            VmmError::Qemu(QemuError::Qmp {
                source: QmpError::Connect(_) | QmpError::Closed | QmpError::Io(_),
                ..
            }) if self.host.wait_for_exit(pid, DYING_WAIT) => QemuError::Exited {
                pid,
                during: "while starting the guest".into(),
                log: log(),
            }
            .into(),
            VmmError::Qemu(QemuError::Qmp { .. } | QemuError::SocketTimeout { .. })
                if !self.host.pid_alive(pid) =>
            {
                QemuError::Exited {
                    pid,
                    during: "while starting the guest".into(),
                    log: log(),
                }
                .into()
            }
            other => other,
        }
    }
}

fn record(acquired: &mut Vec<Resource>, resource: Resource) {
    tracing::debug!(%resource, "acquired");
    acquired.push(resource);
}

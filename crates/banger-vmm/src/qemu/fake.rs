//! A stand-in for QEMU and the host it runs on, for tests: [`FakeQemu`] is the fake host of
//! [`crate::fake`] (processes, signals, files) with QEMU on it. It implements both
//! [`ProcessHost`](crate::host::ProcessHost) and [`QmpTransport`], answers QMP like QEMU does
//! (run states, `stop`, `cont`, the power button), models the cgroup file system QEMU's cgroups
//! live in, records every step in one journal, and can fail the Nth step or every step that
//! starts with a given text. The daemon's tests can run whole QEMU VM lifecycles on it without
//! the binary.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::command_line::{VHOST_VSOCK, qmp_socket};
use super::qmp::{QmpCommand, QmpError, QmpTransport};
use super::{Accel, Qemu, QemuBinary};
use crate::Timeouts;
use crate::fake::{FakeHost, FakeVmm, HostState, injected_io};
use crate::firecracker::Version;

pub use crate::fake::INJECTED;

/// The pid the first spawned process gets; the next ones count up.
pub const FIRST_PID: u32 = 5150;

/// A fake QEMU host; clones share their state.
pub type FakeQemu = FakeHost<QemuVmm>;

/// What the fake keeps for QEMU beyond the host.
#[derive(Debug, Default)]
pub struct QemuVmm {
    ignore_powerdown: bool,
    exit_on_cont: bool,
    /// The run state `cont` leads to (a guest that crashes at once: `internal-error`).
    after_cont: Option<String>,
}

/// What the fake keeps about one QEMU process.
#[derive(Debug)]
pub struct QemuProcess {
    /// QEMU's run state, as `query-status` names it.
    status: String,
}

impl FakeVmm for QemuVmm {
    type Process = QemuProcess;

    const FIRST_PID: u32 = FIRST_PID;

    // QEMU removes its QMP socket when it shuts down, on SIGTERM too.
    const REMOVES_SOCKET_ON_EXIT: bool = true;

    fn api_socket(argv: &[OsString]) -> Option<PathBuf> {
        qmp_socket(argv)
    }

    fn new_process(argv: &[OsString]) -> QemuProcess {
        let status = if argv.iter().any(|a| a == "-S") {
            "prelaunch"
        } else {
            "running"
        };
        QemuProcess {
            status: status.into(),
        }
    }

    // A cgroup file system: directories made one at a time, files written only into them, and
    // a directory that a live process was moved into cannot be removed.

    fn create_dir(state: &mut HostState<Self>, dir: &Path, _mode: u32) -> io::Result<()> {
        if state.step(format!("mkdir {}", dir.display())) {
            return Err(injected_io());
        }
        state.dirs.insert(dir.to_owned());
        Ok(())
    }

    fn write_file(state: &mut HostState<Self>, path: &Path, contents: &[u8]) -> io::Result<()> {
        if state.step(format!("write {}", path.display())) {
            return Err(injected_io());
        }
        if !path.parent().is_some_and(|dir| state.dirs.contains(dir)) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        state.contents.insert(path.to_owned(), contents.to_vec());
        Ok(())
    }

    fn list_dir(state: &HostState<Self>, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(state
            .dirs
            .iter()
            .filter(|d| d.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn remove_dir(state: &mut HostState<Self>, dir: &Path) -> io::Result<()> {
        if state.step(format!("rmdir {}", dir.display())) {
            return Err(injected_io());
        }
        let member = state
            .contents
            .get(&dir.join("cgroup.procs"))
            .and_then(|pid| String::from_utf8_lossy(pid).parse::<u32>().ok());
        if member.is_some_and(|pid| state.alive(pid)) {
            return Err(io::Error::from(io::ErrorKind::ResourceBusy));
        }
        state.dirs.remove(dir);
        state.contents.retain(|path, _| !path.starts_with(dir));
        Ok(())
    }
}

impl FakeQemu {
    /// The guest ignores the ACPI power button (like a guest without ACPI, or a hung one).
    pub fn ignoring_powerdown(self) -> Self {
        self.lock().vmm.ignore_powerdown = true;
        self
    }

    /// QEMU exits while answering `cont`, dropping the QMP connection (like a QEMU that opened
    /// its QMP socket before finding an option it cannot honour).
    pub fn exiting_on_cont(self) -> Self {
        self.lock().vmm.exit_on_cont = true;
        self
    }

    /// The guest stops in `status` as soon as it runs (e.g. `internal-error`).
    pub fn crashing_guest(self, status: &str) -> Self {
        self.lock().vmm.after_cont = Some(status.to_owned());
        self
    }

    /// The host has `/dev/vhost-vsock`.
    pub fn with_vhost_vsock(self) -> Self {
        self.lock().files.insert(PathBuf::from(VHOST_VSOCK));
        self
    }

    /// A QEMU that is already running with `argv` (started by a previous daemon), in run state
    /// `status`, serving its QMP socket. Returns its pid.
    pub fn add_running(&self, argv: &[&str], status: &str) -> u32 {
        self.add_process(
            argv,
            QemuProcess {
                status: status.to_owned(),
            },
        )
    }

    /// A process that is not QEMU (e.g. one that reused a dead VMM's pid).
    pub fn add_other_process(&self, argv: &[&str]) -> u32 {
        self.add_running(argv, "running")
    }

    /// What was last written to `path` (a cgroup file).
    pub fn written(&self, path: &Path) -> Option<String> {
        self.contents(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The binary the fake pretends to run: `/usr/bin/qemu-system-x86_64`, version 7.2.22.
    pub fn binary() -> QemuBinary {
        QemuBinary {
            path: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            version: Version::new(7, 2, 22),
        }
    }

    /// A [`Qemu`] backend with `accel` running on this fake, with short timeouts.
    pub fn backend(&self, accel: Accel) -> Qemu {
        Qemu::with_host(
            FakeQemu::binary(),
            accel,
            Arc::new(self.clone()),
            Arc::new(self.clone()),
        )
        .with_timeouts(Timeouts {
            api_socket: Duration::from_millis(100),
            term_grace: Duration::from_millis(100),
            kill_wait: Duration::from_millis(100),
        })
    }
}

fn refused(desc: &str) -> QmpError {
    QmpError::Refused {
        class: "GenericError".into(),
        desc: desc.into(),
    }
}

impl QmpTransport for FakeQemu {
    fn execute(
        &self,
        socket: &Path,
        command: &QmpCommand,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let mut state = self.lock();
        let fail = state.step(format!("qmp {}", command.execute));
        let Some(pid) = state.serving(socket) else {
            return Err(QmpError::Connect(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            )));
        };
        if fail {
            return Err(refused(INJECTED));
        }
        if command.execute == "cont" && state.vmm.exit_on_cont {
            state.exit(pid, true);
            return Err(QmpError::Closed);
        }
        let ignore_powerdown = state.vmm.ignore_powerdown;
        let after_cont = state.vmm.after_cont.clone();
        let Some(process) = state.processes.get_mut(&pid) else {
            return Err(QmpError::Timeout(timeout));
        };
        let mut exits = false;
        let answer = match command.execute.as_str() {
            "query-status" => Ok(json!({
                "status": process.vmm.status,
                "singlestep": false,
                "running": process.vmm.status == "running",
            })),
            "stop" => {
                if process.vmm.status == "running" {
                    process.vmm.status = "paused".into();
                }
                Ok(json!({}))
            }
            "cont" => match process.vmm.status.as_str() {
                "internal-error" | "guest-panicked" | "shutdown" => {
                    Err(refused("Resetting the Virtual Machine is required"))
                }
                _ => {
                    process.vmm.status = after_cont.unwrap_or_else(|| "running".into());
                    Ok(json!({}))
                }
            },
            "system_powerdown" => {
                exits = process.vmm.status == "running" && !ignore_powerdown;
                Ok(json!({}))
            }
            other => Err(QmpError::Refused {
                class: "CommandNotFound".into(),
                desc: format!("The command {other} has not been found"),
            }),
        };
        if exits {
            state.exit(pid, true);
        }
        answer
    }
}

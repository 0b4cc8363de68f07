//! Which VMM runs a VM. `vmm = "auto"` picks Firecracker when its binary is present and
//! `/dev/kvm` can run a stock guest kernel; a VM created with an explicit backend gets that one
//! or a clear error. A running VM is always driven by the backend that started it (recorded in
//! its runtime), whatever the configuration says now.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::{ApiError, ErrorCode, VmmKind};
use banger_host::CommandRunner;
use banger_vmm::reconcile::{HostScan, Observation};
use banger_vmm::{Firecracker, FirecrackerBinary, MIN_VERSION, Vmm};

/// A backend able to drive VMs.
#[derive(Debug, Clone)]
pub enum Backend {
    Firecracker(Firecracker),
}

impl Backend {
    pub fn kind(&self) -> VmmKind {
        match self {
            Backend::Firecracker(_) => VmmKind::Firecracker,
        }
    }

    pub fn vmm(&self) -> &dyn Vmm {
        match self {
            Backend::Firecracker(fc) => fc,
        }
    }

    /// What a restarting daemon needs to know about a recorded VMM process.
    pub fn observe(&self, pid: u32, api_socket: &Path) -> Observation {
        match self {
            Backend::Firecracker(fc) => fc.observe(pid, api_socket),
        }
    }

    /// The sockets in `dir` and this backend's processes serving a socket there.
    pub fn scan(&self, dir: &Path) -> HostScan {
        match self {
            Backend::Firecracker(fc) => fc.scan(dir),
        }
    }

    /// Whether `pid` is this backend's process serving `api_socket`.
    pub fn owns(&self, pid: u32, api_socket: &Path) -> bool {
        match self {
            Backend::Firecracker(fc) => fc.owns(pid, api_socket),
        }
    }

    /// How a backend's process ended, from its own log: `Some(0)` when the guest shut down.
    pub fn exit_code(&self, vmm_log: &Path) -> Option<i32> {
        match self {
            Backend::Firecracker(_) => banger_vmm::exit_code_from_log(vmm_log),
        }
    }
}

/// Finds and checks backends.
#[derive(Debug, Clone)]
pub struct Backends {
    runner: Arc<dyn CommandRunner>,
    firecracker_bin: Option<PathBuf>,
    /// A prepared Firecracker backend (tests: one on a fake host); `None` detects the binary.
    firecracker: Option<Firecracker>,
    /// Whether `/dev/kvm` can boot a stock guest kernel, and why not.
    kvm: Result<(), String>,
}

impl Backends {
    pub fn new(
        runner: Arc<dyn CommandRunner>,
        firecracker_bin: Option<PathBuf>,
        firecracker: Option<Firecracker>,
    ) -> Backends {
        Backends {
            runner,
            firecracker_bin,
            firecracker,
            kvm: stock_kernel_kvm(),
        }
    }

    /// The Firecracker backend for launching: the binary checked now, so a binary installed
    /// or upgraded since the daemon started is used.
    pub fn firecracker(&self) -> Result<Firecracker, ApiError> {
        if let Some(fc) = &self.firecracker {
            return Ok(fc.clone());
        }
        let binary = FirecrackerBinary::detect(self.firecracker_bin.as_deref(), &*self.runner)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "Firecracker cannot run VMs here: {}",
                        banger_vmm::error_chain(&e)
                    ),
                )
                .with_hint(format!(
                    "install Firecracker {MIN_VERSION} or newer and put it in PATH, or set \
                     firecracker_bin in config.toml; `banger doctor` checks it"
                ))
            })?;
        Ok(Firecracker::new(binary))
    }

    /// The backend for a VM to be started with `requested` (`auto` resolved), and a note for
    /// the user when the choice deserves one.
    pub fn for_start(&self, requested: VmmKind) -> Result<(Backend, Option<String>), ApiError> {
        match requested {
            VmmKind::Firecracker => {
                let fc = self.firecracker()?;
                let note = self.kvm.as_ref().err().map(|why| {
                    format!(
                        "Firecracker will start the instance, but {why}: the guest kernel \
                         will not boot on this host"
                    )
                });
                Ok((Backend::Firecracker(fc), note))
            }
            VmmKind::Qemu => Err(qemu_missing()),
            VmmKind::Auto => match (&self.kvm, self.firecracker()) {
                (Ok(()), Ok(fc)) => Ok((Backend::Firecracker(fc), None)),
                (Err(why), _) => Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "vmm = \"auto\" cannot use Firecracker because {why}, and this \
                             build of banger has no QEMU backend"
                    ),
                )
                .with_hint(
                    "run banger on a host with hardware virtualization (Intel VT-x or AMD-V \
                     exposed to /dev/kvm); `banger doctor` explains what it found",
                )),
                (Ok(()), Err(e)) => Err(e),
            },
        }
    }

    /// The backend that drives a VM `kind` started. Stopping and inspecting need no binary, so
    /// a VM keeps being manageable after its backend's binary was removed.
    pub fn for_running(&self, kind: VmmKind) -> Result<Backend, ApiError> {
        match kind {
            VmmKind::Firecracker | VmmKind::Auto => Ok(Backend::Firecracker(
                self.firecracker.clone().unwrap_or_else(|| {
                    Firecracker::new(FirecrackerBinary {
                        path: self
                            .firecracker_bin
                            .clone()
                            .unwrap_or_else(|| PathBuf::from("firecracker")),
                        version: MIN_VERSION,
                    })
                }),
            )),
            VmmKind::Qemu => Err(qemu_missing()),
        }
    }

    /// Every backend that may have left processes behind, for reconcile.
    pub fn all_for_reconcile(&self) -> Vec<Backend> {
        self.for_running(VmmKind::Firecracker).into_iter().collect()
    }
}

fn qemu_missing() -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        "this build of banger has no QEMU backend",
    )
    .with_hint("create the VM with --vmm firecracker")
}

/// `Ok` when `/dev/kvm` exists, can be opened and is hardware KVM; otherwise why not.
fn stock_kernel_kvm() -> Result<(), String> {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err("/dev/kvm is kvm_pvm, which cannot boot a stock guest kernel".into());
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("/dev/kvm does not exist".into()),
        Err(e) => Err(format!("/dev/kvm cannot be opened ({e})")),
    }
}

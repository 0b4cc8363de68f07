//! Which VMM backends this host can run, judged the way a launch judges them, and the
//! `firecracker`, `qemu` and `vmm` lines `banger doctor` prints about it. The binaries are found
//! and checked by [`FirecrackerBinary::check`] and [`QemuBinary::check`] (minimum versions, the
//! microvm machine type) and the `vmm = "auto"` decision is [`auto_choice`], the same code a VM
//! start runs: the doctor must never call a binary usable that a launch would refuse.
//! banger-host's [`Doctor`](banger_host::Doctor) owns the other host checks and takes these
//! from its caller, since banger-host cannot depend on this crate.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use banger_host::doctor::Check;
use banger_host::{CommandRunner, Kvm, KvmKind};

use crate::auto::{VmmChoice, auto_choice};
use crate::firecracker::binary::{self as fc_binary, BinaryError, FirecrackerBinary, MIN_VERSION};
use crate::qemu::Accel;
use crate::qemu::binary::{
    self as qemu_binary, INSTALL_HINT, PROGRAM, QemuBinary, QemuBinaryError,
};

/// A binary looked for: where it was found (when it was), and whether it passed its check.
#[derive(Debug)]
pub struct Detected<B, E> {
    /// The file that was checked; `None` when none was found. Some errors do not carry it.
    pub path: Option<PathBuf>,
    pub binary: Result<B, E>,
}

/// What this host offers the VMM backends.
#[derive(Debug)]
pub struct Availability {
    pub kvm: Kvm,
    pub firecracker: Detected<FirecrackerBinary, BinaryError>,
    pub qemu: Detected<QemuBinary, QemuBinaryError>,
}

impl Availability {
    /// Finds and checks both binaries (`firecracker_bin` and `qemu_bin` from config.toml, else
    /// `PATH`) on a host whose `/dev/kvm` is `kvm`. Runs each binary's `--version` (and QEMU's
    /// `-machine help`) through `runner`.
    pub fn detect(
        firecracker_bin: Option<&Path>,
        qemu_bin: Option<&Path>,
        runner: &dyn CommandRunner,
        kvm: Kvm,
    ) -> Availability {
        let path_var = std::env::var_os("PATH");
        Availability::detect_in(firecracker_bin, qemu_bin, path_var.as_deref(), runner, kvm)
    }

    /// [`Availability::detect`] searching `path_var` (a PATH value) for the binaries not
    /// configured.
    pub fn detect_in(
        firecracker_bin: Option<&Path>,
        qemu_bin: Option<&Path>,
        path_var: Option<&OsStr>,
        runner: &dyn CommandRunner,
        kvm: Kvm,
    ) -> Availability {
        let firecracker = match fc_binary::locate(firecracker_bin, path_var) {
            Ok(path) => Detected {
                path: Some(path.clone()),
                binary: FirecrackerBinary::check(path, runner),
            },
            Err(error) => Detected {
                path: None,
                binary: Err(error),
            },
        };
        let qemu = match qemu_binary::locate(qemu_bin, path_var) {
            Ok(path) => Detected {
                path: Some(path.clone()),
                binary: QemuBinary::check(path, runner),
            },
            Err(error) => Detected {
                path: None,
                binary: Err(error),
            },
        };
        Availability {
            kvm,
            firecracker,
            qemu,
        }
    }

    /// What `vmm = "auto"` picks here and why: [`auto_choice`], as a VM start decides it.
    pub fn auto(&self) -> (VmmChoice, String) {
        auto_choice(self.firecracker.binary.as_ref(), &self.kvm)
    }

    /// The doctor's `firecracker`, `qemu` and `vmm` checks, in that order.
    pub fn checks(&self) -> Vec<Check> {
        vec![
            self.check_firecracker(),
            self.check_qemu(),
            self.check_vmm(),
        ]
    }

    fn check_firecracker(&self) -> Check {
        const NAME: &str = "firecracker";
        let path = shown(self.firecracker.path.as_deref());
        let error = match &self.firecracker.binary {
            Ok(binary) => {
                return Check::ok(
                    NAME,
                    format!(
                        "Firecracker v{} at {}",
                        binary.version,
                        binary.path.display()
                    ),
                );
            }
            Err(error) => error,
        };
        match error {
            BinaryError::NotInPath => Check::warn(
                NAME,
                "not installed (not found in PATH); VMs run under QEMU instead",
                format!(
                    "install a release binary ({MIN_VERSION} or newer) from Firecracker's GitHub \
                     releases into PATH, or set `firecracker_bin = \"/path/to/firecracker\"` in \
                     config.toml"
                ),
            ),
            BinaryError::Missing { path } | BinaryError::NotExecutable { path } => Check::fail(
                NAME,
                format!(
                    "the configured binary {} does not exist or is not executable",
                    path.display()
                ),
                "install Firecracker there, or change `firecracker_bin` in config.toml",
            ),
            BinaryError::VersionCommand { path, source } => Check::fail(
                NAME,
                format!("{} does not run: {source}", path.display()),
                "reinstall Firecracker from its GitHub releases (x86_64 build)",
            ),
            BinaryError::UnreadableVersion { output } => Check::fail(
                NAME,
                format!(
                    "{path} does not look like Firecracker: `--version` printed {:?}",
                    first_line(output)
                ),
                "point `firecracker_bin` in config.toml at a Firecracker release binary",
            ),
            BinaryError::TooOld {
                path,
                found,
                minimum,
            } => Check::fail(
                NAME,
                format!(
                    "{} is Firecracker {found}; banger needs {minimum} or newer",
                    path.display()
                ),
                format!(
                    "install Firecracker {minimum} or newer from its GitHub releases (x86_64 \
                     build), or point `firecracker_bin` in config.toml at one"
                ),
            ),
        }
    }

    fn check_qemu(&self) -> Check {
        const NAME: &str = "qemu";
        let path = shown(self.qemu.path.as_deref());
        let error = match &self.qemu.binary {
            Ok(binary) => {
                return Check::ok(
                    NAME,
                    format!("QEMU {} at {}", binary.version, binary.path.display()),
                );
            }
            Err(error) => error,
        };
        match error {
            QemuBinaryError::NotInPath => Check::warn(
                NAME,
                format!("{PROGRAM} is not installed; it runs VMs where Firecracker cannot"),
                INSTALL_HINT,
            ),
            QemuBinaryError::Missing { path } | QemuBinaryError::NotExecutable { path } => {
                Check::fail(
                    NAME,
                    format!(
                        "the configured binary {} does not exist or is not executable",
                        path.display()
                    ),
                    format!("{INSTALL_HINT}, or change `qemu_bin` in config.toml"),
                )
            }
            QemuBinaryError::Query { .. } => {
                Check::fail(NAME, crate::error_chain(error), INSTALL_HINT)
            }
            QemuBinaryError::UnreadableVersion { output } => Check::fail(
                NAME,
                format!(
                    "{path} does not look like QEMU: `--version` printed {:?}",
                    first_line(output)
                ),
                format!("point `qemu_bin` in config.toml at {PROGRAM}, or {INSTALL_HINT}"),
            ),
            QemuBinaryError::TooOld {
                path,
                found,
                minimum,
            } => Check::fail(
                NAME,
                format!(
                    "{} is QEMU {found}; banger needs {minimum} or newer",
                    path.display()
                ),
                format!("{INSTALL_HINT} on a current release"),
            ),
            QemuBinaryError::NoMicrovm { path } => Check::fail(
                NAME,
                format!(
                    "{} was built without the microvm machine type banger runs VMs on",
                    path.display()
                ),
                INSTALL_HINT,
            ),
        }
    }

    /// Which backend `vmm = "auto"` picks here, and why.
    fn check_vmm(&self) -> Check {
        const NAME: &str = "vmm";
        let accel = match self.auto().0 {
            VmmChoice::Firecracker => return Check::ok(NAME, "vmm = \"auto\" uses Firecracker"),
            VmmChoice::Qemu(accel) => accel,
        };
        let why = match (accel, &self.firecracker.binary) {
            (Accel::Kvm, Err(error)) => {
                format!("Firecracker is not usable ({})", crate::error_chain(error))
            }
            // Under TCG, Firecracker could not boot the guest either: KVM is the reason.
            _ => match &self.kvm {
                Kvm::Missing => "/dev/kvm does not exist",
                Kvm::Usable(KvmKind::Pvm) | Kvm::NoAccess(KvmKind::Pvm, _) => {
                    "/dev/kvm is kvm_pvm, which cannot boot a stock guest kernel"
                }
                Kvm::NoAccess(..) => "/dev/kvm cannot be opened",
                Kvm::Usable(_) => "Firecracker is not usable",
            }
            .to_owned(),
        };
        match (&self.qemu.binary, accel) {
            (Ok(_), Accel::Kvm) => Check::warn(
                NAME,
                format!("vmm = \"auto\" uses QEMU with KVM because {why}"),
                format!(
                    "install Firecracker {MIN_VERSION} or newer (see the firecracker check) for \
                     the full feature set"
                ),
            ),
            (Ok(_), Accel::Tcg) => Check::warn(
                NAME,
                format!(
                    "vmm = \"auto\" uses QEMU with TCG (software emulation, slow) because {why}"
                ),
                "run banger on a host with hardware virtualization for fast VMs",
            ),
            (Err(QemuBinaryError::NotInPath), _) => Check::fail(
                NAME,
                format!("no backend can run VMs: {why}, and QEMU is not installed"),
                INSTALL_HINT,
            ),
            (Err(_), _) => Check::fail(
                NAME,
                format!("no backend can run VMs: {why}, and QEMU is not usable"),
                "see the qemu check",
            ),
        }
    }
}

/// A path for a sentence, or a stand-in when detection found none.
fn shown(path: Option<&Path>) -> String {
    path.map_or_else(|| "the binary".to_owned(), |p| p.display().to_string())
}

fn first_line(output: &str) -> &str {
    output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

#[cfg(test)]
mod tests;

//! Finding `qemu-system-x86_64` and checking that it can run banger's VMs. The binary comes
//! from the configuration or from `PATH`; `--version` must report at least [`MIN_VERSION`] and
//! `-machine help` must list `microvm` (a distribution may build QEMU without it). Both run once,
//! through banger-host's [`CommandRunner`].
//!
//! Why 5.2.0: banger starts every guest with `-M microvm,acpi=on`. microvm itself exists since
//! 4.2, but its ACPI support (the generic event device behind `system_powerdown`, which a
//! graceful stop presses, and the tables a stock distribution kernel expects) arrived in 5.2.
//! Everything else banger uses (`-chardev file,append=on`, `-drive ...,readonly=on`, QMP's
//! `query-status`, `stop`, `cont`, `system_powerdown`) is older. banger is tested with 7.2
//! (Debian 12).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use banger_host::program::{self, LocateError};
use banger_host::{CommandRunner, CommandSpec, RunError};

use crate::firecracker::Version;

/// The program banger runs.
pub const PROGRAM: &str = "qemu-system-x86_64";

/// The oldest QEMU banger drives.
pub const MIN_VERSION: Version = Version::new(5, 2, 0);

/// What installs QEMU on the Debian family; every error that means "no usable QEMU" says it.
pub const INSTALL_HINT: &str = "sudo apt-get install qemu-system-x86";

/// QEMU could not be used.
#[derive(Debug, thiserror::Error)]
pub enum QemuBinaryError {
    #[error(
        "{PROGRAM} not found in PATH; install it (`{INSTALL_HINT}`) or set qemu_bin in config.toml"
    )]
    NotInPath,

    #[error("the configured QEMU binary {} does not exist; install QEMU (`{INSTALL_HINT}`) or fix qemu_bin in config.toml", path.display())]
    Missing { path: PathBuf },

    #[error("{} is not an executable file", path.display())]
    NotExecutable { path: PathBuf },

    #[error("cannot ask {} {question}", path.display())]
    Query {
        path: PathBuf,
        /// What was asked, e.g. `for its version`.
        question: &'static str,
        #[source]
        source: RunError,
    },

    #[error("cannot read a QEMU version in {output:?}")]
    UnreadableVersion { output: String },

    #[error(
        "{} is QEMU {found}; banger needs {minimum} or newer (`{INSTALL_HINT}` on a current \
         release)",
        path.display()
    )]
    TooOld {
        path: PathBuf,
        found: Version,
        minimum: Version,
    },

    #[error(
        "{} was built without the microvm machine type banger runs VMs on; install a QEMU that \
         has it (`{INSTALL_HINT}`)",
        path.display()
    )]
    NoMicrovm { path: PathBuf },
}

/// A QEMU binary whose version and microvm support were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuBinary {
    pub path: PathBuf,
    pub version: Version,
}

impl QemuBinary {
    /// Finds the binary (`configured`, else `qemu-system-x86_64` in `PATH`) and checks it.
    pub fn detect(
        configured: Option<&Path>,
        runner: &dyn CommandRunner,
    ) -> Result<QemuBinary, QemuBinaryError> {
        let path_var = std::env::var_os("PATH");
        let path = locate(configured, path_var.as_deref())?;
        QemuBinary::check(path, runner)
    }

    /// Checks the version and the machine types of the binary at `path`.
    pub fn check(path: PathBuf, runner: &dyn CommandRunner) -> Result<QemuBinary, QemuBinaryError> {
        let ask = |args: &[&str], question| {
            let command = CommandSpec::new(path.to_string_lossy()).args(args.iter().copied());
            runner
                .run(&command)
                .map(|output| output.stdout_lossy())
                .map_err(|source| QemuBinaryError::Query {
                    path: path.clone(),
                    question,
                    source,
                })
        };
        let version = parse_version_output(&ask(&["--version"], "for its version")?)?;
        if !version.at_least(&MIN_VERSION) {
            return Err(QemuBinaryError::TooOld {
                path,
                found: version,
                minimum: MIN_VERSION,
            });
        }
        let machines = ask(&["-machine", "help"], "for its machine types")?;
        if !lists_microvm(&machines) {
            return Err(QemuBinaryError::NoMicrovm { path });
        }
        Ok(QemuBinary { path, version })
    }
}

/// `qemu-system-x86_64 --version` prints `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)`
/// and a copyright line; older releases put no space before the parenthesis. The distribution's
/// build (` (Debian 1:7.2+dfsg-7)`) is kept as the version's suffix because it says which
/// package is installed (`banger doctor` shows it); like any suffix it does not count in
/// comparisons.
pub fn parse_version_output(output: &str) -> Result<Version, QemuBinaryError> {
    let unreadable = || QemuBinaryError::UnreadableVersion {
        output: output.trim().to_owned(),
    };
    let rest = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("QEMU emulator version "))
        .ok_or_else(unreadable)?;
    let numbers: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numbers.split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor)), patch, None) => {
            let patch = match patch {
                None => 0,
                Some(Ok(patch)) => patch,
                Some(Err(_)) => return Err(unreadable()),
            };
            Ok(Version {
                suffix: rest[numbers.len()..].trim_end().to_owned(),
                ..Version::new(major, minor, patch)
            })
        }
        _ => Err(unreadable()),
    }
}

/// Whether `-machine help` lists microvm (a line `microvm   microvm (i386)`).
fn lists_microvm(machines: &str) -> bool {
    machines
        .lines()
        .any(|line| line.split_whitespace().next() == Some("microvm"))
}

/// The binary to run: `configured` when given (it must exist and be executable), otherwise the
/// first executable `qemu-system-x86_64` in `path_var`.
pub fn locate(
    configured: Option<&Path>,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, QemuBinaryError> {
    program::locate(configured, path_var, PROGRAM).map_err(|e| match e {
        LocateError::Missing(path) => QemuBinaryError::Missing { path },
        LocateError::NotExecutable(path) => QemuBinaryError::NotExecutable { path },
        LocateError::NotInPath => QemuBinaryError::NotInPath,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::{CommandOutput, FakeRunner, Matcher};
    use std::os::unix::fs::PermissionsExt;

    const MACHINES: &str = "Supported machines are:\n\
        microvm              microvm (i386)\n\
        pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n";

    #[test]
    fn versions_are_read_from_the_first_line() {
        let debian = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n\
                      Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n";
        let version = parse_version_output(debian).unwrap();
        assert!(version.at_least(&Version::new(7, 2, 22)), "{version:?}");
        assert!(!version.at_least(&Version::new(7, 2, 23)), "{version:?}");
        assert_eq!(
            version.to_string(),
            "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"
        );
        assert_eq!(
            parse_version_output("QEMU emulator version 2.11.1(Debian 1:2.11+dfsg-1ubuntu7)\n")
                .unwrap()
                .to_string(),
            "2.11.1(Debian 1:2.11+dfsg-1ubuntu7)"
        );
        assert_eq!(
            parse_version_output("QEMU emulator version 9.1\n").unwrap(),
            Version::new(9, 1, 0)
        );
        for bad in ["", "Firecracker v1.16.1", "QEMU emulator version x.y"] {
            assert!(parse_version_output(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn check_asks_for_the_version_and_for_microvm() {
        let runner = FakeRunner::new()
            .respond(
                Matcher::prefix(PROGRAM, ["--version"]),
                CommandOutput::with_stdout("QEMU emulator version 7.2.22 (Debian)\n"),
            )
            .respond(
                Matcher::prefix(PROGRAM, ["-machine"]),
                CommandOutput::with_stdout(MACHINES),
            );
        let binary = QemuBinary::check("/usr/bin/qemu-system-x86_64".into(), &runner).unwrap();
        assert_eq!(binary.version.to_string(), "7.2.22 (Debian)");
        assert_eq!(
            runner.calls(),
            [
                "/usr/bin/qemu-system-x86_64 --version",
                "/usr/bin/qemu-system-x86_64 -machine help"
            ]
        );
    }

    #[test]
    fn an_old_qemu_or_one_without_microvm_is_refused_with_the_fix() {
        let old = FakeRunner::new().respond(
            PROGRAM,
            CommandOutput::with_stdout("QEMU emulator version 4.2.1 (Debian)\n"),
        );
        let err = QemuBinary::check("/usr/bin/qemu-system-x86_64".into(), &old).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/usr/bin/qemu-system-x86_64 is QEMU 4.2.1 (Debian); banger needs 5.2.0 or newer \
             (`sudo apt-get install qemu-system-x86` on a current release)"
        );
        assert_eq!(old.calls().len(), 1, "no second question");

        let without = FakeRunner::new()
            .respond(
                Matcher::prefix(PROGRAM, ["--version"]),
                CommandOutput::with_stdout("QEMU emulator version 8.0.0\n"),
            )
            .respond(
                Matcher::prefix(PROGRAM, ["-machine"]),
                CommandOutput::with_stdout("Supported machines are:\npc  Standard PC\n"),
            );
        let err = QemuBinary::check("/opt/q/qemu-system-x86_64".into(), &without).unwrap_err();
        assert!(matches!(err, QemuBinaryError::NoMicrovm { .. }), "{err:?}");
        assert!(err.to_string().contains(INSTALL_HINT), "{err}");
    }

    #[test]
    fn locate_prefers_the_configured_binary_and_says_how_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join(PROGRAM);
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let err = locate(Some(&bin), None).unwrap_err();
        assert!(
            matches!(err, QemuBinaryError::NotExecutable { .. }),
            "{err}"
        );
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(locate(Some(&bin), None).unwrap(), bin);
        let missing = dir.path().join("nope");
        let err = locate(Some(&missing), None).unwrap_err();
        assert!(err.to_string().contains(INSTALL_HINT), "{err}");

        let path_var =
            std::env::join_paths(["relative", "/nonexistent", dir.path().to_str().unwrap()])
                .unwrap();
        assert_eq!(locate(None, Some(&path_var)).unwrap(), bin);
        let err = locate(None, Some(OsStr::new("/nonexistent"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "qemu-system-x86_64 not found in PATH; install it (`sudo apt-get install \
             qemu-system-x86`) or set qemu_bin in config.toml"
        );
    }
}

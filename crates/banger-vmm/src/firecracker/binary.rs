//! Finding the Firecracker binary and checking its version. The binary comes from the
//! configuration (`firecracker_bin`) or from `PATH`; `firecracker --version` is run once, through
//! banger-host's [`CommandRunner`], and must report at least [`MIN_VERSION`].
//!
//! Why 1.12.0: every request banger sends during a launch exists in Firecracker 1.0, but a clone
//! restored from a snapshot next to its original needs a tap of its own, and
//! `SnapshotLoadParams.network_overrides` first appears in the 1.12.0 API. Restoring onto another
//! vsock socket (`vsock_override`) needs 1.16.0; [`FirecrackerBinary::supports`] says whether a
//! binary has it, so only that operation asks for the newer release.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use banger_host::program::{self, LocateError};
use banger_host::{CommandRunner, CommandSpec, RunError};

/// The oldest Firecracker banger drives.
pub const MIN_VERSION: Version = Version::new(1, 12, 0);

/// The release that added `vsock_override` to snapshot restore.
pub const VSOCK_OVERRIDE_VERSION: Version = Version::new(1, 16, 0);

/// A Firecracker (or QEMU) release number. A pre-release suffix (`1.17.0-dev`) or a
/// distribution's build (`7.2.22 (Debian 1:7.2+dfsg-7)`) is kept for display and does not count
/// in comparisons: a development build has the features of its release line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub suffix: String,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
            suffix: String::new(),
        }
    }

    fn triple(&self) -> (u32, u32, u32) {
        (self.major, self.minor, self.patch)
    }

    /// Whether this release has everything `other` has.
    pub fn at_least(&self, other: &Version) -> bool {
        self.triple() >= other.triple()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}{}",
            self.major, self.minor, self.patch, self.suffix
        )
    }
}

impl FromStr for Version {
    type Err = BinaryError;

    /// Parses `1.16.1`, `v1.16.1`, `1.17.0-dev` or `1.16.1+fuzzing`.
    fn from_str(text: &str) -> Result<Self, BinaryError> {
        let unreadable = || BinaryError::UnreadableVersion {
            output: text.to_owned(),
        };
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let split = text.find(['-', '+']).unwrap_or(text.len());
        let (numbers, suffix) = text.split_at(split);
        let mut parts = numbers.split('.').map(|p| p.parse::<u32>());
        let (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unreadable());
        };
        Ok(Version {
            major,
            minor,
            patch,
            suffix: suffix.to_owned(),
        })
    }
}

/// The Firecracker binary could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error(
        "firecracker not found in PATH; install Firecracker {MIN_VERSION} or newer, or set \
         firecracker_bin in config.toml"
    )]
    NotInPath,

    #[error("the configured firecracker binary {} does not exist", path.display())]
    Missing { path: PathBuf },

    #[error("{} is not an executable file", path.display())]
    NotExecutable { path: PathBuf },

    #[error("cannot ask {} for its version", path.display())]
    VersionCommand {
        path: PathBuf,
        #[source]
        source: RunError,
    },

    #[error("cannot read a Firecracker version in {output:?}")]
    UnreadableVersion { output: String },

    #[error(
        "{} is Firecracker {found}; banger needs {minimum} or newer",
        path.display()
    )]
    TooOld {
        path: PathBuf,
        found: Version,
        minimum: Version,
    },
}

/// A Firecracker binary whose version was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerBinary {
    pub path: PathBuf,
    pub version: Version,
}

impl FirecrackerBinary {
    /// Finds the binary (`configured`, else `firecracker` in `PATH`) and checks its version.
    pub fn detect(
        configured: Option<&Path>,
        runner: &dyn CommandRunner,
    ) -> Result<FirecrackerBinary, BinaryError> {
        let path_var = std::env::var_os("PATH");
        let path = locate(configured, path_var.as_deref())?;
        FirecrackerBinary::check(path, runner)
    }

    /// Checks the version of the binary at `path`.
    pub fn check(
        path: PathBuf,
        runner: &dyn CommandRunner,
    ) -> Result<FirecrackerBinary, BinaryError> {
        let command = CommandSpec::new(path.to_string_lossy()).arg("--version");
        let output = runner
            .run(&command)
            .map_err(|source| BinaryError::VersionCommand {
                path: path.clone(),
                source,
            })?;
        let version = parse_version_output(&output.stdout_lossy())?;
        if !version.at_least(&MIN_VERSION) {
            return Err(BinaryError::TooOld {
                path,
                found: version,
                minimum: MIN_VERSION,
            });
        }
        Ok(FirecrackerBinary { path, version })
    }

    /// Whether this binary has what Firecracker `version` introduced.
    pub fn supports(&self, version: &Version) -> bool {
        self.version.at_least(version)
    }
}

/// `firecracker --version` prints `Firecracker v1.16.1` and an empty line.
pub fn parse_version_output(output: &str) -> Result<Version, BinaryError> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Firecracker "))
        .ok_or_else(|| BinaryError::UnreadableVersion {
            output: output.trim().to_owned(),
        })?
        .parse()
}

/// The binary to run: `configured` when given (it must exist and be executable), otherwise the
/// first executable `firecracker` in `path_var`.
pub fn locate(configured: Option<&Path>, path_var: Option<&OsStr>) -> Result<PathBuf, BinaryError> {
    program::locate(configured, path_var, "firecracker").map_err(|e| match e {
        LocateError::Missing(path) => BinaryError::Missing { path },
        LocateError::NotExecutable(path) => BinaryError::NotExecutable { path },
        LocateError::NotInPath => BinaryError::NotInPath,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::{CommandOutput, FakeRunner};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn versions_parse_with_prefix_and_suffix() {
        let v: Version = "v1.16.1".parse().unwrap();
        assert_eq!(v, Version::new(1, 16, 1));
        let dev: Version = "1.17.0-dev".parse().unwrap();
        assert_eq!(dev.to_string(), "1.17.0-dev");
        assert!(dev.at_least(&Version::new(1, 17, 0)));
        assert!(!Version::new(1, 11, 9).at_least(&MIN_VERSION));
        assert!(Version::new(2, 0, 0).at_least(&MIN_VERSION));
        for bad in ["", "1.2", "1.2.3.4", "one.two.three", "v"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn version_output_is_read_from_its_line() {
        let v = parse_version_output("Firecracker v1.16.1\n\n").unwrap();
        assert_eq!(v, Version::new(1, 16, 1));
        assert!(parse_version_output("something else").is_err());
    }

    #[test]
    fn check_runs_version_through_the_runner_and_enforces_the_minimum() {
        let runner = FakeRunner::new().respond(
            "firecracker",
            CommandOutput::with_stdout("Firecracker v1.16.1\n\n"),
        );
        let bin = FirecrackerBinary::check("/opt/fc/firecracker".into(), &runner).unwrap();
        assert_eq!(runner.calls(), ["/opt/fc/firecracker --version"]);
        assert!(!bin.supports(&Version::new(1, 17, 0)));
        assert!(bin.supports(&VSOCK_OVERRIDE_VERSION));

        let old = FakeRunner::new().respond(
            "firecracker",
            CommandOutput::with_stdout("Firecracker v1.7.0\n"),
        );
        let err = FirecrackerBinary::check("/usr/bin/firecracker".into(), &old).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/usr/bin/firecracker is Firecracker 1.7.0; banger needs 1.12.0 or newer"
        );
    }

    #[test]
    fn locate_prefers_the_configured_binary_and_searches_path_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("firecracker");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();

        let err = locate(Some(&bin), None).unwrap_err();
        assert!(matches!(err, BinaryError::NotExecutable { .. }), "{err}");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(locate(Some(&bin), None).unwrap(), bin);

        let missing = dir.path().join("nope");
        assert_eq!(
            locate(Some(&missing), None).unwrap_err().to_string(),
            format!(
                "the configured firecracker binary {} does not exist",
                missing.display()
            )
        );

        let path_var =
            std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(locate(None, Some(&path_var)).unwrap(), bin);
        let err = locate(None, Some(OsStr::new("/nonexistent"))).unwrap_err();
        assert!(matches!(err, BinaryError::NotInPath));
        assert!(err.to_string().contains("firecracker_bin"), "{err}");
    }
}

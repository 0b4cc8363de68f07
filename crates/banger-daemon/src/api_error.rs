//! How the image library's errors reach a client: each error enum of `banger-image` keeps
//! its own words and hints, and this module, at the edge of the API, gives each variant its
//! [`ErrorCode`] (a cancel is `cancelled`, a missing host tool `unavailable`, a bad input
//! `invalid_input`, anything else `internal`). The library knows nothing of the wire.
//!
//! A trait rather than `From` impls: both the errors and [`ApiError`] belong to other crates,
//! so the daemon may only add a trait of its own. Call sites say `.map_err(ToApi::to_api)`.

use banger_api::{ApiError, ErrorCode};
use banger_host::{RunError, error_chain};
use banger_image::archive::ArchiveError;
use banger_image::bootstrap::BootstrapError;
use banger_image::build::BuildError;
use banger_image::register::RegisterError;

/// An error the API can answer with.
pub trait ToApi {
    fn to_api(self) -> ApiError;
}

/// An error of `code` whose message is `message`, with `hint` where there is one.
fn answer(code: ErrorCode, message: String, hint: Option<String>) -> ApiError {
    let error = ApiError::new(code, message);
    match hint {
        Some(hint) => error.with_hint(hint),
        None => error,
    }
}

impl ToApi for ArchiveError {
    fn to_api(self) -> ApiError {
        let code = match &self {
            ArchiveError::Cancelled(_) => ErrorCode::Cancelled,
            ArchiveError::Exists { .. } => ErrorCode::AlreadyExists,
            ArchiveError::Foreign { .. }
            | ArchiveError::Newer { .. }
            | ArchiveError::Corrupt { .. }
            | ArchiveError::Unsafe { .. }
            | ArchiveError::BadFile { .. } => ErrorCode::InvalidInput,
            ArchiveError::Io { .. } | ArchiveError::WorkSeed(_) => ErrorCode::Internal,
        };
        answer(code, error_chain(&self), self.hint())
    }
}

impl ToApi for BootstrapError {
    fn to_api(self) -> ApiError {
        let (code, message) = match &self {
            // The cancel is the whole story; its sources would only say where it was noticed.
            BootstrapError::Cancelled => (ErrorCode::Cancelled, self.to_string()),
            BootstrapError::Exists { .. } => (ErrorCode::AlreadyExists, error_chain(&self)),
            BootstrapError::Command {
                source: RunError::NotFound { .. },
                ..
            } => (ErrorCode::Unavailable, error_chain(&self)),
            _ => (ErrorCode::Internal, error_chain(&self)),
        };
        answer(code, message, self.hint())
    }
}

impl ToApi for BuildError {
    fn to_api(self) -> ApiError {
        let text = error_chain(&self);
        let (code, message) = match &self {
            BuildError::Cancelled => (ErrorCode::Cancelled, text),
            BuildError::Command {
                source: RunError::NotFound { .. },
                ..
            } => (ErrorCode::Unavailable, text),
            BuildError::Command {
                source: RunError::Failed { .. },
                ..
            } => (
                ErrorCode::InvalidInput,
                self.failed_command().unwrap_or(text),
            ),
            BuildError::Checksum { .. }
            | BuildError::NotDebian { .. }
            | BuildError::Unresolved(_) => (ErrorCode::InvalidInput, text),
            _ => (ErrorCode::Internal, text),
        };
        answer(code, message, self.hint())
    }
}

impl ToApi for RegisterError {
    fn to_api(self) -> ApiError {
        let (code, message) = match &self {
            RegisterError::Cancelled => (ErrorCode::Cancelled, self.to_string()),
            // A format check's own sentence says what the file is and should be.
            RegisterError::NotAbsolute { .. } | RegisterError::Format(_) => {
                (ErrorCode::InvalidInput, self.to_string())
            }
            RegisterError::Initrd(_) => (ErrorCode::InvalidInput, error_chain(&self)),
            RegisterError::Copy { .. } | RegisterError::Io { .. } | RegisterError::Manifest(_) => {
                (ErrorCode::Internal, error_chain(&self))
            }
        };
        answer(code, message, self.hint())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn archive_errors_get_their_codes_and_hints() {
        let exists = ArchiveError::Exists {
            path: PathBuf::from("/tmp/taken"),
        }
        .to_api();
        assert_eq!(exists.code, ErrorCode::AlreadyExists);
        assert!(exists.hint.unwrap().contains("--force"));

        let foreign = ArchiveError::Foreign {
            path: PathBuf::from("/tmp/text"),
            reason: "not zstd-compressed".into(),
        }
        .to_api();
        assert_eq!(foreign.code, ErrorCode::InvalidInput);
        assert_eq!(
            foreign.message,
            "/tmp/text is not a banger image archive (not zstd-compressed)"
        );
        assert_eq!(
            foreign.hint.as_deref(),
            Some("import files written by `banger image export NAME FILE`")
        );

        assert_eq!(
            ArchiveError::Cancelled("import").to_api().code,
            ErrorCode::Cancelled
        );
        let io = ArchiveError::Io {
            what: "write",
            path: PathBuf::from("/tmp/x"),
            source: std::io::Error::other("boom"),
        }
        .to_api();
        assert_eq!(io.code, ErrorCode::Internal);
        assert_eq!(io.message, "cannot write /tmp/x: boom");
    }

    #[test]
    fn a_full_disk_is_told_as_such_whatever_failed() {
        let full = ArchiveError::Io {
            what: "write",
            path: PathBuf::from("/tmp/x"),
            source: std::io::Error::from_raw_os_error(28),
        }
        .to_api();
        assert_eq!(full.code, ErrorCode::NoSpace);
    }

    #[test]
    fn bootstrap_errors_get_their_codes_and_hints() {
        let missing = BootstrapError::Command {
            step: "debootstrap",
            source: RunError::NotFound {
                program: "debootstrap".into(),
            },
        }
        .to_api();
        assert_eq!(missing.code, ErrorCode::Unavailable);
        assert_eq!(
            missing.hint.as_deref(),
            Some("install it: apt-get install debootstrap")
        );

        let sudo = BootstrapError::Command {
            step: "making rootfs.ext4",
            source: RunError::Failed {
                command: "sudo -n mkfs.ext4".into(),
                code: Some(1),
                stderr: "sudo: a password is required".into(),
            },
        }
        .to_api();
        assert_eq!(sudo.code, ErrorCode::Internal);
        assert!(
            sudo.message.contains("sudo: a password is required"),
            "{}",
            sudo.message
        );
        assert!(sudo.hint.unwrap().contains("sudo -n"));

        let cancelled = BootstrapError::Cancelled.to_api();
        assert_eq!(cancelled.code, ErrorCode::Cancelled);
        assert_eq!(cancelled.message, "the bootstrap was cancelled");
    }

    #[test]
    fn a_failed_build_command_says_the_last_lines_of_its_stderr() {
        let stderr: String = (1..=12).map(|n| format!("line {n}\n")).collect();
        let failed = BuildError::Command {
            step: "apt-get download",
            source: RunError::Failed {
                command: "apt-get download x".into(),
                code: Some(100),
                stderr,
            },
        }
        .to_api();
        assert_eq!(failed.code, ErrorCode::InvalidInput);
        assert_eq!(
            failed.message,
            "apt-get download failed: line 5\nline 6\nline 7\nline 8\nline 9\nline 10\nline 11\nline 12"
        );
        assert!(failed.hint.unwrap().contains("apt-cache policy"));

        let curl = BuildError::Command {
            step: "download",
            source: RunError::NotFound {
                program: "curl".into(),
            },
        }
        .to_api();
        assert_eq!(curl.code, ErrorCode::Unavailable);
        assert_eq!(
            curl.hint.as_deref(),
            Some("install it: apt-get install curl")
        );
        assert_eq!(BuildError::Cancelled.to_api().code, ErrorCode::Cancelled);
    }

    #[test]
    fn registration_errors_get_their_codes_and_hints() {
        let relative = RegisterError::NotAbsolute {
            role: "kernel",
            path: "vmlinux".into(),
        }
        .to_api();
        assert_eq!(relative.code, ErrorCode::InvalidInput);
        assert_eq!(relative.message, "kernel path \"vmlinux\" is not absolute");
        assert_eq!(
            relative.hint.as_deref(),
            Some("bangerd runs in another directory; pass absolute paths")
        );

        let copy = RegisterError::Copy {
            path: PathBuf::from("/src/rootfs"),
            source: banger_host::disk::CopyError::Write {
                path: PathBuf::from("/store/rootfs.ext4"),
                source: std::io::Error::other("disk full"),
            },
        }
        .to_api();
        assert_eq!(copy.code, ErrorCode::Internal);
        assert_eq!(
            copy.message,
            "copying /src/rootfs into the image store failed: cannot write /store/rootfs.ext4: disk full"
        );

        let cancelled = RegisterError::Cancelled.to_api();
        assert_eq!(cancelled.code, ErrorCode::Cancelled);
        assert_eq!(cancelled.message, "the registration was cancelled");
    }
}

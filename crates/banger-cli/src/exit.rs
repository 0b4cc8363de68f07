//! How `banger` ends: the stable exit codes scripts can rely on, and [`Failure`], the one error
//! type every command returns — an API-shaped error (`{code, message, hint}`) together with the
//! exit code it maps to.

use banger_api::{ApiError, ClientError, ErrorCode};

/// Exit codes of `banger`. They are part of the CLI's contract: scripts may branch on them.
///
/// | code | name              | when                                                               |
/// |------|-------------------|--------------------------------------------------------------------|
/// | 0    | ok                | the command did what was asked                                     |
/// | 1    | internal          | an unexpected failure (`internal`, a garbled answer from bangerd)  |
/// | 2    | usage             | the command line does not parse (clap's own message)               |
/// | 3    | invalid input     | a value was refused (`invalid_input`, `payload_too_large`, `unsupported_media_type`), checked by banger before contacting bangerd and again by bangerd |
/// | 4    | not found         | no such VM, image or operation (`not_found`)                       |
/// | 5    | conflict          | `already_exists`, `in_use`, `invalid_state`, `exhausted`           |
/// | 6    | daemon unavailable| bangerd cannot be found, started or reached, or answers `unavailable`; also `banger daemon status` when bangerd is not running |
/// | 7    | operation failed  | a long-running operation (e.g. `image register`) ended in failure  |
/// | 8    | cancelled         | the operation was cancelled (Ctrl-C while banger waited for it)    |
/// | 9    | unsupported       | this build of banger cannot do what was asked (`unsupported`)      |
/// | 10   | host not ready    | `banger doctor` found a failing check                              |
/// | 11   | over capacity     | a start (or a create that starts) would reserve more vCPUs or guest memory than admission control allows (`over_capacity`), refused directly or by a start operation |
/// | 12   | no space          | a filesystem banger writes to is full (`no_space`), met directly or by an operation; what was made for the request is gone again |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Internal = 1,
    Usage = 2,
    InvalidInput = 3,
    NotFound = 4,
    Conflict = 5,
    Unavailable = 6,
    OperationFailed = 7,
    Cancelled = 8,
    Unsupported = 9,
    HostNotReady = 10,
    OverCapacity = 11,
    NoSpace = 12,
}

impl Exit {
    /// The exit code for an API error code met in a direct answer of bangerd.
    pub fn for_code(code: ErrorCode) -> Exit {
        match code {
            ErrorCode::InvalidInput
            | ErrorCode::PayloadTooLarge
            | ErrorCode::UnsupportedMediaType => Exit::InvalidInput,
            ErrorCode::NotFound => Exit::NotFound,
            ErrorCode::AlreadyExists
            | ErrorCode::InUse
            | ErrorCode::InvalidState
            | ErrorCode::Exhausted => Exit::Conflict,
            ErrorCode::OverCapacity => Exit::OverCapacity,
            ErrorCode::NoSpace => Exit::NoSpace,
            ErrorCode::Unavailable => Exit::Unavailable,
            ErrorCode::Cancelled => Exit::Cancelled,
            ErrorCode::Unsupported => Exit::Unsupported,
            // `daemon_outdated` only escapes when restarting bangerd did not help, and
            // `method_not_allowed` means banger and bangerd disagree about the API: both are bugs.
            ErrorCode::DaemonOutdated | ErrorCode::MethodNotAllowed | ErrorCode::Internal => {
                Exit::Internal
            }
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// A command that did not succeed: what to tell the user, and how `banger` exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: ApiError,
    pub exit: Exit,
}

impl Failure {
    /// A failure whose exit code follows from the error's code.
    pub fn new(error: ApiError) -> Self {
        Failure {
            exit: Exit::for_code(error.code),
            error,
        }
    }

    /// The failure of a long-running operation: "it ran and failed" (7) is a different
    /// situation for a script than "the request was refused", whatever the underlying code,
    /// except for a cancel, a start that admission control refused (a restart's start is
    /// decided inside its operation) and a full disk: those exit as they would have as a
    /// direct answer.
    pub fn operation(error: ApiError) -> Self {
        let exit = match error.code {
            ErrorCode::Cancelled => Exit::Cancelled,
            ErrorCode::OverCapacity => Exit::OverCapacity,
            ErrorCode::NoSpace => Exit::NoSpace,
            _ => Exit::OperationFailed,
        };
        Failure { error, exit }
    }

    /// bangerd cannot be found, started or reached.
    pub fn unavailable(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Failure {
            error: ApiError::new(ErrorCode::Unavailable, message).with_hint(hint),
            exit: Exit::Unavailable,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(ApiError::invalid(message))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Failure::new(ApiError::internal(message))
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure::new(error)
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Api(e) => Failure::new(e),
            // Commands reach this only after banger already tried to start bangerd.
            e @ ClientError::Connect { .. } => Failure::unavailable(
                e.to_string(),
                "check `banger daemon status` and the daemon's log",
            ),
            e @ ClientError::Protocol(_) => Failure::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_code_has_its_documented_exit_code() {
        let table = [
            (ErrorCode::InvalidInput, 3),
            (ErrorCode::PayloadTooLarge, 3),
            (ErrorCode::UnsupportedMediaType, 3),
            (ErrorCode::NotFound, 4),
            (ErrorCode::AlreadyExists, 5),
            (ErrorCode::InUse, 5),
            (ErrorCode::InvalidState, 5),
            (ErrorCode::Exhausted, 5),
            (ErrorCode::OverCapacity, 11),
            (ErrorCode::NoSpace, 12),
            (ErrorCode::Unavailable, 6),
            (ErrorCode::Cancelled, 8),
            (ErrorCode::Unsupported, 9),
            (ErrorCode::Internal, 1),
            (ErrorCode::MethodNotAllowed, 1),
            (ErrorCode::DaemonOutdated, 1),
        ];
        for (code, exit) in table {
            assert_eq!(Exit::for_code(code).code(), exit, "{code}");
        }
    }

    #[test]
    fn failed_operations_exit_7_and_cancelled_ones_8() {
        let failed = Failure::operation(ApiError::invalid("rootfs is not ext4"));
        assert_eq!(failed.exit, Exit::OperationFailed);
        let cancelled = Failure::operation(ApiError::new(ErrorCode::Cancelled, "cancelled"));
        assert_eq!(cancelled.exit, Exit::Cancelled);
        let refused = Failure::operation(ApiError::new(ErrorCode::OverCapacity, "no room"));
        assert_eq!(refused.exit, Exit::OverCapacity);
        let full = Failure::operation(ApiError::internal("No space left on device (os error 28)"));
        assert_eq!(full.exit, Exit::NoSpace);
    }

    #[test]
    fn connect_errors_mean_the_daemon_is_unavailable() {
        let err = ClientError::Connect {
            socket: "/run/banger/bangerd.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(Failure::from(err).exit, Exit::Unavailable);
        let err = ClientError::Protocol("garbage".into());
        assert_eq!(Failure::from(err).exit, Exit::Internal);
    }
}

//! The one error shape every banger API answer uses: `{code, message, hint}`. Codes are stable
//! identifiers; each maps to one HTTP status (daemon side) and one CLI exit code (client side),
//! documented in `docs/cli.md`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed or a value was out of range (400).
    InvalidInput,
    /// No such VM, image, operation or route (404).
    NotFound,
    /// The HTTP method is not allowed on this route (405).
    MethodNotAllowed,
    /// The name is already taken (409).
    AlreadyExists,
    /// The resource is used by something else, e.g. an image by VMs (409).
    InUse,
    /// The resource is in a state that does not allow this (409).
    InvalidState,
    /// A pool (guest IPs, vsock CIDs) has no free entry left (409).
    Exhausted,
    /// The running daemon is a different build than the client expects (409).
    DaemonOutdated,
    /// The request body is larger than the daemon accepts (413).
    PayloadTooLarge,
    /// The request body is not `application/json` (415).
    UnsupportedMediaType,
    /// The operation was cancelled before it finished (carried by operations, not responses).
    Cancelled,
    /// The request is understood but asks for something this VM, image or build of banger
    /// cannot do, e.g. a snapshot of a QEMU VM (422).
    Unsupported,
    /// Starting the VM would reserve more vCPUs or guest memory than the host's configured
    /// limits allow (409); stopping a VM makes room.
    OverCapacity,
    /// The filesystem that holds banger's state (or a file banger writes) ran out of space
    /// (507); what was made for the request is removed again.
    NoSpace,
    /// The daemon is shutting down or a dependency is unavailable (503).
    Unavailable,
    /// An unexpected failure inside the daemon (500).
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidInput => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyExists
            | ErrorCode::InUse
            | ErrorCode::InvalidState
            | ErrorCode::Exhausted
            | ErrorCode::OverCapacity
            | ErrorCode::DaemonOutdated
            | ErrorCode::Cancelled => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Unsupported => 422,
            ErrorCode::Unavailable => 503,
            ErrorCode::NoSpace => 507,
            ErrorCode::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InUse => "in_use",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Exhausted => "exhausted",
            ErrorCode::OverCapacity => "over_capacity",
            ErrorCode::DaemonOutdated => "daemon_outdated",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do about a full filesystem.
pub const NO_SPACE_HINT: &str = "free space on the filesystem that holds the path named \
    (`df -h PATH` shows which and how full): delete VMs, snapshots or images banger no \
    longer needs (`banger vm list`, `banger snapshot list`, `banger image list`), or lower \
    `build_cache_max`; then try again";

/// Whether `message` reports a full filesystem or an exhausted disk quota.
pub fn says_out_of_space(message: &str) -> bool {
    [
        "No space left on device",
        "os error 28)",
        "Disk quota exceeded",
        "os error 122)",
        "database or disk is full",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    /// What went wrong, in one sentence a user can act on.
    pub message: String,
    /// What to do about it, when there is something to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    /// An error of `code`; an `internal` one whose message says a filesystem is full (the
    /// OS's ENOSPC or EDQUOT text, SQLite's "disk is full") becomes `no_space`, with a hint.
    /// Every failure inside the daemon ends up here with its cause in its message, so a full
    /// disk met anywhere is told as what it is rather than as a bug.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        if code == ErrorCode::Internal && says_out_of_space(&message) {
            return ApiError {
                code: ErrorCode::NoSpace,
                message,
                hint: Some(NO_SPACE_HINT.into()),
            };
        }
        ApiError {
            code,
            message,
            hint: None,
        }
    }

    /// The error with `hint`, except that a full disk keeps its own: a call site's guess at
    /// the cause of a failure (a tool missing, say) is not what to do about a full disk.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        if self.code != ErrorCode::NoSpace {
            self.hint = Some(hint.into());
        }
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_filesystem_is_told_as_such_wherever_it_is_met() {
        for message in [
            "cannot write /state/images/x/rootfs.ext4: No space left on device (os error 28)",
            "mkfs.ext4 /state/vms/y/work.ext4 failed: No space left on device while writing out and closing file system",
            "database error: database or disk is full",
            "cannot copy /a to /b: Disk quota exceeded (os error 122)",
        ] {
            let e = ApiError::internal(message);
            assert_eq!(e.code, ErrorCode::NoSpace, "{message}");
            assert_eq!(e.code.http_status(), 507);
            assert_eq!(e.message, message);
            assert!(e.hint.unwrap().contains("df -h"));
        }
        // A call site's hint does not replace what to do about a full disk.
        let e = ApiError::internal("mkfs.ext4 failed: No space left on device")
            .with_hint("`banger doctor` checks that e2fsprogs is installed");
        assert!(e.hint.unwrap().contains("df -h"));
        // Only internal failures are reclassified; a refusal stays what it is.
        let e = ApiError::internal("cannot open /x: Permission denied (os error 13)");
        assert_eq!((e.code, e.hint), (ErrorCode::Internal, None));
        let e = ApiError::invalid("the name says No space left on device");
        assert_eq!(e.code, ErrorCode::InvalidInput);
    }
}

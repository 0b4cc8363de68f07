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
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
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

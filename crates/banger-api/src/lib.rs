//! The contract between bangerd and its clients (the CLI, the TUI, the web console): wire types,
//! the `{code, message, hint}` error model, the validation rules both sides apply, where banger
//! keeps its files, and the async client that speaks HTTP/1.1 over the daemon's Unix socket.
//!
//! This crate never touches the host beyond reading environment variables and connecting to
//! the daemon's socket.

pub mod build;
pub mod client;
pub mod error;
pub mod paths;
pub mod recipe;
pub mod service;
pub mod time;
pub mod types;
pub mod validate;

pub use client::{Client, ClientError};
pub use error::{ApiError, ErrorCode};
pub use recipe::{BuildImageRequest, Recipe};
pub use time::Timestamp;
pub use types::*;

/// The header in which a client names the daemon build it expects (see `docs/architecture.md`,
/// "Daemon upgrades"). A daemon whose own build id differs answers `409 daemon_outdated`
/// without acting on the request.
pub const BUILD_ID_HEADER: &str = "x-banger-build";

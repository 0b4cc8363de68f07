//! `PUT /logger`: where Firecracker writes its own log, Firecracker's `Logger`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Firecracker's `Logger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Firecracker's log levels (case-insensitive on its side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LogLevel {
    Error,
    Warning,
    #[default]
    Info,
    Debug,
    Trace,
    Off,
}

impl Logger {
    /// Log at `level` to `log_path`, each line with its level.
    pub fn to_file(log_path: impl Into<PathBuf>, level: LogLevel) -> Self {
        Logger {
            level: Some(level),
            log_path: Some(log_path.into()),
            show_level: Some(true),
            show_log_origin: None,
            module: None,
        }
    }
}

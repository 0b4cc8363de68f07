//! `PUT /metrics`: where Firecracker writes its metrics, Firecracker's `Metrics`, and reading
//! them back. Firecracker appends one JSON object per flush (every 60 s, and on
//! [`super::actions::ActionType::FlushMetrics`]); each holds the counters since the previous flush.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Firecracker's `Metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

/// The newest complete metrics object in the metrics file at `path`, `None` when nothing was
/// flushed yet. Kept as JSON: its shape changes with every Firecracker release.
pub fn latest_metrics(path: &Path) -> io::Result<Option<serde_json::Value>> {
    let lines = crate::supervise::console_tail(path, 2)?;
    // The last line may be half written while Firecracker flushes; the one before is whole.
    Ok(lines
        .iter()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok()))
}

//! `PUT /drives/{drive_id}`: the VM's block devices, Firecracker's `Drive`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::rate_limiter::RateLimiter;

/// Firecracker's `Drive` for a virtio-block device backed by a host file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    pub is_root_device: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
}

/// Firecracker's `PartialDrive`: `PATCH /drives/{drive_id}` on a started (or restored) VM
/// points a drive at another host file; the guest is told its disk changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialDrive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
}

/// Whether the guest's flushes reach the host file (`Writeback`) or are ignored (`Unsafe`,
/// Firecracker's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

/// How Firecracker does block I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    Sync,
    Async,
}

impl Drive {
    /// A drive backed by `path`, with Firecracker's defaults for everything else.
    pub fn file(
        drive_id: impl Into<String>,
        path: impl Into<PathBuf>,
        is_read_only: bool,
        is_root_device: bool,
    ) -> Self {
        Drive {
            drive_id: drive_id.into(),
            partuuid: None,
            is_root_device,
            cache_type: None,
            is_read_only: Some(is_read_only),
            path_on_host: Some(path.into()),
            rate_limiter: None,
            io_engine: None,
        }
    }
}

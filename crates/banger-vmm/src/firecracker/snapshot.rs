//! `PUT /snapshot/create` and `PUT /snapshot/load`: saving a paused VM and restoring it in a
//! fresh Firecracker, Firecracker's `SnapshotCreateParams` and `SnapshotLoadParams`. A clone
//! restored next to its original needs its own tap (`network_overrides`, Firecracker 1.12) and
//! its own vsock socket (`vsock_override`, Firecracker 1.16).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Firecracker's `SnapshotCreateParams`; the VM must be paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreateParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
    /// The microVM state file.
    pub snapshot_path: PathBuf,
    /// The guest memory file.
    pub mem_file_path: PathBuf,
}

/// A full snapshot holds all of guest memory; a diff one only what changed since the last one
/// (and needs `track_dirty_pages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    Full,
    Diff,
}

/// Firecracker's `SnapshotLoadParams` (without its deprecated `mem_file_path` and
/// `enable_diff_snapshots`); sent to a Firecracker that has not been configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLoadParams {
    pub snapshot_path: PathBuf,
    pub mem_backend: MemoryBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
}

/// Where restored guest memory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: PathBuf,
}

/// A memory file, or a userfaultfd handler listening on a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    File,
    Uffd,
}

/// Firecracker's `NetworkOverride`: restore interface `iface_id` on another tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// Firecracker's `VsockOverride`: restore the vsock device on another host socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockOverride {
    pub uds_path: PathBuf,
}

//! `GET /`: what the instance is and what state it is in, Firecracker's `InstanceInfo`; and
//! `GET /version`, Firecracker's `FirecrackerVersion`.

use serde::{Deserialize, Serialize};

use crate::InstanceState;

/// Firecracker's `InstanceInfo`. Unknown fields are ignored so that newer Firecrackers read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// `Firecracker`.
    pub app_name: String,
    /// The `--id` Firecracker was started with.
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
}

/// Firecracker's `FirecrackerVersion`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    pub firecracker_version: String,
}

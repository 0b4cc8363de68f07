//! `PUT /vsock`: the VM's virtio-vsock device, Firecracker's `Vsock`. Firecracker binds and
//! listens on `uds_path` when the request is accepted; host-initiated connections go through
//! [`super::hybrid_vsock`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Firecracker's `Vsock` (without the deprecated `vsock_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    /// At least 3: 0-2 are reserved for the hypervisor and the host.
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

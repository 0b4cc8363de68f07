//! `PATCH /vm`: pausing and resuming the guest, Firecracker's `Vm`.

use serde::{Deserialize, Serialize};

/// Firecracker's `Vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub state: VmState,
}

/// The states a running instance can be put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    Paused,
    Resumed,
}

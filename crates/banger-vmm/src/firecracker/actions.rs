//! `PUT /actions`: starting the instance, flushing metrics and Ctrl-Alt-Del, Firecracker's
//! `InstanceActionInfo`.

use serde::{Deserialize, Serialize};

/// Firecracker's `InstanceActionInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

/// The synchronous actions Firecracker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Writes the metrics to the metrics file now instead of at the next periodic flush.
    FlushMetrics,
    /// Boots the configured VM; accepted once.
    InstanceStart,
    /// Presses Ctrl-Alt-Del on the guest's i8042 keyboard: a Linux guest reboots, and
    /// Firecracker exits on the guest's reboot (with `reboot=k`).
    SendCtrlAltDel,
}

impl From<ActionType> for InstanceActionInfo {
    fn from(action_type: ActionType) -> Self {
        InstanceActionInfo { action_type }
    }
}

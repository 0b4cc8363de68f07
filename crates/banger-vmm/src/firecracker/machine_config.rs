//! `PUT /machine-config`: the VM's vCPUs and memory, Firecracker's `MachineConfiguration`.

use serde::{Deserialize, Serialize};

/// Firecracker's `MachineConfiguration`. banger sets only vCPUs and memory and leaves the rest
/// to Firecracker's defaults; the optional fields exist so that `GET /vm/config` reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfiguration {
    /// 1 or an even number, at most 32.
    pub vcpu_count: u8,
    pub mem_size_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

/// How guest memory is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    None,
    #[serde(rename = "2M")]
    TwoMegabytes,
}

impl MachineConfiguration {
    pub fn new(vcpu_count: u8, mem_size_mib: u64) -> Self {
        MachineConfiguration {
            vcpu_count,
            mem_size_mib,
            smt: None,
            track_dirty_pages: None,
            huge_pages: None,
        }
    }
}

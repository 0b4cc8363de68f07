//! `GET /vm/config` and Firecracker's `--config-file`: the whole configuration of a VM in one
//! document, Firecracker's `FullVmConfiguration`. banger builds it from a [`crate::VmSpec`]
//! once ([`super::launch::configuration`]) and sends its parts one request at a time; reading
//! it back tells an adopting daemon where a VM's vsock socket is.

use serde::{Deserialize, Serialize};

use super::boot_source::BootSource;
use super::drive::Drive;
use super::logger::Logger;
use super::machine_config::MachineConfiguration;
use super::metrics::Metrics;
use super::network_interface::NetworkInterface;
use super::vsock::Vsock;

/// Firecracker's `FullVmConfiguration`, limited to the devices banger uses; the rest of what
/// `GET /vm/config` returns is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullVmConfiguration {
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSource>,
    #[serde(default)]
    pub drives: Vec<Drive>,
    #[serde(
        rename = "machine-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub machine_config: Option<MachineConfiguration>,
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

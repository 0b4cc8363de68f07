//! `PUT /network-interfaces/{iface_id}`: the VM's virtio-net device on a host tap, Firecracker's
//! `NetworkInterface`.

use serde::{Deserialize, Serialize};

use super::rate_limiter::RateLimiter;

/// Firecracker's `NetworkInterface`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// The tap on the host; it must exist before the request.
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

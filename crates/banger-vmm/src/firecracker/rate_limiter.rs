//! Firecracker's `RateLimiter` and `TokenBucket`, shared by drives and network interfaces.
//! banger sets none; they are typed so that `GET /vm/config` reads back.

use serde::{Deserialize, Serialize};

/// Independent bytes/s and ops/s limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// A token bucket: `size` tokens refilled every `refill_time` milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    pub refill_time: u64,
    pub size: u64,
}

//! banger's private guest network as the allocator sees it: an IPv4 subnet whose `.1` is the
//! host's bridge address, whose other host addresses are handed to guests, and the MAC
//! address each guest IP implies.

use std::net::Ipv4Addr;

use crate::StoreError;

/// Smallest prefix accepted: a /16 already holds 65,533 guests.
const MIN_PREFIX: u8 = 16;
/// Largest prefix accepted: a /29 leaves 5 guest addresses after network, gateway, broadcast.
const MAX_PREFIX: u8 = 29;

/// The IPv4 subnet guest addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkPool {
    network: u32,
    prefix_len: u8,
}

impl NetworkPool {
    /// Parses a CIDR such as `172.30.0.0/24`. The prefix must be 16..=29 and the host part of
    /// the address zero.
    pub fn new(subnet: &str) -> Result<NetworkPool, StoreError> {
        let invalid = |reason: String| StoreError::InvalidSubnet {
            subnet: subnet.to_owned(),
            reason,
        };
        let text = subnet.trim();
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| invalid("expected ADDRESS/PREFIX, e.g. 172.30.0.0/24".into()))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid(format!("{addr:?} is not an IPv4 address")))?;
        let prefix_len: u8 = prefix
            .parse()
            .map_err(|_| invalid(format!("prefix {prefix:?} is not a number")))?;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix_len) {
            return Err(invalid(format!(
                "prefix /{prefix_len} is out of range; use /{MIN_PREFIX} to /{MAX_PREFIX}"
            )));
        }
        let mask = u32::MAX << (32 - prefix_len);
        let bits = u32::from(addr);
        if bits & !mask != 0 {
            let network = Ipv4Addr::from(bits & mask);
            return Err(invalid(format!(
                "host bits are set; did you mean {network}/{prefix_len}?"
            )));
        }
        Ok(NetworkPool {
            network: bits,
            prefix_len,
        })
    }

    /// The host's address on the bridge: `.1` of the subnet, the guests' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The subnet in CIDR form, e.g. `172.30.0.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.network), self.prefix_len)
    }

    /// The broadcast address (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.broadcast_bits())
    }

    /// Whether `ip` is an address the pool hands to guests.
    pub fn is_guest_address(&self, ip: Ipv4Addr) -> bool {
        let bits = u32::from(ip);
        bits > self.network + 1 && bits < self.broadcast_bits()
    }

    /// How many guest addresses the pool has.
    pub fn capacity(&self) -> u32 {
        self.broadcast_bits() - self.network - 2
    }

    /// The `index`-th guest address (0 is `.2`), when there is one.
    pub(crate) fn guest_address(&self, index: u32) -> Option<Ipv4Addr> {
        (index < self.capacity()).then(|| Ipv4Addr::from(self.network + 2 + index))
    }

    /// The position of `ip` among guest addresses, when it is one.
    pub(crate) fn guest_index(&self, ip: Ipv4Addr) -> Option<u32> {
        self.is_guest_address(ip)
            .then(|| u32::from(ip) - self.network - 2)
    }

    fn broadcast_bits(&self) -> u32 {
        self.network | (u32::MAX >> self.prefix_len)
    }
}

impl std::fmt::Display for NetworkPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.subnet())
    }
}

/// The MAC address of the guest with `ip`: `06:00:` (locally administered, unicast) followed by
/// the four octets of the IP in hex, so it is unique exactly when the IP is.
pub fn mac_for_ip(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("06:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_slash_24() {
        let pool = NetworkPool::new("172.30.0.0/24").unwrap();
        assert_eq!(pool.gateway(), Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(pool.prefix_len(), 24);
        assert_eq!(pool.subnet(), "172.30.0.0/24");
        assert_eq!(pool.broadcast(), Ipv4Addr::new(172, 30, 0, 255));
        assert_eq!(pool.capacity(), 253);
        assert_eq!(pool.guest_address(0), Some(Ipv4Addr::new(172, 30, 0, 2)));
        assert_eq!(
            pool.guest_address(252),
            Some(Ipv4Addr::new(172, 30, 0, 254))
        );
        assert_eq!(pool.guest_address(253), None);
        assert!(!pool.is_guest_address(Ipv4Addr::new(172, 30, 0, 0)));
        assert!(!pool.is_guest_address(Ipv4Addr::new(172, 30, 0, 1)));
        assert!(!pool.is_guest_address(Ipv4Addr::new(172, 30, 0, 255)));
        assert!(!pool.is_guest_address(Ipv4Addr::new(172, 30, 1, 2)));
    }

    #[test]
    fn accepts_the_prefix_range_bounds() {
        assert_eq!(NetworkPool::new("10.0.0.0/16").unwrap().capacity(), 65_533);
        assert_eq!(NetworkPool::new("10.0.0.8/29").unwrap().capacity(), 5);
    }

    #[test]
    fn refuses_bad_subnets_with_a_reason() {
        let reason = |text: &str| match NetworkPool::new(text) {
            Err(StoreError::InvalidSubnet { subnet, reason }) => {
                assert_eq!(subnet, text);
                reason
            }
            other => panic!("{text:?}: expected InvalidSubnet, got {other:?}"),
        };
        assert!(reason("").contains("ADDRESS/PREFIX"));
        assert!(reason("172.30.0.0").contains("ADDRESS/PREFIX"));
        assert!(reason("banger/24").contains("not an IPv4 address"));
        assert!(reason("172.30.0/24").contains("not an IPv4 address"));
        assert!(reason("172.30.0.0/x").contains("not a number"));
        assert!(reason("172.30.0.0/-1").contains("not a number"));
        assert!(reason("172.30.0.0/15").contains("out of range"));
        assert!(reason("172.30.0.0/30").contains("out of range"));
        assert!(reason("172.30.0.0/33").contains("out of range"));
        assert!(reason("172.30.0.5/24").contains("did you mean 172.30.0.0/24"));
        assert!(reason("10.1.0.0/15").contains("out of range"));
    }

    #[test]
    fn mac_is_the_ip_in_hex() {
        assert_eq!(
            mac_for_ip(Ipv4Addr::new(172, 30, 0, 2)),
            "06:00:ac:1e:00:02"
        );
    }
}

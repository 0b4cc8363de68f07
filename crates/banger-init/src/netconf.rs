//! The VM's static network configuration, as banger writes it into the overlay disk at
//! `/etc/banger/network` when the VM is created: `key=value` lines, `#` comments.
//!
//! ```text
//! address=172.30.0.5/24     required: the VM's IPv4 address and prefix length
//! gateway=172.30.0.1        optional: the default route
//! dns=172.30.0.1            optional, repeatable (the overlay's resolv.conf already has them)
//! mac=52:54:00:ab:cd:ef     optional: which NIC; otherwise the first Ethernet NIC
//! ```
//!
//! The init applies it itself over netlink before the image's init runs, so every image gets
//! a working network whatever its own network manager (or lack of one), and the kernel
//! command line needs no `ip=`.

use std::net::Ipv4Addr;

/// Where the file is, relative to the guest's root.
pub use banger_guest_contract::paths::NETWORK_FILE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
}

impl NetConfig {
    /// The broadcast address of the VM's subnet.
    pub fn broadcast(&self) -> Ipv4Addr {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        Ipv4Addr::from(u32::from(self.address) | !mask)
    }
}

/// A line of the network file is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetConfigError {
    #[error("{NETWORK_FILE} line {line}: {problem}")]
    Line { line: usize, problem: String },

    #[error("{NETWORK_FILE} has no address= line")]
    NoAddress,
}

pub fn parse(text: &str) -> Result<NetConfig, NetConfigError> {
    let mut address = None;
    let mut gateway = None;
    let mut dns = Vec::new();
    let mut mac = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |problem: String| NetConfigError::Line {
            line: i + 1,
            problem,
        };
        let (key, value) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| err(format!("{line:?} is not key=value")))?;
        let ip = |v: &str| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| err(format!("{key}: {v:?} is not an IPv4 address")))
        };
        match key {
            "address" => {
                let (addr, prefix) = value
                    .split_once('/')
                    .ok_or_else(|| err(format!("address {value:?} needs a /prefix")))?;
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| (1..=32).contains(p))
                    .ok_or_else(|| err(format!("prefix length {prefix:?} is not 1 to 32")))?;
                address = Some((ip(addr)?, prefix));
            }
            "gateway" => gateway = Some(ip(value)?),
            "dns" => dns.push(ip(value)?),
            "mac" => {
                let ok = value.split(':').count() == 6
                    && value
                        .split(':')
                        .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
                if !ok {
                    return Err(err(format!("mac {value:?} is not aa:bb:cc:dd:ee:ff")));
                }
                mac = Some(value.to_ascii_lowercase());
            }
            other => return Err(err(format!("unknown key {other:?}"))),
        }
    }
    let (address, prefix_len) = address.ok_or(NetConfigError::NoAddress)?;
    Ok(NetConfig {
        address,
        prefix_len,
        gateway,
        dns,
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file() {
        let c = parse(
            "# comment\n\naddress=172.30.0.5/24\ngateway = 172.30.0.1\ndns=1.1.1.1\n\
             dns=9.9.9.9\nmac=52:54:00:AB:cd:ef\n",
        )
        .unwrap();
        assert_eq!(c.address, Ipv4Addr::new(172, 30, 0, 5));
        assert_eq!(c.prefix_len, 24);
        assert_eq!(c.gateway, Some(Ipv4Addr::new(172, 30, 0, 1)));
        assert_eq!(c.dns.len(), 2);
        assert_eq!(c.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(c.broadcast(), Ipv4Addr::new(172, 30, 0, 255));
    }

    #[test]
    fn address_only() {
        let c = parse("address=10.0.0.2/32").unwrap();
        assert_eq!(c.gateway, None);
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 0, 2));
        let c = parse("address=10.1.2.3/8").unwrap();
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 255, 255, 255));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("gateway=10.0.0.1"), Err(NetConfigError::NoAddress));
        for (text, line, needle) in [
            ("address=10.0.0.2", 1, "/prefix"),
            ("\naddress=10.0.0.2/33", 2, "33"),
            ("address=10.0.0.300/24", 1, "10.0.0.300"),
            ("address=10.0.0.2/24\nmtu=1500", 2, "mtu"),
            ("address=10.0.0.2/24\nmac=52:54:00", 2, "mac"),
            ("just words", 1, "key=value"),
        ] {
            match parse(text) {
                Err(NetConfigError::Line { line: l, problem }) => {
                    assert_eq!(l, line, "{text}");
                    assert!(problem.contains(needle), "{text}: {problem}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}

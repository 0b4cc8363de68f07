//! Links banger manages: reading the host's links and addresses, the bridge and its host
//! address, and the VMs' taps. The per-VM work (listing, creating a tap, attaching it, deleting
//! it) goes through a [`Links`]: [`IpLinks`] runs iproute2 (`ip -d -j addr show`, `ip tuntap
//! add`, ...) through the runner, behind `sudo -n` when the daemon is not root; [`NetlinkLinks`]
//! does the same in-process (netlink and `/dev/net/tun`) when it is root. The bridge, made once,
//! is always made with `ip`. Creation only adds what is missing; deletion of something already
//! gone succeeds, so every step can be repeated.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{Acquired, NetConfig, NetworkError, Resource, netlink, overlaps, run, tun};
use crate::runner::{CommandRunner, CommandSpec, RunError};

/// How banger reads and changes the host's links one VM at a time. Each method takes the
/// runner, so that either implementation can stand where the other did; [`NetlinkLinks`] does
/// not use it.
pub trait Links: Send + Sync + fmt::Debug {
    /// Every link (of the current network namespace) with its IPv4 addresses.
    fn list(&self, runner: &dyn CommandRunner) -> Result<Vec<HostLink>, NetworkError>;

    /// Creates the persistent tap `name` for [`NetConfig::tap_owner`], not yet attached.
    fn create_tap(
        &self,
        runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError>;

    /// Makes link `name` a port of [`NetConfig::bridge`] and brings it up.
    fn attach_up(
        &self,
        runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError>;

    /// Deletes link `name` (a tap or the bridge); one that does not exist is fine.
    fn delete(
        &self,
        runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError>;
}

/// Links through `ip` commands run by the runner: what a daemon that is not root uses (through
/// `sudo -n`), and what tests on a fake runner see.
#[derive(Debug, Clone, Copy, Default)]
pub struct IpLinks;

impl Links for IpLinks {
    fn list(&self, runner: &dyn CommandRunner) -> Result<Vec<HostLink>, NetworkError> {
        host_links(runner)
    }

    fn create_tap(
        &self,
        runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        let owner = cfg.tap_owner.to_string();
        run(
            runner,
            &cfg.privileged(
                "ip",
                ["tuntap", "add", "dev", name, "mode", "tap", "user", &owner],
            ),
            format!("create tap {name}"),
        )
        .map(drop)
    }

    fn attach_up(
        &self,
        runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        // One command for both: every `ip` process costs milliseconds of a VM's start.
        run(
            runner,
            &cfg.privileged(
                "ip",
                ["link", "set", "dev", name, "master", &cfg.bridge, "up"],
            ),
            attach_action(cfg, name),
        )
        .map(drop)
    }

    fn delete(
        &self,
        runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        delete_link(runner, cfg, name)
    }
}

/// Links changed in-process: netlink messages and `/dev/net/tun` ioctls, each a few
/// microseconds where an `ip` process costs milliseconds. Needs root (`CAP_NET_ADMIN`), and acts
/// in the network namespace of the calling thread, as a command started from it would.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetlinkLinks;

impl Links for NetlinkLinks {
    fn list(&self, _runner: &dyn CommandRunner) -> Result<Vec<HostLink>, NetworkError> {
        netlink::list_links().map_err(|source| NetworkError::System {
            action: "list network interfaces".into(),
            source,
        })
    }

    fn create_tap(
        &self,
        _runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        tun::create_tap(name, cfg.tap_owner).map_err(|source| NetworkError::System {
            action: format!("create tap {name}"),
            source,
        })
    }

    fn attach_up(
        &self,
        _runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        netlink::attach_up(name, &cfg.bridge).map_err(|source| NetworkError::System {
            action: attach_action(cfg, name),
            source,
        })
    }

    fn delete(
        &self,
        _runner: &dyn CommandRunner,
        _cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        match netlink::delete_link(name) {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::debug!(link = name, "already gone");
                Ok(())
            }
            Err(source) => Err(NetworkError::System {
                action: format!("delete {name}"),
                source,
            }),
        }
    }
}

fn attach_action(cfg: &NetConfig, name: &str) -> String {
    format!("attach tap {name} to {} and bring it up", cfg.bridge)
}

/// One network interface of the host, as far as banger cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub name: String,
    /// The link kind (`bridge`, `tun`, `veth`, ...); `None` for physical devices and loopback.
    pub kind: Option<String>,
    /// Administratively up (`ip link set ... up`).
    pub up: bool,
    /// The link-layer address, e.g. `06:00:ac:1e:00:01`.
    pub mac: Option<String>,
    /// The bridge this link is a port of.
    pub master: Option<String>,
    /// IPv4 addresses with their prefix lengths.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
}

#[derive(Deserialize)]
struct RawLink {
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    linkinfo: Option<RawLinkInfo>,
    #[serde(default)]
    addr_info: Vec<RawAddr>,
}

#[derive(Deserialize)]
struct RawLinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
}

#[derive(Deserialize)]
struct RawAddr {
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u8>,
}

fn list_command() -> CommandSpec {
    // `-d` adds the link kind, which tells a bridge or tap from a same-named other device.
    CommandSpec::new("ip").args(["-d", "-j", "addr", "show"])
}

/// Every link of the host (of the runner's network namespace) with its IPv4 addresses. Reading
/// needs no privilege.
pub fn host_links(runner: &dyn CommandRunner) -> Result<Vec<HostLink>, NetworkError> {
    let cmd = list_command();
    let out = run(runner, &cmd, "list network interfaces")?;
    parse_links(&out.stdout_lossy()).map_err(|reason| NetworkError::UnexpectedOutput {
        command: cmd.display(),
        reason,
    })
}

pub(crate) fn parse_links(json: &str) -> Result<Vec<HostLink>, String> {
    // Some iproute2 versions print nothing at all when there is nothing to show.
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<RawLink> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(raw
        .into_iter()
        .map(|l| HostLink {
            up: l.flags.iter().any(|f| f == "UP"),
            kind: l.linkinfo.and_then(|i| i.info_kind),
            master: l.master,
            mac: l.address,
            ipv4: l
                .addr_info
                .iter()
                .filter(|a| a.family.as_deref() == Some("inet"))
                .filter_map(|a| Some((a.local.as_deref()?.parse().ok()?, a.prefixlen?)))
                .collect(),
            name: l.ifname,
        })
        .collect())
}

/// Refuses, before anything changes, what setup must not touch: a subnet another interface
/// already uses, a non-bridge link named like the bridge, a non-tap link named like the tap.
pub(crate) fn check_conflicts(
    cfg: &NetConfig,
    links: &[HostLink],
    tap: &str,
) -> Result<(), NetworkError> {
    for link in links.iter().filter(|l| l.name != cfg.bridge) {
        if let Some((addr, len)) = link
            .ipv4
            .iter()
            .find(|(addr, len)| overlaps(*addr, *len, cfg.host_address, cfg.prefix_len))
        {
            return Err(NetworkError::SubnetInUse {
                subnet: cfg.subnet(),
                interface: link.name.clone(),
                address: format!("{addr}/{len}"),
            });
        }
    }
    let kind_of = |link: &HostLink| link.kind.clone().unwrap_or_else(|| "physical".into());
    if let Some(link) = links.iter().find(|l| l.name == cfg.bridge)
        && link.kind.as_deref() != Some("bridge")
    {
        return Err(NetworkError::NotABridge {
            name: cfg.bridge.clone(),
            kind: kind_of(link),
        });
    }
    if let Some(link) = links.iter().find(|l| l.name == tap)
        && link.kind.as_deref() != Some("tun")
    {
        return Err(NetworkError::NameTaken {
            name: tap.to_owned(),
            kind: kind_of(link),
        });
    }
    Ok(())
}

/// Makes sure the bridge exists, carries the host address and is up, creating only what is
/// missing and recording it. [`check_conflicts`] has vetted `links`.
pub(crate) fn ensure_bridge(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    links: &[HostLink],
    acquired: &mut Acquired,
) -> Result<(), NetworkError> {
    let existing = links.iter().find(|l| l.name == cfg.bridge);
    let bridge = cfg.bridge.as_str();
    if existing.is_none() {
        // A fixed address: a bridge otherwise takes the lowest address of its ports, so
        // deleting one VM's tap could change it under the other guests, whose ARP caches would
        // point at an address the host no longer answers on until they expire.
        let mac = cfg.bridge_mac();
        run(
            runner,
            &cfg.privileged(
                "ip",
                ["link", "add", bridge, "address", &mac, "type", "bridge"],
            ),
            format!("create bridge {bridge}"),
        )?;
        acquired.record(Resource::Bridge {
            name: bridge.to_owned(),
        });
    }
    let has_address =
        existing.is_some_and(|l| l.ipv4.contains(&(cfg.host_address, cfg.prefix_len)));
    if !has_address {
        let cidr = cfg.host_cidr();
        run(
            runner,
            &cfg.privileged("ip", ["addr", "add", &cidr, "dev", bridge]),
            format!("add address {cidr} to {bridge}"),
        )?;
        acquired.record(Resource::BridgeAddress {
            bridge: bridge.to_owned(),
            cidr,
        });
    }
    if !existing.is_some_and(|l| l.up) {
        // Not recorded: deleting a bridge we created takes it down, and one that existed
        // before was meant to be up for banger anyway.
        run(
            runner,
            &cfg.privileged("ip", ["link", "set", bridge, "up"]),
            format!("bring up bridge {bridge}"),
        )?;
    }
    Ok(())
}

/// Creates the tap `name` for [`NetConfig::tap_owner`] (the caller attaches it to the bridge).
/// A tap of that name left by a crash is deleted first ([`check_conflicts`] has refused any
/// other kind of link of that name). The tap is recorded the moment it exists, so a failure to
/// attach it releases it.
pub(crate) fn create_tap(
    runner: &dyn CommandRunner,
    links: &dyn Links,
    cfg: &NetConfig,
    existing: &[HostLink],
    name: &str,
    acquired: &mut Acquired,
) -> Result<(), NetworkError> {
    if existing.iter().any(|l| l.name == name) {
        tracing::info!(tap = name, "deleting a tap left behind by an earlier run");
        links.delete(runner, cfg, name)?;
    }
    links.create_tap(runner, cfg, name)?;
    acquired.record(Resource::Tap {
        name: name.to_owned(),
    });
    Ok(())
}

/// `stderr` says the device or address is not there: the goal of a deletion is reached.
fn already_gone(error: &RunError) -> bool {
    match error {
        RunError::Failed { stderr, .. } => [
            "Cannot find device",
            "does not exist",
            "Address not found",
            "Cannot assign requested address",
        ]
        .iter()
        .any(|needle| stderr.contains(needle)),
        _ => false,
    }
}

/// Deletes link `name` (a tap or the bridge); one that does not exist is fine.
pub(crate) fn delete_link(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    name: &str,
) -> Result<(), NetworkError> {
    match runner.run(&cfg.privileged("ip", ["link", "del", name])) {
        Ok(_) => Ok(()),
        Err(error) if already_gone(&error) => {
            tracing::debug!(link = name, "already gone");
            Ok(())
        }
        Err(error) => Err(NetworkError::command(format!("delete {name}"), error)),
    }
}

/// Removes address `cidr` from `bridge`; a missing address or bridge is fine.
pub(crate) fn delete_address(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    bridge: &str,
    cidr: &str,
) -> Result<(), NetworkError> {
    match runner.run(&cfg.privileged("ip", ["addr", "del", cidr, "dev", bridge])) {
        Ok(_) => Ok(()),
        Err(error) if already_gone(&error) => Ok(()),
        Err(error) => Err(NetworkError::command(
            format!("remove address {cidr} from {bridge}"),
            error,
        )),
    }
}

//! banger's private network on the host: the bridge (`banger0`) holding the host's address `.1`
//! of the configured subnet, one tap per VM attached to it, and, for `--nat` VMs, masquerade and
//! forward rules in banger's own nftables table (`inet banger`) with `net.ipv4.ip_forward` on.
//! Every privileged step runs through a [`CommandRunner`], prefixed with `sudo -n` when the
//! daemon is not root, except the per-VM link work (listing links, the tap), which goes through
//! a [`Links`]: `ip` commands through the runner ([`IpLinks`]) or, for a daemon that is root,
//! netlink and `/dev/net/tun` in-process ([`NetlinkLinks`]). Each step records what it acquired
//! in an [`Acquired`] ledger; a failure releases that ledger in reverse order, and normal
//! teardown and post-crash reconcile go through the same [`release`]. The bridge, the table and the sysctl are shared by all VMs, so callers serialise
//! setups and teardowns (the daemon holds one lock for them).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::runner::{CommandRunner, CommandSpec, RunError};

mod forwarding;
mod ledger;
mod link;
mod netlink;
pub mod netns;
mod nft;
pub mod resolved;
mod tun;

pub use forwarding::IP_FORWARD;
pub(crate) use ledger::error_chain;
pub use ledger::{Acquired, ReleaseError, ReleaseFailure, Resource, release};
pub use link::{HostLink, IpLinks, Links, NetlinkLinks, host_links};
pub use nft::{TABLE as NFT_TABLE, rebuild_nat_table, vm_comment};
pub use tun::give_tap;

/// The bridge's name unless configured otherwise.
pub const DEFAULT_BRIDGE: &str = "banger0";
/// Every tap banger creates starts with this, so that taps left by a crash can be found.
pub const TAP_PREFIX: &str = "bt-";
/// Linux interface names hold at most 15 bytes (`IFNAMSIZ` less the NUL).
const IFNAME_MAX: usize = 15;

/// How privileged commands are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Privilege {
    /// The daemon is root and runs them directly.
    Root,
    /// The daemon is not root but holds `CAP_NET_ADMIN`: the network's work (taps, the bridge,
    /// NAT rules, forwarding) is done in-process or by commands it hands the capability to;
    /// what needs root otherwise (an image bootstrap, a promotion) goes through `sudo -n`.
    NetAdmin,
    /// The daemon is not root and runs them through `sudo -n` (never prompting).
    Sudo,
}

impl Privilege {
    /// `Root` when the effective user is root, `NetAdmin` when this process holds
    /// `CAP_NET_ADMIN`, `Sudo` otherwise.
    pub fn detect() -> Privilege {
        if rustix::process::geteuid().is_root() {
            Privilege::Root
        } else if crate::capabilities::holds_net_admin() {
            Privilege::NetAdmin
        } else {
            Privilege::Sudo
        }
    }

    /// Whether the network's work is done without `sudo` (as root, or with `CAP_NET_ADMIN`).
    pub fn manages_network(self) -> bool {
        matches!(self, Privilege::Root | Privilege::NetAdmin)
    }

    /// `program args...` as root: directly when the daemon is root, otherwise behind
    /// `sudo -n`.
    pub fn command<I, S>(self, program: &str, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        match self {
            Privilege::Root => CommandSpec::new(program).args(args),
            Privilege::NetAdmin | Privilege::Sudo => {
                CommandSpec::new("sudo").args(["-n", program]).args(args)
            }
        }
    }

    /// A network command (`ip`, `nft`, `sysctl`), which `CAP_NET_ADMIN` is enough for: run
    /// directly by a root daemon, handed the capability by a `NetAdmin` one, behind `sudo -n`
    /// otherwise.
    pub fn net_command<I, S>(self, program: &str, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        match self {
            Privilege::NetAdmin => CommandSpec::new(system_program(program))
                .args(args)
                .with_net_admin(),
            Privilege::Root | Privilege::Sudo => self.command(program, args),
        }
    }
}

/// `program`'s path ([`crate::program::find_system_program`]: `ip`, `nft` and `sysctl` live in
/// sbin directories that a user's `PATH` often lacks); `program` itself when it is nowhere, so
/// that running it says it is missing.
fn system_program(program: &str) -> String {
    crate::program::find_system_program(std::env::var_os("PATH").as_deref(), program)
        .map_or_else(|| program.to_owned(), |found| found.display().to_string())
}

/// The host side of banger's network, from the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub bridge: String,
    /// The host's address on the bridge (`.1` of the subnet), the guests' gateway.
    pub host_address: Ipv4Addr,
    pub prefix_len: u8,
    pub privilege: Privilege,
    /// The user taps are created for, so that an unprivileged VMM can open them.
    pub tap_owner: u32,
}

impl NetConfig {
    /// The default bridge, privilege detected, taps owned by the current user.
    pub fn new(host_address: Ipv4Addr, prefix_len: u8) -> NetConfig {
        NetConfig {
            bridge: DEFAULT_BRIDGE.to_owned(),
            host_address,
            prefix_len,
            privilege: Privilege::detect(),
            tap_owner: rustix::process::getuid().as_raw(),
        }
    }

    /// The host address with its prefix, e.g. `172.30.0.1/24`.
    pub fn host_cidr(&self) -> String {
        format!("{}/{}", self.host_address, self.prefix_len)
    }

    /// The bridge's MAC address: `06:00:` and the host address in hex, the scheme guests'
    /// addresses follow (so it cannot collide with a guest's, which never has `.1`).
    pub fn bridge_mac(&self) -> String {
        let [a, b, c, d] = self.host_address.octets();
        format!("06:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
    }

    /// The subnet in CIDR form, e.g. `172.30.0.0/24`.
    pub fn subnet(&self) -> String {
        let network = u32::from(self.host_address) & mask(self.prefix_len);
        format!("{}/{}", Ipv4Addr::from(network), self.prefix_len)
    }

    /// A network command as [`Privilege::net_command`] runs it.
    pub(crate) fn privileged<I, S>(&self, program: &str, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.privilege.net_command(program, args)
    }

    fn validate(&self) -> Result<(), NetworkError> {
        let invalid = |reason: &str| NetworkError::InvalidConfig {
            reason: reason.to_owned(),
        };
        if !(1..=30).contains(&self.prefix_len) {
            return Err(invalid("the subnet prefix must be /1 to /30"));
        }
        if let Err(reason) = check_ifname(&self.bridge) {
            return Err(invalid(&format!("bridge name {:?}: {reason}", self.bridge)));
        }
        Ok(())
    }
}

pub(crate) fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// Whether two IPv4 networks share addresses.
pub(crate) fn overlaps(a: Ipv4Addr, a_len: u8, b: Ipv4Addr, b_len: u8) -> bool {
    let m = mask(a_len.min(b_len));
    u32::from(a) & m == u32::from(b) & m
}

/// What the host network needs to know about one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNet {
    pub id: String,
    pub tap: String,
    pub ip: Ipv4Addr,
    pub nat: bool,
}

impl VmNet {
    /// A VM with the tap name [`tap_name`] gives its id.
    pub fn new(id: impl Into<String>, ip: Ipv4Addr, nat: bool) -> VmNet {
        let id = id.into();
        VmNet {
            tap: tap_name(&id),
            id,
            ip,
            nat,
        }
    }
}

/// The tap name of VM `vm_id`: `bt-` and 12 hex digits (15 bytes, the most Linux allows). A
/// store id (16 hex digits) contributes its first 12; any other id is hashed.
pub fn tap_name(vm_id: &str) -> String {
    let hex_id = vm_id.len() >= 12 && vm_id.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = if hex_id {
        vm_id[..12].to_ascii_lowercase()
    } else {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = vm_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{:012x}", hash & 0xffff_ffff_ffff)
    };
    format!("{TAP_PREFIX}{digits}")
}

fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err("an interface name has 1 to 15 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || name == "."
        || name == ".."
    {
        return Err("use letters, digits, '-', '_' and '.' only");
    }
    Ok(())
}

fn validate_tap(name: &str) -> Result<(), NetworkError> {
    let invalid = |reason: &str| NetworkError::InvalidTapName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    check_ifname(name).map_err(invalid)?;
    if !name.starts_with(TAP_PREFIX) || name.len() == TAP_PREFIX.len() {
        return Err(invalid(
            "a tap name starts with `bt-` so that taps left by a crash can be found",
        ));
    }
    Ok(())
}

/// Setting up or inspecting banger's host network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network configuration: {reason}")]
    InvalidConfig { reason: String },

    #[error("invalid tap name {name:?}: {reason}")]
    InvalidTapName { name: String, reason: String },

    #[error("cannot {action}")]
    Command { action: String, source: RunError },

    /// A system call done in-process (netlink, `/dev/net/tun`) failed.
    #[error("cannot {action}")]
    System {
        action: String,
        source: std::io::Error,
    },

    #[error("cannot understand the output of `{command}`: {reason}")]
    UnexpectedOutput { command: String, reason: String },

    #[error(
        "{name} exists but is a {kind} link, not a bridge; remove it with `ip link del {name}` or configure another bridge name"
    )]
    NotABridge { name: String, kind: String },

    #[error(
        "{name} exists and is a {kind} link, not a tap banger left behind; remove it with `ip link del {name}`"
    )]
    NameTaken { name: String, kind: String },

    #[error(
        "subnet {subnet} overlaps {address} on {interface}; choose another `subnet` in config.toml"
    )]
    SubnetInUse {
        subnet: String,
        interface: String,
        address: String,
    },

    /// A setup failed and releasing what it had acquired failed too; both are reported.
    #[error("{}; cleaning up afterwards also failed: {cleanup}", ledger::error_chain(.cause.as_ref()))]
    CleanupFailed {
        cause: Box<NetworkError>,
        cleanup: ReleaseError,
    },
}

impl NetworkError {
    pub(crate) fn command(action: impl Into<String>, source: RunError) -> NetworkError {
        NetworkError::Command {
            action: action.into(),
            source,
        }
    }
}

/// Runs a command whose failure means `action` failed.
pub(crate) fn run(
    runner: &dyn CommandRunner,
    cmd: &CommandSpec,
    action: impl Into<String>,
) -> Result<crate::runner::CommandOutput, NetworkError> {
    runner
        .run(cmd)
        .map_err(|source| NetworkError::command(action, source))
}

/// Gives `vm` its place on the network: the bridge (created and addressed when missing), the
/// VM's tap (created for [`NetConfig::tap_owner`], attached to the bridge, up) and, for a NAT
/// VM, its rules in `inet banger` and `ip_forward` on. Links are listed and the tap made through
/// `links`; everything else runs through `runner`. Returns what this call acquired; on failure
/// everything it acquired is released again (newest first) and nothing is left behind.
pub fn setup_vm_network(
    runner: &dyn CommandRunner,
    links: &dyn Links,
    cfg: &NetConfig,
    vm: &VmNet,
) -> Result<Acquired, NetworkError> {
    setup(runner, links, cfg, vm, true)
}

/// [`setup_vm_network`] with the VM's tap left off the bridge and down: for a VM restored from
/// a snapshot, whose guest runs with the snapshot's MAC and address until it is told its own,
/// and must not show them on the bridge meanwhile. [`attach_vm_tap`] puts it on the bridge.
pub fn setup_vm_network_isolated(
    runner: &dyn CommandRunner,
    links: &dyn Links,
    cfg: &NetConfig,
    vm: &VmNet,
) -> Result<Acquired, NetworkError> {
    setup(runner, links, cfg, vm, false)
}

/// Makes the tap of a VM set up by [`setup_vm_network_isolated`] a port of the bridge, up.
pub fn attach_vm_tap(
    runner: &dyn CommandRunner,
    links: &dyn Links,
    cfg: &NetConfig,
    vm: &VmNet,
) -> Result<(), NetworkError> {
    validate_tap(&vm.tap)?;
    links.attach_up(runner, cfg, &vm.tap)
}

fn setup(
    runner: &dyn CommandRunner,
    links: &dyn Links,
    cfg: &NetConfig,
    vm: &VmNet,
    attach: bool,
) -> Result<Acquired, NetworkError> {
    cfg.validate()?;
    validate_tap(&vm.tap)?;
    let mut acquired = Acquired::new();
    match acquire(runner, links, cfg, vm, attach, &mut acquired) {
        Ok(()) => Ok(acquired),
        Err(cause) => {
            tracing::warn!(vm = %vm.id, error = %ledger::error_chain(&cause), "network setup failed; rolling back");
            match acquired.release_all(runner, links, cfg) {
                Ok(()) => Err(cause),
                Err(cleanup) => Err(NetworkError::CleanupFailed {
                    cause: Box::new(cause),
                    cleanup,
                }),
            }
        }
    }
}

fn acquire(
    runner: &dyn CommandRunner,
    links: &dyn Links,
    cfg: &NetConfig,
    vm: &VmNet,
    attach: bool,
    acquired: &mut Acquired,
) -> Result<(), NetworkError> {
    let existing = links.list(runner)?;
    link::check_conflicts(cfg, &existing, &vm.tap)?;
    link::ensure_bridge(runner, cfg, &existing, acquired)?;
    link::create_tap(runner, links, cfg, &existing, &vm.tap, acquired)?;
    if attach {
        links.attach_up(runner, cfg, &vm.tap)?;
    }
    if vm.nat {
        nft::add_vm_rules(runner, cfg, vm, acquired)?;
        forwarding::enable_ip_forward(runner, cfg, acquired)?;
    }
    Ok(())
}

/// What `vm` owns alone, in acquisition order: its tap and, for a NAT VM, its rules. Teardown
/// and reconcile release these.
pub fn vm_resources(vm: &VmNet) -> Vec<Resource> {
    let mut resources = vec![Resource::Tap {
        name: vm.tap.clone(),
    }];
    if vm.nat {
        resources.push(Resource::NftVmRules { vm: vm.id.clone() });
    }
    resources
}

/// Takes `vm` off the network: its rules, then its tap, then the `shared` resources the caller
/// decided to release with it, in reverse order of that list (e.g. the recorded
/// [`Resource::Sysctl`] when the last NAT VM goes, or the bridge when the network is removed).
/// Continues past failures and reports them all; what is already gone counts as released.
pub fn teardown_vm_network(
    runner: &dyn CommandRunner,
    links: &dyn Links,
    cfg: &NetConfig,
    vm: &VmNet,
    shared: &[Resource],
) -> Result<(), ReleaseError> {
    let mut resources = shared.to_vec();
    resources.extend(vm_resources(vm));
    Acquired::from(resources).release_all(runner, links, cfg)
}

/// Taps named `bt-*` that none of `known` is: left behind by a crash. Release each with
/// [`release`] of a [`Resource::Tap`].
pub fn list_orphan_taps(
    runner: &dyn CommandRunner,
    links: &dyn Links,
    known: &[String],
) -> Result<Vec<String>, NetworkError> {
    Ok(links
        .list(runner)?
        .into_iter()
        .filter(|l| l.name.starts_with(TAP_PREFIX) && !known.contains(&l.name))
        .map(|l| l.name)
        .collect())
}

#[cfg(test)]
mod tests;

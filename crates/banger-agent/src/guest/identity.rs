//! `POST /v1/identity`: a VM restored from another VM's memory snapshot (a clone) becomes
//! itself. Right after the restore its guest still believes it is the source — same hostname,
//! address, MAC, SSH host key, agent token, wall clock and kernel RNG state — so the host sends
//! the clone's own files and the agent, in this order:
//!
//! 1. **entropy**: mixes the host's random bytes into the kernel RNG (`RNDADDENTROPY`, credited)
//!    and forces a reseed (`RNDRESEEDCRNG`). Clones restored from one snapshot must not produce
//!    the same random numbers. A kernel with a VM generation ID device (the `vmgenid` driver)
//!    already reseeds on restore; doing it here makes it certain whatever the guest kernel has.
//! 2. **wall clock**: `clock_settime(CLOCK_REALTIME)` to the host's time; a restored guest's
//!    clock is the snapshot's.
//! 3. **files**: writes each file under the root, atomically (a temporary file in the same
//!    directory renamed over the old one), with its mode, creating parent directories.
//! 4. **hostname**: `sethostname` from the new `etc/hostname`.
//! 5. **network**: applies the new `etc/banger/network` to the VM's NIC (the first Ethernet NIC
//!    that is not `lo`, preferring one backed by a device; the file's `mac=` is the clone's new
//!    MAC, so it cannot pick the NIC): sets its MAC, removes its IPv4 addresses, adds the new
//!    address with its broadcast and the default route, over netlink; then, with a new MAC,
//!    broadcasts one gratuitous ARP (not an error when it cannot).
//! 6. **ssh host key**: when a host key was written, SIGHUP to the sshd in `/run/sshd.pid` (it
//!    re-executes and reads its keys again); no pid file means sshd is not running, which the
//!    answer says.
//! 7. **agent token**: when `etc/banger/agent-token` was written, the agent's token becomes the
//!    new one for every later request. The request that carried it was authenticated with the
//!    old one and still gets its answer.
//!
//! The request is checked whole before anything happens (paths, modes, base64, the network
//! file, the hostname, the token), so a bad one changes nothing. A failing step stops the rest
//! and is named in the error; the host then discards the clone.
//!
//! Every effect is behind [`Effects`]: [`RealEffects`] in the guest, [`Recorder`] in tests (the
//! daemon's too), so an agent served in-process never touches the host's clock or network.
//!
//! TCP listeners (`--listen-vm-ip`) stay bound to the old address: clones run on Firecracker,
//! where the host reaches the agent over vsock.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use banger_agent_protocol::protocol::{
    IDENTITY_MIN_ENTROPY, IdentityApplied, IdentityRequest, NetworkApplied,
};
use banger_init::netconf::{self, NetConfig};
use banger_init::netlink;
use base64::Engine as _;

use super::Token;

/// The hostname file, relative to the guest's root.
pub const HOSTNAME_FILE: &str = "etc/hostname";
/// Where sshd records its pid, relative to the guest's root.
pub const SSHD_PID_FILE: &str = "run/sshd.pid";
/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Entropy,
    Clock,
    Files,
    Hostname,
    Network,
    SshHostKey,
    Token,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Entropy => "1 (entropy)",
            Step::Clock => "2 (wall clock)",
            Step::Files => "3 (files)",
            Step::Hostname => "4 (hostname)",
            Step::Network => "5 (network)",
            Step::SshHostKey => "6 (ssh host key)",
            Step::Token => "7 (agent token)",
        })
    }
}

/// Applying an identity failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Nothing was changed.
    #[error("invalid identity request: {0}")]
    Invalid(String),

    /// The steps before `step` were applied; `step` and the ones after were not (or, for
    /// files and network, partly).
    #[error("applying the identity failed at step {step}: {detail}")]
    Failed { step: Step, detail: String },
}

/// The VM's NIC as the kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub index: u32,
}

/// The side effects of [`apply`].
pub trait Effects: Send + Sync {
    /// Mixes `seed` into the kernel RNG, credited, and forces the RNG to reseed.
    fn add_entropy(&self, seed: &[u8]) -> io::Result<()>;
    fn set_clock(&self, unix_ms: u64) -> io::Result<()>;
    /// Writes `path` (relative to the root, already validated) atomically with `mode`.
    fn write_file(&self, path: &str, data: &[u8], mode: u32) -> io::Result<()>;
    fn set_hostname(&self, name: &str) -> io::Result<()>;
    fn find_nic(&self) -> io::Result<Nic>;
    fn set_mac(&self, nic: &Nic, mac: [u8; 6]) -> io::Result<()>;
    /// Removes every IPv4 address of the NIC; returns how many requests removed one.
    fn remove_ipv4_addresses(&self, nic: &Nic) -> io::Result<u32>;
    fn add_address(
        &self,
        nic: &Nic,
        address: Ipv4Addr,
        prefix_len: u8,
        broadcast: Ipv4Addr,
    ) -> io::Result<()>;
    fn add_default_route(&self, nic: &Nic, gateway: Ipv4Addr) -> io::Result<()>;
    /// Broadcasts one gratuitous ARP ([`arp_announcement`]) from the NIC.
    fn announce(&self, nic: &Nic, mac: [u8; 6], address: Ipv4Addr) -> io::Result<()>;
    /// SIGHUP to the running sshd; its pid, or `None` when sshd is not running.
    fn reload_sshd(&self) -> io::Result<Option<u32>>;
    /// Whether the kernel has a VM generation ID device bound.
    fn vmgenid(&self) -> bool;
}

/// A request, checked and decoded.
struct Plan {
    entropy: Vec<u8>,
    time_unix_ms: u64,
    files: Vec<(String, u32, Vec<u8>)>,
    hostname: Option<String>,
    network: Option<NetConfig>,
    mac: Option<[u8; 6]>,
    host_key_changed: bool,
    token: Option<Vec<u8>>,
}

fn invalid(message: String) -> IdentityError {
    IdentityError::Invalid(message)
}

/// Checks a file path: relative, plain components (no `.`, `..`, empty or NUL).
pub fn check_path(path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "file path {path:?} must be relative to the guest's root, with plain components \
             (no leading `/`, no `.` or `..`, no empty component)"
        ))
    }
}

fn is_host_key(path: &str) -> bool {
    path.strip_prefix("etc/ssh/ssh_host_")
        .and_then(|rest| rest.strip_suffix("_key"))
        .is_some_and(|alg| !alg.is_empty() && !alg.contains('/'))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn validate(request: &IdentityRequest) -> Result<Plan, IdentityError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let entropy = b64
        .decode(request.entropy.as_bytes())
        .map_err(|e| invalid(format!("entropy is not base64: {e}")))?;
    if entropy.len() < IDENTITY_MIN_ENTROPY {
        return Err(invalid(format!(
            "entropy has {} bytes; send at least {IDENTITY_MIN_ENTROPY} random bytes",
            entropy.len()
        )));
    }
    if request.time_unix_ms == 0 {
        return Err(invalid(
            "time_unix_ms is 0; send the host's wall clock in milliseconds since the epoch".into(),
        ));
    }
    let token_path = banger_guest_contract::paths::AGENT_TOKEN_FILE;
    let network_path = netconf::NETWORK_FILE;
    let mut plan = Plan {
        entropy,
        time_unix_ms: request.time_unix_ms,
        files: Vec::with_capacity(request.files.len()),
        hostname: None,
        network: None,
        mac: None,
        host_key_changed: false,
        token: None,
    };
    for file in &request.files {
        let path = file.path.as_str();
        check_path(path).map_err(invalid)?;
        if plan.files.iter().any(|(p, _, _)| p == path) {
            return Err(invalid(format!("file {path:?} is listed twice")));
        }
        if file.mode > 0o7777 {
            return Err(invalid(format!(
                "file {path:?} has mode {:o}; send permission bits only (at most 7777)",
                file.mode
            )));
        }
        let data = b64
            .decode(file.data.as_bytes())
            .map_err(|e| invalid(format!("file {path:?}: data is not base64: {e}")))?;
        if path == HOSTNAME_FILE {
            let name = String::from_utf8_lossy(&data).trim().to_owned();
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(invalid(format!(
                    "{HOSTNAME_FILE} holds {name:?}, which is not a hostname"
                )));
            }
            plan.hostname = Some(name);
        } else if path == network_path {
            let text = std::str::from_utf8(&data)
                .map_err(|_| invalid(format!("{network_path} is not UTF-8")))?;
            let net = netconf::parse(text).map_err(|e| invalid(e.to_string()))?;
            plan.mac =
                match &net.mac {
                    Some(mac) => Some(parse_mac(mac).ok_or_else(|| {
                        invalid(format!("{network_path}: mac {mac:?} is not a MAC"))
                    })?),
                    None => None,
                };
            plan.network = Some(net);
        } else if path == token_path {
            let token = data.trim_ascii();
            if token.is_empty() || !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
                return Err(invalid(format!(
                    "{token_path} must hold a non-empty token of printable ASCII"
                )));
            }
            if file.mode & 0o077 != 0 {
                return Err(invalid(format!(
                    "{token_path} has mode {:o}; the token must be private (0600)",
                    file.mode
                )));
            }
            plan.token = Some(token.to_vec());
        } else if is_host_key(path) {
            plan.host_key_changed = true;
        }
        plan.files.push((path.to_owned(), file.mode, data));
    }
    Ok(plan)
}

/// Applies `request` through `effects`; on success `token` holds the new token when the
/// request carried one.
pub fn apply(
    effects: &dyn Effects,
    request: &IdentityRequest,
    token: &Token,
) -> Result<IdentityApplied, IdentityError> {
    let plan = validate(request)?;
    let failed = |step: Step| {
        move |e: io::Error| IdentityError::Failed {
            step,
            detail: e.to_string(),
        }
    };

    effects
        .add_entropy(&plan.entropy)
        .map_err(failed(Step::Entropy))?;
    effects
        .set_clock(plan.time_unix_ms)
        .map_err(failed(Step::Clock))?;

    let mut written = Vec::with_capacity(plan.files.len());
    for (path, mode, data) in &plan.files {
        effects
            .write_file(path, data, *mode)
            .map_err(|e| IdentityError::Failed {
                step: Step::Files,
                detail: format!("writing /{path}: {e}"),
            })?;
        written.push(path.clone());
    }

    if let Some(name) = &plan.hostname {
        effects
            .set_hostname(name)
            .map_err(|e| IdentityError::Failed {
                step: Step::Hostname,
                detail: format!("setting the hostname to {name:?}: {e}"),
            })?;
    }

    let network = match &plan.network {
        Some(net) => Some(apply_network(effects, net, plan.mac)?),
        None => None,
    };

    let sshd_reloaded = if plan.host_key_changed {
        effects.reload_sshd().map_err(|e| IdentityError::Failed {
            step: Step::SshHostKey,
            detail: format!("asking sshd to reload its host keys: {e}"),
        })?
    } else {
        None
    };

    let token_changed = match plan.token {
        Some(new) => {
            token.replace(new);
            true
        }
        None => false,
    };

    Ok(IdentityApplied {
        files: written,
        hostname: plan.hostname,
        network,
        host_key_changed: plan.host_key_changed,
        sshd_reloaded,
        token_changed,
        vmgenid: effects.vmgenid(),
    })
}

fn apply_network(
    effects: &dyn Effects,
    net: &NetConfig,
    mac: Option<[u8; 6]>,
) -> Result<NetworkApplied, IdentityError> {
    let failed = |what: String| {
        move |e: io::Error| IdentityError::Failed {
            step: Step::Network,
            detail: format!("{what}: {e}"),
        }
    };
    let nic = effects
        .find_nic()
        .map_err(failed("finding the VM's NIC".into()))?;
    let name = &nic.name;
    if let Some(mac) = mac {
        effects
            .set_mac(&nic, mac)
            .map_err(failed(format!("setting the MAC of {name}")))?;
    }
    let removed = effects
        .remove_ipv4_addresses(&nic)
        .map_err(failed(format!("removing the old addresses of {name}")))?;
    effects
        .add_address(&nic, net.address, net.prefix_len, net.broadcast())
        .map_err(failed(format!(
            "adding {}/{} to {name}",
            net.address, net.prefix_len
        )))?;
    if let Some(gateway) = net.gateway {
        effects
            .add_default_route(&nic, gateway)
            .map_err(failed(format!("adding the default route via {gateway}")))?;
    }
    // Neighbours may remember another MAC for this address (a deleted VM had it): tell them.
    // Only a courtesy — they would find out by themselves within seconds — so not a failure.
    let announced = match mac {
        Some(mac) => match effects.announce(&nic, mac, net.address) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "banger-agent: announcing {} on {name} failed: {e}",
                    net.address
                );
                false
            }
        },
        None => false,
    };
    Ok(NetworkApplied {
        interface: nic.name.clone(),
        mac: net.mac.clone(),
        removed_addresses: removed,
        address: net.address,
        prefix_len: net.prefix_len,
        gateway: net.gateway,
        announced,
    })
}

/// An ARP announcement (RFC 5227): a broadcast request from `mac` asking for `address`
/// itself, which neighbours take as "`address` is now at `mac`". The ARP packet only; the
/// kernel adds the Ethernet header.
pub fn arp_announcement(mac: [u8; 6], address: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    p[4] = 6; // hardware address length
    p[5] = 4; // protocol address length
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    p[8..14].copy_from_slice(&mac); // sender MAC
    p[14..18].copy_from_slice(&address.octets()); // sender IP
    // target MAC: zero (unknown)
    p[24..28].copy_from_slice(&address.octets()); // target IP: the same
    p
}

/// `_IOW('R', 0x03, int[2])`: add entropy to the input pool, crediting it (CAP_SYS_ADMIN).
/// Not in the libc crate; the value is the same on every Linux architecture banger runs on.
const RNDADDENTROPY: u32 = 0x4008_5203;
/// `_IO('R', 0x07)`: reseed the CRNG from the input pool now (Linux 4.17+, CAP_SYS_ADMIN).
const RNDRESEEDCRNG: u32 = 0x5207;

/// Where the `vmgenid` driver lists the devices bound to it, under `/sys`: it is an ACPI
/// driver up to Linux 6.9 (so 6.1 shows e.g. `/sys/bus/acpi/drivers/vmgenid/VMGENCTR:00` or
/// `QEMUVGID:00`), a platform driver from 6.10.
const VMGENID_DRIVERS: [&str; 2] = ["bus/acpi/drivers/vmgenid", "bus/platform/drivers/vmgenid"];

/// The guest's real system: files under `root`, the kernel through `/sys`, `/proc`, ioctls,
/// syscalls and netlink.
#[derive(Debug, Clone)]
pub struct RealEffects {
    root: PathBuf,
    sys: PathBuf,
    proc: PathBuf,
}

impl RealEffects {
    /// The running guest: `/`, `/sys`, `/proc`.
    pub fn guest() -> Self {
        RealEffects::with_root("/")
    }

    /// Files (and sshd's pid file) under `root` instead of `/`.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        RealEffects {
            root: root.into(),
            sys: "/sys".into(),
            proc: "/proc".into(),
        }
    }

    /// Reads the kernel from elsewhere than `/sys` and `/proc`.
    pub fn with_kernel_dirs(mut self, sys: impl Into<PathBuf>, proc: impl Into<PathBuf>) -> Self {
        self.sys = sys.into();
        self.proc = proc.into();
        self
    }

    fn netlink(&self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        netlink::Socket::open()?.request(build)
    }

    fn net_attr(&self, name: &str, attr: &str) -> Option<String> {
        fs::read_to_string(self.sys.join("class/net").join(name).join(attr))
            .ok()
            .map(|s| s.trim().to_owned())
    }
}

impl Effects for RealEffects {
    fn add_entropy(&self, seed: &[u8]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let too_long = || io::Error::new(io::ErrorKind::InvalidInput, "too much entropy");
        let bits = i32::try_from(seed.len() * 8).map_err(|_| too_long())?;
        let len = i32::try_from(seed.len()).map_err(|_| too_long())?;
        // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }, built in
        // u32 words so the kernel reads an aligned struct.
        let mut words = vec![0u32; 2 + seed.len().div_ceil(4)];
        words[0] = bits as u32;
        words[1] = len as u32;
        for (i, chunk) in seed.chunks(4).enumerate() {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            words[2 + i] = u32::from_ne_bytes(word);
        }
        let urandom = fs::File::open("/dev/urandom")?;
        // SAFETY: RNDADDENTROPY reads a rand_pool_info of `8 + buf_size` bytes from the
        // pointer; `words` holds exactly that (rounded up to whole words) and outlives the
        // call. The kernel writes nothing back.
        let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY as _, words.as_ptr()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("RNDADDENTROPY: {e}")));
        }
        // SAFETY: RNDRESEEDCRNG takes no argument and touches no memory of ours.
        let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG as _) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("RNDRESEEDCRNG: {e}")));
        }
        Ok(())
    }

    fn set_clock(&self, unix_ms: u64) -> io::Result<()> {
        let ts = libc::timespec {
            tv_sec: (unix_ms / 1000) as libc::time_t,
            tv_nsec: ((unix_ms % 1000) * 1_000_000) as libc::c_long,
        };
        // SAFETY: clock_settime reads one timespec that lives on the stack for the call.
        let rc = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn write_file(&self, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        check_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let target = self.root.join(path);
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name"));
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(".banger-identity");
        let temp = dir.join(temp_name);
        let _ = fs::remove_file(&temp);
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(data)?;
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            file.sync_all()?;
            fs::rename(&temp, &target)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        Ok(rustix::system::sethostname(name.as_bytes())?)
    }

    fn find_nic(&self) -> io::Result<Nic> {
        let dir = self.sys.join("class/net");
        let mut names = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        // type 1 is ARPHRD_ETHER. A NIC backed by a device (virtio-net) comes before virtual
        // Ethernet links (bridges, veths) a guest may have made.
        let ethernet: Vec<&String> = names
            .iter()
            .filter(|n| *n != "lo" && self.net_attr(n, "type").as_deref() == Some("1"))
            .collect();
        let name = ethernet
            .iter()
            .find(|n| dir.join(n).join("device").exists())
            .or_else(|| ethernet.first())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "no Ethernet NIC in {} (links: {})",
                        dir.display(),
                        names.join(" ")
                    ),
                )
            })?;
        let index = self
            .net_attr(name, "ifindex")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cannot read the ifindex of {name}"),
                )
            })?;
        Ok(Nic {
            name: (*name).clone(),
            index,
        })
    }

    fn set_mac(&self, nic: &Nic, mac: [u8; 6]) -> io::Result<()> {
        let index = nic.index;
        match self.netlink(|seq| netlink::set_mac(seq, index, mac)) {
            // A driver that cannot change the address of a running link: down, change, up.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                self.netlink(|seq| netlink::link_down(seq, index))?;
                let changed = self.netlink(|seq| netlink::set_mac(seq, index, mac));
                self.netlink(|seq| netlink::link_up(seq, index))?;
                changed
            }
            other => other,
        }
    }

    fn remove_ipv4_addresses(&self, nic: &Nic) -> io::Result<u32> {
        let mut socket = netlink::Socket::open()?;
        let mut removed = 0;
        // Bounded: a link has a handful of addresses, and each request removes one or more.
        for _ in 0..1024 {
            match socket.request(|seq| netlink::delete_first_address(seq, nic.index)) {
                Ok(()) => removed += 1,
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return Ok(removed),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "{} still has IPv4 addresses after {removed} removals",
            nic.name
        )))
    }

    fn add_address(
        &self,
        nic: &Nic,
        address: Ipv4Addr,
        prefix_len: u8,
        broadcast: Ipv4Addr,
    ) -> io::Result<()> {
        self.netlink(|seq| netlink::add_address(seq, nic.index, address, prefix_len, broadcast))
    }

    fn add_default_route(&self, nic: &Nic, gateway: Ipv4Addr) -> io::Result<()> {
        self.netlink(|seq| netlink::add_default_route(seq, nic.index, gateway))
    }

    fn announce(&self, nic: &Nic, mac: [u8; 6], address: Ipv4Addr) -> io::Result<()> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let arp = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: socket(2) with constant arguments; the descriptor is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(arp),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data, valid when zeroed.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = arp;
        to.sll_ifindex = nic.index as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let packet = arp_announcement(mac, address);
        // SAFETY: sendto reads `packet.len()` bytes from `packet` and one sockaddr_ll from
        // `to`, both alive for the call.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn reload_sshd(&self) -> io::Result<Option<u32>> {
        let text = match fs::read_to_string(self.root.join(SSHD_PID_FILE)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let pid: u32 = text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/{SSHD_PID_FILE} holds {:?}, not a pid", text.trim()),
            )
        })?;
        // A stale pid file may name another process by now: signal only an sshd.
        let comm =
            fs::read_to_string(self.proc.join(pid.to_string()).join("comm")).unwrap_or_default();
        if pid <= 1 || !comm.trim_end().starts_with("sshd") {
            return Ok(None);
        }
        // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(pid))
    }

    fn vmgenid(&self) -> bool {
        VMGENID_DRIVERS.iter().any(|driver| {
            fs::read_dir(self.sys.join(driver)).is_ok_and(|entries| {
                // A bound device is a symlink named for it; `module` is the other symlink.
                entries.flatten().any(|e| {
                    e.file_name() != "module" && e.file_type().is_ok_and(|t| t.is_symlink())
                })
            })
        })
    }
}

/// A stand-in for the guest's system that records each effect as a line and keeps written
/// files in memory; [`Recorder::fail_at`] makes the first effect whose line starts with a
/// prefix fail. For tests, the daemon's included: an agent served in-process answers
/// `POST /v1/identity` through it without touching the host.
#[derive(Debug, Default)]
pub struct Recorder {
    log: Mutex<Vec<String>>,
    files: Mutex<BTreeMap<String, (u32, Vec<u8>)>>,
    fail: Mutex<Option<String>>,
    sshd: Option<u32>,
    vmgenid: bool,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder::default()
    }

    /// The first effect whose line starts with `prefix` fails (its line is still recorded).
    pub fn fail_at(self, prefix: &str) -> Self {
        *self.fail.lock().unwrap_or_else(|e| e.into_inner()) = Some(prefix.to_owned());
        self
    }

    /// sshd runs with this pid (by default it does not).
    pub fn with_sshd(mut self, pid: u32) -> Self {
        self.sshd = Some(pid);
        self
    }

    /// The kernel has a VM generation ID device.
    pub fn with_vmgenid(mut self) -> Self {
        self.vmgenid = true;
        self
    }

    /// Every effect so far, in order, e.g. `hostname clone-1`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The files written: path to (mode, contents).
    pub fn files(&self) -> BTreeMap<String, (u32, Vec<u8>)> {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, line: String) -> io::Result<()> {
        let mut fail = self.fail.lock().unwrap_or_else(|e| e.into_inner());
        let fails = fail.as_deref().is_some_and(|p| line.starts_with(p));
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.clone());
        if fails {
            *fail = None;
            return Err(io::Error::other(format!("injected failure of `{line}`")));
        }
        Ok(())
    }
}

impl Effects for Recorder {
    fn add_entropy(&self, seed: &[u8]) -> io::Result<()> {
        self.record(format!("entropy {} bytes", seed.len()))
    }

    fn set_clock(&self, unix_ms: u64) -> io::Result<()> {
        self.record(format!("clock {unix_ms}"))
    }

    fn write_file(&self, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
        self.record(format!("write {path} {mode:o}"))?;
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), (mode, data.to_vec()));
        Ok(())
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        self.record(format!("hostname {name}"))
    }

    fn find_nic(&self) -> io::Result<Nic> {
        self.record("find nic".into())?;
        Ok(Nic {
            name: "eth0".into(),
            index: 2,
        })
    }

    fn set_mac(&self, nic: &Nic, mac: [u8; 6]) -> io::Result<()> {
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        self.record(format!("mac {} {}", nic.name, mac.join(":")))
    }

    fn remove_ipv4_addresses(&self, nic: &Nic) -> io::Result<u32> {
        self.record(format!("flush {}", nic.name))?;
        Ok(1)
    }

    fn add_address(
        &self,
        nic: &Nic,
        address: Ipv4Addr,
        prefix_len: u8,
        broadcast: Ipv4Addr,
    ) -> io::Result<()> {
        self.record(format!(
            "address {} {address}/{prefix_len} broadcast {broadcast}",
            nic.name
        ))
    }

    fn add_default_route(&self, nic: &Nic, gateway: Ipv4Addr) -> io::Result<()> {
        self.record(format!("route {} via {gateway}", nic.name))
    }

    fn announce(&self, nic: &Nic, mac: [u8; 6], address: Ipv4Addr) -> io::Result<()> {
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        self.record(format!(
            "announce {} {address} at {}",
            nic.name,
            mac.join(":")
        ))
    }

    fn reload_sshd(&self) -> io::Result<Option<u32>> {
        self.record("sshd reload".into())?;
        Ok(self.sshd)
    }

    fn vmgenid(&self) -> bool {
        self.vmgenid
    }
}

#[cfg(test)]
mod tests;

//! The host checks behind `banger doctor` and the preflights the daemon runs before starting a
//! VM, setting up NAT or resizing a disk: KVM and its kind, `/dev/net/tun`, iproute2, nftables,
//! the bridge, `ip_forward`, free disk space, e2fsprogs, the OpenSSH client and, when the daemon
//! is not root, passwordless `sudo`. Each check says what it found and, when something is wrong,
//! the command or setting that fixes it. Programs are probed through the [`CommandRunner`] and
//! files under an injectable root directory, so every check is testable without the host it
//! describes. The VMM binaries and what `vmm = "auto"` picks are not judged here but by
//! banger-vmm's `availability`, with the checks a launch applies; [`Doctor::run`] takes its
//! [`Check`]s from the caller.
//!
//! The checks stay in one file because they share the [`Doctor`]'s runner, root and `sudo`
//! handling, and read as the one list of what banger needs from a host.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::disk::{DiskError, FsUsage, filesystem_usage};
use crate::ext4::{Debugfs, E2fsck, Mkfs, Resize2fs};
use crate::network::{self, NetConfig, Privilege};
use crate::program::{self, is_executable};
use crate::runner::{CommandRunner, CommandSpec, RunError};

pub mod dns;

const GIB: u64 = 1 << 30;
/// Below this much free space in the state directory a check warns...
const DISK_WARN_BYTES: u64 = 5 * GIB;
/// ...and below this it fails: one VM's overlay and work disk need about this much to start.
const DISK_FAIL_BYTES: u64 = GIB;

/// The explanation banger owes a user whose `/dev/kvm` is paravirtual.
pub const KVM_PVM_EXPLANATION: &str = "kvm_pvm (paravirtual KVM): Firecracker and QEMU \
    -enable-kvm start but a stock guest kernel cannot boot; banger uses QEMU with TCG here";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    /// Works, but worse than it could (slower backend, a feature unavailable).
    Warn,
    /// Something banger needs is missing or broken.
    Fail,
}

/// One finding about the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable short name, e.g. `kvm`, `nftables`.
    pub name: String,
    pub status: CheckStatus,
    /// What was found, in a sentence.
    pub detail: String,
    /// The command or setting that fixes it; present whenever the status is not `Ok`.
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn is_fail(&self) -> bool {
        self.status == CheckStatus::Fail
    }
}

/// What an operation is about to do, selecting the checks that matter for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preflight {
    /// Starting a VM (its VMM is the backend choice's business, checked when it is made):
    /// only the network pieces and disk space, which keeps a start fast.
    Host,
    /// Setting up NAT for a VM: nftables, forwarding.
    Nat,
    /// Resizing a disk: e2fsprogs, disk space.
    Resize,
    /// `image bootstrap`: debootstrap and apt, e2fsprogs, disk space, and `sudo -n` for the
    /// steps on the root-owned tree when not root.
    Bootstrap,
}

/// Which kernel module provides `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    Intel,
    Amd,
    /// Paravirtual KVM: VMMs start, but a stock guest kernel cannot boot under it.
    Pvm,
    /// `/dev/kvm` without a module banger recognises (e.g. built into the kernel).
    Unknown,
}

impl KvmKind {
    /// The module's name, as `lsmod` shows it.
    pub fn module(self) -> &'static str {
        match self {
            KvmKind::Intel => "kvm_intel",
            KvmKind::Amd => "kvm_amd",
            KvmKind::Pvm => "kvm_pvm",
            KvmKind::Unknown => "kvm",
        }
    }
}

/// What `/dev/kvm` offers this user, as [`probe_kvm`] found it.
#[derive(Debug)]
pub enum Kvm {
    Missing,
    /// Present but not openable read-write.
    NoAccess(KvmKind, io::Error),
    Usable(KvmKind),
}

impl Kvm {
    /// Whether a VMM using this `/dev/kvm` can boot a stock guest kernel: it is usable and not
    /// paravirtual.
    pub fn boots_stock_guests(&self) -> bool {
        matches!(self, Kvm::Usable(kind) if *kind != KvmKind::Pvm)
    }
}

/// Probes `/dev/kvm` and the KVM modules under `root` (`/` on a real host): whether the device
/// exists, whether this user can open it read-write, and which module provides it. The one
/// place banger tells hardware KVM from kvm_pvm, shared by `banger doctor` and the VMM
/// backends' choice of accelerator.
pub fn probe_kvm(root: &Path) -> Kvm {
    let under_root = |absolute: &str| root.join(absolute.trim_start_matches('/'));
    let device = under_root("/dev/kvm");
    if !device.exists() {
        return Kvm::Missing;
    }
    let module = |name: &str| under_root("/sys/module").join(name).exists();
    // kvm_pvm first: it can be loaded next to a hardware module that has no hardware.
    let kind = if module("kvm_pvm") {
        KvmKind::Pvm
    } else if module("kvm_intel") {
        KvmKind::Intel
    } else if module("kvm_amd") {
        KvmKind::Amd
    } else {
        KvmKind::Unknown
    };
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device)
    {
        Ok(_) => Kvm::Usable(kind),
        Err(error) => Kvm::NoAccess(kind, error),
    }
}

/// Where a program was found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// On the daemon's PATH, where the runner finds it.
    InPath(PathBuf),
    /// Only in an sbin directory that PATH lacks (Debian's default for users): `sudo` finds it
    /// there, an unprivileged run does not.
    OutsidePath(PathBuf),
    Missing,
}

/// Runs host checks. Built with the real host's defaults and overridable for tests.
#[derive(Debug, Clone)]
pub struct Doctor<'a> {
    runner: &'a dyn CommandRunner,
    net: NetConfig,
    state_dir: PathBuf,
    root: PathBuf,
    path: OsString,
    fs_usage: fn(&Path) -> Result<FsUsage, DiskError>,
}

impl<'a> Doctor<'a> {
    /// Checks for a daemon whose network is `net` and whose state lives in `state_dir`, on the
    /// real host: files under `/`, programs on this process's PATH.
    pub fn new(runner: &'a dyn CommandRunner, net: NetConfig, state_dir: PathBuf) -> Self {
        Doctor {
            runner,
            net,
            state_dir,
            root: PathBuf::from("/"),
            path: std::env::var_os("PATH").unwrap_or_default(),
            fs_usage: filesystem_usage,
        }
    }

    /// Probes `/dev`, `/sys`, `/proc` and the sbin directories under `root` instead of `/`.
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = root.into();
        self
    }

    /// Looks programs up in `path` (a PATH value) instead of this process's PATH.
    pub fn path_var(mut self, path: impl Into<OsString>) -> Self {
        self.path = path.into();
        self
    }

    /// Measures free space with `f` instead of `statvfs`.
    pub fn fs_usage(mut self, f: fn(&Path) -> Result<FsUsage, DiskError>) -> Self {
        self.fs_usage = f;
        self
    }

    /// Every check, in the order `banger doctor` prints them, with `backends` (what
    /// banger-vmm's availability says about the VMM binaries and `vmm = "auto"`) right after
    /// the KVM check they depend on. The backends come from the caller because banger-vmm owns
    /// the version checks a launch applies, and the doctor must not judge a binary differently.
    pub fn run(&self, backends: Vec<Check>) -> Vec<Check> {
        let mut checks = vec![self.check_kvm(&self.kvm())];
        checks.extend(backends);
        checks.extend([
            self.check_tun(),
            self.check_iproute2(),
            self.check_nftables(false),
            self.check_bridge(),
            self.check_ip_forward(),
            self.check_disk(),
            self.check_e2fsprogs(&[
                Mkfs::PROGRAM,
                Debugfs::PROGRAM,
                Resize2fs::PROGRAM,
                E2fsck::PROGRAM,
            ]),
            self.check_openssh(),
            self.check_debootstrap(false),
        ]);
        checks.extend(self.check_sudo());
        checks.extend(self.check_bootstrap_sudo(false));
        checks.push(self.check_image_build());
        checks.extend(self.check_promote_sudo());
        checks
    }

    /// The checks that matter before `kind`; a `Fail` among them should stop the operation
    /// with that check's detail and fix.
    pub fn preflight(&self, kind: Preflight) -> Vec<Check> {
        let mut checks = match kind {
            // No bridge check: the network setup checks the same conflicts itself, with the
            // same messages, and one `ip` process fewer keeps a start fast.
            Preflight::Host => vec![self.check_tun(), self.check_iproute2(), self.check_disk()],
            Preflight::Nat => vec![self.check_nftables(true), self.check_ip_forward()],
            Preflight::Resize => vec![
                self.check_e2fsprogs(&[Resize2fs::PROGRAM, E2fsck::PROGRAM]),
                self.check_disk(),
            ],
            Preflight::Bootstrap => {
                let mut checks = vec![
                    self.check_debootstrap(true),
                    self.check_e2fsprogs(&[Mkfs::PROGRAM]),
                    self.check_disk(),
                ];
                checks.extend(self.check_bootstrap_sudo(true));
                return checks;
            }
        };
        checks.extend(self.check_sudo());
        checks
    }

    fn under_root(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    fn find(&self, program: &str) -> Found {
        if let Some(found) = program::find_in_path(Some(&self.path), program) {
            return Found::InPath(found);
        }
        for dir in program::SBIN_DIRS {
            let candidate = self.under_root(dir).join(program);
            if is_executable(&candidate) {
                return Found::OutsidePath(candidate);
            }
        }
        Found::Missing
    }

    /// The first line a program prints for its version (some print it on stderr).
    fn version(&self, program: &Path, flag: &str) -> Result<String, RunError> {
        let out = self
            .runner
            .run(&CommandSpec::new(program.to_string_lossy()).arg(flag))?;
        let text = if out.stdout.iter().all(u8::is_ascii_whitespace) {
            out.stderr_lossy()
        } else {
            out.stdout_lossy()
        };
        Ok(text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned())
    }

    /// `program flag`'s first line, or the failed check saying the program does not run.
    fn version_or_fail(
        &self,
        name: &str,
        program: &Path,
        flag: &str,
        fix: &str,
    ) -> Result<String, Check> {
        self.version(program, flag).map_err(|error| {
            Check::fail(
                name,
                format!("{} does not run: {error}", program.display()),
                fix,
            )
        })
    }

    fn kvm(&self) -> Kvm {
        probe_kvm(&self.root)
    }

    fn check_kvm(&self, kvm: &Kvm) -> Check {
        const NAME: &str = "kvm";
        match kvm {
            Kvm::Missing => Check::warn(
                NAME,
                "/dev/kvm does not exist: VMs can only run under QEMU with TCG (software \
                 emulation, several times slower)",
                "enable hardware virtualization (VT-x/AMD-V) in the firmware, then `sudo \
                 modprobe kvm_intel` (or `kvm_amd`)",
            ),
            Kvm::Usable(KvmKind::Pvm) | Kvm::NoAccess(KvmKind::Pvm, _) => Check::warn(
                NAME,
                KVM_PVM_EXPLANATION,
                "nothing to do for banger; to boot guests under Firecracker, use a host whose \
                 CPU exposes VT-x or AMD-V (bare metal or nested virtualization)",
            ),
            Kvm::NoAccess(kind, error) if error.kind() == io::ErrorKind::PermissionDenied => {
                Check::fail(
                    NAME,
                    format!(
                        "{}: /dev/kvm exists but this user cannot open it read-write",
                        kind.module()
                    ),
                    "sudo usermod -aG kvm \"$USER\", then log out and in again",
                )
            }
            Kvm::NoAccess(kind, error) => Check::fail(
                NAME,
                format!(
                    "{}: cannot open /dev/kvm read-write: {error}",
                    kind.module()
                ),
                "check that the kvm module loaded cleanly: `sudo dmesg | grep -i kvm`",
            ),
            Kvm::Usable(kind) => Check::ok(NAME, format!("{}: /dev/kvm is usable", kind.module())),
        }
    }

    fn check_tun(&self) -> Check {
        if self.under_root("/dev/net/tun").exists() {
            Check::ok("tun", "/dev/net/tun exists")
        } else {
            Check::fail(
                "tun",
                "/dev/net/tun does not exist: VMs cannot get a network interface",
                "sudo modprobe tun",
            )
        }
    }

    fn check_iproute2(&self) -> Check {
        match self.find("ip") {
            Found::InPath(path) | Found::OutsidePath(path) => {
                Check::ok("iproute2", format!("ip at {}", path.display()))
            }
            Found::Missing => Check::fail(
                "iproute2",
                "`ip` is not installed: banger cannot create its bridge and taps",
                "sudo apt-get install iproute2",
            ),
        }
    }

    /// `required`: NAT is about to be set up, so a missing `nft` fails instead of warning.
    fn check_nftables(&self, required: bool) -> Check {
        const NAME: &str = "nftables";
        let fix = "sudo apt-get install nftables";
        // nft always runs privileged, and sudo's and root's PATH include the sbin directories.
        let path = match self.find("nft") {
            Found::InPath(path) | Found::OutsidePath(path) => path,
            Found::Missing => {
                let detail = "`nft` is not installed: VMs created with --nat cannot start";
                return if required {
                    Check::fail(NAME, detail, fix)
                } else {
                    Check::warn(NAME, detail, fix)
                };
            }
        };
        match self.version_or_fail(NAME, &path, "--version", fix) {
            Ok(line) => Check::ok(
                NAME,
                format!(
                    "{} at {}",
                    line.split(" (").next().unwrap_or(&line),
                    path.display()
                ),
            ),
            Err(check) => check,
        }
    }

    fn check_bridge(&self) -> Check {
        const NAME: &str = "bridge";
        let net = &self.net;
        let bridge = net.bridge.as_str();
        let links = match network::host_links(self.runner) {
            Ok(links) => links,
            Err(error) => {
                return Check::warn(
                    NAME,
                    format!(
                        "cannot inspect network interfaces: {}",
                        crate::network::error_chain(&error)
                    ),
                    "sudo apt-get install iproute2",
                );
            }
        };
        for link in links.iter().filter(|l| l.name != bridge) {
            if let Some((addr, len)) = link.ipv4.iter().find(|(addr, len)| {
                network::overlaps(*addr, *len, net.host_address, net.prefix_len)
            }) {
                return Check::fail(
                    NAME,
                    format!(
                        "subnet {} overlaps {addr}/{len} on {}",
                        net.subnet(),
                        link.name
                    ),
                    "set `subnet` in config.toml to a free range, e.g. 172.31.0.0/24",
                );
            }
        }
        let Some(link) = links.iter().find(|l| l.name == bridge) else {
            return Check::ok(
                NAME,
                format!(
                    "{bridge} does not exist yet; it is created with {} when the first VM starts",
                    net.host_cidr()
                ),
            );
        };
        if link.kind.as_deref() != Some("bridge") {
            return Check::fail(
                NAME,
                format!(
                    "{bridge} exists but is a {} link, not a bridge",
                    link.kind.as_deref().unwrap_or("physical")
                ),
                format!("sudo ip link del {bridge}"),
            );
        }
        let taps = links
            .iter()
            .filter(|l| l.master.as_deref() == Some(bridge))
            .count();
        let own = (net.host_address, net.prefix_len);
        let stale: Vec<String> = link
            .ipv4
            .iter()
            .filter(|a| **a != own)
            .map(|(a, l)| format!("{a}/{l}"))
            .collect();
        if let Some(first) = stale.first() {
            return Check::warn(
                NAME,
                format!(
                    "{bridge} also carries {} (an earlier subnet?)",
                    stale.join(", ")
                ),
                format!("sudo ip addr del {first} dev {bridge}"),
            );
        }
        if !link.ipv4.contains(&own) || !link.up {
            return Check::warn(
                NAME,
                format!(
                    "{bridge} exists but is {}; the next VM start fixes it",
                    if link.up {
                        format!("missing {}", net.host_cidr())
                    } else {
                        "down".to_owned()
                    }
                ),
                format!(
                    "sudo ip addr replace {} dev {bridge} && sudo ip link set {bridge} up",
                    net.host_cidr()
                ),
            );
        }
        let mac = net.bridge_mac();
        if link.mac.as_deref() != Some(mac.as_str()) {
            return Check::warn(
                NAME,
                format!(
                    "{bridge} has the MAC address {} instead of banger's fixed {mac}: it can \
                     change when a tap is removed, cutting the other VMs off until their ARP \
                     caches expire",
                    link.mac.as_deref().unwrap_or("(none)")
                ),
                format!("sudo ip link set {bridge} address {mac} (with no VM running)"),
            );
        }
        Check::ok(
            NAME,
            format!(
                "{bridge} is up with {} ({taps} tap{} attached)",
                net.host_cidr(),
                if taps == 1 { "" } else { "s" }
            ),
        )
    }

    fn check_ip_forward(&self) -> Check {
        const NAME: &str = "ip_forward";
        let path = self.under_root("/proc/sys/net/ipv4/ip_forward");
        match std::fs::read_to_string(&path).as_deref().map(str::trim) {
            Ok("1") => Check::ok(NAME, "net.ipv4.ip_forward is on"),
            Ok("0") => Check::ok(
                NAME,
                "net.ipv4.ip_forward is off; banger turns it on while a --nat VM runs and \
                 restores it after the last one",
            ),
            Ok(other) => Check::warn(
                NAME,
                format!("net.ipv4.ip_forward has the unexpected value {other:?}"),
                "sudo sysctl -w net.ipv4.ip_forward=0",
            ),
            Err(error) => Check::warn(
                NAME,
                format!("cannot read {}: {error}", path.display()),
                "mount /proc, or run banger where /proc/sys/net is visible",
            ),
        }
    }

    fn check_disk(&self) -> Check {
        const NAME: &str = "disk";
        // The state directory may not exist before the first run; its filesystem does.
        let mut dir = self.state_dir.as_path();
        while !dir.exists() {
            match dir.parent() {
                Some(parent) => dir = parent,
                None => break,
            }
        }
        let fix = format!(
            "free space on the filesystem of {}, or move banger's state elsewhere with \
             XDG_STATE_HOME",
            dir.display()
        );
        match (self.fs_usage)(dir) {
            Ok(usage) => {
                let detail = format!(
                    "{} free of {} in {}",
                    gib(usage.available_bytes),
                    gib(usage.total_bytes),
                    self.state_dir.display()
                );
                if usage.available_bytes < DISK_FAIL_BYTES {
                    Check::fail(NAME, format!("{detail}; VMs need at least 1 GiB"), fix)
                } else if usage.available_bytes < DISK_WARN_BYTES {
                    Check::warn(NAME, format!("{detail}; less than 5 GiB"), fix)
                } else {
                    Check::ok(NAME, detail)
                }
            }
            Err(error) => Check::warn(
                NAME,
                format!(
                    "cannot measure free space: {}",
                    crate::network::error_chain(&error)
                ),
                fix,
            ),
        }
    }

    fn check_e2fsprogs(&self, programs: &[&str]) -> Check {
        const NAME: &str = "e2fsprogs";
        let mut missing = Vec::new();
        let mut outside = Vec::new();
        let mut dirs: Vec<String> = Vec::new();
        for program in programs {
            match self.find(program) {
                Found::InPath(path) => {
                    let dir = path
                        .parent()
                        .unwrap_or(Path::new("/"))
                        .display()
                        .to_string();
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
                Found::OutsidePath(path) => outside.push(path),
                Found::Missing => missing.push(*program),
            }
        }
        if !missing.is_empty() {
            return Check::fail(
                NAME,
                format!(
                    "{} not installed: banger cannot build or resize VM disks",
                    missing.join(", ")
                ),
                "sudo apt-get install e2fsprogs",
            );
        }
        if let Some(first) = outside.first() {
            let names: Vec<String> = outside
                .iter()
                .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                .collect();
            let dir = first
                .parent()
                .unwrap_or(Path::new("/"))
                .display()
                .to_string();
            return Check::fail(
                NAME,
                format!("{} found in {dir}, which is not in PATH", names.join(", ")),
                "add the sbin directories to banger's PATH: export PATH=\"$PATH:/usr/sbin:/sbin\" \
                 (then `banger daemon restart`)",
            );
        }
        Check::ok(
            NAME,
            format!("{} in {}", programs.join(", "), dirs.join(", ")),
        )
    }

    fn check_openssh(&self) -> Check {
        const NAME: &str = "openssh";
        let fix = "sudo apt-get install openssh-client";
        let Found::InPath(ssh) = self.find("ssh") else {
            return Check::fail(
                NAME,
                "`ssh` is not installed: `banger vm ssh` cannot work",
                fix,
            );
        };
        match self.version_or_fail(NAME, &ssh, "-V", fix) {
            Ok(line) => Check::ok(
                NAME,
                format!(
                    "{} at {}",
                    line.split(',').next().unwrap_or(&line),
                    ssh.display()
                ),
            ),
            Err(check) => check,
        }
    }

    /// Only when the daemon is not root: whether it can set up the network, either holding
    /// `CAP_NET_ADMIN` or through a `sudo` that runs `ip`, `nft` and `sysctl` without asking
    /// for a password.
    fn check_sudo(&self) -> Option<Check> {
        const NAME: &str = "sudo";
        match self.net.privilege {
            Privilege::Root => return None,
            Privilege::NetAdmin => {
                return Some(Check::ok(
                    NAME,
                    "not needed for the network: bangerd holds CAP_NET_ADMIN, so it makes taps, \
                     the bridge and NAT rules itself",
                ));
            }
            Privilege::Sudo => {}
        }
        let rule = format!(
            "{NET_ADMIN_FIX}; or allow the network commands in sudo: echo \"$USER ALL=(root) \
             NOPASSWD: /usr/sbin/ip, /usr/bin/ip, /usr/sbin/nft, /usr/sbin/sysctl\" | sudo tee \
             /etc/sudoers.d/banger && sudo chmod 0440 /etc/sudoers.d/banger"
        );
        if self.find("sudo") == Found::Missing {
            return Some(Check::fail(
                NAME,
                "banger is not running as root, bangerd does not hold CAP_NET_ADMIN and `sudo` \
                 is not installed: it cannot create taps, the bridge or NAT rules",
                rule,
            ));
        }
        let sudo = |args: &[&str]| {
            self.runner
                .run(&CommandSpec::new("sudo").args(args.iter().copied()))
        };
        if sudo(&["-n", "true"]).is_ok() {
            return Some(Check::ok(NAME, "sudo -n works without a password"));
        }
        // A rule limited to the commands banger needs is enough, and the safer setup.
        let refused: Vec<&str> = ["ip", "nft", "sysctl"]
            .into_iter()
            .filter(|program| sudo(&["-n", "-l", program]).is_err())
            .collect();
        if refused.is_empty() {
            return Some(Check::ok(
                NAME,
                "sudo allows ip, nft and sysctl without a password",
            ));
        }
        Some(Check::fail(
            NAME,
            format!(
                "banger is not running as root, bangerd does not hold CAP_NET_ADMIN and `sudo \
                 -n` refuses {} (a password would be needed): taps, the bridge and NAT rules \
                 cannot be set up",
                refused.join(", ")
            ),
            rule,
        ))
    }
}

/// How a user gives `bangerd` what the network needs instead of root or sudo (the file
/// capability is lost when the file is replaced, e.g. by `cargo install`; `scripts/setup` sets
/// it again).
pub const NET_ADMIN_FIX: &str = "give bangerd CAP_NET_ADMIN: sudo setcap cap_net_admin+ep \
                                 \"$(command -v bangerd)\" && banger daemon restart";

/// Debian's archive keyring on a Debian host: what signs the sources the host's apt reads when
/// `image build` fetches packages.
pub const DEBIAN_ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The programs `image promote` (and the end of every `image build`) runs as root, through
/// `sudo -n` when banger is not root: the VM's disks are checked (`sh -c 'e2fsck -p'`), the
/// root merged by loop mounts in a mount namespace of its own (`unshare`), staged and made
/// into a file system (`cp`, `chmod`, `du`, `mkfs.ext4`), the staging removed (`rm`).
pub const PROMOTE_PRIVILEGED: &[&str] = &[
    "sh",
    "unshare",
    "cp",
    "chmod",
    "chown",
    "du",
    Mkfs::PROGRAM,
    "rm",
];

/// The programs `image bootstrap` runs as root (through `sudo -n` when banger is not root).
pub const BOOTSTRAP_PRIVILEGED: &[&str] = &[
    "debootstrap",
    Mkfs::PROGRAM,
    "cp",
    "rm",
    "du",
    "umount",
    "install",
    "tee",
];

impl Doctor<'_> {
    /// debootstrap and the apt tools `image bootstrap` needs. Missing is a warning for
    /// `banger doctor` (VMs run without them) and a failure before a bootstrap (`strict`).
    fn check_debootstrap(&self, strict: bool) -> Check {
        const NAME: &str = "debootstrap";
        let problem = |detail: String, fix: &str| {
            if strict {
                Check::fail(NAME, detail, fix)
            } else {
                Check::warn(NAME, detail, fix)
            }
        };
        let missing_apt: Vec<&str> = ["apt-cache", "apt-get", "dpkg-deb"]
            .into_iter()
            .filter(|p| self.find(p) == Found::Missing)
            .collect();
        if !missing_apt.is_empty() {
            return problem(
                format!(
                    "{} not found: `banger image bootstrap` needs a Debian host's apt to fetch \
                     the kernel package",
                    missing_apt.join(", ")
                ),
                "bootstrap on a Debian host, or adopt boot files with `banger image register`",
            );
        }
        match self.find(NAME) {
            Found::Missing => problem(
                "debootstrap is not installed: `banger image bootstrap debian` cannot build images"
                    .to_owned(),
                "sudo apt-get install debootstrap",
            ),
            Found::InPath(path) | Found::OutsidePath(path) => Check::ok(
                NAME,
                format!("{} (for `banger image bootstrap`)", path.display()),
            ),
        }
    }

    /// When banger is not root, whether `sudo -n` runs what a bootstrap runs as root. `None`
    /// when banger is root, or when sudo is missing or fully passwordless and the `sudo` check
    /// says so.
    fn check_bootstrap_sudo(&self, strict: bool) -> Option<Check> {
        const NAME: &str = "sudo-bootstrap";
        let refused = match self.sudo_for(BOOTSTRAP_PRIVILEGED) {
            SudoFor::NotNeeded => return None,
            // Said by the `sudo` check, unless the network needs no sudo (CAP_NET_ADMIN).
            SudoFor::Passwordless => {
                return (strict || self.net.privilege == Privilege::NetAdmin)
                    .then(|| Check::ok(NAME, "sudo -n works without a password"));
            }
            SudoFor::Refuses(refused) => refused,
        };
        if refused.is_empty() {
            return Some(Check::ok(
                NAME,
                "sudo allows what `banger image bootstrap` runs as root",
            ));
        }
        let detail = format!(
            "banger is not running as root and `sudo -n` refuses {}: `banger image bootstrap` \
             cannot build the root filesystem",
            refused.join(", ")
        );
        // cp, rm and tee as root amount to full root: say so rather than pretend the rule
        // is narrow.
        let fix = "echo \"$USER ALL=(root) NOPASSWD: /usr/sbin/debootstrap, /usr/sbin/mkfs.ext4, \
                   /usr/bin/cp, /usr/bin/rm, /usr/bin/du, /usr/bin/umount, /usr/bin/install, \
                   /usr/bin/tee\" | sudo tee /etc/sudoers.d/banger-bootstrap && sudo chmod 0440 \
                   /etc/sudoers.d/banger-bootstrap (this amounts to root for your user), or run \
                   bangerd as root";
        Some(if strict {
            Check::fail(NAME, detail, fix)
        } else {
            Check::warn(NAME, detail, fix)
        })
    }
}

impl Doctor<'_> {
    /// What `image build` fetches with on the host: apt and Debian's keyring for a recipe's
    /// packages (the guest has no internet of its own), curl for its downloads. A warning
    /// only: VMs run without them, and a build says the same when it needs what is missing.
    fn check_image_build(&self) -> Check {
        const NAME: &str = "image-build";
        let mut missing = Vec::new();
        let mut fixes = Vec::new();
        if self.find("apt-get") == Found::Missing {
            missing.push("apt-get (a recipe's packages are fetched by the host's apt)");
            fixes.push("build images with packages on a Debian host");
        } else if !self.under_root(DEBIAN_ARCHIVE_KEYRING).is_file() {
            missing.push("Debian's archive keyring (it signs what the host's apt fetches)");
            fixes.push("sudo apt-get install debian-archive-keyring");
        }
        if self.find("curl") == Found::Missing {
            missing.push("curl (a recipe's [[download]] files)");
            fixes.push("sudo apt-get install curl");
        }
        if missing.is_empty() {
            return Check::ok(
                NAME,
                "apt-get, Debian's archive keyring and curl: `banger image build` fetches \
                 packages and downloads on the host",
            );
        }
        Check::warn(
            NAME,
            format!(
                "`banger image build` lacks {}; recipes that need them fail",
                missing.join(" and ")
            ),
            fixes.join("; "),
        )
    }

    /// When banger is not root, whether `sudo -n` runs what `image promote` (and a build's
    /// last step) runs as root. `None` when banger is root, or sudo is missing or fully
    /// passwordless (the `sudo` check says so).
    fn check_promote_sudo(&self) -> Option<Check> {
        const NAME: &str = "sudo-promote";
        let refused = match self.sudo_for(PROMOTE_PRIVILEGED) {
            SudoFor::NotNeeded => return None,
            // Said by the `sudo` check, unless the network needs no sudo (CAP_NET_ADMIN).
            SudoFor::Passwordless => {
                return (self.net.privilege == Privilege::NetAdmin)
                    .then(|| Check::ok(NAME, "sudo -n works without a password"));
            }
            SudoFor::Refuses(refused) => refused,
        };
        if refused.is_empty() {
            return Some(Check::ok(
                NAME,
                "sudo allows what `banger image promote` runs as root",
            ));
        }
        // sh as root is root: say so rather than pretend the rule is narrow.
        Some(Check::warn(
            NAME,
            format!(
                "banger is not running as root and `sudo -n` refuses {}: `banger image \
                 promote` and `banger image build` cannot merge a VM's root into an image \
                 (loop mounts in a mount namespace of their own)",
                refused.join(", ")
            ),
            "echo \"$USER ALL=(root) NOPASSWD: /usr/bin/sh, /usr/bin/unshare, /usr/bin/cp, \
             /usr/bin/chmod, /usr/bin/chown, /usr/bin/du, /usr/sbin/mkfs.ext4, /usr/bin/rm\" | sudo tee \
             /etc/sudoers.d/banger-promote && sudo chmod 0440 /etc/sudoers.d/banger-promote \
             (this amounts to root for your user), or run bangerd as root",
        ))
    }
}

/// What `sudo -n` does for a daemon that is not root, about the programs of one operation.
enum SudoFor<'p> {
    /// banger is root, or there is no sudo (the `sudo` check says so).
    NotNeeded,
    /// sudo runs anything without a password.
    Passwordless,
    /// The programs it refuses (none: it allows them all).
    Refuses(Vec<&'p str>),
}

impl Doctor<'_> {
    fn sudo_for<'p>(&self, programs: &[&'p str]) -> SudoFor<'p> {
        if self.net.privilege == Privilege::Root || self.find("sudo") == Found::Missing {
            return SudoFor::NotNeeded;
        }
        let sudo = |args: &[&str]| {
            self.runner
                .run(&CommandSpec::new("sudo").args(args.iter().copied()))
        };
        if sudo(&["-n", "true"]).is_ok() {
            return SudoFor::Passwordless;
        }
        SudoFor::Refuses(
            programs
                .iter()
                .copied()
                .filter(|program| sudo(&["-n", "-l", program]).is_err())
                .collect(),
        )
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

#[cfg(test)]
mod tests;

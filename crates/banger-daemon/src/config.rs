//! `config.toml`: what a user can set, its defaults, and the checks that turn a typo into an
//! error naming the key and the file instead of a silently ignored setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_api::{VmmKind, validate};
use serde::Deserialize;

/// Daemon configuration. An absent file means every default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Image used by `vm create` when no `--image` is given.
    pub default_image: String,
    /// IPv4 subnet of banger's private network; the host takes `.1`.
    pub subnet: String,
    /// VMM used by `vm create` when no `--vmm` is given.
    pub vmm: VmmKind,
    /// The Firecracker binary; `firecracker` on PATH when unset.
    pub firecracker_bin: Option<PathBuf>,
    /// The QEMU binary; `qemu-system-x86_64` on PATH when unset.
    pub qemu_bin: Option<PathBuf>,
    /// Where downloads (Debian packages, kernels) are cached; `cache/` in the state dir when
    /// unset.
    pub cache_dir: Option<PathBuf>,
    /// The most disk space (allocated bytes) `image build`'s cache of finished builds may
    /// take; the builds used longest ago are removed first. 0 keeps no builds.
    pub build_cache_max: u64,
    /// The private SSH key banger logs into its VMs with (its `.pub` next to it); generated
    /// as `ssh/id_ed25519` in the state dir when unset.
    pub ssh_key: Option<PathBuf>,
    /// How many ready-made disks bangerd keeps for each kind of disk `vm create` asks for
    /// (overlay disks of a size, work disks of an image and size), so a create takes a disk
    /// instead of making one. 0 turns the pool off.
    pub disk_pool: u32,
    /// Keep one Firecracker process started ahead of need (running, unconfigured), so that a
    /// VM start takes it over instead of starting one.
    pub spare_vmm: bool,
    /// Running Firecracker behind its jailer.
    pub jail: JailSettings,
    /// `qemu_sandbox`, `qemu_uids`: how QEMU processes are confined.
    pub qemu: QemuSettings,
    /// `[pool]`: how many ready VMs of each image (by name) the warm pool keeps when
    /// `banger pool set` has not said otherwise.
    pub pool: std::collections::BTreeMap<String, u32>,
    pub defaults: VmDefaults,
    pub web: WebConfig,
    pub dns: DnsConfig,
    pub admission: AdmissionConfig,
}

/// `[admission]`: how much host CPU and memory the VMs that hold resources may reserve
/// together before a start is refused (see `crate::admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Whether starts are checked at all.
    pub enabled: bool,
    /// Guest memory may reach this multiple of the host's memory less `memory_reserve`.
    pub memory_ratio: Ratio,
    /// Host memory kept out of the limit, for the host itself and banger's VMM processes.
    pub memory_reserve_bytes: u64,
    /// vCPUs may reach this many per host CPU.
    pub vcpu_ratio: Ratio,
}

/// A finite, positive multiplier read from the config (so `Eq` holds: never NaN).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ratio(f64);

impl Eq for Ratio {}

impl Ratio {
    /// The largest ratio a config may give: beyond it a limit means nothing.
    pub const MAX: f64 = 1000.0;

    /// `value` when it is finite, more than 0 and at most [`Ratio::MAX`].
    pub fn new(value: f64) -> Option<Ratio> {
        (value.is_finite() && value > 0.0 && value <= Self::MAX).then_some(Ratio(value))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // 1 -> "1.0", 0.75 -> "0.75": how a user writes it in config.toml.
        if self.0.fract() == 0.0 {
            write!(f, "{:.1}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// `jailer`, `jailer_bin`, `jail_uids`, `jail_dir`, `jail_memory_overhead`: whether and how a
/// root bangerd runs Firecracker behind its jailer (see `docs/security.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailSettings {
    pub mode: JailMode,
    /// The jailer; `jailer` on PATH when unset.
    pub jailer_bin: Option<PathBuf>,
    /// The uids (and gids) jailed VMs run as, first and last included.
    pub uids: (u32, u32),
    /// The jailer's chroot base; `jail/` in the state dir when unset.
    pub dir: Option<PathBuf>,
    /// Added to a VM's memory for its cgroup's `memory.max`: Firecracker's own needs.
    pub memory_overhead_mib: u32,
}

/// `qemu_sandbox`, `qemu_uids`, `qemu_cgroups`, `qemu_memory_overhead`: QEMU under its seccomp
/// sandbox, and (when bangerd runs as root) as a uid of its own once started and in a cgroup
/// of its own with memory and CPU limits (see `docs/security.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuSettings {
    pub sandbox: bool,
    /// The uids (and gids) a root bangerd's QEMUs drop to, first and last included.
    pub uids: (u32, u32),
    /// A cgroup per QEMU (root only, where cgroup v2 or v1 offers memory and cpu).
    pub cgroups: bool,
    /// Added to a VM's memory for its QEMU's cgroup memory limit.
    pub memory_overhead_mib: u32,
}

/// What a QEMU needs beyond its guest's memory unless configured otherwise: its own code and
/// device state, I/O buffers and, under TCG, the translation cache (a busy 2-vCPU TCG guest
/// was seen using about 120 MiB).
pub const DEFAULT_QEMU_MEMORY_OVERHEAD_MIB: u32 = 256;

/// The uids QEMUs get unless configured otherwise: beside the jails' range, as far from any
/// login user's.
pub const DEFAULT_QEMU_UIDS: (u32, u32) = (901_000, 901_999);

impl Default for QemuSettings {
    fn default() -> Self {
        QemuSettings {
            sandbox: true,
            uids: DEFAULT_QEMU_UIDS,
            cgroups: true,
            memory_overhead_mib: DEFAULT_QEMU_MEMORY_OVERHEAD_MIB,
        }
    }
}

/// `jailer = "auto" | true | false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailMode {
    /// Jailed when bangerd runs as root and a jailer of Firecracker's release is found.
    Auto,
    /// Always jailed: a start fails when the jail cannot be built.
    On,
    /// Firecracker runs directly, as bangerd's user.
    Off,
}

/// The uids jailed VMs get unless configured otherwise: well above any login user's and the
/// ranges `/etc/subuid` usually hands out.
pub const DEFAULT_JAIL_UIDS: (u32, u32) = (900_000, 900_999);
/// What a Firecracker process needs beyond its guest's memory: its own code, threads, device
/// queues and the API server (about 3.5 MiB idle), with room for the page cache of its disks'
/// I/O, which the cgroup is charged for and reclaims under the limit.
pub const DEFAULT_JAIL_MEMORY_OVERHEAD_MIB: u32 = 64;

impl Default for JailSettings {
    fn default() -> Self {
        JailSettings {
            mode: JailMode::Auto,
            jailer_bin: None,
            uids: DEFAULT_JAIL_UIDS,
            dir: None,
            memory_overhead_mib: DEFAULT_JAIL_MEMORY_OVERHEAD_MIB,
        }
    }
}

/// Guest memory may reach the host's memory less the reserve, no overcommit.
pub const DEFAULT_MEMORY_RATIO: f64 = 1.0;
/// Kept for the host: 1 GiB.
pub const DEFAULT_MEMORY_RESERVE_BYTES: u64 = validate::GIB;
/// `build_cache_max` unless configured: room for a handful of developer images.
pub const DEFAULT_BUILD_CACHE_MAX: u64 = 10 * validate::GIB;
/// Four vCPUs per host CPU.
pub const DEFAULT_VCPU_RATIO: f64 = 4.0;

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: true,
            memory_ratio: Ratio(DEFAULT_MEMORY_RATIO),
            memory_reserve_bytes: DEFAULT_MEMORY_RESERVE_BYTES,
            vcpu_ratio: Ratio(DEFAULT_VCPU_RATIO),
        }
    }
}

/// `[dns]`: the names bangerd answers for its VMs on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Whether bangerd serves VM names at all.
    pub enabled: bool,
    /// VMs are `NAME.<domain>`; lower-case DNS labels separated by dots.
    pub domain: String,
    /// The port on the bridge address bangerd serves on when it cannot have 53 (not root
    /// and without CAP_NET_BIND_SERVICE, or 53 taken).
    pub fallback_port: u16,
}

/// The domain VM names live in unless configured otherwise.
pub const DEFAULT_DNS_DOMAIN: &str = "vm";
/// The port bangerd falls back to when it cannot serve on 53.
pub const DEFAULT_DNS_FALLBACK_PORT: u16 = 5053;

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            domain: DEFAULT_DNS_DOMAIN.into(),
            fallback_port: DEFAULT_DNS_FALLBACK_PORT,
        }
    }
}

/// The most ready-made disks a config may ask to keep of each kind.
pub const MAX_DISK_POOL: u32 = 8;

/// `[web]`: the localhost web console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Whether bangerd serves the console at all.
    pub enabled: bool,
    /// Address and port of the console's TCP listener. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Set (explicitly, by the user) when `listen` is not a loopback address: the console can
    /// create and delete VMs, and its traffic is plain HTTP.
    pub allow_remote: bool,
}

/// Where the console listens unless the config says otherwise.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:7878";

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            allow_remote: false,
        }
    }
}

/// Sizes a VM gets when `vm create` does not name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDefaults {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub work_disk_bytes: u64,
    /// How long `vm stop` waits for the guest to shut down before ending its VMM.
    pub stop_timeout: Duration,
    /// How long a start waits for the guest agent and the image's services.
    pub ready_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_image: "debian".into(),
            subnet: "172.30.0.0/24".into(),
            vmm: VmmKind::Auto,
            firecracker_bin: None,
            qemu_bin: None,
            cache_dir: None,
            build_cache_max: DEFAULT_BUILD_CACHE_MAX,
            ssh_key: None,
            disk_pool: 1,
            spare_vmm: true,
            jail: JailSettings::default(),
            qemu: QemuSettings::default(),
            pool: std::collections::BTreeMap::new(),
            defaults: VmDefaults {
                vcpus: 2,
                memory_mib: 1024,
                disk_bytes: 8 * validate::GIB,
                work_disk_bytes: 8 * validate::GIB,
                stop_timeout: Duration::from_secs(10),
                ready_timeout: Duration::from_secs(120),
            },
            web: WebConfig::default(),
            dns: DnsConfig::default(),
            admission: AdmissionConfig::default(),
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_image: Option<String>,
    subnet: Option<String>,
    vmm: Option<String>,
    firecracker_bin: Option<PathBuf>,
    qemu_bin: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    build_cache_max: Option<String>,
    ssh_key: Option<PathBuf>,
    disk_pool: Option<i64>,
    spare_vmm: Option<bool>,
    jailer: Option<RawJailer>,
    jailer_bin: Option<PathBuf>,
    jail_uids: Option<String>,
    jail_dir: Option<PathBuf>,
    jail_memory_overhead: Option<String>,
    qemu_sandbox: Option<bool>,
    qemu_uids: Option<String>,
    qemu_cgroups: Option<bool>,
    qemu_memory_overhead: Option<String>,
    pool: Option<std::collections::BTreeMap<String, i64>>,
    defaults: Option<RawDefaults>,
    web: Option<RawWeb>,
    dns: Option<RawDns>,
    admission: Option<RawAdmission>,
}

/// `jailer = true`, `false` or `"auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawJailer {
    Switch(bool),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmission {
    enabled: Option<bool>,
    memory_ratio: Option<f64>,
    memory_reserve: Option<String>,
    vcpu_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    enabled: Option<bool>,
    domain: Option<String>,
    fallback_port: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    enabled: Option<bool>,
    listen: Option<String>,
    allow_remote: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    vcpus: Option<i64>,
    memory_mib: Option<i64>,
    disk: Option<String>,
    work_disk: Option<String>,
    stop_timeout: Option<String>,
    ready_timeout: Option<String>,
}

impl Config {
    /// Loads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses the text of a config file; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            invalid(
                e.to_string()
                    .trim_start_matches("TOML parse error ")
                    .trim()
                    .to_owned(),
            )
        })?;
        let key_error = |key: &str, e: banger_api::ApiError| {
            invalid(format!(
                "`{key}`: {}{}",
                e.message,
                e.hint.map(|h| format!(" ({h})")).unwrap_or_default()
            ))
        };
        // The daemon runs in its own directory: a relative path would name another file.
        let absolute = |key: &str, path: PathBuf| {
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(invalid(format!(
                    "`{key}`: {} is not an absolute path",
                    path.display()
                )))
            }
        };
        let mut config = Config::default();
        if let Some(image) = raw.default_image {
            validate::name("image", &image).map_err(|e| key_error("default_image", e))?;
            config.default_image = image;
        }
        if let Some(subnet) = raw.subnet {
            banger_store::NetworkPool::new(&subnet)
                .map_err(|e| invalid(format!("`subnet`: {e}")))?;
            config.subnet = subnet;
        }
        if let Some(vmm) = raw.vmm {
            config.vmm = vmm.parse().map_err(|e| invalid(format!("`vmm`: {e}")))?;
        }
        if let Some(bin) = raw.firecracker_bin {
            config.firecracker_bin = Some(absolute("firecracker_bin", bin)?);
        }
        if let Some(bin) = raw.qemu_bin {
            config.qemu_bin = Some(absolute("qemu_bin", bin)?);
        }
        if let Some(dir) = raw.cache_dir {
            config.cache_dir = Some(absolute("cache_dir", dir)?);
        }
        if let Some(text) = raw.build_cache_max {
            config.build_cache_max = if text.trim() == "0" {
                0
            } else {
                validate::parse_size(&text).map_err(|e| {
                    invalid(format!(
                        "`build_cache_max`: {}{}",
                        e.message,
                        e.hint.map(|h| format!(" ({h})")).unwrap_or_default()
                    ))
                })?
            };
        }
        if let Some(key) = raw.ssh_key {
            config.ssh_key = Some(absolute("ssh_key", key)?);
        }
        if let Some(n) = raw.disk_pool {
            config.disk_pool = u32::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_DISK_POOL)
                .ok_or_else(|| {
                    invalid(format!(
                        "`disk_pool`: {n} is not between 0 (no pool) and {MAX_DISK_POOL}"
                    ))
                })?;
        }
        if let Some(spare) = raw.spare_vmm {
            config.spare_vmm = spare;
        }
        match raw.jailer {
            None => {}
            Some(RawJailer::Switch(true)) => config.jail.mode = JailMode::On,
            Some(RawJailer::Switch(false)) => config.jail.mode = JailMode::Off,
            Some(RawJailer::Word(word)) if word == "auto" => config.jail.mode = JailMode::Auto,
            Some(RawJailer::Word(word)) => {
                return Err(invalid(format!(
                    "`jailer`: {word:?} is not true, false or \"auto\""
                )));
            }
        }
        if let Some(bin) = raw.jailer_bin {
            config.jail.jailer_bin = Some(absolute("jailer_bin", bin)?);
        }
        if let Some(uids) = raw.jail_uids {
            config.jail.uids = banger_vmm::firecracker::jail::parse_uid_range(&uids)
                .map_err(|e| invalid(format!("`jail_uids`: {e}")))?;
        }
        if let Some(sandbox) = raw.qemu_sandbox {
            config.qemu.sandbox = sandbox;
        }
        if let Some(uids) = raw.qemu_uids {
            config.qemu.uids = banger_vmm::firecracker::jail::parse_uid_range(&uids)
                .map_err(|e| invalid(format!("`qemu_uids`: {e}")))?;
        }
        if let Some(dir) = raw.jail_dir {
            config.jail.dir = Some(absolute("jail_dir", dir)?);
        }
        // A VMM's memory overhead: a size up to 64G, in whole MiB.
        let overhead = |key: &str, text: &str| {
            validate::parse_size(text)
                .ok()
                .map(|bytes| bytes.div_ceil(1024 * 1024))
                .and_then(|mib| u32::try_from(mib).ok())
                .filter(|mib| *mib <= 64 * 1024)
                .ok_or_else(|| {
                    invalid(format!(
                        "`{key}`: {text:?} is not a size up to 64G (e.g. \"64M\")"
                    ))
                })
        };
        if let Some(text) = raw.jail_memory_overhead {
            config.jail.memory_overhead_mib = overhead("jail_memory_overhead", &text)?;
        }
        if let Some(cgroups) = raw.qemu_cgroups {
            config.qemu.cgroups = cgroups;
        }
        if let Some(text) = raw.qemu_memory_overhead {
            config.qemu.memory_overhead_mib = overhead("qemu_memory_overhead", &text)?;
        }
        for (image, size) in raw.pool.unwrap_or_default() {
            let key = format!("pool.{image}");
            validate::name("image", &image).map_err(|e| key_error(&key, e))?;
            let size = validate::pool_size(size).map_err(|e| key_error(&key, e))?;
            config.pool.insert(image, size);
        }
        if let Some(d) = raw.defaults {
            if let Some(v) = d.vcpus {
                config.defaults.vcpus =
                    validate::vcpus(v).map_err(|e| key_error("defaults.vcpus", e))?;
            }
            if let Some(v) = d.memory_mib {
                config.defaults.memory_mib =
                    validate::memory_mib(v).map_err(|e| key_error("defaults.memory_mib", e))?;
            }
            if let Some(v) = d.disk {
                config.defaults.disk_bytes = size("defaults.disk", &v, validate::MIN_DISK_BYTES)
                    .map_err(|e| key_error("defaults.disk", e))?;
            }
            if let Some(v) = d.work_disk {
                config.defaults.work_disk_bytes =
                    size("work disk", &v, validate::MIN_WORK_DISK_BYTES)
                        .map_err(|e| key_error("defaults.work_disk", e))?;
            }
            if let Some(v) = d.stop_timeout {
                let timeout = humantime::parse_duration(v.trim()).map_err(|e| {
                    invalid(format!(
                        "`defaults.stop_timeout`: {v:?} is not a duration ({e}); write e.g. \"10s\""
                    ))
                })?;
                if timeout > Duration::from_secs(600) {
                    return Err(invalid(format!(
                        "`defaults.stop_timeout`: {v} is longer than 10 minutes"
                    )));
                }
                config.defaults.stop_timeout = timeout;
            }
            if let Some(v) = d.ready_timeout {
                let timeout = humantime::parse_duration(v.trim()).map_err(|e| {
                    invalid(format!(
                        "`defaults.ready_timeout`: {v:?} is not a duration ({e}); write e.g. \"2m\""
                    ))
                })?;
                if timeout.is_zero() || timeout > Duration::from_secs(3600) {
                    return Err(invalid(format!(
                        "`defaults.ready_timeout`: {v} must be more than 0 and at most 1 hour"
                    )));
                }
                config.defaults.ready_timeout = timeout;
            }
        }
        if let Some(w) = raw.web {
            config.web = web(w).map_err(invalid)?;
        }
        if let Some(d) = raw.dns {
            config.dns = dns(d).map_err(invalid)?;
        }
        if let Some(a) = raw.admission {
            config.admission = admission(a).map_err(invalid)?;
        }
        Ok(config)
    }
}

/// Checks `[admission]`: ratios are positive numbers (a 0 would refuse every start: turning
/// admission off is `enabled = false`), the reserve a size.
fn admission(raw: RawAdmission) -> Result<AdmissionConfig, String> {
    let mut admission = AdmissionConfig::default();
    if let Some(enabled) = raw.enabled {
        admission.enabled = enabled;
    }
    let ratio = |key: &str, value: f64| {
        Ratio::new(value).ok_or_else(|| {
            format!(
                "`admission.{key}`: {value} is not a number more than 0 and at most {}; \
                 to turn admission control off, set `enabled = false` in [admission]",
                Ratio::MAX
            )
        })
    };
    if let Some(r) = raw.memory_ratio {
        admission.memory_ratio = ratio("memory_ratio", r)?;
    }
    if let Some(r) = raw.vcpu_ratio {
        admission.vcpu_ratio = ratio("vcpu_ratio", r)?;
    }
    if let Some(text) = raw.memory_reserve {
        admission.memory_reserve_bytes = if text.trim() == "0" {
            0
        } else {
            validate::parse_size(&text).map_err(|e| {
                format!(
                    "`admission.memory_reserve`: {}{}",
                    e.message,
                    e.hint.map(|h| format!(" ({h})")).unwrap_or_default()
                )
            })?
        };
    }
    Ok(admission)
}

/// Checks `[dns]`: the domain must be a DNS name banger can own (not a reverse-lookup
/// domain), the fallback port a real one other than 53.
fn dns(raw: RawDns) -> Result<DnsConfig, String> {
    let mut dns = DnsConfig::default();
    if let Some(enabled) = raw.enabled {
        dns.enabled = enabled;
    }
    if let Some(domain) = raw.domain {
        let d = domain.trim().trim_end_matches('.').to_owned();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if d.is_empty() || d.len() > 200 || !d.split('.').all(label_ok) {
            return Err(format!(
                "`dns.domain`: {domain:?} is not a domain; use lower-case labels of a-z, 0-9 \
                 and '-' separated by dots, e.g. \"{DEFAULT_DNS_DOMAIN}\" or \"vm.internal\""
            ));
        }
        if d == "arpa" || d.ends_with(".arpa") {
            return Err(format!(
                "`dns.domain`: {domain:?} is a reverse-lookup domain; choose another, e.g. \"{DEFAULT_DNS_DOMAIN}\""
            ));
        }
        dns.domain = d;
    }
    if let Some(port) = raw.fallback_port {
        dns.fallback_port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0 && *p != 53)
            .ok_or_else(|| {
                format!("`dns.fallback_port`: {port} is not a port from 1 to 65535 other than 53")
            })?;
    }
    Ok(dns)
}

/// Checks `[web]`. A console reachable from other machines is refused unless the user opted
/// in, and an every-interface address is refused outright: the Host allowlist that defeats
/// DNS rebinding needs the one address the console is reached by.
fn web(raw: RawWeb) -> Result<WebConfig, String> {
    let mut web = WebConfig::default();
    if let Some(enabled) = raw.enabled {
        web.enabled = enabled;
    }
    web.allow_remote = raw.allow_remote.unwrap_or(false);
    if let Some(listen) = raw.listen {
        web.listen = listen.trim().parse().map_err(|_| {
            format!(
                "`web.listen`: {listen:?} is not an IP address and port \
                 (write e.g. \"{DEFAULT_WEB_LISTEN}\" or \"[::1]:7878\")"
            )
        })?;
    }
    let ip = web.listen.ip();
    if ip.is_unspecified() {
        return Err(format!(
            "`web.listen`: {} listens on every interface; name the one address the console \
             is reached by (e.g. \"{DEFAULT_WEB_LISTEN}\")",
            web.listen
        ));
    }
    if !ip.is_loopback() && !web.allow_remote {
        return Err(format!(
            "`web.listen`: {} is not a loopback address; the web console can create and \
             delete VMs and speaks plain HTTP, so serving it beyond this machine needs \
             `allow_remote = true` in [web]",
            web.listen
        ));
    }
    Ok(web)
}

fn size(field: &str, text: &str, min: i64) -> Result<u64, banger_api::ApiError> {
    let bytes = validate::parse_size(text)?;
    validate::disk_bytes(field, i64::try_from(bytes).unwrap_or(i64::MAX), min)
}

#[cfg(test)]
mod tests;

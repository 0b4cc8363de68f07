//! Wire types of the REST API. Requests we receive deny unknown fields; fields a client may
//! omit are `Option`s so that "not given" (use the default) differs from "given but invalid"
//! (a 400). Numbers a user types are `i64` on the way in so that a negative value reaches
//! validation and gets a precise message instead of a decoding error.
//!
//! The types stay in one file: they are the API's one vocabulary, each small, read side by side
//! when the API changes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ApiError, Timestamp};

/// What a VM is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Stopped,
    Starting,
    Running,
    Paused,
    Stopping,
    Failed,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Failed => "failed",
        }
    }

    /// Whether the VM holds host CPU and memory (counts against capacity).
    pub fn holds_resources(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Paused | VmState::Stopping
        )
    }
}

impl std::str::FromStr for VmState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "stopped" => VmState::Stopped,
            "starting" => VmState::Starting,
            "running" => VmState::Running,
            "paused" => VmState::Paused,
            "stopping" => VmState::Stopping,
            "failed" => VmState::Failed,
            other => return Err(format!("unknown VM state {other:?}")),
        })
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which virtual machine monitor runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum VmmKind {
    /// Firecracker when it can boot a stock guest kernel here, QEMU otherwise.
    #[default]
    Auto,
    Firecracker,
    Qemu,
}

impl VmmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VmmKind::Auto => "auto",
            VmmKind::Firecracker => "firecracker",
            VmmKind::Qemu => "qemu",
        }
    }
}

impl std::str::FromStr for VmmKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => VmmKind::Auto,
            "firecracker" => VmmKind::Firecracker,
            "qemu" => VmmKind::Qemu,
            other => {
                return Err(format!(
                    "unknown VMM {other:?}; expected auto, firecracker or qemu"
                ));
            }
        })
    }
}

impl std::fmt::Display for VmmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VM's identity on banger's private network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmNetwork {
    /// Guest IPv4 address inside banger's subnet.
    pub ip: String,
    /// Host address on the bridge, the guest's gateway.
    pub gateway: String,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
    pub mac: String,
    /// vsock context id (>= 3).
    pub vsock_cid: u32,
}

/// A reference to an image by id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageRef {
    pub id: String,
    pub name: String,
}

/// A VM as banger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub image: ImageRef,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Size of the VM's copy-on-write root overlay disk.
    pub disk_bytes: u64,
    /// Size of the persistent work disk mounted at `/root`.
    pub work_disk_bytes: u64,
    /// Whether the VM's traffic is masqueraded to the host's network.
    pub nat: bool,
    pub vmm: VmmKind,
    pub state: VmState,
    pub network: VmNetwork,
    /// The VMM process running the VM, while it runs (starting, running, paused, stopping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<VmRuntime>,
    /// Why the VM last failed (state `failed`), or why its last start did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// How the VM's work disk relates to its image's work seed; only `GET /v1/vms/{name}` says
    /// (it reads the image's seed), lists leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_seed: Option<Box<WorkSeedStatus>>,
    /// Host ports forwarded to the VM's ports while it runs, by host port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_ports: Vec<PublishedPort>,
    /// What the VM is to the warm pool: only `taken` is ever seen through the API (a VM that
    /// `vm create` took from the pool instead of booting one); the pool's own VMs are hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolRole>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A VM's place in the warm pool (see `docs/pool.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolRole {
    /// Booted to make an image's template snapshot, then deleted; hidden.
    Template,
    /// Restored from the template and paused, waiting for a `vm create`; hidden.
    Ready,
    /// A user's VM that came from the pool.
    Taken,
}

impl PoolRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolRole::Template => "template",
            PoolRole::Ready => "ready",
            PoolRole::Taken => "taken",
        }
    }
}

impl std::str::FromStr for PoolRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "template" => Ok(PoolRole::Template),
            "ready" => Ok(PoolRole::Ready),
            "taken" => Ok(PoolRole::Taken),
            other => Err(format!("unknown pool role {other:?}")),
        }
    }
}

/// `PUT /v1/pool/{image}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPoolRequest {
    /// How many ready VMs of the image to keep, 0 to 8; 0 turns its pool off.
    pub size: i64,
}

/// The warm pool of one image: how many ready VMs it keeps and has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolEntry {
    /// The image's name (a pool follows the name: a rebuilt image gets a new template).
    pub image: String,
    /// How many ready VMs are wanted.
    pub size: u32,
    /// How many are ready now (restored, paused, waiting).
    pub ready: u32,
    /// The spec a `vm create` must ask for (or leave to the defaults) to take one.
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub work_disk_bytes: u64,
    /// The template snapshot's size on disk, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_bytes: Option<u64>,
    /// Why the last fill failed, until one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A host address and TCP port that bangerd forwards to a port of a VM while the VM runs:
/// each connection to `address:host_port` is proxied to `GUEST_IP:guest_port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct PublishedPort {
    /// The host address the listener binds: `127.0.0.1` unless another was asked for.
    pub address: String,
    pub host_port: u16,
    pub guest_port: u16,
}

impl PublishedPort {
    /// `ADDR:HOSTPORT`, where the forward listens.
    pub fn listen(&self) -> String {
        format!("{}:{}", self.address, self.host_port)
    }

    /// The URL a browser opens for a web service behind this forward (`0.0.0.0` is reached
    /// at the loopback address).
    pub fn url(&self) -> String {
        let host = if self.address == "0.0.0.0" {
            "127.0.0.1"
        } else {
            self.address.as_str()
        };
        format!("http://{host}:{}", self.host_port)
    }
}

/// A port to publish: `POST /v1/vms/{name}/ports/published`, and each entry of
/// `CreateVmRequest.publish`. TCP only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishPortRequest {
    /// The host IPv4 address to listen on; `127.0.0.1` when omitted. Any other address
    /// (`0.0.0.0` above all) exposes the guest's port beyond this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// 1 to 65535.
    pub host_port: i64,
    /// 1 to 65535.
    pub guest_port: i64,
}

/// The work seed a VM's work disk was made from, against the image's seed now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkSeedStatus {
    /// Fingerprint of the seed the work disk was made from; absent for VMs created before banger
    /// recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// Fingerprint of the image's seed as it is now.
    pub image: String,
    /// Both are known and differ: files the image seeds now are not in the VM's `/root`.
    pub changed: bool,
    /// The image's seed directory on the host (absent when the image has none), to copy from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_dir: Option<String>,
    /// Set when the VM's image was retired: `image`, `changed` and `seed_dir` then speak of
    /// the image that took its name, whose seed a VM made now would get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<ImageRef>,
}

/// The VMM process of a running VM, as much as is needed to drive it and to find it again
/// after a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmRuntime {
    /// The backend actually running the VM (never `auto`).
    pub vmm: VmmKind,
    pub pid: u32,
    /// The VMM's control socket (Firecracker's API socket, QEMU's QMP socket).
    pub api_socket: String,
    /// The host end of the VM's vsock device, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_socket: Option<String>,
    /// The VM's tap on banger's bridge.
    pub tap: String,
    pub started_at: Timestamp,
    /// How long each stage of the start that brought the VM up took, in order (filled in as
    /// the start proceeds; `vm show` prints it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot: Vec<BootTiming>,
    /// Present when the VMM runs behind Firecracker's jailer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<Box<VmJail>>,
    /// How a QEMU VMM is confined (QEMU VMs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<Box<VmQemuConfinement>>,
}

/// How a QEMU runs: the uid and gid of its own a root daemon dropped it to (`-runas`), and
/// whether QEMU's seccomp sandbox is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmQemuConfinement {
    /// Its uid (and gid, the same number); `None` when it runs as bangerd's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// `-sandbox on,…`: obsolete system calls, spawning programs and changing resource
    /// limits refused.
    pub sandbox: bool,
    /// Its cgroup (the directory with its memory limit), when it runs in one of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The cgroup's memory limit in bytes: guest memory plus QEMU's overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    /// The cgroup's CPU quota (`QUOTA PERIOD`, microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<String>,
}

impl VmQemuConfinement {
    /// `uid 901000, gid 901000, seccomp sandbox, cgroup /sys/fs/cgroup/banger/ID (memory.max
    /// 1280 MiB, cpu.max 100000 100000)`, as `vm show` and the web console say it.
    pub fn describe(&self) -> String {
        let user = match self.uid {
            Some(uid) => format!("uid {uid}, gid {uid}"),
            None => "bangerd's user".to_owned(),
        };
        let sandbox = if self.sandbox {
            "seccomp sandbox"
        } else {
            "no seccomp sandbox (qemu_sandbox = false)"
        };
        let cgroup = match (&self.cgroup, self.memory_max, &self.cpu_max) {
            (Some(dir), Some(memory), Some(cpu)) => format!(
                "cgroup {dir} (memory.max {} MiB, cpu.max {cpu})",
                memory / (1024 * 1024)
            ),
            (Some(dir), _, _) => format!("cgroup {dir}"),
            _ => "no cgroup of its own".to_owned(),
        };
        format!("{user}, {sandbox}, {cgroup}")
    }
}

/// How a jailed VMM runs: its own uid and gid, chroot and, where cgroup v2 allows, cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmJail {
    pub uid: u32,
    pub gid: u32,
    /// The directory the VMM is chrooted into.
    pub chroot: String,
    /// Its cgroup directory, when the host's cgroup v2 offers the memory and cpu controllers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The cgroup's `memory.max` in bytes: guest memory plus the VMM's overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    /// The cgroup's `cpu.max` (`QUOTA PERIOD`, microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<String>,
}

/// One stage of a VM's start and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BootTiming {
    pub stage: String,
    pub ms: u64,
}

/// What `POST /v1/vms/{name}/{action}` does; each answers with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmAction {
    Start,
    Stop,
    Restart,
}

impl VmAction {
    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Stop => "stop",
            VmAction::Restart => "restart",
        }
    }
}

/// `GET /v1/vms/{name}/console`: a piece of the guest console log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsoleChunk {
    /// Where `text` starts in the log, in bytes.
    pub offset: u64,
    /// Where the next read continues.
    pub next_offset: u64,
    /// The bytes, as UTF-8 (invalid sequences replaced, carriage returns dropped).
    pub text: String,
}

/// `GET /v1/vms/{name}/ssh`: what OpenSSH needs to log into a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SshAccess {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// banger's private key.
    pub identity_file: String,
    /// A `known_hosts` file holding exactly the VM's own host key.
    pub known_hosts_file: String,
    /// Whether the VM runs now.
    pub running: bool,
}

/// `POST /v1/vms`: the recorded VM and, when it is being started, the start operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedVm {
    pub vm: Vm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// `POST /v1/vms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    /// DNS label; generated when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image name or id; the configured default image when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_disk_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<VmmKind>,
    /// Start the VM after creating it (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<bool>,
    /// Host ports to forward to the VM's ports while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishPortRequest>,
    /// Restore the VM from this snapshot (name or id) instead of booting it: its image,
    /// vCPUs, memory and disk sizes are the snapshot's, and it runs on Firecracker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
}

/// A snapshot of a running Firecracker VM: its memory and device state and copies of its
/// disks, from which new VMs are restored (`vm create --from-snapshot`, `vm clone`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    /// The VM it was taken of (which may have been deleted since).
    pub vm: SnapshotOrigin,
    pub image: ImageRef,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub work_disk_bytes: u64,
    /// The Firecracker version that wrote it; a restore needs the same one.
    pub firecracker_version: String,
    /// The host CPU it was taken on; a restore needs the same model.
    pub cpu: String,
    /// Disk space its files use (allocated, not apparent).
    pub size_bytes: u64,
    pub created_at: Timestamp,
}

/// The VM a snapshot was taken of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotOrigin {
    pub id: String,
    pub name: String,
}

/// `POST /v1/vms/{name}/snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotVmRequest {
    /// DNS label; `VM-YYYYMMDD-HHMMSS` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/vms/{name}/clone`: a new running VM restored from a snapshot of this one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneVmRequest {
    /// The clone's name (DNS label).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<bool>,
}

/// `PATCH /v1/vms/{name}`: change resources of a stopped VM. At least one field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVmRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    /// The work disk can only grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_disk_bytes: Option<i64>,
}

/// How an image came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    Registered,
    Bootstrapped,
    Built,
    Promoted,
    /// Unpacked from a file `banger image export` wrote, on this host or another.
    Imported,
}

impl ImageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::Registered => "registered",
            ImageSource::Bootstrapped => "bootstrapped",
            ImageSource::Built => "built",
            ImageSource::Promoted => "promoted",
            ImageSource::Imported => "imported",
        }
    }
}

impl std::str::FromStr for ImageSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "registered" => ImageSource::Registered,
            "bootstrapped" => ImageSource::Bootstrapped,
            "built" => ImageSource::Built,
            "promoted" => ImageSource::Promoted,
            "imported" => ImageSource::Imported,
            other => return Err(format!("unknown image source {other:?}")),
        })
    }
}

/// One file of an image's boot set, as stored in banger's image store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageFile {
    /// Path inside the image store.
    pub path: String,
    /// Apparent size.
    pub bytes: u64,
    /// Bytes actually allocated on disk (`st_blocks`).
    pub allocated_bytes: u64,
}

/// The files of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageFiles {
    pub kernel: ImageFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<ImageFile>,
    pub rootfs: ImageFile,
}

/// A package installed in an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// A TCP service the image provides; readiness waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceCheck {
    pub name: String,
    pub port: u16,
    /// How long a start waits for this service, in seconds from the start of the readiness
    /// wait, when that is longer than the configured `defaults.ready_timeout`. Absent: the
    /// configured deadline. From 1 to 86400 (a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<u64>,
    /// When set, the service is ready only once `GET` of this path answers with an HTTP status
    /// line (any status): a server that accepts connections before it can serve them is not
    /// ready yet. Absent: a TCP connection is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// `manifest.json` of an image: what it is and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageManifest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distro: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Read from the kernel's version banner when banger can find it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    #[serde(default)]
    pub packages: Vec<Package>,
    #[serde(default)]
    pub services: Vec<ServiceCheck>,
    /// Guest ports every VM of the image publishes on the host's loopback unless its create
    /// publishes that guest port itself: on the same host port when it is free, otherwise on
    /// the first free one from 49152.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<u16>,
    /// What the image's init understands beyond the basics, as banger's initramfs lists it
    /// (`config-drive`: a VM's own files may come on a config drive, which makes creating a
    /// VM much faster). Empty for an initrd banger did not make.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_features: Vec<String>,
    /// Human-readable origin, e.g. the source paths of a registration. An import keeps the
    /// exported image's.
    pub created_from: String,
    pub created_at: Timestamp,
    /// For an imported image: the file it was imported from and the image exported into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

/// An image as banger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub source: ImageSource,
    pub files: ImageFiles,
    pub manifest: ImageManifest,
    pub created_at: Timestamp,
    /// Set when another image took this one's name (`image build --replace`, `image promote
    /// --replace`): the image was renamed and is kept, under its retired name, while VMs or
    /// snapshots use it, then deleted by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Box<RetiredImage>>,
}

/// How an image was retired: when, and which image holds its old name now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetiredImage {
    /// The name the image had before it was retired.
    pub name: String,
    /// The image that holds that name now; absent once that image is gone too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<ImageRef>,
    pub at: Timestamp,
}

/// `POST /v1/images`: adopt existing boot files. Paths must be absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterImageRequest {
    pub name: String,
    /// An uncompressed ELF `vmlinux`.
    pub kernel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// An ext4 filesystem image.
    pub rootfs: String,
    /// Guest ports the image's VMs publish by default (see `ImageManifest::publish`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<i64>,
}

/// `POST /v1/images/bootstrap`: build an image from distribution packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapImageRequest {
    /// The distribution; `debian` is the one banger bootstraps.
    pub distro: String,
    /// The distribution's release, e.g. `bookworm` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// The image's name; the distribution's name by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/images/promote`: a stopped VM's root (its image with its overlay on top) becomes
/// a new image; the VM itself is untouched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteImageRequest {
    /// The VM (name or id); it must be stopped.
    pub vm: String,
    /// The new image's name.
    pub name: String,
    /// The VM's work disk (`/root`) becomes the new image's work seed, copied into each of
    /// its VMs' work disks; by default the VM's image's seed is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_work: Option<bool>,
    /// When an image of that name exists, the new image takes its name: the old one is
    /// retired (renamed, and kept while VMs or snapshots use it). By default an existing
    /// name is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<bool>,
}

/// `POST /v1/images/{name}/export`: write the image into one file. The path must be absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportImageRequest {
    /// The file to write, on the daemon's host (the same host and user as the CLI); its
    /// directory must exist.
    pub path: String,
    /// Replace an existing file (default false: an existing file is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// The result of an export operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExportedImage {
    /// The exported image's name.
    pub name: String,
    pub id: String,
    /// The file written.
    pub path: String,
    /// Its size.
    pub bytes: u64,
}

/// `POST /v1/images/import`: make an image from a file `image export` wrote. The path must be
/// absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportImageRequest {
    pub path: String,
    /// The new image's name; the exported image's name by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What kind of long work an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    RegisterImage,
    BootstrapImage,
    ExportImage,
    ImportImage,
    StartVm,
    StopVm,
    RestartVm,
    PromoteImage,
    BuildImage,
}

/// Overall state of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl OperationState {
    pub fn is_finished(self) -> bool {
        !matches!(self, OperationState::Running)
    }
}

/// State of one named stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
    Cancelled,
}

/// Progress of a stage that moves a known amount of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    /// What `done` and `total` count, e.g. "bytes".
    pub unit: String,
}

/// One named step of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stage {
    pub name: String,
    pub state: StageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// Long work the daemon does in the background.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    pub id: String,
    pub kind: OperationKind,
    /// The name of what the operation works on (an image or VM name).
    pub target: String,
    pub state: OperationState,
    pub stages: Vec<Stage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// The created or changed resource once the operation succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub cancel_requested: bool,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Increases with every change; the stream endpoint sends one line per version.
    pub version: u64,
}

/// `GET /v1/daemon`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DaemonInfo {
    pub version: String,
    /// Identity of the running daemon binary; clients compare it with the binary they would
    /// start.
    pub build_id: String,
    pub pid: u32,
    pub socket: String,
    pub state_dir: String,
    pub log_file: String,
    pub started_at: Timestamp,
    pub uptime_secs: u64,
    /// The localhost web console. Absent in answers of daemons older than the console, which
    /// a client still decodes (it asks an outdated daemon who it is before replacing it).
    #[serde(default)]
    pub web: WebConsoleInfo,
    /// The domain banger's DNS serves VM names in (`NAME.DOMAIN`), absent when it serves none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
}

/// Where the web console is served, or why it is not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebConsoleInfo {
    /// `http://127.0.0.1:PORT/` while the console is serving. Opening it needs a session:
    /// get a login URL from `POST /v1/web/login` (`banger web`).
    #[serde(default)]
    pub url: Option<String>,
    /// Why the console is not serving (disabled in the config, port in use, ...).
    #[serde(default)]
    pub error: Option<String>,
}

/// `POST /v1/web/login`: a one-time login URL for the web console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebLogin {
    /// Opening this URL once starts a browser session; the token in it then stops working.
    pub url: String,
    /// The token is refused after this instant even when unused.
    pub expires_at: Timestamp,
}

/// CPU figures of `GET /v1/capacity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CpuCapacity {
    pub host_cpus: u32,
    /// vCPUs of VMs that hold resources (starting, running, paused, stopping).
    pub reserved_vcpus: u32,
    /// The most vCPUs the VMs that hold resources may reserve together: a start that would
    /// go beyond it is refused (`over_capacity`). `null` when admission control is off.
    #[serde(default)]
    pub vcpu_limit: Option<u32>,
}

/// Memory figures of `GET /v1/capacity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemoryCapacity {
    pub host_bytes: u64,
    pub available_bytes: u64,
    /// Guest memory of VMs that hold resources.
    pub reserved_bytes: u64,
    /// The most guest memory the VMs that hold resources may reserve together: a start that
    /// would go beyond it is refused (`over_capacity`). `null` when admission control is off.
    #[serde(default)]
    pub limit_bytes: Option<u64>,
}

/// Disk figures of `GET /v1/capacity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskCapacity {
    /// The directory whose filesystem is measured (banger's state dir).
    pub path: String,
    pub fs_total_bytes: u64,
    pub fs_available_bytes: u64,
    /// Bytes actually allocated by all VMs' overlay and work disks.
    pub vm_allocated_bytes: u64,
    /// Bytes actually allocated by the image store.
    pub image_allocated_bytes: u64,
    /// Bytes actually allocated by snapshots.
    #[serde(default)]
    pub snapshot_allocated_bytes: u64,
}

/// `GET /v1/capacity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    pub cpu: CpuCapacity,
    pub memory: MemoryCapacity,
    pub disk: DiskCapacity,
    pub vms_total: u32,
    pub vms_running: u32,
}

/// How a doctor check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DoctorCheckStatus {
    Ok,
    /// Works, but worse than it could (a slower backend, a feature unavailable).
    Warn,
    /// Something banger needs is missing or broken.
    Fail,
}

/// One finding of `banger doctor` or of an operation's preflight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DoctorCheck {
    /// Stable short name, e.g. `kvm`, `nftables`, `sudo`.
    pub name: String,
    pub status: DoctorCheckStatus,
    /// What was found.
    pub detail: String,
    /// The command or setting that fixes it; present whenever the status is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// `GET /v1/doctor`: every host check, in the order the CLI prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DoctorReport {
    pub checks: Vec<DoctorCheck>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_info_of_a_daemon_without_a_web_console_still_decodes() {
        let json = r#"{"version":"0.1.0","build_id":"b","pid":1,"socket":"/s","state_dir":"/d",
            "log_file":"/l","started_at":"2025-11-23T12:13:20.123Z","uptime_secs":5}"#;
        let info: DaemonInfo = serde_json::from_str(json).unwrap();
        assert_eq!(info.web, WebConsoleInfo::default());
    }
}

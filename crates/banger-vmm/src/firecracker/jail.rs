//! Firecracker behind its jailer: each VM's Firecracker runs as a uid and gid of its own (from a
//! configured range), chrooted into a directory that holds only the files of that VM, in a pid
//! namespace of its own, and, where cgroup v2 offers the memory and cpu controllers, in a cgroup
//! whose limits come from the VM's spec.
//!
//! The jail of VM `ID` is `<chroot base>/<firecracker file name>/ID/` (the jailer's layout), its
//! chroot the `root/` inside. Before the jailer starts, banger places the VM's files in the
//! chroot under fixed names ([`KERNEL`], [`INITRD`], `drive-<id>`, [`VMM_LOG`], [`METRICS`]): a
//! hard link when the file is on the chroot's filesystem, a bind mount otherwise (a disk is never
//! copied). A file Firecracker writes (the VM's own disks, its log and metrics) is given to the
//! VM's uid while the jail lives and given back when it goes; one it only reads (the image's
//! shared root filesystem, kernel and initrd) is made readable by others once, which reaches no
//! one outside a jail: the state directory above it is the daemon's alone. A dynamically linked
//! Firecracker also gets its loader and libraries, read-only, at their own paths.
//!
//! Everything a jail holds is recorded as a [`Resource`] in `jail.json` next to the chroot (out
//! of the jailed process's reach), so that a stop, a failed launch and a restarted daemon's
//! reconcile release exactly what was acquired, through the same [`release`](super::release).
//!
//! With `--new-pid-ns` the jailer forks, and Firecracker is the first process of a new pid
//! namespace; the jailer writes its pid (as the host sees it) to `<exec file name>.pid` in the
//! chroot, which is how banger learns the pid it supervises. A Firecracker that is the init of
//! its namespace does not receive SIGTERM from outside (it installs no handler for it), so a
//! jailed Firecracker that outlives its guest's shutdown is killed with SIGKILL at once.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use banger_host::program::{self, LocateError};
use banger_host::{CommandRunner, CommandSpec};

use super::binary::{FirecrackerBinary, Version};
use super::launch::{CleanupFailure, MAX_SOCKET_PATH, Resource, record, release_all};
use crate::FirecrackerError;
use crate::host::ProcessHost;
use crate::{VmSpec, VmmError};

/// The API socket inside the chroot.
pub const API_SOCKET: &str = "api.sock";
/// The vsock device's socket inside the chroot.
pub const VSOCK_SOCKET: &str = "v.sock";
pub const KERNEL: &str = "vmlinux";
pub const INITRD: &str = "initrd";
pub const VMM_LOG: &str = "vmm.log";
pub const METRICS: &str = "metrics.json";
/// The files of a snapshot inside the chroot: written there by a snapshot, read there by a
/// restore.
pub const SNAPSHOT_STATE: &str = "snapshot-state";
pub const SNAPSHOT_MEMORY: &str = "snapshot-memory";
/// What the jail's resources are recorded in, beside the chroot.
pub const RECORD: &str = "jail.json";
/// The cgroup (below the cgroup v2 root) that holds every jailed VM's cgroup.
pub const PARENT_CGROUP: &str = "banger";
/// The cgroup v2 controllers the limits need.
pub const CONTROLLERS: [&str; 2] = ["memory", "cpu"];
/// The length of a `cpu.max` period, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The in-chroot name of drive `id`.
pub fn drive_name(id: &str) -> String {
    format!("drive-{id}")
}

/// The in-chroot name of the snapshot's copy of drive `id`.
pub fn snapshot_drive_name(id: &str) -> String {
    format!("snapshot-{id}")
}

/// The jailer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JailerError {
    #[error(
        "jailer not found in PATH; install the jailer of Firecracker {firecracker} next to it, \
         set jailer_bin in config.toml, or set jailer = false"
    )]
    NotInPath { firecracker: Version },

    #[error("the configured jailer binary {} does not exist", path.display())]
    Missing { path: PathBuf },

    #[error("{} is not an executable file", path.display())]
    NotExecutable { path: PathBuf },

    #[error("cannot ask {} for its version", path.display())]
    VersionCommand {
        path: PathBuf,
        #[source]
        source: banger_host::RunError,
    },

    #[error("cannot read a jailer version in {output:?}")]
    UnreadableVersion { output: String },

    #[error(
        "{} is the jailer of Firecracker {found}, but Firecracker is {firecracker}; the jailer \
         must be the same release",
        path.display()
    )]
    VersionMismatch {
        path: PathBuf,
        found: Version,
        firecracker: Version,
    },
}

/// A jailer binary of the same release as the Firecracker it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerBinary {
    pub path: PathBuf,
    pub version: Version,
}

impl JailerBinary {
    /// Finds the jailer (`configured`, else `jailer` in `PATH`) and checks that it is the same
    /// release as `firecracker`.
    pub fn detect(
        configured: Option<&Path>,
        firecracker: &FirecrackerBinary,
        runner: &dyn CommandRunner,
    ) -> Result<JailerBinary, JailerError> {
        let path_var = std::env::var_os("PATH");
        let path = locate(configured, path_var.as_deref(), &firecracker.version)?;
        JailerBinary::check(path, firecracker, runner)
    }

    /// Checks the version of the jailer at `path` against `firecracker`'s.
    pub fn check(
        path: PathBuf,
        firecracker: &FirecrackerBinary,
        runner: &dyn CommandRunner,
    ) -> Result<JailerBinary, JailerError> {
        let output = runner
            .run(&CommandSpec::new(path.to_string_lossy()).arg("--version"))
            .map_err(|source| JailerError::VersionCommand {
                path: path.clone(),
                source,
            })?;
        let text = output.stdout_lossy();
        let version: Version = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("Jailer "))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| JailerError::UnreadableVersion {
                output: text.trim().to_owned(),
            })?;
        if version != firecracker.version {
            return Err(JailerError::VersionMismatch {
                path,
                found: version,
                firecracker: firecracker.version.clone(),
            });
        }
        Ok(JailerBinary { path, version })
    }
}

fn locate(
    configured: Option<&Path>,
    path_var: Option<&OsStr>,
    firecracker: &Version,
) -> Result<PathBuf, JailerError> {
    program::locate(configured, path_var, "jailer").map_err(|e| match e {
        LocateError::Missing(path) => JailerError::Missing { path },
        LocateError::NotExecutable(path) => JailerError::NotExecutable { path },
        LocateError::NotInPath => JailerError::NotInPath {
            firecracker: firecracker.clone(),
        },
    })
}

/// The loader and shared libraries a dynamically linked `binary` needs, as `ldd` lists them,
/// each to be placed (read-only) at its own path in a jail, linked to the file a symlink there
/// names; empty for a static binary (Firecracker's release builds) or when `ldd` cannot tell.
pub fn libraries_of(binary: &Path, runner: &dyn CommandRunner) -> Vec<JailFile> {
    let listed = match runner.run(&CommandSpec::new("ldd").arg(binary.to_string_lossy())) {
        Ok(output) => parse_ldd(&output.stdout_lossy()),
        Err(error) => {
            tracing::debug!(binary = %binary.display(), %error, "ldd lists no libraries");
            Vec::new()
        }
    };
    listed
        .into_iter()
        .map(|inside| JailFile {
            source: std::fs::canonicalize(&inside).unwrap_or_else(|_| inside.clone()),
            inside,
            writable: false,
        })
        .collect()
}

/// The absolute paths in `ldd`'s output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file.
pub fn parse_ldd(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Whether cgroup v2 can hold the limits of jailed VMs here, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSupport {
    /// The cgroup v2 hierarchy at this mount point offers the memory and cpu controllers.
    Usable(PathBuf),
    /// Why not: jailed VMs then run without cgroup limits.
    Unusable(String),
}

impl CgroupSupport {
    /// Reads `/proc/mounts` and the cgroup v2 root's `cgroup.controllers`.
    pub fn detect() -> CgroupSupport {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        CgroupSupport::from_mounts(&mounts, |root| {
            std::fs::read_to_string(root.join("cgroup.controllers")).ok()
        })
    }

    /// The decision for a host whose mount table is `mounts`, where `controllers` reads the
    /// `cgroup.controllers` of a cgroup v2 mount point.
    pub fn from_mounts(
        mounts: &str,
        controllers: impl Fn(&Path) -> Option<String>,
    ) -> CgroupSupport {
        let v2 = mounts
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let point = fields.next().and(fields.next())?;
                (fields.next()? == "cgroup2").then(|| unescape_octal(point))
            })
            .next();
        let Some(root) = v2 else {
            return CgroupSupport::Unusable("no cgroup v2 hierarchy is mounted".into());
        };
        let Some(available) = controllers(&root) else {
            return CgroupSupport::Unusable(format!(
                "cannot read {}",
                root.join("cgroup.controllers").display()
            ));
        };
        let available: Vec<&str> = available.split_whitespace().collect();
        let missing: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !available.contains(c))
            .collect();
        if missing.is_empty() {
            return CgroupSupport::Usable(root);
        }
        let v1 = mounts
            .lines()
            .filter(|line| line.split_whitespace().nth(2) == Some("cgroup"))
            .count();
        let offers = if available.is_empty() {
            "no controller".to_owned()
        } else {
            available.join(" ")
        };
        CgroupSupport::Unusable(format!(
            "the cgroup v2 hierarchy at {} offers {offers}, not {}{}",
            root.display(),
            missing.join(" or "),
            if v1 > 0 {
                " (this host mounts them as cgroup v1 controllers)"
            } else {
                ""
            }
        ))
    }

    pub fn root(&self) -> Option<&Path> {
        match self {
            CgroupSupport::Usable(root) => Some(root),
            CgroupSupport::Unusable(_) => None,
        }
    }
}

fn unescape_octal(field: &str) -> PathBuf {
    PathBuf::from(field.replace("\\040", " "))
}

/// How VMs are jailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailConfig {
    pub jailer: JailerBinary,
    /// The jailer's `--chroot-base-dir`; best on the filesystem of the VMs' disks, so that
    /// they are hard-linked rather than bind-mounted.
    pub chroot_base: PathBuf,
    /// The uids (and gids, the same numbers) given to jailed VMs, first and last included.
    pub uids: (u32, u32),
    /// Where jailed VMs' cgroups go (cgroup v2, or v1's memory and cpu controllers).
    pub cgroup: crate::cgroup::Cgroups,
    /// Memory the Firecracker process needs beyond its guest's, added to `memory.max`.
    pub memory_overhead_mib: u32,
    /// The loader and libraries of a dynamically linked Firecracker ([`libraries_of`]).
    pub libraries: Vec<JailFile>,
}

/// The cgroup limits of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// The VM's cgroup directory (under cgroup v1, the memory controller's).
    pub path: PathBuf,
    /// Under cgroup v1 (`Some`): the cpu controller's directory of the VM, the same as `path`
    /// when both controllers share a mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1_cpu_path: Option<PathBuf>,
    /// `memory.max`, bytes: the guest's memory plus the configured overhead.
    pub memory_max: u64,
    /// `cpu.max`: as many CPUs' time as the VM has vCPUs.
    pub cpu_max: String,
}

/// What `jail.json` holds: who the VM runs as, its limits, and what the jail holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailRecord {
    pub uid: u32,
    pub gid: u32,
    pub cgroup: Option<CgroupLimits>,
    /// Oldest first; the jail directory itself is not listed.
    pub resources: Vec<Resource>,
}

/// One file a jail makes visible to its VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailFile {
    /// Where the file is on the host.
    pub source: PathBuf,
    /// Its path inside the chroot (absolute).
    pub inside: PathBuf,
    /// Whether Firecracker writes it (it then belongs to the VM's uid while the jail lives).
    pub writable: bool,
}

/// Where a jailed VM's things are, before anything is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPlan {
    /// `<chroot base>/<exec file name>/<id>`.
    pub dir: PathBuf,
    /// `<dir>/root`.
    pub root: PathBuf,
    /// The spec as the jailed Firecracker sees it: every path inside the chroot.
    pub inner: VmSpec,
    /// The host paths of the API and vsock sockets.
    pub api_socket: PathBuf,
    pub vsock_socket: Option<PathBuf>,
    pub files: Vec<JailFile>,
    /// The cgroup and its limits, when cgroup v2 is usable.
    pub cgroup: Option<CgroupLimits>,
    /// The file the jailer writes Firecracker's pid to.
    pub pid_file: PathBuf,
}

/// Serializes uid allocation: two launches must not pick the same uid.
static ALLOCATION: Mutex<()> = Mutex::new(());

impl JailConfig {
    /// `<chroot base>/<exec file name>`: the jails of VMs started with `firecracker`.
    pub fn jails_dir(&self, firecracker: &FirecrackerBinary) -> PathBuf {
        self.chroot_base.join(exec_name(firecracker))
    }

    /// The jail of `spec` and the files placed in it; `extra` adds files (a restore's snapshot).
    pub fn plan(
        &self,
        spec: &VmSpec,
        firecracker: &FirecrackerBinary,
        extra: &[JailFile],
    ) -> Result<JailPlan, VmmError> {
        let dir = self.jails_dir(firecracker).join(&spec.vm_id);
        let root = dir.join("root");
        let inside = |name: &str| Path::new("/").join(name);
        let mut files = Vec::new();
        let mut inner = spec.clone();
        let mut place = |source: &Path, name: &str, writable: bool| {
            files.push(JailFile {
                source: source.to_owned(),
                inside: inside(name),
                writable,
            });
            inside(name)
        };
        inner.kernel = place(&spec.kernel, KERNEL, false);
        if let Some(initrd) = &spec.initrd {
            inner.initrd = Some(place(initrd, INITRD, false));
        }
        for drive in &mut inner.drives {
            drive.path = place(&drive.path, &drive_name(&drive.id), !drive.read_only);
        }
        inner.paths.vmm_log = place(&spec.paths.vmm_log, VMM_LOG, true);
        inner.paths.metrics = place(&spec.paths.metrics, METRICS, true);
        files.extend(self.libraries.iter().cloned());
        files.extend(extra.iter().cloned());
        inner.paths.api_socket = inside(API_SOCKET);
        if let Some(vsock) = &mut inner.vsock {
            vsock.uds_path = inside(VSOCK_SOCKET);
        }
        let api_socket = root.join(API_SOCKET);
        let vsock_socket = spec.vsock.as_ref().map(|_| root.join(VSOCK_SOCKET));
        for socket in std::iter::once(&api_socket).chain(vsock_socket.as_ref()) {
            let len = socket.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(VmmError::InvalidSpec(format!(
                    "socket path {} is {len} bytes; Unix sockets allow {MAX_SOCKET_PATH} (choose \
                     a shorter jail_dir)",
                    socket.display()
                )));
            }
        }
        let memory_max =
            (u64::from(spec.memory_mib) + u64::from(self.memory_overhead_mib)) * 1024 * 1024;
        let cpu_max = format!("{} {CPU_PERIOD_US}", u64::from(spec.vcpus) * CPU_PERIOD_US);
        let cgroup = match &self.cgroup {
            crate::cgroup::Cgroups::Usable(crate::cgroup::Hierarchy::V2 { root }) => {
                Some(CgroupLimits {
                    path: root.join(PARENT_CGROUP).join(&spec.vm_id),
                    v1_cpu_path: None,
                    memory_max,
                    cpu_max,
                })
            }
            crate::cgroup::Cgroups::Usable(crate::cgroup::Hierarchy::V1 { memory, cpu }) => {
                Some(CgroupLimits {
                    path: memory.join(PARENT_CGROUP).join(&spec.vm_id),
                    v1_cpu_path: Some(cpu.join(PARENT_CGROUP).join(&spec.vm_id)),
                    memory_max,
                    cpu_max,
                })
            }
            crate::cgroup::Cgroups::Unusable(_) => None,
        };
        Ok(JailPlan {
            pid_file: root.join(format!("{}.pid", exec_name(firecracker).to_string_lossy())),
            dir,
            root,
            inner,
            api_socket,
            vsock_socket,
            files,
            cgroup,
        })
    }

    /// The jailer's command line for `plan`, run as `uid`.
    pub fn jailer_args(
        &self,
        plan: &JailPlan,
        firecracker: &FirecrackerBinary,
        uid: u32,
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--id".into(),
            plan.inner.vm_id.clone().into(),
            "--exec-file".into(),
            firecracker.path.clone().into(),
            "--uid".into(),
            uid.to_string().into(),
            "--gid".into(),
            uid.to_string().into(),
            "--chroot-base-dir".into(),
            self.chroot_base.clone().into(),
            "--new-pid-ns".into(),
        ];
        match plan.cgroup.as_ref().map(|l| (l, &l.v1_cpu_path)) {
            Some((limits, None)) => args.extend(
                [
                    "--cgroup-version".to_owned(),
                    "2".to_owned(),
                    "--parent-cgroup".to_owned(),
                    PARENT_CGROUP.to_owned(),
                    "--cgroup".to_owned(),
                    format!("memory.max={}", limits.memory_max),
                    "--cgroup".to_owned(),
                    format!("cpu.max={}", limits.cpu_max),
                ]
                .map(OsString::from),
            ),
            // cgroup v1: the same limits in the v1 controllers' files; the jailer finds each
            // controller's mount point itself.
            Some((limits, Some(_))) => {
                let quota = limits.cpu_max.split_whitespace().next().unwrap_or_default();
                args.extend(
                    [
                        "--cgroup-version".to_owned(),
                        "1".to_owned(),
                        "--parent-cgroup".to_owned(),
                        PARENT_CGROUP.to_owned(),
                        "--cgroup".to_owned(),
                        format!("memory.limit_in_bytes={}", limits.memory_max),
                        "--cgroup".to_owned(),
                        format!("cpu.cfs_period_us={CPU_PERIOD_US}"),
                        "--cgroup".to_owned(),
                        format!("cpu.cfs_quota_us={quota}"),
                    ]
                    .map(OsString::from),
                )
            }
            None => {}
        }
        args.extend(
            ["--", "--api-sock"]
                .map(OsString::from)
                .into_iter()
                .chain([plan.inner.paths.api_socket.clone().into_os_string()]),
        );
        args
    }

    /// Builds the jail of `plan`: the jail directory, a uid, every file placed, `jail.json`.
    /// Each step is recorded in `acquired` as it is done. Returns the uid.
    pub(crate) fn build(
        &self,
        host: &dyn ProcessHost,
        plan: &JailPlan,
        acquired: &mut Vec<Resource>,
    ) -> Result<u32, VmmError> {
        let file_error = |path: &Path| {
            let path = path.to_owned();
            move |source| VmmError::File { path, source }
        };
        let uid = {
            let _guard = ALLOCATION.lock().unwrap_or_else(|e| e.into_inner());
            if host.exists(&plan.dir) {
                // Left by a launch or a daemon that died: released before it is rebuilt.
                for failure in release_jail(host, &plan.dir, Duration::from_secs(1)) {
                    tracing::warn!(jail = %plan.dir.display(), error = %failure, "cannot release a stale jail");
                }
            }
            let uid = self.free_uid(host, plan.dir.parent().unwrap_or(&plan.dir))?;
            host.create_dir(&plan.dir, 0o700)
                .map_err(file_error(&plan.dir))?;
            record(
                acquired,
                Resource::JailDir {
                    path: plan.dir.clone(),
                },
            );
            // Claims the uid before the lock is released.
            write_record(host, &plan.dir, uid, plan.cgroup.as_ref(), &[])?;
            uid
        };
        host.create_dir(&plan.root, 0o700)
            .map_err(file_error(&plan.root))?;
        let mut held = Vec::new();
        let result = self.place_all(host, plan, uid, acquired, &mut held);
        if let Some(limits) = &plan.cgroup {
            // Created by the jailer: the caller records it before it starts the jailer.
            held.extend(
                limits
                    .dirs()
                    .into_iter()
                    .map(|path| Resource::Cgroup { path }),
            );
        }
        write_record(host, &plan.dir, uid, plan.cgroup.as_ref(), &held)?;
        result.map(|()| uid)
    }

    fn place_all(
        &self,
        host: &dyn ProcessHost,
        plan: &JailPlan,
        uid: u32,
        acquired: &mut Vec<Resource>,
        held: &mut Vec<Resource>,
    ) -> Result<(), VmmError> {
        for file in &plan.files {
            let resource = place(host, &plan.root, file, uid, false)?;
            held.push(resource.clone());
            record(acquired, resource);
            // Recorded at once: a daemon that dies now leaves a record its successor releases.
            write_record(host, &plan.dir, uid, plan.cgroup.as_ref(), held)?;
        }
        Ok(())
    }

    /// The lowest uid of the range that no jail under `jails` holds.
    fn free_uid(&self, host: &dyn ProcessHost, jails: &Path) -> Result<u32, VmmError> {
        let taken: Vec<u32> = host
            .list_dir(jails)
            .unwrap_or_default()
            .iter()
            .filter_map(|dir| read_record(host, dir).ok())
            .map(|record| record.uid)
            .collect();
        lowest_free_uid(self.uids, &taken, "jail_uids")
    }
}

/// The lowest uid of `range` (the config key `key`) that is not `taken`; refused, saying which
/// key to widen, when every one is.
pub(crate) fn lowest_free_uid(
    (first, last): (u32, u32),
    taken: &[u32],
    key: &str,
) -> Result<u32, VmmError> {
    (first..=last)
        .find(|uid| !taken.contains(uid))
        .ok_or_else(|| {
            VmmError::InvalidSpec(format!(
                "every uid of {key} {first}-{last} is taken by a running VM; widen the range in \
                 config.toml"
            ))
        })
}

/// The file name of the Firecracker executable: the jailer names the jails' directory and the
/// copy in each chroot after it.
pub fn exec_name(firecracker: &FirecrackerBinary) -> OsString {
    firecracker
        .path
        .file_name()
        .map(OsStr::to_owned)
        .unwrap_or_else(|| "firecracker".into())
}

/// Makes `file` visible in the chroot `root`: a hard link, or a bind mount across filesystems
/// (only before the jailer runs, unless `running` is false: a mount made later does not reach
/// the jail's own mount namespace); a written file is given to `uid`, a read one made readable
/// by it.
pub(crate) fn place(
    host: &dyn ProcessHost,
    root: &Path,
    file: &JailFile,
    uid: u32,
    running: bool,
) -> Result<Resource, VmmError> {
    let at = root.join(file.inside.strip_prefix("/").unwrap_or(&file.inside));
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| VmmError::File { path, source }
    };
    if let Some(parent) = at.parent()
        && parent != root
    {
        host.create_dir(parent, 0o755).map_err(err(parent))?;
    }
    let bind = match host.hard_link(&file.source, &at) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(18) && running => {
            return Err(VmmError::File {
                path: at,
                source: io::Error::other(format!(
                    "{} is on another filesystem than the jail, and a running jail only sees \
                     files linked into it: put jail_dir on the filesystem of banger's state \
                     directory",
                    file.source.display()
                )),
            });
        }
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: another filesystem.
            host.bind_mount(&file.source, &at).map_err(err(&at))?;
            true
        }
        Err(e) => {
            return Err(VmmError::File {
                path: at,
                source: e,
            });
        }
    };
    let mut resource = Resource::JailFile {
        path: at.clone(),
        bind,
        owner: None,
    };
    let (owner, group, mode) = match host.owner(&at) {
        Ok(found) => found,
        Err(source) => {
            undo_place(host, &resource);
            return Err(VmmError::File { path: at, source });
        }
    };
    let adjusted = if file.writable {
        host.chown(&at, uid, uid).map(|()| {
            resource = Resource::JailFile {
                path: at.clone(),
                bind,
                owner: Some((owner, group)),
            };
        })
    } else if mode & 0o004 == 0 {
        host.chmod(&at, mode | 0o004)
    } else {
        Ok(())
    };
    if let Err(source) = adjusted {
        undo_place(host, &resource);
        return Err(VmmError::File { path: at, source });
    }
    Ok(resource)
}

fn undo_place(host: &dyn ProcessHost, resource: &Resource) {
    if let Err(error) = super::launch::release(host, resource, Duration::ZERO) {
        tracing::warn!(%error, "cannot undo a jail file");
    }
}

fn write_record(
    host: &dyn ProcessHost,
    dir: &Path,
    uid: u32,
    cgroup: Option<&CgroupLimits>,
    resources: &[Resource],
) -> Result<(), VmmError> {
    let record = JailRecord {
        uid,
        gid: uid,
        cgroup: cgroup.cloned(),
        resources: resources.to_vec(),
    };
    let path = dir.join(RECORD);
    let json = serde_json::to_vec_pretty(&record).map_err(|e| VmmError::File {
        path: path.clone(),
        source: io::Error::other(e),
    })?;
    host.write_file(&path, &json)
        .map_err(|source| VmmError::File { path, source })
}

/// The record of the jail `dir`.
pub fn read_record(host: &dyn ProcessHost, dir: &Path) -> io::Result<JailRecord> {
    let bytes = host.read_file(&dir.join(RECORD))?;
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

/// Releases the jail `dir`: everything its record lists, newest first, then the directory.
/// Safe to repeat; a jail without a record is only removed (when nothing is mounted in it).
pub fn release_jail(
    host: &dyn ProcessHost,
    dir: &Path,
    kill_wait: Duration,
) -> Vec<CleanupFailure> {
    if !host.exists(dir) {
        return Vec::new();
    }
    let mut resources = vec![Resource::JailDir {
        path: dir.to_owned(),
    }];
    match read_record(host, dir) {
        Ok(record) => resources.extend(record.resources),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(jail = %dir.display(), %error, "cannot read the jail's record")
        }
    }
    release_all(host, resources, kill_wait)
}

/// The jail directory of a VM whose API socket is `api_socket`, when it is a jailed one under
/// `jails` (`<jails>/<id>/root/api.sock`).
pub fn jail_of(jails: &Path, api_socket: &Path) -> Option<PathBuf> {
    let root = api_socket.parent()?;
    let dir = root.parent()?;
    (root.file_name() == Some(OsStr::new("root"))
        && dir.parent() == Some(jails)
        && api_socket.file_name() == Some(OsStr::new(API_SOCKET)))
    .then(|| dir.to_owned())
}

/// The host path of the API socket a jailed Firecracker's command line serves: the jailer runs
/// `/<exec file name> --id ID --start-time-us … --api-sock /api.sock`, chrooted into
/// `<chroot base>/<exec file name>/ID/root`.
pub fn jailed_api_socket(argv: &[OsString], chroot_base: &Path) -> Option<PathBuf> {
    let program = Path::new(argv.first()?);
    if program.parent() != Some(Path::new("/")) {
        return None;
    }
    let mut id = None;
    let mut socket = None;
    let mut jailed = false;
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_str()?;
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (text, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next().and_then(|v| v.to_str()).map(str::to_owned))
        };
        match name {
            "--id" => id = value(),
            "--api-sock" => socket = value(),
            "--start-time-us" => {
                jailed = true;
                value();
            }
            _ => {}
        }
    }
    let (id, socket) = (id?, socket?);
    if !jailed || id.contains('/') || id.is_empty() {
        return None;
    }
    let inside = Path::new(&socket).strip_prefix("/").ok()?;
    Some(
        chroot_base
            .join(program.file_name()?)
            .join(id)
            .join("root")
            .join(inside),
    )
}

/// Waits until the jailer wrote Firecracker's pid to `pid_file`; gives up when `jailer` exited
/// without writing it or `timeout` passes.
pub(crate) fn wait_for_pid(
    host: &dyn ProcessHost,
    pid_file: &Path,
    jailer: u32,
    timeout: Duration,
) -> Result<u32, VmmError> {
    let deadline = Instant::now() + timeout;
    loop {
        let read = host
            .read_file(pid_file)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.trim().parse::<u32>().ok());
        if let Some(pid) = read {
            return Ok(pid);
        }
        if !host.pid_alive(jailer) && host.read_file(pid_file).is_err() {
            return Err(FirecrackerError::Exited {
                pid: jailer,
                during: format!(
                    "before the jailer wrote Firecracker's pid to {}",
                    pid_file.display()
                ),
                console: Vec::new(),
            }
            .into());
        }
        if Instant::now() >= deadline {
            return Err(FirecrackerError::SocketTimeout {
                socket: pid_file.to_owned(),
                timeout,
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl CgroupLimits {
    /// Every directory of the cgroup: one under v2, the memory then the cpu controller's
    /// under v1 (one when they share a mount).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.path.clone()];
        if let Some(cpu) = self.v1_cpu_path.as_ref().filter(|cpu| **cpu != self.path) {
            dirs.push(cpu.clone());
        }
        dirs
    }
}

impl fmt::Display for CgroupLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (memory.max {} MiB, cpu.max {})",
            self.path.display(),
            self.memory_max / (1024 * 1024),
            self.cpu_max
        )
    }
}

/// Parses a uid range `FIRST-LAST`.
pub fn parse_uid_range(text: &str) -> Result<(u32, u32), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a range FIRST-LAST"))?;
    let parse = |n: &str| {
        n.trim()
            .parse::<u32>()
            .map_err(|_| format!("{n:?} is not a uid"))
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first == 0 || first > last {
        return Err(format!(
            "{text:?} must go from a uid above 0 up to a uid no lower than it"
        ));
    }
    Ok((first, last))
}

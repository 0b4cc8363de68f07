//! `banger image bootstrap debian`: a bootable banger image from Debian packages alone.
//!
//! In order, each a named stage ([`STAGES`]):
//!
//! 1. *resolve kernel*: the concrete package behind `linux-image-cloud-amd64` and its
//!    version, from the host's apt (`apt-cache depends`, `apt-cache show`);
//! 2. *download kernel*: `apt-get download` into the cache, unless that exact `.deb` is there;
//! 3. *debootstrap*: `debootstrap --variant=minbase` with [`PACKAGES`] into a staging
//!    directory, from a tarball of the downloaded packages cached under a key of every input
//!    (`--make-tarball` once, `--unpack-tarball` after), and the installed root cached as a
//!    tar under the same key, so the next bootstrap of the same inputs only unpacks it;
//! 4. *clean up root*: no SSH host keys, apt lists, package caches or logs in the image;
//! 5. *configure guest*: BusyBox init, its boot script and sshd policy ([`guest`]), the guest
//!    agent when one is given ([`guest::install_agent`]);
//! 6. *extract kernel*: `dpkg-deb -x`, then the bzImage's payload to an ELF `vmlinux`;
//! 7. *build initramfs*: banger's static `/init` and the modules it needs from the package;
//! 8. *make rootfs*: `rootfs.ext4` with `mkfs.ext4 -d` (no loop device, no mount), sized
//!    from `du` with headroom;
//! 9. *write work seed*: the initial content of every VM's `/root`, and its fingerprint;
//! 10. *write manifest*: `manifest.json` (see [`BootstrapManifest`]).
//!
//! The root filesystem is root's: the steps that touch it run privileged, through `sudo -n`
//! when banger is not root ([`Privilege`]). Every command goes through a [`CommandRunner`].
//! The staging directory is always removed at the end; on failure or cancellation the image
//! directory is removed too, so a failed bootstrap leaves nothing but the download cache.
//!
//! Here are the inputs, the manifest, the errors and the entry points; the stages themselves
//! are in `run`, the steps other image builds share in `steps` (re-exported here).

pub mod debian;
pub mod guest;

mod run;
mod steps;

pub use steps::*;

use run::Run;

use std::io;
use std::path::{Path, PathBuf};

use banger_api::{Image, ImageManifest};
use banger_host::{CommandRunner, CommandSpec, Privilege, RunError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::initramfs::InitramfsError;
use crate::kernel::KernelError;
use crate::register::{MANIFEST_FILE, Reporter};
use crate::vmdisk::VmDiskError;

/// The only distribution `bootstrap` knows.
pub const DISTRO: &str = "debian";
pub const DEFAULT_SUITE: &str = "bookworm";
pub const DEFAULT_NAME: &str = "debian";
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The metapackage whose dependency is the current cloud kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
pub const ARCH: &str = "amd64";

/// What a dev VM needs on top of minbase: sshd, `ip`, TLS roots, `ps`/`top`, the init
/// (BusyBox), `/etc/services` and `/etc/protocols`.
pub const PACKAGES: &[&str] = &[
    "openssh-server",
    "iproute2",
    "ca-certificates",
    "procps",
    "busybox",
    "netbase",
];
/// The image's work seed directory, inside the image directory.
pub const WORK_SEED_DIR: &str = "work-seed";
/// The filesystem label of a bootstrapped `rootfs.ext4`.
pub const ROOTFS_LABEL: &str = "banger-base";
/// Bumped when what is cached under a key changes shape.
const CACHE_FORMAT: &str = "1";
const MIB: u64 = 1 << 20;

/// Stage names, in order, as an operation reports them.
pub const STAGES: [&str; 10] = [
    "resolve kernel",
    "download kernel",
    "debootstrap",
    "clean up root",
    "configure guest",
    "extract kernel",
    "build initramfs",
    "make rootfs",
    "write work seed",
    "write manifest",
];

/// What to bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapSpec {
    pub name: String,
    pub suite: String,
    pub mirror: String,
    /// banger's static guest `/init` for the initramfs.
    pub init_binary: PathBuf,
    /// The guest agent, when there is one to install ([`guest::install_agent`]).
    pub agent_binary: Option<PathBuf>,
}

impl BootstrapSpec {
    /// Defaults for everything but the name, suite and init binary.
    pub fn new(name: &str, suite: &str, init_binary: PathBuf) -> BootstrapSpec {
        BootstrapSpec {
            name: name.to_owned(),
            suite: suite.to_owned(),
            mirror: DEFAULT_MIRROR.to_owned(),
            init_binary,
            agent_binary: None,
        }
    }

    /// The key of the cached debootstrap tarball: everything that changes what it holds.
    pub fn cache_key(&self) -> String {
        let mut packages: Vec<&str> = PACKAGES.to_vec();
        packages.sort_unstable();
        let mut hash = Sha256::new();
        for part in [
            CACHE_FORMAT,
            "minbase",
            ARCH,
            &self.suite,
            self.mirror.trim_end_matches('/'),
            &packages.join(","),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

pub use banger_api::validate::{bootstrap_distro as validate_distro, suite as validate_suite};

/// Where and how the host work happens.
#[derive(Debug)]
pub struct Host<'a> {
    pub runner: &'a dyn CommandRunner,
    pub privilege: Privilege,
    /// The download cache (`<state>/cache/bootstrap`): kernel packages, debootstrap's package
    /// tarballs and installed roots, kept across bootstraps.
    pub cache_dir: PathBuf,
    /// Where the staging directory is made; on the image store's filesystem ideally, since
    /// the staged root is as large as the image.
    pub staging_parent: PathBuf,
    /// Mount points to look through for leftovers under the staging directory before it is
    /// removed (`/proc/self/mounts` in production).
    pub mounts_file: PathBuf,
}

impl<'a> Host<'a> {
    pub fn new(runner: &'a dyn CommandRunner, cache_dir: PathBuf, staging_parent: PathBuf) -> Self {
        Host {
            runner,
            privilege: Privilege::detect(),
            cache_dir,
            staging_parent,
            mounts_file: PathBuf::from("/proc/self/mounts"),
        }
    }

    pub(crate) fn privileged<I, S>(&self, program: &str, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.privilege.command(program, args)
    }
}

/// The inputs a bootstrap used, recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapInputs {
    pub mirror: String,
    pub variant: String,
    pub packages: Vec<String>,
    pub kernel_package: String,
    pub kernel_package_version: String,
    pub debootstrap_version: String,
    pub banger_version: String,
    /// SHA-256 of the guest `/init` put in the initramfs.
    pub init_sha256: String,
    /// The image's init: `busybox` ([`guest`]).
    pub guest_init: String,
    pub agent: bool,
    /// Whether the kernel package and the debootstrap tarball came from the cache.
    pub kernel_cached: bool,
    pub packages_cached: bool,
    /// Whether the installed root came from the cache (no debootstrap run at all).
    #[serde(default)]
    pub root_cached: bool,
}

/// Sizes of the image's files, apparent and allocated (`st_blocks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSizes {
    pub vmlinux_bytes: u64,
    pub initrd_bytes: u64,
    pub rootfs_bytes: u64,
    pub rootfs_allocated_bytes: u64,
    /// What the staged root held (`du`), before `mkfs.ext4`.
    pub root_used_bytes: u64,
}

/// The work seed: a directory in the image, copied into each VM's work disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkSeed {
    /// Relative to the image directory.
    pub dir: String,
    pub fingerprint: String,
}

/// `manifest.json` of a bootstrapped image: the [`ImageManifest`] every image has, plus how
/// this one was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapManifest {
    #[serde(flatten)]
    pub image: ImageManifest,
    pub inputs: BootstrapInputs,
    pub sizes: ImageSizes,
    pub work_seed: WorkSeed,
    /// Modules in the initramfs, in load order.
    pub initramfs_modules: Vec<String>,
}

/// Reads the manifest of a bootstrapped image, e.g. for its work seed.
pub fn read_manifest(image_dir: &Path) -> Result<BootstrapManifest, BootstrapError> {
    let path = image_dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|source| BootstrapError::Io {
        what: "read the manifest",
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| BootstrapError::Io {
        what: "decode the manifest",
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

/// A bootstrap failed. By the time this is returned the staging and image directories are
/// gone.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("the bootstrap was cancelled")]
    Cancelled,

    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },

    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{step} failed")]
    Command {
        step: &'static str,
        #[source]
        source: RunError,
    },

    #[error("apt knows no concrete kernel package behind {KERNEL_METAPACKAGE}")]
    NoKernelPackage { output: String },

    #[error("the kernel package {package} has no /boot/vmlinuz-*")]
    NoVmlinuz { package: String },

    #[error("extracting the kernel failed")]
    Kernel(#[from] KernelError),

    #[error("building the initramfs failed")]
    Initramfs(#[from] InitramfsError),

    #[error("the work seed failed")]
    WorkSeed(#[from] VmDiskError),

    #[error("installing the guest agent failed")]
    Agent(#[from] guest::AgentError),

    #[error("the new rootfs.ext4 is not a valid ext4 image")]
    Rootfs(#[from] crate::format::FormatError),
}

impl BootstrapError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        let run_error = match self {
            BootstrapError::Command { source, .. } => Some(source),
            BootstrapError::Agent(guest::AgentError::Install(source)) => Some(source),
            _ => None,
        };
        if let Some(e) = run_error {
            return match e {
                RunError::NotFound { program } => Some(match program.as_str() {
                    "debootstrap" => "install it: apt-get install debootstrap".to_owned(),
                    "sudo" => "install sudo, or run bangerd as root".to_owned(),
                    "apt-cache" | "apt-get" | "dpkg-deb" => {
                        "bootstrapping needs a Debian (or Debian-based) host with apt".to_owned()
                    }
                    "mkfs.ext4" => "install it: apt-get install e2fsprogs".to_owned(),
                    other => format!("install {other}"),
                }),
                RunError::Failed { stderr, .. } if needs_password(stderr) => Some(
                    "banger runs debootstrap, cp, rm, du and mkfs.ext4 as root through `sudo -n`: \
                     allow that without a password (see `banger doctor`), or run bangerd as root"
                        .to_owned(),
                ),
                RunError::Failed { command, .. } if command.contains("apt-get download") => {
                    Some("check that apt can reach its mirror: apt-get update".to_owned())
                }
                RunError::Failed { command, .. } if command.contains("debootstrap") => Some(
                    "check the suite name and that the mirror is reachable; the daemon log has \
                     the command's output"
                        .to_owned(),
                ),
                _ => None,
            };
        }
        match self {
            BootstrapError::NoKernelPackage { .. } => Some(format!(
                "run `apt-get update`; the host's apt sources must carry {KERNEL_METAPACKAGE} (Debian main)"
            )),
            BootstrapError::Io { source, .. } if source.raw_os_error() == Some(28) => {
                Some("free some disk space: a bootstrap needs about 1.5 GiB while it runs".into())
            }
            _ => None,
        }
    }
}

fn needs_password(stderr: &str) -> bool {
    stderr.contains("a password is required") || stderr.contains("may not run sudo")
}

/// Bootstraps image `id` into `image_dir` (which must not exist) and returns the image to
/// record. On error or cancellation, neither `image_dir` nor the staging directory remains.
pub fn bootstrap(
    id: &str,
    spec: &BootstrapSpec,
    host: &Host<'_>,
    image_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Image, BootstrapError> {
    let io_error = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BootstrapError::Io { what, path, source }
    };
    for dir in [
        image_dir.parent().unwrap_or(Path::new("/")),
        &host.staging_parent,
        &host.cache_dir,
    ] {
        std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    }
    std::fs::create_dir(image_dir).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => BootstrapError::Exists {
            path: image_dir.to_owned(),
        },
        _ => BootstrapError::Io {
            what: "create",
            path: image_dir.to_owned(),
            source,
        },
    })?;
    let staging = host.staging_parent.join(format!("bootstrap-{id}"));
    let result = std::fs::create_dir(&staging)
        .map_err(io_error("create", &staging))
        .and_then(|()| {
            let mut run = Run {
                id,
                spec,
                host,
                image_dir,
                staging: &staging,
                reporter,
            };
            run.stages()
        });
    if let Err(e) = remove_staging(host, &staging) {
        tracing::error!(dir = %staging.display(), error = %crate::error_chain(&e), "cannot remove the bootstrap's staging directory");
    }
    if result.is_err()
        && let Err(e) = std::fs::remove_dir_all(image_dir)
    {
        tracing::error!(dir = %image_dir.display(), error = %e, "cannot remove a failed image");
    }
    result
}

/// Removes the staging directories of bootstraps that did not finish (the daemon died or the
/// host rebooted mid-bootstrap), as root since debootstrap's tree is root's. Call it when no
/// bootstrap is running, e.g. at daemon start. Returns the directories removed.
pub fn remove_stale_staging(host: &Host<'_>) -> Result<Vec<PathBuf>, BootstrapError> {
    remove_stale_with_prefix(host, "bootstrap-")
}

/// Removes everything in the staging directory: what bootstraps, builds and promotions that did
/// not finish left (their trees, the guest binaries they staged), unmounting first. Call it
/// only when none of them runs, at daemon start. Returns what was removed.
pub fn remove_all_staging(host: &Host<'_>) -> Result<Vec<PathBuf>, BootstrapError> {
    remove_stale_with_prefix(host, "")
}

/// Removes every staging directory whose name starts with `prefix`.
pub(crate) fn remove_stale_with_prefix(
    host: &Host<'_>,
    prefix: &str,
) -> Result<Vec<PathBuf>, BootstrapError> {
    let entries = match std::fs::read_dir(&host.staging_parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BootstrapError::Io {
                what: "read",
                path: host.staging_parent.clone(),
                source,
            });
        }
    };
    let mut stale: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    stale.sort();
    for dir in &stale {
        remove_staging(host, dir)?;
    }
    Ok(stale)
}

/// Unmounts anything left mounted under `staging` (debootstrap mounts `/proc` and `/sys` in
/// the target while it works), deepest first, then removes the tree without crossing into
/// any other filesystem.
pub(crate) fn remove_staging(host: &Host<'_>, staging: &Path) -> Result<(), BootstrapError> {
    if !staging.exists() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string(&host.mounts_file).unwrap_or_default();
    let mut leftovers: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| Path::new(m).starts_with(staging))
        .collect();
    leftovers.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in leftovers {
        host.runner
            .run(&host.privileged("umount", ["-l", mount]))
            .map_err(|source| BootstrapError::Command {
                step: "unmounting a leftover in the staging directory",
                source,
            })?;
    }
    host.runner
        .run(&host.privileged(
            "rm",
            [
                "-rf".to_owned(),
                "--one-file-system".to_owned(),
                "--".to_owned(),
                staging.display().to_string(),
            ],
        ))
        .map_err(|source| BootstrapError::Command {
            step: "removing the staging directory",
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests;

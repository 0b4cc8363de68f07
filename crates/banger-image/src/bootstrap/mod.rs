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

pub mod debian;
pub mod guest;

use std::io;
use std::path::{Path, PathBuf};

use banger_api::{
    ApiError, ErrorCode, Image, ImageFiles, ImageManifest, ImageSource, ServiceCheck, Timestamp,
};
use banger_host::{CommandRunner, CommandSpec, Privilege, RunError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::initramfs::{self, InitramfsCompression, InitramfsError};
use crate::kernel::{self, KernelError};
use crate::register::{INITRD_FILE, KERNEL_FILE, MANIFEST_FILE, ROOTFS_FILE, Reporter};
use crate::vmdisk::{self, VmDiskError};

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

impl From<BootstrapError> for ApiError {
    fn from(e: BootstrapError) -> ApiError {
        let hint = e.hint();
        let error = match &e {
            BootstrapError::Cancelled => ApiError::new(ErrorCode::Cancelled, e.to_string()),
            BootstrapError::Exists { .. } => {
                ApiError::new(ErrorCode::AlreadyExists, crate::error_chain(&e))
            }
            BootstrapError::Command {
                source: RunError::NotFound { .. },
                ..
            } => ApiError::new(ErrorCode::Unavailable, crate::error_chain(&e)),
            _ => ApiError::internal(crate::error_chain(&e)),
        };
        match hint {
            Some(h) => error.with_hint(h),
            None => error,
        }
    }
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

/// Where the staged root came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootSource {
    Downloaded,
    PackagesCached,
    RootCached,
}

/// The concrete kernel package.
#[derive(Debug, Clone)]
struct KernelPackage {
    name: String,
    version: String,
}

struct Run<'a> {
    id: &'a str,
    spec: &'a BootstrapSpec,
    host: &'a Host<'a>,
    image_dir: &'a Path,
    staging: &'a Path,
    reporter: &'a dyn Reporter,
}

impl Run<'_> {
    fn begin(&self, stage: &str) -> Result<(), BootstrapError> {
        if self.reporter.cancelled() {
            return Err(BootstrapError::Cancelled);
        }
        self.reporter.begin(stage);
        Ok(())
    }

    /// Runs one forward step. A cancel request stops it while it runs (debootstrap can take
    /// minutes): the command's processes are terminated and the usual rollback follows.
    fn run(&self, step: &'static str, cmd: CommandSpec) -> Result<String, BootstrapError> {
        run_step(self.host, &|| self.reporter.cancelled(), step, cmd)
    }

    fn stages(&mut self) -> Result<Image, BootstrapError> {
        let [
            s_resolve,
            s_download,
            s_debootstrap,
            s_clean,
            s_configure,
            s_kernel,
            s_initramfs,
            s_rootfs,
            s_seed,
            s_manifest,
        ] = STAGES;

        self.begin(s_resolve)?;
        let package = self.resolve_kernel()?;
        self.reporter.done(
            s_resolve,
            Some(format!("{} {}", package.name, package.version)),
        );

        self.begin(s_download)?;
        let (deb, kernel_cached) = self.download_kernel(&package)?;
        self.reporter
            .done(s_download, Some(cached_note(kernel_cached)));

        self.begin(s_debootstrap)?;
        let debootstrap_version = self
            .run(
                "debootstrap --version",
                CommandSpec::new("debootstrap").arg("--version"),
            )?
            .trim()
            .to_owned();
        let (root, root_source) = self.root()?;
        self.reporter.done(
            s_debootstrap,
            Some(
                match root_source {
                    RootSource::RootCached => "installed root cached",
                    RootSource::PackagesCached => "packages cached",
                    RootSource::Downloaded => "downloaded",
                }
                .to_owned(),
            ),
        );

        self.begin(s_clean)?;
        let removed = self.clean_root(&root)?;
        self.reporter
            .done(s_clean, Some(format!("{removed} files removed")));

        self.begin(s_configure)?;
        let agent = self.configure_guest(&root)?;
        self.reporter.done(
            s_configure,
            Some(if agent {
                "busybox init, sshd, agent".to_owned()
            } else {
                "busybox init, sshd (no agent given)".to_owned()
            }),
        );

        self.begin(s_kernel)?;
        let (kernel_tree, release, vmlinux_bytes) = self.extract_kernel(&package, &deb)?;
        self.install_modules(&kernel_tree, &release, &root)?;
        self.reporter.done(
            s_kernel,
            Some(format!("{release}, modules in /lib/modules")),
        );

        self.begin(s_initramfs)?;
        let initrd = self.image_dir.join(INITRD_FILE);
        let report = initramfs::build_initramfs(
            &self.spec.init_binary,
            &kernel_tree.join("lib/modules").join(&release),
            initramfs::GUEST_MODULES,
            InitramfsCompression::Gzip,
            &initrd,
        )?;
        self.reporter.done(
            s_initramfs,
            Some(format!("{} modules", report.modules.len())),
        );

        self.begin(s_rootfs)?;
        let (rootfs, root_used_bytes) = self.make_rootfs(&root)?;
        self.reporter
            .done(s_rootfs, Some(vmdisk_size_note(root_used_bytes)));

        self.begin(s_seed)?;
        let seed = self.write_work_seed(&root)?;
        self.reporter.done(s_seed, None);

        self.begin(s_manifest)?;
        let status_path = root.join("var/lib/dpkg/status");
        let status =
            std::fs::read_to_string(&status_path).map_err(|source| BootstrapError::Io {
                what: "read",
                path: status_path,
                source,
            })?;
        let created_at = Timestamp::now();
        let files = ImageFiles {
            kernel: stored(&self.image_dir.join(KERNEL_FILE))?,
            initrd: Some(stored(&initrd)?),
            rootfs: stored(&rootfs)?,
        };
        let image_manifest = ImageManifest {
            publish: Vec::new(),
            name: self.spec.name.clone(),
            distro: Some(DISTRO.to_owned()),
            suite: Some(self.spec.suite.clone()),
            kernel_version: Some(release.clone()),
            packages: debian::installed_packages(&status),
            // The agent first: a start waits for each in this order.
            services: agent
                .then(|| ServiceCheck {
                    name: guest::AGENT_SERVICE.to_owned(),
                    port: guest::AGENT_PORT,
                    timeout_secs: None,
                    http: None,
                })
                .into_iter()
                .chain([ServiceCheck {
                    name: "ssh".to_owned(),
                    port: 22,
                    timeout_secs: None,
                    http: None,
                }])
                .collect(),
            init_features: crate::initramfs::init_features(&initrd).map_err(|e| {
                BootstrapError::Io {
                    what: "read",
                    path: initrd.clone(),
                    source: io::Error::other(e),
                }
            })?,
            created_from: format!(
                "debootstrap {} ({}, minbase) from {}, kernel {} {}",
                self.spec.suite,
                debootstrap_version,
                self.spec.mirror,
                package.name,
                package.version
            ),
            created_at,
            imported_from: None,
        };
        let manifest = BootstrapManifest {
            image: image_manifest.clone(),
            inputs: BootstrapInputs {
                mirror: self.spec.mirror.clone(),
                variant: "minbase".to_owned(),
                packages: PACKAGES.iter().map(|p| (*p).to_owned()).collect(),
                kernel_package: package.name.clone(),
                kernel_package_version: package.version.clone(),
                debootstrap_version,
                banger_version: env!("CARGO_PKG_VERSION").to_owned(),
                init_sha256: file_sha256(&self.spec.init_binary)?,
                guest_init: "busybox".to_owned(),
                agent,
                kernel_cached,
                packages_cached: root_source != RootSource::Downloaded,
                root_cached: root_source == RootSource::RootCached,
            },
            sizes: ImageSizes {
                vmlinux_bytes,
                initrd_bytes: report.bytes,
                rootfs_bytes: files.rootfs.bytes,
                rootfs_allocated_bytes: files.rootfs.allocated_bytes,
                root_used_bytes,
            },
            work_seed: WorkSeed {
                dir: WORK_SEED_DIR.to_owned(),
                fingerprint: seed,
            },
            initramfs_modules: report.modules,
        };
        write_manifest(self.image_dir, &manifest)?;
        self.reporter.done(s_manifest, None);
        if self.reporter.cancelled() {
            return Err(BootstrapError::Cancelled);
        }
        Ok(Image {
            id: self.id.to_owned(),
            name: self.spec.name.clone(),
            source: ImageSource::Bootstrapped,
            files,
            manifest: image_manifest,
            created_at,
            retired: None,
        })
    }

    fn resolve_kernel(&self) -> Result<KernelPackage, BootstrapError> {
        let depends = self.run(
            "resolving the kernel package",
            CommandSpec::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]),
        )?;
        let name = debian::kernel_package_from_depends(&depends)
            .ok_or(BootstrapError::NoKernelPackage { output: depends })?;
        let show = self.run(
            "resolving the kernel package",
            CommandSpec::new("apt-cache").args(["show", "--no-all-versions", &name]),
        )?;
        let version = debian::version_from_show(&show)
            .ok_or(BootstrapError::NoKernelPackage { output: show })?;
        Ok(KernelPackage { name, version })
    }

    /// The cached `.deb` of `package`, downloaded first when missing. Returns whether it was
    /// cached.
    fn download_kernel(&self, package: &KernelPackage) -> Result<(PathBuf, bool), BootstrapError> {
        let dir = self.host.cache_dir.join("kernel");
        std::fs::create_dir_all(&dir).map_err(|source| BootstrapError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let deb = dir.join(debian::deb_file_name(&package.name, &package.version, ARCH));
        if deb.is_file() {
            return Ok((deb, true));
        }
        // A directory of its own, so a concurrent or interrupted download never leaves a
        // partial file under the final name.
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&dir)
            .map_err(|source| BootstrapError::Io {
                what: "create a download directory in",
                path: dir.clone(),
                source,
            })?;
        // apt-get download writes into its working directory.
        self.run(
            "downloading the kernel package",
            CommandSpec::new("sh").args([
                "-c".to_owned(),
                r#"cd "$1" && exec apt-get download -q "$2""#.to_owned(),
                "sh".to_owned(),
                tmp.path().display().to_string(),
                format!("{}={}", package.name, package.version),
            ]),
        )?;
        let got = std::fs::read_dir(tmp.path())
            .map_err(|source| BootstrapError::Io {
                what: "read",
                path: tmp.path().to_owned(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| BootstrapError::Io {
                what: "find the downloaded package in",
                path: tmp.path().to_owned(),
                source: io::Error::new(io::ErrorKind::NotFound, "apt-get download left no .deb"),
            })?;
        std::fs::rename(&got, &deb).map_err(|source| BootstrapError::Io {
            what: "move the downloaded package to",
            path: deb.clone(),
            source,
        })?;
        Ok((deb, false))
    }

    fn debootstrap_args(&self, tarball: &str, unpack: bool, target: &Path) -> Vec<String> {
        vec![
            "--variant=minbase".to_owned(),
            format!("--arch={ARCH}"),
            format!("--include={}", PACKAGES.join(",")),
            if unpack {
                format!("--unpack-tarball={tarball}")
            } else {
                format!("--make-tarball={tarball}")
            },
            self.spec.suite.clone(),
            target.display().to_string(),
            self.spec.mirror.clone(),
        ]
    }

    /// Installs the root into `<staging>/root`. The fastest source wins: the cached installed
    /// root (a tar of a previous debootstrap of the same inputs, taken before banger changed
    /// anything), else the cached package tarball (`--unpack-tarball`), else the mirror
    /// (`--make-tarball` first, then the same). After a debootstrap the installed root is
    /// cached for next time; failing to cache it only costs speed, so it is logged, not fatal.
    fn root(&self) -> Result<(PathBuf, RootSource), BootstrapError> {
        let dir = self.host.cache_dir.join("rootfs");
        let cached_root = dir.join(format!(
            "{}-{ARCH}-{}.tar",
            self.spec.suite,
            self.spec.cache_key()
        ));
        let root = self.staging.join("root");
        if cached_root.is_file() {
            std::fs::create_dir(&root).map_err(|source| BootstrapError::Io {
                what: "create",
                path: root.clone(),
                source,
            })?;
            self.run(
                "unpacking the cached root filesystem",
                self.host.privileged(
                    "tar",
                    [
                        "-C".to_owned(),
                        root.display().to_string(),
                        "--numeric-owner".to_owned(),
                        "--xattrs".to_owned(),
                        "-xpf".to_owned(),
                        cached_root.display().to_string(),
                    ],
                ),
            )?;
            return Ok((root, RootSource::RootCached));
        }
        let packages_cached = self.debootstrap(&root)?;
        if self.reporter.cancelled() {
            return Err(BootstrapError::Cancelled);
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot cache the installed root");
        } else {
            let partial = dir.join(format!(
                ".{}-{}.partial.tar",
                self.spec.cache_key(),
                self.id
            ));
            let cached = self
                .run(
                    "caching the installed root filesystem",
                    self.host.privileged(
                        "tar",
                        [
                            "-C".to_owned(),
                            root.display().to_string(),
                            "--numeric-owner".to_owned(),
                            "--xattrs".to_owned(),
                            "--one-file-system".to_owned(),
                            "-cpf".to_owned(),
                            partial.display().to_string(),
                            ".".to_owned(),
                        ],
                    ),
                )
                .and_then(|_| {
                    std::fs::rename(&partial, &cached_root).map_err(|source| BootstrapError::Io {
                        what: "move the root tarball to",
                        path: cached_root.clone(),
                        source,
                    })
                });
            if let Err(e) = cached {
                tracing::warn!(error = %crate::error_chain(&e), "cannot cache the installed root; the next bootstrap installs the packages again");
                if let Err(rm) = std::fs::remove_file(&partial)
                    && rm.kind() != io::ErrorKind::NotFound
                {
                    tracing::error!(file = %partial.display(), error = %rm, "cannot remove a partial root tarball");
                }
            }
        }
        Ok((
            root,
            if packages_cached {
                RootSource::PackagesCached
            } else {
                RootSource::Downloaded
            },
        ))
    }

    /// debootstraps into `root` from the cached package tarball, making the tarball first
    /// when it is missing. Returns whether the tarball was cached.
    fn debootstrap(&self, root: &Path) -> Result<bool, BootstrapError> {
        let dir = self.host.cache_dir.join("debootstrap");
        std::fs::create_dir_all(&dir).map_err(|source| BootstrapError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let tarball = dir.join(format!(
            "{}-{ARCH}-{}.tgz",
            self.spec.suite,
            self.spec.cache_key()
        ));
        let cached = tarball.is_file();
        if !cached {
            // debootstrap wants the name to end in .tgz; a per-bootstrap name keeps two
            // bootstraps of the same inputs from writing one file.
            let partial = dir.join(format!(
                ".{}-{}.partial.tgz",
                self.spec.cache_key(),
                self.id
            ));
            let made = self
                .run(
                    "downloading the packages (debootstrap --make-tarball)",
                    self.host.privileged(
                        "debootstrap",
                        self.debootstrap_args(
                            &partial.display().to_string(),
                            false,
                            &self.staging.join("download"),
                        ),
                    ),
                )
                .and_then(|_| {
                    std::fs::rename(&partial, &tarball).map_err(|source| BootstrapError::Io {
                        what: "move the package tarball to",
                        path: tarball.clone(),
                        source,
                    })
                });
            if let Err(e) = made {
                if let Err(rm) = std::fs::remove_file(&partial)
                    && rm.kind() != io::ErrorKind::NotFound
                {
                    tracing::error!(file = %partial.display(), error = %rm, "cannot remove a partial package tarball");
                }
                return Err(e);
            }
            if self.reporter.cancelled() {
                return Err(BootstrapError::Cancelled);
            }
        }
        self.run(
            "installing the root filesystem (debootstrap)",
            self.host.privileged(
                "debootstrap",
                self.debootstrap_args(&tarball.display().to_string(), true, root),
            ),
        )?;
        Ok(cached)
    }

    fn clean_root(&self, root: &Path) -> Result<usize, BootstrapError> {
        clean_root(self.host, &|| self.reporter.cancelled(), root)
    }

    /// Copies banger's guest files into the root, then installs the agent when given.
    fn configure_guest(&self, root: &Path) -> Result<bool, BootstrapError> {
        let staged = self.staging.join("guest");
        let merged_usr = std::fs::symlink_metadata(root.join("sbin")).is_ok_and(|m| m.is_symlink());
        guest::stage(&staged, merged_usr).map_err(|source| BootstrapError::Io {
            what: "stage the guest files in",
            path: staged.clone(),
            source,
        })?;
        self.run(
            "installing banger's guest files",
            self.host.privileged(
                "cp",
                [
                    "-R".to_owned(),
                    "--preserve=mode".to_owned(),
                    "--remove-destination".to_owned(),
                    "--".to_owned(),
                    format!("{}/.", staged.display()),
                    format!("{}/", root.display()),
                ],
            ),
        )?;
        Ok(guest::install_agent(
            self.host.runner,
            self.host.privilege,
            root,
            self.spec.agent_binary.as_deref(),
        )?)
    }

    /// Unpacks the kernel package and writes `vmlinux`; returns the unpacked tree, the
    /// kernel release and the vmlinux size.
    fn extract_kernel(
        &self,
        package: &KernelPackage,
        deb: &Path,
    ) -> Result<(PathBuf, String, u64), BootstrapError> {
        let tree = self.staging.join("kernel");
        self.run(
            "unpacking the kernel package",
            CommandSpec::new("dpkg-deb").args([
                "-x".to_owned(),
                deb.display().to_string(),
                tree.display().to_string(),
            ]),
        )?;
        let boot = tree.join("boot");
        let vmlinuz = std::fs::read_dir(&boot)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .ok_or_else(|| BootstrapError::NoVmlinuz {
                package: package.name.clone(),
            })?;
        let release = vmlinuz
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_start_matches("vmlinuz-")
                    .to_owned()
            })
            .unwrap_or_default();
        let extracted = kernel::extract_vmlinux(&vmlinuz, &self.image_dir.join(KERNEL_FILE))?;
        Ok((tree, release, extracted.bytes))
    }

    /// Copies the kernel's module tree into the root and indexes it there, so that the guest
    /// can load what its initramfs did not (tun, fuse, nf_tables, ...) with `modprobe`
    /// (BusyBox's, see [`guest::files`]). The index is made by the root's own BusyBox
    /// `depmod` inside the root, so it is in the format the guest's `modprobe` reads.
    fn install_modules(
        &self,
        kernel_tree: &Path,
        release: &str,
        root: &Path,
    ) -> Result<(), BootstrapError> {
        let modules = root.join("lib/modules");
        self.run(
            "installing the kernel's modules",
            self.host
                .privileged("mkdir", ["-p".to_owned(), modules.display().to_string()]),
        )?;
        self.run(
            "installing the kernel's modules",
            self.host.privileged(
                "cp",
                [
                    "-R".to_owned(),
                    "--preserve=mode,timestamps".to_owned(),
                    "--".to_owned(),
                    kernel_tree
                        .join("lib/modules")
                        .join(release)
                        .display()
                        .to_string(),
                    format!("{}/", modules.display()),
                ],
            ),
        )?;
        self.run(
            "indexing the kernel's modules (depmod)",
            self.host.privileged(
                "chroot",
                [
                    root.display().to_string(),
                    "/bin/busybox".to_owned(),
                    "depmod".to_owned(),
                    release.to_owned(),
                ],
            ),
        )?;
        Ok(())
    }

    fn make_rootfs(&self, root: &Path) -> Result<(PathBuf, u64), BootstrapError> {
        let rootfs = self.image_dir.join(ROOTFS_FILE);
        let used = make_rootfs(self.host, &|| self.reporter.cancelled(), root, &rootfs)?;
        Ok((rootfs, used))
    }

    /// The work seed: root's shell start-up files (Debian's, from base-files), in a
    /// directory the image owns. Returns its fingerprint.
    fn write_work_seed(&self, root: &Path) -> Result<String, BootstrapError> {
        use std::os::unix::fs::PermissionsExt;
        let seed = self.image_dir.join(WORK_SEED_DIR);
        let io_error = |what, path: &Path| {
            let path = path.to_owned();
            move |source| BootstrapError::Io { what, path, source }
        };
        std::fs::create_dir(&seed).map_err(io_error("create", &seed))?;
        std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error("set the mode of", &seed))?;
        for (name, sources) in [
            (
                ".bashrc",
                ["usr/share/base-files/dot.bashrc", "etc/skel/.bashrc"],
            ),
            (
                ".profile",
                ["usr/share/base-files/dot.profile", "etc/skel/.profile"],
            ),
        ] {
            let Some(contents) = sources
                .iter()
                .find_map(|s| std::fs::read(root.join(s)).ok())
            else {
                continue;
            };
            let dst = seed.join(name);
            std::fs::write(&dst, contents).map_err(io_error("write", &dst))?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644))
                .map_err(io_error("set the mode of", &dst))?;
        }
        Ok(vmdisk::fingerprint(&seed)?)
    }
}

/// Runs one forward step of an image build, stopped when `cancelled` says so while it runs
/// (the command's processes are terminated).
pub(crate) fn run_step(
    host: &Host<'_>,
    cancelled: &dyn Fn() -> bool,
    step: &'static str,
    cmd: CommandSpec,
) -> Result<String, BootstrapError> {
    match host.runner.run_cancellable(&cmd, cancelled) {
        Ok(output) => Ok(output.stdout_lossy()),
        Err(RunError::Cancelled { .. }) => Err(BootstrapError::Cancelled),
        Err(source) => Err(BootstrapError::Command { step, source }),
    }
}

/// Removes from a staged root what must not be shared by every VM of an image or is dead
/// weight: SSH host keys (each VM brings its own), apt's package lists and caches, install
/// logs. Returns how many entries were removed.
pub(crate) fn clean_root(
    host: &Host<'_>,
    cancelled: &dyn Fn() -> bool,
    root: &Path,
) -> Result<usize, BootstrapError> {
    let mut doomed = Vec::new();
    let mut entries = |dir: &str, keep: &dyn Fn(&str) -> bool| {
        let Ok(read) = std::fs::read_dir(root.join(dir)) else {
            return;
        };
        let mut names: Vec<String> = read
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| keep(n))
            .collect();
        names.sort();
        doomed.extend(names.into_iter().map(|n| root.join(dir).join(n)));
    };
    entries("etc/ssh", &|n| n.starts_with("ssh_host_"));
    entries("var/lib/apt/lists", &|n| n != "partial" && n != "lock");
    entries("var/cache/apt", &|n| n.ends_with(".bin"));
    entries("var/cache/apt/archives", &|n| n.ends_with(".deb"));
    entries("var/log/apt", &|_| true);
    for file in [
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/bootstrap.log",
        "var/lib/dbus/machine-id",
    ] {
        if std::fs::symlink_metadata(root.join(file)).is_ok() {
            doomed.push(root.join(file));
        }
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    let mut args = vec![
        "-rf".to_owned(),
        "--one-file-system".to_owned(),
        "--".to_owned(),
    ];
    args.extend(doomed.iter().map(|p| p.display().to_string()));
    run_step(
        host,
        cancelled,
        "cleaning up the root filesystem",
        host.privileged("rm", args),
    )?;
    Ok(doomed.len())
}

/// Makes the image root filesystem `rootfs` (which must not exist) from the staged `root`:
/// sized from `du` plus a quarter and 256 MiB of headroom (the base is read-only; the
/// headroom is for inodes, metadata and derived images), one inode per 8 KiB, no reserved
/// blocks, `mkfs.ext4 -d` (no loop device, no mount). Returns the root's size.
pub(crate) fn make_rootfs(
    host: &Host<'_>,
    cancelled: &dyn Fn() -> bool,
    root: &Path,
    rootfs: &Path,
) -> Result<u64, BootstrapError> {
    let du = run_step(
        host,
        cancelled,
        "measuring the root filesystem",
        host.privileged(
            "du",
            [
                "-s".to_owned(),
                "-x".to_owned(),
                "-B1".to_owned(),
                root.display().to_string(),
            ],
        ),
    )?;
    let used = debian::du_total(&du).ok_or_else(|| BootstrapError::Io {
        what: "measure",
        path: root.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, format!("du printed {du:?}")),
    })?;
    let size = rootfs_size(used);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(rootfs)
        .map_err(|source| BootstrapError::Io {
            what: "create",
            path: rootfs.to_owned(),
            source,
        })?;
    file.set_len(size).map_err(|source| BootstrapError::Io {
        what: "size",
        path: rootfs.to_owned(),
        source,
    })?;
    drop(file);
    run_step(
        host,
        cancelled,
        "making rootfs.ext4 (mkfs.ext4 -d)",
        host.privileged(
            "mkfs.ext4",
            [
                "-q".to_owned(),
                "-F".to_owned(),
                "-L".to_owned(),
                ROOTFS_LABEL.to_owned(),
                "-m".to_owned(),
                "0".to_owned(),
                "-i".to_owned(),
                "8192".to_owned(),
                "-d".to_owned(),
                root.display().to_string(),
                "-E".to_owned(),
                "root_owner=0:0".to_owned(),
                rootfs.display().to_string(),
            ],
        ),
    )?;
    crate::format::check_rootfs(rootfs)?;
    Ok(used)
}

/// Writes `manifest` as the image directory's `manifest.json`.
pub(crate) fn write_manifest(
    image_dir: &Path,
    manifest: &impl Serialize,
) -> Result<(), BootstrapError> {
    let path = image_dir.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| BootstrapError::Io {
        what: "encode the manifest for",
        path: path.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    std::fs::write(&path, json).map_err(|source| BootstrapError::Io {
        what: "write",
        path,
        source,
    })
}

/// The size of `rootfs.ext4` for a root of `used` bytes: a quarter more plus 256 MiB,
/// rounded up to 64 MiB.
pub fn rootfs_size(used: u64) -> u64 {
    let want = used + used / 4 + 256 * MIB;
    want.div_ceil(64 * MIB) * 64 * MIB
}

fn cached_note(cached: bool) -> String {
    if cached { "cached" } else { "downloaded" }.to_owned()
}

fn vmdisk_size_note(used: u64) -> String {
    format!(
        "{} of files, {} image",
        banger_api::validate::format_size(used),
        banger_api::validate::format_size(rootfs_size(used))
    )
}

fn file_sha256(path: &Path) -> Result<String, BootstrapError> {
    let bytes = std::fs::read(path).map_err(|source| BootstrapError::Io {
        what: "read",
        path: path.to_owned(),
        source,
    })?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// An image file as the store records it.
pub(crate) fn stored(path: &Path) -> Result<banger_api::ImageFile, BootstrapError> {
    let meta = std::fs::metadata(path).map_err(|source| BootstrapError::Io {
        what: "stat",
        path: path.to_owned(),
        source,
    })?;
    Ok(banger_api::ImageFile {
        path: path.display().to_string(),
        bytes: meta.len(),
        allocated_bytes: banger_host::disk::allocated_bytes(path).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests;

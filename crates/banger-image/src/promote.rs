//! A new image from a stopped VM: its image's root with the VM's overlay merged on top
//! (`banger image promote`, and the last part of `banger image build`).
//!
//! In order, each a named stage ([`STAGES`]):
//!
//! 1. *check disks*: the VM's disks are checked with `e2fsck -p`, which replays a journal a
//!    guest left unreplayed (BusyBox init syncs at power-off but does not unmount); nothing a
//!    mount of the VM would not do.
//! 2. *merge root*: in a mount namespace of its own (`unshare --mount`, so nothing stays
//!    mounted if banger dies midway, and loop devices go with their mounts), the image's
//!    root and the VM's overlay are mounted read-only and stacked by the kernel's overlayfs
//!    exactly as the guest saw them (whiteouts and opaque directories included), and the
//!    merged tree is copied into a staging directory (`cp -a`: owners, modes, links and
//!    extended attributes kept). What makes the VM *this* VM is taken out again
//!    ([`crate::vmdisk::PER_VM_FILES`]: its hostname, network, keys, agent token, machine
//!    id; the image's own versions come back), as are apt's lists and caches and install
//!    logs. With a work disk given, its contents are staged as the new work seed.
//! 3. *make rootfs*: `rootfs.ext4` from the staged root, as a bootstrap makes it (sized to
//!    what the files take: a promoted image is a shrunk one), then checked with `e2fsck -fn`.
//! 4. *write work seed*: the staged work disk, or the base image's own seed.
//! 5. *write manifest*: `manifest.json`, recording the base image and how the image was made.
//!
//! The kernel and initramfs are the base image's (copied, reflinked where the filesystem
//! allows). The staging directory is always removed; on failure or cancellation the image
//! directory is removed too.

use std::io;
use std::path::{Path, PathBuf};

use banger_api::{Image, ImageFiles, ImageManifest, ImageSource, ServiceCheck, Timestamp};
use serde::{Deserialize, Serialize};

use crate::bootstrap::{
    self, BootstrapError, Host, ImageSizes, WORK_SEED_DIR, WorkSeed, begin_stage, clean_root,
    debian, make_rootfs, run_step,
};
use crate::register::{INITRD_FILE, KERNEL_FILE, ROOTFS_FILE, Reporter};
use crate::vmdisk;

/// Stage names, in order, as an operation reports them.
pub const STAGES: [&str; 5] = [
    "check disks",
    "merge root",
    "make rootfs",
    "write work seed",
    "write manifest",
];

/// The staging directories' name prefix, under the host's staging parent.
pub const STAGING_PREFIX: &str = "promote-";

/// What the new image is made of.
#[derive(Debug, Clone)]
pub struct PromoteSources<'a> {
    /// The VM's image, and the directory holding its files.
    pub base: &'a Image,
    pub base_dir: &'a Path,
    /// The VM's overlay disk (`upper/` over the image's root).
    pub overlay: &'a Path,
    /// The VM's work disk, when its contents become the new image's work seed; otherwise
    /// the base image's seed is kept.
    pub work: Option<&'a Path>,
}

/// What the new image is, beyond its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteSpec {
    pub name: String,
    pub source: ImageSource,
    /// Human-readable origin for `image show`.
    pub created_from: String,
    /// Services the new image's VMs run beyond the base image's, in the order a start waits.
    pub services: Vec<ServiceCheck>,
    /// Guest ports its VMs publish by default (the base image's are kept).
    pub publish: Vec<u16>,
    /// How the image was made, recorded as is in the manifest (a build's recipe and inputs).
    pub recipe: Option<serde_json::Value>,
}

/// Where a derived image came from, in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedFrom {
    pub base_image: String,
    pub base_image_id: String,
    /// The base image's manifest time, to tell a rebuilt base from the one used.
    pub base_created_at: Timestamp,
    /// Whether the work seed came from the VM's work disk (else it is the base's).
    pub work_seed_from_vm: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<serde_json::Value>,
    pub banger_version: String,
}

/// `manifest.json` of a built or promoted image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedManifest {
    #[serde(flatten)]
    pub image: ImageManifest,
    pub derived_from: DerivedFrom,
    pub sizes: ImageSizes,
    pub work_seed: WorkSeed,
}

/// Makes image `id` in `image_dir` (which must not exist) from `sources`, and returns the
/// image to record. On error or cancellation neither `image_dir` nor the staging directory
/// remains.
pub fn promote(
    id: &str,
    sources: &PromoteSources<'_>,
    spec: &PromoteSpec,
    host: &Host<'_>,
    image_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Image, BootstrapError> {
    if image_dir.exists() {
        return Err(BootstrapError::Exists {
            path: image_dir.to_owned(),
        });
    }
    std::fs::create_dir_all(&host.staging_parent).map_err(|source| BootstrapError::Io {
        what: "create",
        path: host.staging_parent.clone(),
        source,
    })?;
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(&host.staging_parent)
        .map_err(|source| BootstrapError::Io {
            what: "create a staging directory in",
            path: host.staging_parent.clone(),
            source,
        })?
        .keep();
    let result = std::fs::create_dir(image_dir)
        .map_err(|source| BootstrapError::Io {
            what: "create",
            path: image_dir.to_owned(),
            source,
        })
        .and_then(|()| {
            Promotion {
                id,
                sources,
                spec,
                host,
                image_dir,
                staging: &staging,
                reporter,
            }
            .stages()
        });
    let cleaned = bootstrap::remove_staging(host, &staging);
    let result = result.and_then(|image| cleaned.map(|()| image));
    if result.is_err()
        && image_dir.exists()
        && let Err(e) = bootstrap::remove_staging(host, image_dir)
    {
        tracing::error!(dir = %image_dir.display(), error = %e, "cannot remove a half-made image");
    }
    result
}

/// Removes what promotions interrupted by a crash left under the staging parent.
pub fn remove_stale_staging(host: &Host<'_>) -> Result<Vec<PathBuf>, BootstrapError> {
    bootstrap::remove_stale_with_prefix(host, STAGING_PREFIX)
}

struct Promotion<'a> {
    id: &'a str,
    sources: &'a PromoteSources<'a>,
    spec: &'a PromoteSpec,
    host: &'a Host<'a>,
    image_dir: &'a Path,
    staging: &'a Path,
    reporter: &'a dyn Reporter,
}

/// The script that merges the root in a private mount namespace. Arguments: the image's
/// rootfs, the overlay disk, the work disk or an empty string, the staging directory, then
/// the per-VM paths to take out again.
const MERGE_SCRIPT: &str = r#"set -eu
base=$1 overlay=$2 work=$3 s=$4
shift 4
# Loop devices and overlayfs may be modules nothing loaded yet (banger's own guests, the lab,
# have neither until asked): without the loop module, mount -o loop fails with EPERM.
modprobe loop 2>/dev/null || true
modprobe overlay 2>/dev/null || true
mkdir -p "$s/lower" "$s/overlay" "$s/merged" "$s/root" "$s/seed" "$s/workmnt" "$s/empty"
mount -t ext4 -o ro,noload,loop "$base" "$s/lower"
mount -t ext4 -o ro,noload,loop "$overlay" "$s/overlay"
upper="$s/overlay/upper"
[ -d "$upper" ] || upper="$s/empty"
mount -t overlay -o "ro,lowerdir=$upper:$s/lower" banger-promote "$s/merged"
cp -a "$s/merged/." "$s/root/"
for p in "$@"; do
	rm -f "$s/root/$p"
	if [ -e "$s/lower/$p" ] || [ -L "$s/lower/$p" ]; then cp -a "$s/lower/$p" "$s/root/$p"; fi
done
rm -f "$s/root/etc/ssh/"ssh_host_*
for f in "$s/lower/etc/ssh/"ssh_host_*; do
	if [ -e "$f" ]; then cp -a "$f" "$s/root/etc/ssh/"; fi
done
find "$s/root/tmp" -mindepth 1 -delete 2>/dev/null || true
if [ -n "$work" ]; then
	mount -t ext4 -o ro,noload,loop "$work" "$s/workmnt"
	cp -a "$s/workmnt/." "$s/seed/"
	rm -rf "$s/seed/lost+found"
fi
"#;

impl Promotion<'_> {
    fn begin(&self, stage: &str) -> Result<(), BootstrapError> {
        begin_stage(self.reporter, stage)
    }

    fn run(
        &self,
        step: &'static str,
        cmd: banger_host::CommandSpec,
    ) -> Result<String, BootstrapError> {
        run_step(self.host, &|| self.reporter.cancelled(), step, cmd)
    }

    fn stages(&self) -> Result<Image, BootstrapError> {
        let [s_check, s_merge, s_rootfs, s_seed, s_manifest] = STAGES;
        let cancelled = || self.reporter.cancelled();

        self.begin(s_check)?;
        let mut disks = vec![self.sources.overlay];
        disks.extend(self.sources.work);
        for disk in &disks {
            // 0: clean; 1: fixed (a replayed journal); 2: fixed, reboot advised (of a mounted
            // root only). 4 and up: errors left.
            self.run(
                "checking the VM's disks (e2fsck -p)",
                self.host.privileged(
                    "sh",
                    [
                        "-c".to_owned(),
                        "e2fsck -p \"$1\" >&2; rc=$?; [ \"$rc\" -lt 4 ] || { echo \"e2fsck -p $1 exited with $rc: the disk has errors a preen does not fix\" >&2; exit 1; }".to_owned(),
                        "sh".to_owned(),
                        disk.display().to_string(),
                    ],
                ),
            )?;
        }
        self.reporter.done(s_check, None);

        self.begin(s_merge)?;
        let mut args = vec![
            "--mount".to_owned(),
            "--propagation".to_owned(),
            "private".to_owned(),
            "--".to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
            MERGE_SCRIPT.to_owned(),
            "sh".to_owned(),
            self.sources
                .base_dir
                .join(ROOTFS_FILE)
                .display()
                .to_string(),
            self.sources.overlay.display().to_string(),
            self.sources
                .work
                .map(|w| w.display().to_string())
                .unwrap_or_default(),
            self.staging.display().to_string(),
        ];
        args.extend(vmdisk::PER_VM_FILES.iter().map(|p| (*p).to_owned()));
        self.run(
            "merging the VM's overlay onto its image's root",
            self.host.privileged("unshare", args),
        )?;
        let root = self.staging.join("root");
        let removed = clean_root(self.host, &cancelled, &root)?;
        self.reporter.done(
            s_merge,
            Some(format!("{removed} cache and log entries removed")),
        );

        self.begin(s_rootfs)?;
        let rootfs = self.image_dir.join(ROOTFS_FILE);
        let root_used_bytes = make_rootfs(self.host, &cancelled, &root, &rootfs)?;
        // The new filesystem is checked as a whole before anything boots from it.
        self.run(
            "checking the new rootfs.ext4 (e2fsck -fn)",
            banger_host::ext4::E2fsck::check(&rootfs).command(),
        )?;
        let status_path = root.join("var/lib/dpkg/status");
        let packages = std::fs::read_to_string(&status_path)
            .map(|status| debian::installed_packages(&status))
            .unwrap_or_default();
        self.reporter.done(
            s_rootfs,
            Some(banger_api::validate::format_size(root_used_bytes) + " of files"),
        );

        self.begin(s_seed)?;
        let seed = self.image_dir.join(WORK_SEED_DIR);
        let seed_from = match self.sources.work {
            Some(_) => Some(self.staging.join("seed")),
            None => Some(self.sources.base_dir.join(WORK_SEED_DIR)).filter(|p| p.is_dir()),
        };
        if let Some(from) = &seed_from {
            self.run(
                "writing the work seed",
                self.host.privileged(
                    "cp",
                    [
                        "-a".to_owned(),
                        "--".to_owned(),
                        from.display().to_string(),
                        seed.display().to_string(),
                    ],
                ),
            )?;
            // The seed directory is the image's; what it holds keeps its owners.
            self.run(
                "writing the work seed",
                self.host
                    .privileged("chmod", ["0700".to_owned(), seed.display().to_string()]),
            )?;
            if self.host.privilege != banger_host::network::Privilege::Root {
                // A daemon that is not root reads the seed (its fingerprint, the work disks
                // made from it), so it gets the files; a work disk gives what this user owns
                // to root again, as the guest had it (files of other guest users become
                // root's).
                let owner = format!(
                    "{}:{}",
                    rustix::process::getuid().as_raw(),
                    rustix::process::getgid().as_raw()
                );
                self.run(
                    "writing the work seed",
                    self.host.privileged(
                        "chown",
                        [
                            "-R".to_owned(),
                            "--".to_owned(),
                            owner,
                            seed.display().to_string(),
                        ],
                    ),
                )?;
            }
        }
        let fingerprint = vmdisk::seed_fingerprint(seed.is_dir().then_some(seed.as_path()))?;
        self.reporter.done(s_seed, None);

        self.begin(s_manifest)?;
        let copy =
            |name: &str| -> Result<(), BootstrapError> {
                let from = self.sources.base_dir.join(name);
                let to = self.image_dir.join(name);
                banger_host::disk::copy_file(&from, &to, &mut |_, _| {
                    std::ops::ControlFlow::Continue(())
                })
                .map(|_| ())
                .map_err(|e| BootstrapError::Io {
                    what: "copy the base image's file to",
                    path: to,
                    source: io::Error::other(e),
                })
            };
        copy(KERNEL_FILE)?;
        let has_initrd = self.sources.base.files.initrd.is_some();
        if has_initrd {
            copy(INITRD_FILE)?;
        }
        let created_at = Timestamp::now();
        let files = ImageFiles {
            kernel: bootstrap::stored(&self.image_dir.join(KERNEL_FILE))?,
            initrd: has_initrd
                .then(|| bootstrap::stored(&self.image_dir.join(INITRD_FILE)))
                .transpose()?,
            rootfs: bootstrap::stored(&rootfs)?,
        };
        let base = &self.sources.base.manifest;
        let mut services = base.services.clone();
        for service in &self.spec.services {
            services.retain(|s| s.name != service.name);
            services.push(service.clone());
        }
        let mut publish = base.publish.clone();
        for port in &self.spec.publish {
            if !publish.contains(port) {
                publish.push(*port);
            }
        }
        let image_manifest = ImageManifest {
            name: self.spec.name.clone(),
            distro: base.distro.clone(),
            suite: base.suite.clone(),
            kernel_version: base.kernel_version.clone(),
            packages: if packages.is_empty() {
                base.packages.clone()
            } else {
                packages
            },
            services,
            publish,
            init_features: base.init_features.clone(),
            created_from: self.spec.created_from.clone(),
            created_at,
            imported_from: None,
        };
        let manifest = DerivedManifest {
            image: image_manifest.clone(),
            derived_from: DerivedFrom {
                base_image: self.sources.base.name.clone(),
                base_image_id: self.sources.base.id.clone(),
                base_created_at: self.sources.base.created_at,
                work_seed_from_vm: self.sources.work.is_some(),
                recipe: self.spec.recipe.clone(),
                banger_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            sizes: ImageSizes {
                vmlinux_bytes: files.kernel.bytes,
                initrd_bytes: files.initrd.as_ref().map_or(0, |f| f.bytes),
                rootfs_bytes: files.rootfs.bytes,
                rootfs_allocated_bytes: files.rootfs.allocated_bytes,
                root_used_bytes,
            },
            work_seed: WorkSeed {
                dir: WORK_SEED_DIR.to_owned(),
                fingerprint,
            },
        };
        bootstrap::write_manifest(self.image_dir, &manifest)?;
        self.reporter.done(s_manifest, None);
        if self.reporter.cancelled() {
            return Err(BootstrapError::Cancelled);
        }
        Ok(Image {
            id: self.id.to_owned(),
            name: self.spec.name.clone(),
            source: self.spec.source,
            files,
            manifest: image_manifest,
            created_at,
            retired: None,
        })
    }
}

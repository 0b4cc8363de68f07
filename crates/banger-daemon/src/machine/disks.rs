//! A VM's own files, made when it is created: the config drive (its hostname, network
//! configuration, banger's SSH key, its own SSH host key and its agent token, which the guest
//! init copies into the root), the overlay disk (the writable layer of its root, blank, from
//! the [`pool`](super::pool)), the work disk mounted at `/root` (from the pool too), and the
//! host-side copies banger needs later (the host key's public half for an exact `known_hosts`
//! entry, the agent token). For an image whose init reads no config drive, those files are
//! written into an overlay disk made for the VM instead. `vm reset` swaps the overlay disk for
//! a blank one ([`reset_overlay`]).

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use banger_api::{ApiError, Image, Vm};
use banger_host::CommandRunner;
use banger_host::ext4::{E2fsck, Resize2fs};
use banger_image::vmdisk::{self, GuestNetwork, SshHostKey, VmFiles};

use super::pool::{DiskKind, DiskPool};
use super::sshkey;

/// Files in a VM's state directory.
pub const OVERLAY_DISK: &str = "overlay.ext4";
pub const WORK_DISK: &str = "work.ext4";
pub const CONSOLE_LOG: &str = "console.log";
pub const VMM_LOG: &str = "vmm.log";
pub const METRICS: &str = "metrics.json";
pub const HOST_KEY_PUB: &str = "ssh_host_ed25519_key.pub";
pub const AGENT_TOKEN: &str = "agent-token";
/// The VM's config drive ([`banger_init::config_drive`]), when its image's init reads one.
pub const CONFIG_DRIVE: &str = "config.cpio";

/// The new overlay disk while `vm reset` makes it, beside the one it replaces.
pub const OVERLAY_RESET: &str = ".overlay.ext4.reset";

/// Where an image keeps the initial content of its VMs' work disks, when it has one.
pub const WORK_SEED_DIR: &str = "work-seed";

/// banger's own SSH key pair: the configured one, or `ssh/id_ed25519` in the state dir,
/// generated the first time a VM needs it. Returns the public key line.
pub fn banger_public_key(configured: Option<&Path>, state_dir: &Path) -> Result<String, ApiError> {
    // Concurrent creates must not both generate the key.
    static KEYGEN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = KEYGEN.lock().unwrap_or_else(|e| e.into_inner());
    let private = match configured {
        Some(path) => path.to_owned(),
        None => {
            let dir = state_dir.join("ssh");
            let path = dir.join("id_ed25519");
            if !path.exists() {
                make_banger_key(&dir, &path)?;
            }
            path
        }
    };
    let public = PathBuf::from(format!("{}.pub", private.display()));
    let line = fs::read_to_string(&public).map_err(|e| {
        ApiError::invalid(format!(
            "cannot read banger's SSH public key {}: {e}",
            public.display()
        ))
        .with_hint(match configured {
            Some(_) => "`ssh_key` in config.toml names a private key; its public half must be \
                        next to it with `.pub` appended (ssh-keygen -y -f KEY > KEY.pub)"
                .to_owned(),
            None => format!(
                "remove {} to have banger make a new key pair",
                private.display()
            ),
        })
    })?;
    Ok(line.trim().to_owned())
}

/// Writes a new key pair at `path` and `path.pub`: the public half first, so a private key
/// is never found without it; the private key under a temporary name renamed into place.
fn make_banger_key(dir: &Path, path: &Path) -> Result<(), ApiError> {
    let failed = |what: &Path, e: std::io::Error| {
        ApiError::internal(format!(
            "cannot make banger's SSH key {}: {e}",
            what.display()
        ))
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| failed(dir, e))?;
    let pair = sshkey::generate("banger");
    let public = PathBuf::from(format!("{}.pub", path.display()));
    fs::write(&public, format!("{}\n", pair.public_key)).map_err(|e| failed(&public, e))?;
    let partial = dir.join(".id_ed25519.new");
    let _ = fs::remove_file(&partial);
    private_file(&partial, &pair.private_key)
        .and_then(|()| {
            fs::rename(&partial, path).map_err(|e| {
                let _ = fs::remove_file(&partial);
                failed(path, e)
            })
        })
        .inspect_err(|_| {
            let _ = fs::remove_file(&public);
        })
}

/// The host's DNS servers a guest can reach: `/etc/resolv.conf`'s nameservers, without
/// loopback ones (a local resolver on the host is not the guest's).
pub fn host_dns() -> Vec<Ipv4Addr> {
    fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .take(3)
        .collect()
}

/// Writes `contents` to `path` with mode 0600.
fn private_file(path: &Path, contents: &str) -> Result<(), ApiError> {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", path.display())))
}

/// What a VM's files are made from.
pub struct VmFileSources<'a> {
    pub runner: &'a dyn CommandRunner,
    pub pool: &'a DiskPool,
    pub image: &'a Image,
    pub image_dir: &'a Path,
    /// banger's public key, for root's `authorized_keys`.
    pub authorized_key: &'a str,
    /// The nameservers and search domain of the VM's `/etc/resolv.conf`.
    pub resolver: crate::dns::GuestResolver,
    /// A directory holding the overlay and work disks to copy (a snapshot's), instead of
    /// blank ones from the pool.
    pub disks_from: Option<&'a Path>,
}

/// A VM's identity as its config drive carries it: a fresh SSH host key and agent token with
/// its name and network. Returns the files, the host key's public half and the token.
fn identity(
    vm: &Vm,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
    authorized_key: &str,
    resolver: &crate::dns::GuestResolver,
) -> (VmFiles, String, String) {
    let host_key = sshkey::generate(&format!("root@{}", vm.name));
    let token = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let public_key = host_key.public_key.clone();
    let files = VmFiles {
        hostname: vm.name.clone(),
        network: GuestNetwork {
            address,
            prefix_len: vm.network.prefix_len,
            gateway: Some(gateway),
            dns: resolver.nameservers.clone(),
            search: resolver.search.clone(),
            mac: Some(vm.network.mac.clone()),
        },
        authorized_keys: authorized_key.to_owned(),
        ssh_host_key: SshHostKey {
            algorithm: "ed25519".into(),
            private_key: host_key.private_key,
            public_key: host_key.public_key,
        },
        agent_token: token.clone(),
        extra: Vec::new(),
    };
    (files, public_key, token)
}

/// Gives VM `vm`, whose files are in `dir`, a new identity: a config drive with its current
/// name, a fresh SSH host key and agent token (and the host's copies of the key's public half
/// and of the token). Used when a ready VM of the warm pool becomes a user's VM; the running
/// guest is then told through its agent. Each file is written beside the old one and renamed
/// over it, so a failure leaves the old identity whole.
pub fn renew_identity(
    vm: &Vm,
    dir: &Path,
    authorized_key: &str,
    resolver: &crate::dns::GuestResolver,
) -> Result<(), ApiError> {
    let parse = |what: &str, value: &str| {
        value
            .parse::<Ipv4Addr>()
            .map_err(|_| ApiError::internal(format!("VM {} has {what} {value:?}", vm.name)))
    };
    let address = parse("IP", &vm.network.ip)?;
    let gateway = parse("gateway", &vm.network.gateway)?;
    let (files, host_key_pub, token) = identity(vm, address, gateway, authorized_key, resolver);
    let fresh = |name: &str| dir.join(format!(".{name}.new"));
    let written = (|| {
        vmdisk::write_config_drive(&files, &fresh(CONFIG_DRIVE)).map_err(|e| {
            ApiError::internal(format!(
                "cannot write VM {}'s config drive: {}",
                vm.name,
                banger_vmm::error_chain(&e)
            ))
        })?;
        private_file(&fresh(HOST_KEY_PUB), &host_key_pub)?;
        private_file(&fresh(AGENT_TOKEN), &token)?;
        for name in [CONFIG_DRIVE, HOST_KEY_PUB, AGENT_TOKEN] {
            fs::rename(fresh(name), dir.join(name)).map_err(|e| {
                ApiError::internal(format!("cannot replace {}: {e}", dir.join(name).display()))
            })?;
        }
        Ok(())
    })();
    for name in [CONFIG_DRIVE, HOST_KEY_PUB, AGENT_TOKEN] {
        let _ = fs::remove_file(fresh(name));
    }
    written
}

/// Makes everything in `dir` (which exists and is empty) that VM `vm` needs: its overlay and
/// work disks, its config drive when the image's init reads one, the host key's public half
/// and the agent token. Returns the work seed's fingerprint. On failure the caller removes
/// `dir`.
///
/// With a config drive the overlay disk is blank, so both disks can come from the pool; an
/// image whose init predates config drives gets its VM's files in the overlay disk itself,
/// made for it here.
pub fn make_vm_files(src: &VmFileSources<'_>, vm: &Vm, dir: &Path) -> Result<String, ApiError> {
    let address: Ipv4Addr =
        vm.network.ip.parse().map_err(|_| {
            ApiError::internal(format!("VM {} has IP {:?}", vm.name, vm.network.ip))
        })?;
    let gateway: Ipv4Addr = vm.network.gateway.parse().map_err(|_| {
        ApiError::internal(format!(
            "VM {} has gateway {:?}",
            vm.name, vm.network.gateway
        ))
    })?;
    let disk_error = |what: &str, e: vmdisk::VmDiskError| disk_error(what, &e);
    let (work_kind, fingerprint) = work_disk_kind(src.image, src.image_dir, vm.work_disk_bytes)
        .map_err(|e| disk_error("work disk", e))?;
    let with_config_drive = reads_config_drive(src.image);

    let (files, host_key_pub, token) =
        identity(vm, address, gateway, src.authorized_key, &src.resolver);

    let overlay = dir.join(OVERLAY_DISK);
    let work = dir.join(WORK_DISK);
    if let Some(from) = src.disks_from {
        // A restored VM: its disks are the snapshot's, its identity on its config drive.
        if !with_config_drive {
            return Err(ApiError::new(
                banger_api::ErrorCode::Unsupported,
                format!(
                    "image {}'s init reads no config drive, so a VM restored from a snapshot of \
                     it could not be given its own identity",
                    src.image.name
                ),
            ));
        }
        vmdisk::write_config_drive(&files, &dir.join(CONFIG_DRIVE))
            .map_err(|e| disk_error("config drive", e))?;
        for (file, to) in [(OVERLAY_DISK, &overlay), (WORK_DISK, &work)] {
            banger_host::disk::copy_file(&from.join(file), to, &mut |_, _| {
                std::ops::ControlFlow::Continue(())
            })
            .map_err(|e| {
                ApiError::internal(format!(
                    "cannot copy the snapshot's {file}: {}",
                    banger_vmm::error_chain(&e)
                ))
            })?;
        }
        private_file(&dir.join(HOST_KEY_PUB), &host_key_pub)?;
        private_file(&dir.join(AGENT_TOKEN), &token)?;
        return Ok(fingerprint);
    }
    let overlay_kind = DiskKind::Overlay {
        bytes: vm.disk_bytes,
    };
    let overlay_ready = if with_config_drive {
        vmdisk::write_config_drive(&files, &dir.join(CONFIG_DRIVE))
            .map_err(|e| disk_error("config drive", e))?;
        src.pool.take(&overlay_kind, &overlay)
    } else {
        false
    };
    let work_ready = src.pool.take(&work_kind, &work);
    // What the pool did not have is made now, the two disks alongside each other. Both finish
    // before this returns, whatever fails, so the caller's cleanup finds no writer left.
    let (work_made, overlay_made) = std::thread::scope(|scope| {
        let work_made = (!work_ready).then(|| {
            scope.spawn(|| {
                work_kind
                    .make(src.runner, &work)
                    .map_err(|e| disk_error("work disk", e))
            })
        });
        let overlay_made = if overlay_ready {
            Ok(())
        } else if with_config_drive {
            overlay_kind
                .make(src.runner, &overlay)
                .map_err(|e| disk_error("overlay disk", e))
        } else {
            vmdisk::build_overlay_disk(src.runner, dir, &files, &overlay, vm.disk_bytes)
                .map_err(|e| disk_error("overlay disk", e))
        };
        let work_made = work_made.map_or(Ok(()), |t| {
            t.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        (work_made, overlay_made)
    });
    // Replacements, now that this create's own mkfs runs (if any) are over.
    if with_config_drive {
        src.pool.want(&overlay_kind);
    }
    src.pool.want(&work_kind);
    overlay_made?;
    work_made?;
    private_file(&dir.join(HOST_KEY_PUB), &host_key_pub)?;
    private_file(&dir.join(AGENT_TOKEN), &token)?;
    Ok(fingerprint)
}

/// The error of a VM disk that could not be made: a size the state directory's filesystem
/// cannot hold is the request's to change (`vm create --disk 16T` on ext4, whose files stop
/// just short of 16 TiB); anything else is banger's or the host's.
fn disk_error(what: &str, e: &vmdisk::VmDiskError) -> ApiError {
    if let vmdisk::VmDiskError::Create { path, source } = e
        && source.kind() == std::io::ErrorKind::FileTooLarge
    {
        return ApiError::invalid(format!(
            "the VM's {what} is larger than a file can be on the filesystem of {}",
            path.parent().unwrap_or(path).display()
        ))
        .with_hint("choose a smaller size (ext4 holds files up to 16 TiB less 4 KiB)");
    }
    ApiError::internal(format!(
        "cannot make the VM's {what}: {}",
        banger_vmm::error_chain(e)
    ))
    .with_hint("`banger doctor` checks that e2fsprogs (mkfs.ext4, debugfs) is installed")
}

/// Gives the VM whose files are in `dir` a fresh root: a blank overlay disk of `bytes` (from the
/// pool when it has one) made beside the current one and renamed over it only once complete,
/// so a failure leaves the current one as it was and no partial disk behind. The config drive
/// stays: its marker lived in the old overlay, so the guest's init applies it again at the next
/// boot and the VM keeps its hostname, network, keys and token.
///
/// An image whose init reads no config drive keeps those files in the overlay itself; a blank
/// one would lose them, so such a VM is refused.
pub fn reset_overlay(
    runner: &dyn CommandRunner,
    pool: &DiskPool,
    image: &Image,
    dir: &Path,
    bytes: u64,
) -> Result<(), ApiError> {
    if !reads_config_drive(image) {
        return Err(ApiError::new(
            banger_api::ErrorCode::Unsupported,
            format!(
                "image {}'s init reads no config drive, so this VM's identity (hostname, \
                 network, keys) lives in its overlay disk; a blank one would lose it",
                image.name
            ),
        )
        .with_hint(
            "create a new VM from a newer image (`banger image bootstrap debian`); \
             `banger vm cp` copies files between them",
        ));
    }
    let overlay = dir.join(OVERLAY_DISK);
    if !overlay.exists() {
        return Err(ApiError::internal(format!(
            "{} is missing; the VM's files are incomplete",
            overlay.display()
        )));
    }
    let partial = dir.join(OVERLAY_RESET);
    // What a reset interrupted by a crash left.
    let _ = fs::remove_file(&partial);
    let kind = DiskKind::Overlay { bytes };
    let made = if pool.take(&kind, &partial) {
        Ok(())
    } else {
        kind.make(runner, &partial).map_err(|e| {
            ApiError::internal(format!(
                "cannot make a new overlay disk: {}",
                banger_vmm::error_chain(&e)
            ))
            .with_hint("`banger doctor` checks that e2fsprogs (mkfs.ext4) is installed")
        })
    };
    pool.want(&kind);
    made.and_then(|()| {
        fs::rename(&partial, &overlay)
            .map_err(|e| ApiError::internal(format!("cannot replace {}: {e}", overlay.display())))
    })
    .inspect_err(|_| {
        let _ = fs::remove_file(&partial);
    })
}

/// The kinds of disk a `vm create` that names no image and no sizes takes: kept ready from
/// the daemon's start. None while the default image does not exist.
pub fn default_disk_kinds(
    image: Option<&Image>,
    image_dir: &Path,
    disk_bytes: u64,
    work_disk_bytes: u64,
) -> Vec<DiskKind> {
    let Some(image) = image else {
        return Vec::new();
    };
    let mut kinds = Vec::new();
    if reads_config_drive(image) {
        kinds.push(DiskKind::Overlay { bytes: disk_bytes });
    }
    match work_disk_kind(image, image_dir, work_disk_bytes) {
        Ok((kind, _)) => kinds.push(kind),
        Err(e) => {
            tracing::warn!(image = %image.name, error = %e, "cannot read the image's work seed")
        }
    }
    kinds
}

/// Whether the image's init applies a config drive (so its VMs' overlay disks can be blank).
fn reads_config_drive(image: &Image) -> bool {
    image
        .manifest
        .init_features
        .iter()
        .any(|f| f == banger_init::FEATURE_CONFIG_DRIVE)
}

/// The kind of work disk a VM of `image` (files in `image_dir`) with `bytes` of work disk gets,
/// and the fingerprint of the seed it holds.
fn work_disk_kind(
    image: &Image,
    image_dir: &Path,
    bytes: u64,
) -> Result<(DiskKind, String), vmdisk::VmDiskError> {
    let seed = image_dir.join(WORK_SEED_DIR);
    let seed = seed.is_dir().then_some(seed);
    let fingerprint = vmdisk::seed_fingerprint(seed.as_deref())?;
    Ok((
        DiskKind::Work {
            image_id: image.id.clone(),
            seed,
            fingerprint: fingerprint.clone(),
            bytes,
        },
        fingerprint,
    ))
}

/// Creates a VM's state directory (mode 0700, must not exist).
pub fn make_vm_dir(dir: &Path) -> Result<(), ApiError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))
}

/// The file in a VM's directory while its create makes its files: a directory that still
/// has it after a crash holds a VM that was never made, which the next daemon removes with
/// its record (`machine::reconcile`).
pub const MAKING: &str = ".making";

/// Marks the VM directory `dir` as being made.
pub fn mark_making(dir: &Path) -> Result<(), ApiError> {
    fs::write(dir.join(MAKING), b"").map_err(|e| {
        ApiError::internal(format!("cannot write {}: {e}", dir.join(MAKING).display()))
    })
}

/// Marks the VM directory `dir` as complete.
pub fn made(dir: &Path) -> Result<(), ApiError> {
    match fs::remove_file(dir.join(MAKING)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ApiError::internal(format!(
            "cannot remove {}: {e}",
            dir.join(MAKING).display()
        ))),
    }
}

/// Removes a directory tree, logging (not failing) when that is impossible.
pub fn remove_tree(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!(dir = %dir.display(), error = %e, "cannot remove a VM's files"),
    }
}

/// Grows the work disk at `path` to `bytes`: checks the filesystem (`e2fsck -f -p`; exit 1
/// means it fixed something, which is fine), extends the file (sparse) and grows the filesystem
/// with `resize2fs`. Growing never moves data: when `resize2fs` fails the file is merely larger
/// than its filesystem, which the next attempt fixes, so nothing is rolled back.
pub fn grow_work_disk(runner: &dyn CommandRunner, path: &Path, bytes: u64) -> Result<(), ApiError> {
    let tool_error = |what: &str, e: &banger_host::RunError| {
        ApiError::internal(format!(
            "cannot {what} the work disk {}: {}",
            path.display(),
            banger_vmm::error_chain(e)
        ))
        .with_hint("`banger doctor` checks that e2fsprogs (e2fsck, resize2fs) is installed")
    };
    match runner.run(&E2fsck::preen(path).command()) {
        Ok(_) => {}
        Err(banger_host::RunError::Failed { code: Some(1), .. }) => {}
        Err(e) => return Err(tool_error("check", &e)),
    }
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(bytes))
        .map_err(|e| ApiError::internal(format!("cannot extend {}: {e}", path.display())))?;
    runner
        .run(&Resize2fs::fill(path).command())
        .map_err(|e| tool_error("grow", &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_disk_larger_than_the_filesystem_holds_is_the_requests_error() {
        let too_large = vmdisk::VmDiskError::Create {
            path: "/state/vms/x/overlay.ext4".into(),
            source: std::io::Error::from_raw_os_error(27), // EFBIG
        };
        let error = super::disk_error("overlay disk", &too_large);
        assert_eq!(error.code, banger_api::ErrorCode::InvalidInput);
        assert!(error.message.contains("/state/vms/x"), "{}", error.message);
        assert!(error.hint.unwrap().contains("smaller size"));

        let other = vmdisk::VmDiskError::Create {
            path: "/state/vms/x/overlay.ext4".into(),
            source: std::io::Error::from_raw_os_error(13), // EACCES
        };
        assert_eq!(
            super::disk_error("overlay disk", &other).code,
            banger_api::ErrorCode::Internal
        );
    }

    use super::*;
    use banger_api::{ImageFile, ImageFiles, ImageManifest, ImageSource, Timestamp};
    use banger_host::{FakeRunner, Matcher};
    use std::sync::Arc;

    fn image(features: &[&str]) -> Image {
        let file = |path: &str| ImageFile {
            path: path.into(),
            bytes: 1,
            allocated_bytes: 1,
        };
        Image {
            id: "img1".into(),
            name: "debian".into(),
            source: ImageSource::Bootstrapped,
            files: ImageFiles {
                kernel: file("vmlinux"),
                initrd: None,
                rootfs: file("rootfs.ext4"),
            },
            manifest: ImageManifest {
                publish: Vec::new(),
                name: "debian".into(),
                distro: None,
                suite: None,
                kernel_version: None,
                packages: Vec::new(),
                services: Vec::new(),
                init_features: features.iter().map(|f| f.to_string()).collect(),
                created_from: "test".into(),
                created_at: Timestamp(0),
                imported_from: None,
            },
            created_at: Timestamp(0),
            retired: None,
        }
    }

    fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn vm_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(OVERLAY_DISK), "old root").unwrap();
        fs::write(dir.path().join(WORK_DISK), "work").unwrap();
        fs::write(dir.path().join(CONFIG_DRIVE), "identity").unwrap();
        dir
    }

    #[test]
    fn a_reset_replaces_only_the_overlay() {
        let state = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRunner::new());
        let pool = DiskPool::open(state.path(), 0, fake.clone(), Vec::new());
        let dir = vm_dir();
        let image = image(&[banger_init::FEATURE_CONFIG_DRIVE]);
        reset_overlay(&*fake, &pool, &image, dir.path(), 1 << 20).unwrap();
        let after = listing(dir.path());
        let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [CONFIG_DRIVE, OVERLAY_DISK, WORK_DISK]);
        assert_ne!(after[1].1, b"old root", "a new overlay");
        assert_eq!(after[0].1, b"identity");
        assert_eq!(after[2].1, b"work");
        let mkfs = fake.calls_matching(Matcher::program("mkfs.ext4"));
        assert_eq!(mkfs.len(), 1);
        assert!(mkfs[0].contains(OVERLAY_RESET), "made beside: {mkfs:?}");
    }

    /// A reset that fails while making the new disk leaves the VM's files exactly as they
    /// were: the old root and no half-made disk.
    #[test]
    fn a_failed_reset_leaves_the_old_overlay_and_nothing_else() {
        let state = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRunner::new().fail_nth("mkfs.ext4", 1, "no space left"));
        let pool = DiskPool::open(state.path(), 0, fake.clone(), Vec::new());
        let dir = vm_dir();
        let before = listing(dir.path());
        let with_drive = image(&[banger_init::FEATURE_CONFIG_DRIVE]);
        let err = reset_overlay(&*fake, &pool, &with_drive, dir.path(), 1 << 20).unwrap_err();
        assert!(err.message.contains("no space left"), "{}", err.message);
        assert_eq!(listing(dir.path()), before);

        // An image without config drives is refused before anything is touched.
        let ok = FakeRunner::new();
        let err = reset_overlay(&ok, &pool, &image(&[]), dir.path(), 1 << 20).unwrap_err();
        assert_eq!(err.code, banger_api::ErrorCode::Unsupported);
        assert!(ok.calls().is_empty());
        assert_eq!(listing(dir.path()), before);
    }
}

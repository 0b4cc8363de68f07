//! A VM's own disks, made when the VM is created or ahead of it: the *overlay disk* (the
//! writable upper layer of its root), the *work disk* (persistent, mounted at `/root`, seeded
//! from the image's work seed) and the *config drive* (everything that makes this VM this VM).
//! The disks are sparse ext4 images made by `mkfs.ext4` (from a staged directory with `-d`
//! where they hold files): no loop devices, no mounts, no root. Their journals are left holes
//! (`lazy_journal_init`): a new sparse file reads as zeros, so writing them would only take the
//! host's disk.
//!
//! For an image whose init reads a config drive ([`banger_init::config_drive`]), the VM's files
//! go on that drive ([`config_drive`]) and its overlay disk is blank
//! ([`build_blank_overlay_disk`]): the init makes `upper/` and `work/` and copies the files in.
//! For any other image they are written into the overlay disk itself ([`build_overlay_disk`]),
//! laid out as banger's guest `/init` expects:
//!
//! ```text
//! upper/                           the overlayfs upper directory: merged over the base image
//!   etc/hostname, etc/hosts, etc/resolv.conf
//!   etc/banger/network             static IPv4 configuration, applied by /init (see below)
//!   etc/banger/authorized_keys     0600; sshd reads it through the drop-in below, because
//!                                  /root is the work disk and hides the root fs's /root
//!   etc/banger/agent-token         0600
//!   etc/ssh/ssh_host_<alg>_key     0600, and .pub
//!   etc/ssh/sshd_config.d/banger.conf
//! work/                            the overlayfs work directory (empty)
//! ```
//!
//! The config drive carries the same files, relative to the guest's root.
//!
//! Ownership: `mkfs.ext4 -d` copies owners from the staged files, which belong to whoever
//! runs banger. Files owned by that user are made root's afterwards (`debugfs sif`), so a VM
//! made by an unprivileged daemon still has a root-owned `/etc` and an sshd that accepts its
//! key; files staged with any other owner (a work seed made as root) keep it.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use banger_host::ext4::{Debugfs, Mkfs};
use banger_host::{CommandRunner, RunError};
use sha2::{Digest, Sha256};

/// The filesystem labels banger gives its disks; the guest init can find disks by them.
pub use banger_guest_contract::paths::{OVERLAY_LABEL, WORK_LABEL};

/// Where the guest init reads the network configuration, relative to the guest's root.
pub use banger_guest_contract::paths::{AGENT_TOKEN_FILE, AUTHORIZED_KEYS_FILE, NETWORK_FILE};
pub const SSHD_DROP_IN: &str = "etc/ssh/sshd_config.d/banger.conf";

/// Every file that makes a VM's root its own, relative to the root: what [`VmFiles`] writes
/// (the SSH host key files, `etc/ssh/ssh_host_*`, aside) and the machine id the guest makes
/// at its first boot. An image made of a VM's root takes them out again.
pub const PER_VM_FILES: &[&str] = &[
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    NETWORK_FILE,
    AUTHORIZED_KEYS_FILE,
    AGENT_TOKEN_FILE,
    SSHD_DROP_IN,
    "etc/machine-id",
];

/// Making a VM disk failed. The disk file is removed again before this is returned.
#[derive(Debug, thiserror::Error)]
pub enum VmDiskError {
    #[error("invalid VM file: {0}")]
    Invalid(String),

    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },

    #[error("cannot stage the disk contents in {}", path.display())]
    Stage { path: PathBuf, source: io::Error },

    #[error("cannot create disk file {}", path.display())]
    Create { path: PathBuf, source: io::Error },

    #[error("cannot read the work seed {}", path.display())]
    Seed { path: PathBuf, source: io::Error },

    #[error("making the ext4 filesystem failed")]
    Mkfs(#[source] RunError),

    #[error("setting file owners on {} failed", path.display())]
    Ownership {
        path: PathBuf,
        #[source]
        source: RunError,
    },

    #[error("setting file owners on {} failed: {detail}", path.display())]
    OwnershipRejected { path: PathBuf, detail: String },
}

/// A VM's static IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNetwork {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Search domains for the guest's `/etc/resolv.conf` (banger's VM domain when the guest
    /// asks bangerd). Only resolv.conf carries them: the network file stays readable by an
    /// init that predates them.
    pub search: Vec<String>,
    /// The MAC of the NIC to configure, `aa:bb:cc:dd:ee:ff`; `None`: the first Ethernet NIC.
    pub mac: Option<String>,
}

impl GuestNetwork {
    /// The contents of [`NETWORK_FILE`]: `key=value` lines that `banger-init` parses.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Written by banger when this VM was created; banger's /init applies it.\n",
        );
        let _ = writeln!(out, "address={}/{}", self.address, self.prefix_len);
        if let Some(gateway) = self.gateway {
            let _ = writeln!(out, "gateway={gateway}");
        }
        for dns in &self.dns {
            let _ = writeln!(out, "dns={dns}");
        }
        if let Some(mac) = &self.mac {
            let _ = writeln!(out, "mac={}", mac.to_ascii_lowercase());
        }
        out
    }

    fn validate(&self) -> Result<(), VmDiskError> {
        if self.prefix_len == 0 || self.prefix_len > 32 {
            return Err(VmDiskError::Invalid(format!(
                "network prefix length {} is not between 1 and 32",
                self.prefix_len
            )));
        }
        if let Some(bad) = self.search.iter().find(|d| {
            d.is_empty()
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }) {
            return Err(VmDiskError::Invalid(format!("search domain {bad:?}")));
        }
        if let Some(mac) = &self.mac {
            let ok = mac.split(':').count() == 6
                && mac
                    .split(':')
                    .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                return Err(VmDiskError::Invalid(format!("MAC address {mac:?}")));
            }
        }
        Ok(())
    }
}

/// The VM's SSH host key pair, as `ssh-keygen` wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHostKey {
    /// `ed25519`, `ecdsa` or `rsa`: names the files `ssh_host_<algorithm>_key[.pub]`.
    pub algorithm: String,
    pub private_key: String,
    pub public_key: String,
}

/// Any further file to place in the VM's root (relative path, permission bits, contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// Everything that makes a VM's root its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFiles {
    pub hostname: String,
    pub network: GuestNetwork,
    /// `authorized_keys` lines for root.
    pub authorized_keys: String,
    pub ssh_host_key: SshHostKey,
    pub agent_token: String,
    pub extra: Vec<StagedFile>,
}

impl VmFiles {
    /// The files of the `upper/` tree, relative to the guest's root, with their modes.
    pub fn files(&self) -> Result<Vec<StagedFile>, VmDiskError> {
        validate_hostname(&self.hostname)?;
        self.network.validate()?;
        let alg = &self.ssh_host_key.algorithm;
        if alg.is_empty() || !alg.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(VmDiskError::Invalid(format!("SSH key algorithm {alg:?}")));
        }
        let file = |path: &str, mode: u32, contents: String| StagedFile {
            path: path.to_owned(),
            mode,
            contents: contents.into_bytes(),
        };
        let host_key = format!("etc/ssh/ssh_host_{alg}_key");
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        let _ = writeln!(hosts, "{}\t{}", self.network.address, self.hostname);
        let mut resolv: String = self
            .network
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        if !self.network.search.is_empty() {
            let _ = writeln!(resolv, "search {}", self.network.search.join(" "));
        }
        let mut files = vec![
            file("etc/hostname", 0o644, format!("{}\n", self.hostname)),
            file("etc/hosts", 0o644, hosts),
            file("etc/resolv.conf", 0o644, resolv),
            file(NETWORK_FILE, 0o644, self.network.render()),
            file(
                AUTHORIZED_KEYS_FILE,
                0o600,
                with_newline(&self.authorized_keys),
            ),
            file(AGENT_TOKEN_FILE, 0o600, self.agent_token.clone()),
            file(
                &host_key,
                0o600,
                with_newline(&self.ssh_host_key.private_key),
            ),
            file(
                &format!("{host_key}.pub"),
                0o644,
                with_newline(&self.ssh_host_key.public_key),
            ),
            file(
                SSHD_DROP_IN,
                0o644,
                format!(
                    "# Written by banger. /root is the VM's work disk, so root's key lives on \
                     the overlay.\nAuthorizedKeysFile .ssh/authorized_keys /{AUTHORIZED_KEYS_FILE}\n\
                     HostKey /{host_key}\n"
                ),
            ),
        ];
        for extra in &self.extra {
            relative_path(&extra.path)?;
            files.retain(|f| f.path != extra.path);
            files.push(extra.clone());
        }
        Ok(files)
    }
}

fn with_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

fn validate_hostname(name: &str) -> Result<(), VmDiskError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(VmDiskError::Invalid(format!(
            "hostname {name:?} is not a DNS label"
        )))
    }
}

/// Checks that `path` is relative and stays inside the tree.
fn relative_path(path: &str) -> Result<PathBuf, VmDiskError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(p.to_owned())
    } else {
        Err(VmDiskError::Invalid(format!(
            "file path {path:?} must be relative, without `..`"
        )))
    }
}

/// Creates the VM's overlay disk at `path` (which must not exist): a sparse ext4 image of
/// `size` bytes labelled [`OVERLAY_LABEL`] holding `upper/` with the VM's files and an empty
/// `work/`. The contents are staged in a temporary directory under `staging_dir` (on the same
/// filesystem as the VM's directory, ideally), removed afterwards. On failure nothing is left
/// at `path`.
pub fn build_overlay_disk(
    runner: &dyn CommandRunner,
    staging_dir: &Path,
    files: &VmFiles,
    path: &Path,
    size: u64,
) -> Result<(), VmDiskError> {
    let files = files.files()?;
    let stage = tempfile::Builder::new()
        .prefix(".overlay-stage-")
        .tempdir_in(staging_dir)
        .map_err(|source| VmDiskError::Stage {
            path: staging_dir.to_owned(),
            source,
        })?;
    let root = stage.path();
    let stage_error = |path: &Path, source| VmDiskError::Stage {
        path: path.to_owned(),
        source,
    };
    for dir in ["upper", "work"] {
        make_dir(&root.join(dir)).map_err(|e| stage_error(&root.join(dir), e))?;
    }
    let upper = root.join("upper");
    for file in &files {
        let dst = upper.join(relative_path(&file.path)?);
        stage_file(&upper, &dst, file.mode, &file.contents).map_err(|e| stage_error(&dst, e))?;
    }
    make_disk(runner, Some(root), OVERLAY_LABEL, path, size)
}

/// Creates a blank overlay disk at `path` (which must not exist): a sparse ext4 image of
/// `size` bytes labelled [`OVERLAY_LABEL`], nothing in it. The guest init makes `upper/` and
/// `work/` and copies the VM's files from its config drive ([`config_drive`]), so a blank disk
/// fits any VM of any image whose init has that feature and can be made before it is needed.
/// On failure nothing is left at `path`.
pub fn build_blank_overlay_disk(
    runner: &dyn CommandRunner,
    path: &Path,
    size: u64,
) -> Result<(), VmDiskError> {
    make_disk(runner, None, OVERLAY_LABEL, path, size)
}

/// The VM's config drive: its files ([`VmFiles::files`]) as the newc archive banger's init
/// applies to the overlay at boot (see [`banger_init::config_drive`]), padded to whole
/// sectors. A few KiB, made in microseconds.
pub fn config_drive(files: &VmFiles) -> Result<Vec<u8>, VmDiskError> {
    use banger_init::config_drive::{MARKER_CONTENTS, MARKER_ENTRY};
    let invalid = |e: crate::initramfs::InitramfsError| VmDiskError::Invalid(e.to_string());
    let mut archive = crate::initramfs::Initramfs::new();
    archive
        .file(MARKER_ENTRY, 0o644, MARKER_CONTENTS)
        .map_err(invalid)?;
    for file in files.files()? {
        relative_path(&file.path)?;
        archive
            .file(&file.path, file.mode, file.contents)
            .map_err(invalid)?;
    }
    // The init finds the drive by its first entry; archives are sorted by path.
    if archive.paths().next() != Some(MARKER_ENTRY) {
        return Err(VmDiskError::Invalid(format!(
            "a VM file's path sorts before {MARKER_ENTRY}"
        )));
    }
    Ok(archive.to_bytes())
}

/// Writes [`config_drive`] to `path` (which must not exist), mode 0600: it carries the VM's
/// SSH host key and agent token. On failure nothing is left at `path`.
pub fn write_config_drive(files: &VmFiles, path: &Path) -> Result<(), VmDiskError> {
    use std::io::Write;
    let bytes = config_drive(files)?;
    let mut file = create_private(path)?;
    if let Err(source) = file.write_all(&bytes) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(VmDiskError::Create {
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Creates `path`, which must not exist, mode 0600 (a VM's disks and its config drive carry
/// its SSH host key and agent token).
fn create_private(path: &Path) -> Result<fs::File, VmDiskError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => VmDiskError::Exists {
                path: path.to_owned(),
            },
            _ => VmDiskError::Create {
                path: path.to_owned(),
                source,
            },
        })
}

/// Creates the VM's work disk at `path` (which must not exist): a sparse ext4 image of `size`
/// bytes labelled [`WORK_LABEL`], holding a copy of `seed` when given. Returns the seed's
/// [`fingerprint`] (that of an empty seed when there is none), to record with the VM. On
/// failure nothing is left at `path`.
pub fn build_work_disk(
    runner: &dyn CommandRunner,
    seed: Option<&Path>,
    path: &Path,
    size: u64,
) -> Result<String, VmDiskError> {
    let fingerprint = seed_fingerprint(seed)?;
    make_disk(runner, seed, WORK_LABEL, path, size)?;
    Ok(fingerprint)
}

/// Creates the sparse file, runs `mkfs.ext4`, hands files owned by the staging user to root.
/// Removes the file on any failure.
fn make_disk(
    runner: &dyn CommandRunner,
    contents: Option<&Path>,
    label: &str,
    path: &Path,
    size: u64,
) -> Result<(), VmDiskError> {
    let file = create_private(path)?;
    let result = (|| {
        file.set_len(size).map_err(|source| VmDiskError::Create {
            path: path.to_owned(),
            source,
        })?;
        drop(file);
        let mut mkfs = Mkfs::new(path).label(label);
        if let Some(dir) = contents {
            mkfs = mkfs.contents(dir);
        }
        // The file is new and sparse, so its journal already reads as zeros: writing them
        // would only allocate 64 MiB (for 8 GiB) of the host's disk per disk for nothing.
        let mkfs = mkfs.root_owner().lazy_journal_init();
        runner.run(&mkfs.command()).map_err(VmDiskError::Mkfs)?;
        if let Some(dir) = contents {
            give_to_root(runner, dir, path)?;
        }
        Ok(())
    })();
    if result.is_err()
        && let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::error!(disk = %path.display(), error = %e, "cannot remove a failed VM disk");
    }
    result
}

/// The `debugfs` commands that make root own what `mkfs.ext4 -d` copied from files owned by
/// `staging_uid` (paths relative to the filesystem root).
fn ownership_commands(dir: &Path, staging_uid: u32) -> Result<String, VmDiskError> {
    let mut commands = String::new();
    for (rel, meta) in walk(dir).map_err(|source| VmDiskError::Seed {
        path: dir.to_owned(),
        source,
    })? {
        let quoted = format!("\"/{}\"", rel.replace('"', "\\\""));
        if meta.uid() == staging_uid && meta.uid() != 0 {
            let _ = writeln!(commands, "sif {quoted} uid 0");
        }
        if meta.uid() == staging_uid && meta.gid() != 0 {
            let _ = writeln!(commands, "sif {quoted} gid 0");
        }
    }
    Ok(commands)
}

fn give_to_root(runner: &dyn CommandRunner, dir: &Path, image: &Path) -> Result<(), VmDiskError> {
    // Whoever made the staging directory is the user running banger.
    let staging_uid = fs::metadata(dir)
        .map_err(|source| VmDiskError::Seed {
            path: dir.to_owned(),
            source,
        })?
        .uid();
    let commands = ownership_commands(dir, staging_uid)?;
    if commands.is_empty() {
        return Ok(());
    }
    let out = runner
        .run(&Debugfs::script(image, commands).command())
        .map_err(|source| VmDiskError::Ownership {
            path: image.to_owned(),
            source,
        })?;
    // debugfs exits 0 even when a command fails; its complaints are on stderr, after the
    // version banner.
    let complaints: Vec<String> = out
        .stderr_lossy()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .map(str::to_owned)
        .collect();
    if complaints.is_empty() {
        Ok(())
    } else {
        Err(VmDiskError::OwnershipRejected {
            path: image.to_owned(),
            detail: complaints.join("; "),
        })
    }
}

/// Every entry under `dir` (not `dir` itself), sorted by relative path, without following
/// symlinks.
fn walk(dir: &Path) -> io::Result<Vec<(String, fs::Metadata)>> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for entry in fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let meta = fs::symlink_metadata(dir.join(&rel))?;
            if meta.is_dir() {
                pending.push(rel.clone());
            }
            out.push((rel.to_string_lossy().into_owned(), meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Directories created with an explicit mode, so the umask cannot change what the guest
/// sees (the `upper/` directory's mode becomes that of the guest's `/`).
fn make_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

fn stage_file(upper: &Path, dst: &Path, mode: u32, contents: &[u8]) -> io::Result<()> {
    let mut dir = dst.parent();
    let mut missing = Vec::new();
    while let Some(d) = dir.filter(|d| d.starts_with(upper) && !d.exists()) {
        missing.push(d.to_owned());
        dir = d.parent();
    }
    for d in missing.iter().rev() {
        make_dir(d)?;
    }
    fs::write(dst, contents)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode & 0o7777))
}

/// A fingerprint of a work seed: SHA-256 over every entry's relative path, type, permission
/// bits and contents (or symlink target), in sorted order. Owners and times are left out: they
/// change when a seed is copied, the content that reaches the VM does not.
pub fn fingerprint(seed: &Path) -> Result<String, VmDiskError> {
    let seed_error = |source| VmDiskError::Seed {
        path: seed.to_owned(),
        source,
    };
    let mut hash = Sha256::new();
    for (rel, meta) in walk(seed).map_err(seed_error)? {
        let full = seed.join(&rel);
        let kind = if meta.is_dir() {
            'd'
        } else if meta.is_symlink() {
            'l'
        } else if meta.is_file() {
            'f'
        } else {
            'o'
        };
        hash.update(format!("{kind} {:o} {}\0", meta.mode() & 0o7777, rel).as_bytes());
        if meta.is_file() {
            let data = fs::read(&full).map_err(seed_error)?;
            hash.update((data.len() as u64).to_le_bytes());
            hash.update(&data);
        } else if meta.is_symlink() {
            let target = fs::read_link(&full).map_err(seed_error)?;
            hash.update(target.to_string_lossy().as_bytes());
            hash.update([0]);
        }
    }
    Ok(hex_digest(hash))
}

/// [`fingerprint`] of `seed`, or that of an empty seed when there is none: what a work disk
/// made by [`build_work_disk`] records.
pub fn seed_fingerprint(seed: Option<&Path>) -> Result<String, VmDiskError> {
    match seed {
        Some(seed) => fingerprint(seed),
        None => Ok(hex_digest(Sha256::new())),
    }
}

fn hex_digest(hash: Sha256) -> String {
    let digest = hash.finalize();
    let mut out = String::from("sha256:");
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests;

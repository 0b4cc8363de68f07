//! The steps a bootstrap shares with other image builds: beginning a stage and running one
//! command in it, both stopped by a cancel, cleaning a root, making `rootfs.ext4`, writing the
//! manifest, and recording a stored file with its size and digest.

use std::io;
use std::path::Path;

use banger_host::ext4::Mkfs;
use banger_host::{CommandSpec, RunError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::debian;
use super::{BootstrapError, Host, MIB, ROOTFS_LABEL};
use crate::register::{MANIFEST_FILE, Reporter};

/// Reports that stage `stage` of an image build begins, unless the user asked to cancel: a
/// cancel request is honoured between stages as well as during a command.
pub(crate) fn begin_stage(reporter: &dyn Reporter, stage: &str) -> Result<(), BootstrapError> {
    if reporter.cancelled() {
        return Err(BootstrapError::Cancelled);
    }
    reporter.begin(stage);
    Ok(())
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
            Mkfs::PROGRAM,
            Mkfs::new(rootfs)
                .label(ROOTFS_LABEL)
                .reserved_percent(0)
                .bytes_per_inode(8192)
                .contents(root)
                .root_owner()
                .args(),
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

pub(super) fn cached_note(cached: bool) -> String {
    if cached { "cached" } else { "downloaded" }.to_owned()
}

pub(super) fn vmdisk_size_note(used: u64) -> String {
    format!(
        "{} of files, {} image",
        banger_api::validate::format_size(used),
        banger_api::validate::format_size(rootfs_size(used))
    )
}

pub(super) fn file_sha256(path: &Path) -> Result<String, BootstrapError> {
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

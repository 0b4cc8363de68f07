//! Disk space on the host: how big and how full the filesystem under a path is, and how many
//! bytes files really occupy. banger's disk accounting uses allocated bytes (`st_blocks`), not
//! apparent sizes, because VM disks are sparse. Copying image files lives in [`copy`], writing
//! a stream without allocating its zero blocks in [`sparse`].

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod copy;
mod sparse;

pub use copy::{CopyError, CopyMethod, copy_file};
pub use sparse::{SparseWriteError, write_sparse};

/// Measuring disk space failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot read filesystem usage of {}", path.display())]
    Statvfs { path: PathBuf, source: io::Error },

    #[error("cannot measure {}", path.display())]
    Measure { path: PathBuf, source: io::Error },
}

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub total_bytes: u64,
    /// What an unprivileged user may still allocate (`f_bavail`, excluding reserved blocks).
    pub available_bytes: u64,
}

/// Size and free space of the filesystem holding `path`.
pub fn filesystem_usage(path: &Path) -> Result<FsUsage, DiskError> {
    let stat = rustix::fs::statvfs(path).map_err(|errno| DiskError::Statvfs {
        path: path.to_owned(),
        source: errno.into(),
    })?;
    Ok(FsUsage {
        total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
        available_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
    })
}

/// Bytes `path` occupies on disk: `st_blocks * 512` for a file; for a directory, that of the
/// directory and everything below it. Symlinks are not followed, hard-linked files are counted
/// once, and a missing path (or one that vanishes during the walk) occupies 0 bytes.
pub fn allocated_bytes(path: &Path) -> Result<u64, DiskError> {
    let measure_error = |path: &Path, source: io::Error| DiskError::Measure {
        path: path.to_owned(),
        source,
    };
    let mut seen_links = HashSet::new();
    let mut total: u64 = 0;
    let mut pending = vec![path.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(measure_error(&path, e)),
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen_links.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(measure_error(&path, e)),
            };
            for entry in entries {
                match entry {
                    Ok(entry) => pending.push(entry.path()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(measure_error(&path, e)),
                }
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sparse_file_allocates_only_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let file = File::create(&path).unwrap();
        file.set_len(64 * MIB).unwrap();
        assert!(
            allocated_bytes(&path).unwrap() < MIB,
            "sparse file allocates ~0"
        );

        file.write_all_at(&vec![0xAB; MIB as usize], 8 * MIB)
            .unwrap();
        file.sync_all().unwrap();
        let allocated = allocated_bytes(&path).unwrap();
        assert!(allocated >= MIB, "{allocated}");
        assert!(allocated < 4 * MIB, "{allocated}");
    }

    #[test]
    fn directories_sum_their_tree_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("vms/dev");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("a"), vec![1u8; MIB as usize]).unwrap();
        std::fs::write(dir.path().join("b"), vec![2u8; MIB as usize]).unwrap();
        std::fs::hard_link(dir.path().join("b"), sub.join("b-link")).unwrap();

        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![3u8; 4 * MIB as usize]).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("elsewhere")).unwrap();

        let total = allocated_bytes(dir.path()).unwrap();
        assert!(total >= 2 * MIB, "{total}");
        assert!(
            total < 3 * MIB,
            "symlink not followed, hard link counted once: {total}"
        );
    }

    #[test]
    fn missing_path_allocates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(allocated_bytes(&dir.path().join("nope")).unwrap(), 0);
    }

    #[test]
    fn filesystem_usage_of_tempdir() {
        let dir = tempfile::tempdir().unwrap();
        let usage = filesystem_usage(dir.path()).unwrap();
        assert!(usage.total_bytes > 0);
        assert!(usage.available_bytes <= usage.total_bytes);
        let err = filesystem_usage(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}

//! Build identity: how a client tells that the running daemon is not the daemon binary it
//! would start now.
//!
//! A compile-time id (a hash baked in by a build script) goes stale whenever only the daemon's
//! crates change, because the crate holding the id is not rebuilt. The identity of the binary
//! file itself (size, modification time, inode) changes with every rebuild or reinstall, and
//! costs one `stat` to compute on each side.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The build id of the executable at `path`.
pub fn build_id_of(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    Ok(format!(
        "{}-{:x}-{:x}.{:09}-{:x}",
        env!("CARGO_PKG_VERSION"),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    ))
}

/// The build id of the running executable.
pub fn own_build_id() -> std::io::Result<String> {
    // /proc/self/exe resolves to the inode that was executed, even after the file on disk has
    // been replaced by a newer build.
    build_id_of(Path::new("/proc/self/exe"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_gets_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bangerd");
        std::fs::write(&path, b"one").unwrap();
        let first = build_id_of(&path).unwrap();
        assert_eq!(first, build_id_of(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"second build").unwrap();
        assert_ne!(first, build_id_of(&path).unwrap());
    }

    #[test]
    fn own_id_is_readable() {
        assert!(
            own_build_id()
                .unwrap()
                .starts_with(env!("CARGO_PKG_VERSION"))
        );
    }
}

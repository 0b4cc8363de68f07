//! The host-path picker of the register-image form: a read-only listing of one directory on
//! the daemon's host, so a user can find a kernel or rootfs without typing its path.
//!
//! It shows only what bangerd's user can read (directories it can also enter), never follows
//! into a directory it cannot, and reads nothing but directory entries and their metadata.
//! Names that are not UTF-8 are left out: the register API takes paths as strings.

use std::path::{Path, PathBuf};

/// Entries listed at most; a directory of thousands of files is not browsed in a web page.
pub const MAX_ENTRIES: usize = 1000;

/// Why a directory cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum PickerError {
    #[error("{0:?} is not an absolute path")]
    NotAbsolute(String),
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot read {}: permission denied", .0.display())]
    Unreadable(PathBuf),
}

/// One listed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub is_dir: bool,
    /// Apparent size of a file.
    pub bytes: Option<u64>,
}

/// A directory's readable entries: directories first, then files, each by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The directory, with symlinks and `..` resolved.
    pub dir: PathBuf,
    pub entries: Vec<Entry>,
    /// Readable entries beyond [`MAX_ENTRIES`].
    pub omitted: usize,
}

/// Whether the daemon's user may read `path` (and enter it, for a directory).
pub type Readable<'a> = &'a dyn Fn(&Path, bool) -> bool;

/// The real permission check: `access(2)` as the daemon's user.
pub fn readable(path: &Path, is_dir: bool) -> bool {
    use rustix::fs::Access;
    let mode = if is_dir {
        Access::READ_OK | Access::EXEC_OK
    } else {
        Access::READ_OK
    };
    rustix::fs::access(path, mode).is_ok()
}

/// Where browsing starts: the daemon user's home directory.
pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Lists `dir`. Hidden entries (dot files) only when `hidden`.
pub fn list(dir: &str, hidden: bool, can_read: Readable<'_>) -> Result<Listing, PickerError> {
    let requested = Path::new(dir);
    if !requested.is_absolute() {
        return Err(PickerError::NotAbsolute(dir.to_owned()));
    }
    let dir = std::fs::canonicalize(requested).map_err(|source| PickerError::Open {
        path: requested.to_owned(),
        source,
    })?;
    if !dir.is_dir() {
        return Err(PickerError::NotADirectory(dir));
    }
    if !can_read(&dir, true) {
        return Err(PickerError::Unreadable(dir));
    }
    let reader = std::fs::read_dir(&dir).map_err(|source| PickerError::Open {
        path: dir.clone(),
        source,
    })?;
    let mut entries = Vec::new();
    for entry in reader.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !hidden && name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: what matters is what the link leads to.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let is_dir = meta.is_dir();
        if !(is_dir || meta.is_file()) || !can_read(&path, is_dir) {
            continue;
        }
        entries.push(Entry {
            name,
            path,
            is_dir,
            bytes: (!is_dir).then_some(meta.len()),
        });
    }
    entries.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));
    let omitted = entries.len().saturating_sub(MAX_ENTRIES);
    entries.truncate(MAX_ENTRIES);
    Ok(Listing {
        dir,
        entries,
        omitted,
    })
}

/// The directory to open for a field that already holds `current`: its parent when that is a
/// directory, home otherwise.
pub fn start_dir(current: &str) -> PathBuf {
    Path::new(current)
        .parent()
        .filter(|p| p.is_absolute() && p.is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(home)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("kernels")).unwrap();
        std::fs::create_dir(root.join("secret")).unwrap();
        std::fs::write(root.join("secret/key"), b"k").unwrap();
        std::fs::write(root.join("vmlinux"), vec![0u8; 2048]).unwrap();
        std::fs::write(root.join("rootfs.ext4"), b"x").unwrap();
        std::fs::write(root.join(".hidden"), b"h").unwrap();
        std::os::unix::fs::symlink(root.join("kernels"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), root.join("dangling")).unwrap();
        dir
    }

    #[test]
    fn lists_directories_first_then_files() {
        let dir = tree();
        let listing = list(dir.path().to_str().unwrap(), false, &|_, _| true).unwrap();
        let names: Vec<(&str, bool)> = listing
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.is_dir))
            .collect();
        assert_eq!(
            names,
            [
                ("kernels", true),
                ("link", true),
                ("secret", true),
                ("rootfs.ext4", false),
                ("vmlinux", false)
            ]
        );
        assert_eq!(listing.entries[4].bytes, Some(2048));
        let hidden = list(dir.path().to_str().unwrap(), true, &|_, _| true).unwrap();
        assert!(hidden.entries.iter().any(|e| e.name == ".hidden"));
    }

    #[test]
    fn leaves_out_what_cannot_be_read_and_refuses_to_enter_it() {
        let dir = tree();
        let secret = dir.path().join("secret");
        let deny = |p: &Path, _: bool| !p.starts_with(&secret);
        let listing = list(dir.path().to_str().unwrap(), false, &deny).unwrap();
        assert!(listing.entries.iter().all(|e| e.name != "secret"));
        let err = list(secret.to_str().unwrap(), false, &deny).unwrap_err();
        assert!(matches!(err, PickerError::Unreadable(_)), "{err}");
        // `..` and symlinks are resolved before the check, so they cannot sneak in.
        let sneaky = format!("{}/kernels/../secret", dir.path().display());
        assert!(matches!(
            list(&sneaky, false, &deny),
            Err(PickerError::Unreadable(_))
        ));
    }

    #[test]
    fn refuses_relative_paths_and_files() {
        assert!(matches!(
            list("relative", false, &|_, _| true),
            Err(PickerError::NotAbsolute(_))
        ));
        let dir = tree();
        let file = dir.path().join("vmlinux");
        assert!(matches!(
            list(file.to_str().unwrap(), false, &|_, _| true),
            Err(PickerError::NotADirectory(_))
        ));
        assert!(matches!(
            list("/no/such/dir", false, &|_, _| true),
            Err(PickerError::Open { .. })
        ));
    }

    #[test]
    fn the_real_check_follows_permissions() {
        let dir = tree();
        assert!(readable(dir.path(), true));
        assert!(readable(&dir.path().join("vmlinux"), false));
        assert!(!readable(&dir.path().join("dangling"), false));
    }

    #[test]
    fn starts_next_to_the_current_value() {
        let dir = tree();
        let kernel = dir.path().join("vmlinux");
        assert_eq!(start_dir(kernel.to_str().unwrap()), dir.path());
        assert_eq!(start_dir(""), home());
        assert_eq!(start_dir("relative/file"), home());
    }
}

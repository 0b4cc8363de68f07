//! Finding the programs banger runs, by one rule for every lookup (the doctor, Firecracker,
//! its jailer, QEMU, bangerd, the network commands): a program is a regular file with an
//! execute bit, and `PATH` is searched in its absolute directories only (a relative entry would
//! make the lookup depend on the daemon's working directory).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Whether `path` is a regular file (symlinks followed) that may be executed.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `program` in the absolute directories of `path_var` (a `PATH` value).
pub fn find_in_path(path_var: Option<&OsStr>, program: &str) -> Option<PathBuf> {
    path_var
        .into_iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// The directories of system programs (`ip`, `nft`, `sysctl`, `mkfs.ext4`) that a user's
/// `PATH` often lacks (Debian's default for users), although root's and sudo's have them.
pub const SBIN_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// A system program's path: from `path_var`, else from [`SBIN_DIRS`], else from `/usr/bin` and
/// `/bin` (for a daemon started without a `PATH`).
pub fn find_system_program(path_var: Option<&OsStr>, program: &str) -> Option<PathBuf> {
    find_in_path(path_var, program).or_else(|| {
        SBIN_DIRS
            .iter()
            .chain(&["/usr/bin", "/bin"])
            .map(|dir| Path::new(dir).join(program))
            .find(|candidate| is_executable(candidate))
    })
}

/// Why [`locate`] found no program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocateError {
    /// The configured path does not exist.
    Missing(PathBuf),
    /// The configured path is not an executable file.
    NotExecutable(PathBuf),
    /// Nothing was configured and `PATH` has no such program.
    NotInPath,
}

/// The program to run: `configured` when given (it must exist and be executable), otherwise the
/// first executable `program` in `path_var`.
pub fn locate(
    configured: Option<&Path>,
    path_var: Option<&OsStr>,
    program: &str,
) -> Result<PathBuf, LocateError> {
    match configured {
        Some(path) if !path.exists() => Err(LocateError::Missing(path.to_owned())),
        Some(path) if !is_executable(path) => Err(LocateError::NotExecutable(path.to_owned())),
        Some(path) => Ok(path.to_owned()),
        None => find_in_path(path_var, program).ok_or(LocateError::NotInPath),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_regular_files_with_an_execute_bit_are_executable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(is_executable(&file(dir.path(), "run", 0o700)));
        assert!(is_executable(&file(dir.path(), "others", 0o601)));
        assert!(!is_executable(&file(dir.path(), "plain", 0o644)));
        assert!(!is_executable(dir.path()), "a directory is not a program");
        assert!(!is_executable(&dir.path().join("absent")));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("run"), &link).unwrap();
        assert!(is_executable(&link), "a symlink to a program is one");
    }

    #[test]
    fn path_is_searched_in_order_skipping_relative_and_unusable_entries() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        file(first.path(), "tool", 0o644);
        let wanted = file(second.path(), "tool", 0o755);
        let path_var = std::env::join_paths([
            Path::new("relative"),
            first.path(),
            Path::new("/nonexistent"),
            second.path(),
        ])
        .unwrap();
        assert_eq!(find_in_path(Some(&path_var), "tool"), Some(wanted));
        assert_eq!(find_in_path(Some(&path_var), "other"), None);
        assert_eq!(find_in_path(None, "tool"), None);
        assert_eq!(find_in_path(Some(&OsString::new()), "tool"), None);
    }

    #[test]
    fn a_system_program_is_found_outside_path() {
        // `sh` is in /usr/bin or /bin on every host these tests run on.
        let sh = find_system_program(None, "sh").expect("sh outside any PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        let dir = tempfile::tempdir().unwrap();
        let mine = file(dir.path(), "sh", 0o755);
        assert_eq!(
            find_system_program(Some(dir.path().as_os_str()), "sh"),
            Some(mine),
            "PATH comes first"
        );
        assert_eq!(find_system_program(None, "no-such-banger-program"), None);
    }

    #[test]
    fn a_configured_path_is_checked_and_wins_over_path() {
        let dir = tempfile::tempdir().unwrap();
        let in_path = file(dir.path(), "tool", 0o755);
        let configured = file(dir.path(), "mine", 0o755);
        let plain = file(dir.path(), "plain", 0o644);
        let path_var = dir.path().as_os_str();
        assert_eq!(
            locate(Some(&configured), Some(path_var), "tool"),
            Ok(configured)
        );
        assert_eq!(locate(None, Some(path_var), "tool"), Ok(in_path));
        assert_eq!(
            locate(Some(&plain), Some(path_var), "tool"),
            Err(LocateError::NotExecutable(plain))
        );
        let absent = dir.path().join("absent");
        assert_eq!(
            locate(Some(&absent), Some(path_var), "tool"),
            Err(LocateError::Missing(absent))
        );
        assert_eq!(
            locate(None, Some(path_var), "absent"),
            Err(LocateError::NotInPath)
        );
    }
}

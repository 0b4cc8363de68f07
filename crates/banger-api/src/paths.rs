//! Where banger keeps its files, derived from the XDG base-directory variables so that tests
//! (and users with unusual setups) can move everything by setting them.
//!
//! - config: `$XDG_CONFIG_HOME/banger/config.toml` (default `~/.config`)
//! - state: `$XDG_STATE_HOME/banger/` (default `~/.local/state`): database, images, VMs, logs
//! - runtime: `$XDG_RUNTIME_DIR/banger/` (default `/tmp/banger-$UID` when unset): sockets, lock

use std::path::{Path, PathBuf};

/// Every path banger uses, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config_file: PathBuf,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Paths {
    /// Resolves from the process environment.
    pub fn from_env() -> Result<Paths, PathsError> {
        Self::resolve(|key| std::env::var_os(key).map(PathBuf::from))
    }

    /// Resolves with `lookup` standing in for the environment (for tests).
    pub fn resolve(lookup: impl Fn(&str) -> Option<PathBuf>) -> Result<Paths, PathsError> {
        let absolute = |key: &str| lookup(key).filter(|p| p.is_absolute());
        let home = || absolute("HOME").ok_or(PathsError::NoHome);
        let config_home = match absolute("XDG_CONFIG_HOME") {
            Some(p) => p,
            None => home()?.join(".config"),
        };
        let state_home = match absolute("XDG_STATE_HOME") {
            Some(p) => p,
            None => home()?.join(".local/state"),
        };
        let runtime_dir = match absolute("XDG_RUNTIME_DIR") {
            Some(p) => p.join("banger"),
            None => {
                let tmp = absolute("TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"));
                tmp.join(format!("banger-{}", rustix::process::getuid().as_raw()))
            }
        };
        Ok(Paths {
            config_file: config_home.join("banger/config.toml"),
            state_dir: state_home.join("banger"),
            runtime_dir,
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.sock")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.lock")
    }

    pub fn database(&self) -> PathBuf {
        self.state_dir.join("banger.db")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }

    pub fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }

    /// Where snapshots' files are, one directory each.
    /// Where a root daemon builds its Firecracker jails (unless `jail_dir` says otherwise):
    /// on the filesystem of the VMs' disks, so that they are hard-linked into the jails.
    pub fn jail_dir(&self) -> PathBuf {
        self.state_dir.join("jail")
    }

    /// Where running operations are journaled, one file each, so that the next daemon can
    /// report those a killed one left unfinished.
    pub fn operations_dir(&self) -> PathBuf {
        self.state_dir.join("operations")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.state_dir.join("snapshots")
    }

    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id)
    }

    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("bangerd.log")
    }

    /// Where a daemon started by the CLI writes what it prints before its log is set up.
    pub fn startup_log(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.startup.log")
    }

    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.images_dir().join(id)
    }

    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.vms_dir().join(id)
    }

    /// Where VMs' control and vsock sockets live: nothing else goes there, so that a
    /// restarting daemon can tell every socket in it belongs to a VM.
    pub fn vm_sockets_dir(&self) -> PathBuf {
        self.runtime_dir.join("vms")
    }

    /// The control socket of VM `id`'s VMM (Firecracker's API socket, QEMU's QMP socket).
    /// VM ids are 16 hex digits, which keeps the path far below the 107 bytes a socket path
    /// may have.
    pub fn vm_api_socket(&self, id: &str) -> PathBuf {
        self.vm_sockets_dir().join(format!("{id}.api"))
    }

    /// The host end of VM `id`'s vsock device.
    pub fn vm_vsock_socket(&self, id: &str) -> PathBuf {
        self.vm_sockets_dir().join(format!("{id}.vsock"))
    }

    /// The directory the state lives in, for messages.
    pub fn state_display(&self) -> &Path {
        &self.state_dir
    }
}

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum PathsError {
    /// neither $XDG_STATE_HOME/$XDG_CONFIG_HOME nor $HOME is set to an absolute path
    NoHome,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let map: HashMap<String, PathBuf> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn honours_xdg_variables() {
        let p = Paths::resolve(env(&[
            ("HOME", "/home/u"),
            ("XDG_CONFIG_HOME", "/c"),
            ("XDG_STATE_HOME", "/s"),
            ("XDG_RUNTIME_DIR", "/r"),
        ]))
        .unwrap();
        assert_eq!(p.config_file, PathBuf::from("/c/banger/config.toml"));
        assert_eq!(p.database(), PathBuf::from("/s/banger/banger.db"));
        assert_eq!(p.socket(), PathBuf::from("/r/banger/bangerd.sock"));
    }

    #[test]
    fn falls_back_to_home_and_tmp() {
        let p =
            Paths::resolve(env(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "relative")])).unwrap();
        assert_eq!(p.state_dir, PathBuf::from("/home/u/.local/state/banger"));
        assert_eq!(
            p.config_file,
            PathBuf::from("/home/u/.config/banger/config.toml")
        );
        assert!(p.runtime_dir.starts_with("/tmp"));
        assert!(
            p.runtime_dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("banger-")
        );
    }

    #[test]
    fn no_home_is_an_error() {
        assert!(Paths::resolve(env(&[])).is_err());
    }
}

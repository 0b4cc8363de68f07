//! The host side effects of running a VMM, whichever backend (starting and signalling its
//! process, waiting for its API or QMP socket, creating and removing its files, reading
//! `/proc`, and for Firecracker's jails and QEMU's cgroups directories, mounts and owners)
//! behind the [`ProcessHost`] trait, so that launch, stop and rollback are tested without a
//! binary. [`RealHost`] does them through banger-host's [`process`](banger_host::process)
//! functions; the fake host of the `fake` module (built for tests and with the `fake`
//! feature) records them.

use std::ffi::OsString;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_host::{ProcessError, Signal};

/// Waiting for a VMM's API socket ended without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketWaitError {
    #[error("the process exited first")]
    Exited,
    #[error("not there after {0:?}")]
    TimedOut(Duration),
}

/// The host operations a VMM backend performs. Every method is one observable step.
pub trait ProcessHost: Send + Sync + fmt::Debug {
    /// Starts `program` detached, stdout and stderr appended to `output_log`; returns its pid.
    fn spawn(
        &self,
        program: &Path,
        args: &[OsString],
        output_log: &Path,
    ) -> Result<u32, ProcessError>;

    /// Waits until something accepts connections on `socket`, giving up when `pid` exits or
    /// `timeout` passes.
    fn wait_for_socket(
        &self,
        socket: &Path,
        pid: u32,
        timeout: Duration,
    ) -> Result<(), SocketWaitError>;

    fn pid_alive(&self, pid: u32) -> bool;

    /// Whether `pid` is stopped by `SIGSTOP` (how banger pauses a Firecracker whose own
    /// resume would break the guest's vsock).
    fn is_stopped(&self, pid: u32) -> bool;

    /// Sends `signal`; a process that is already gone is [`ProcessError::Gone`].
    fn signal(&self, pid: u32, signal: Signal) -> Result<(), ProcessError>;

    /// True when `pid` exited within `timeout`.
    fn wait_for_exit(&self, pid: u32, timeout: Duration) -> bool;

    /// The command line of `pid`, `None` when it is gone or unreadable.
    fn cmdline(&self, pid: u32) -> Option<Vec<OsString>>;

    /// Every process whose command line is readable, as `(pid, argv)`.
    fn processes(&self) -> Vec<(u32, Vec<OsString>)>;

    /// Creates `path` empty with mode 0600 when it does not exist, so the file is the user's
    /// alone before Firecracker opens it.
    fn create_file(&self, path: &Path) -> io::Result<()>;

    /// Removes `path`; one that does not exist is not an error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Renames the file `from` to `to` (replacing `to`), on one filesystem.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Whether `path` exists (as anything).
    fn exists(&self, path: &Path) -> bool;

    /// Whether a process accepts connections on the Unix socket `path`.
    fn socket_accepts(&self, path: &Path) -> bool;

    /// The Unix sockets directly inside `dir`.
    fn sockets_in(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;

    // What Firecracker's jails (see [`crate::firecracker::jail`]) and QEMU's cgroups (see
    // [`crate::cgroup`]) are made of.

    /// Creates `dir` (and its missing parents) with `mode`; one that exists is fine.
    fn create_dir(&self, dir: &Path, mode: u32) -> io::Result<()>;

    /// Removes the directory tree `dir`; one that does not exist is not an error.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Removes the empty directory `dir` (a cgroup); one that does not exist is not an error.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;

    /// The entries directly inside `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;

    /// Makes `link` a hard link to `target`; fails with `EXDEV` across filesystems.
    fn hard_link(&self, target: &Path, link: &Path) -> io::Result<()>;

    /// Creates `mount_point` as an empty file and binds the file `source` onto it.
    fn bind_mount(&self, source: &Path, mount_point: &Path) -> io::Result<()>;

    /// Detaches the mount at `mount_point`; one that is not mounted is not an error.
    fn unmount(&self, mount_point: &Path) -> io::Result<()>;

    /// The mount points at or below `dir`.
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf>;

    /// The owner, group and permission bits of `path` (not following a final symlink).
    fn owner(&self, path: &Path) -> io::Result<(u32, u32, u32)>;

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;

    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()>;

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Writes `path` whole, mode 0600 when created.
    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()>;

    /// Gives the existing tap `name` to `uid` (and the gid of the same number), so that a
    /// VMM running as them may open it.
    fn give_tap(&self, name: &str, uid: u32) -> io::Result<()>;
}

/// The real host.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealHost;

impl ProcessHost for RealHost {
    fn spawn(
        &self,
        program: &Path,
        args: &[OsString],
        output_log: &Path,
    ) -> Result<u32, ProcessError> {
        banger_host::spawn_detached(program, args, &[], output_log)
    }

    fn wait_for_socket(
        &self,
        socket: &Path,
        pid: u32,
        timeout: Duration,
    ) -> Result<(), SocketWaitError> {
        let started = Instant::now();
        let deadline = started + timeout;
        // Firecracker opens its socket a few milliseconds after exec. A connect attempt costs
        // microseconds, so the first 100 ms are polled every 200 µs (a coarser poll showed up
        // as a millisecond of launch time); a Firecracker that takes longer is polled less
        // and less often.
        let mut pause = Duration::from_micros(200);
        loop {
            if UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            if !banger_host::pid_alive(pid) {
                return Err(SocketWaitError::Exited);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SocketWaitError::TimedOut(timeout));
            }
            std::thread::sleep(pause.min(deadline - now));
            if now - started > Duration::from_millis(100) {
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }

    fn pid_alive(&self, pid: u32) -> bool {
        banger_host::pid_alive(pid)
    }

    fn is_stopped(&self, pid: u32) -> bool {
        banger_host::is_stopped(pid)
    }

    fn signal(&self, pid: u32, signal: Signal) -> Result<(), ProcessError> {
        banger_host::signal(pid, signal)
    }

    fn wait_for_exit(&self, pid: u32, timeout: Duration) -> bool {
        banger_host::wait_for_exit(pid, timeout)
    }

    fn cmdline(&self, pid: u32) -> Option<Vec<OsString>> {
        read_cmdline(Path::new(&format!("/proc/{pid}/cmdline")))
    }

    fn processes(&self) -> Vec<(u32, Vec<OsString>)> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut found: Vec<(u32, Vec<OsString>)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| Some((pid, self.cmdline(pid)?)))
            .collect();
        found.sort_by_key(|(pid, _)| *pid);
        found
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map(drop)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn exists(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }

    fn socket_accepts(&self, path: &Path) -> bool {
        UnixStream::connect(path).is_ok()
    }

    fn sockets_in(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut sockets = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_socket() {
                sockets.push(entry.path());
            }
        }
        sockets.sort();
        Ok(sockets)
    }

    fn create_dir(&self, dir: &Path, mode: u32) -> io::Result<()> {
        // Each directory made here gets `mode` itself: the daemon's umask (077) would otherwise
        // take bits away from the parents a jailed process must traverse (`lib` above
        // `lib/x86_64-linux-gnu`).
        let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
        for made in missing.into_iter().rev() {
            match std::fs::create_dir(made) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                other => other?,
            }
            std::fs::set_permissions(made, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        match std::fs::remove_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut entries = std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<io::Result<Vec<_>>>()?;
        entries.sort();
        Ok(entries)
    }

    fn hard_link(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::fs::hard_link(target, link)
    }

    fn bind_mount(&self, source: &Path, mount_point: &Path) -> io::Result<()> {
        self.create_file(mount_point)?;
        rustix::mount::mount_bind(source, mount_point).map_err(io::Error::from)
    }

    fn unmount(&self, mount_point: &Path) -> io::Result<()> {
        match rustix::mount::unmount(mount_point, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return Vec::new();
        };
        table
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(unescape_mount_path)
            .filter(|point| point.starts_with(dir))
            .collect()
    }

    fn owner(&self, path: &Path) -> io::Result<(u32, u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let meta = path.symlink_metadata()?;
        Ok((meta.uid(), meta.gid(), meta.mode() & 0o7777))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    }

    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn give_tap(&self, name: &str, uid: u32) -> io::Result<()> {
        banger_host::network::give_tap(name, uid, uid)
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(contents)
    }
}

/// A mount point as `/proc/self/mountinfo` writes it: space, tab, newline and backslash as
/// octal escapes.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(Ok(code)) = bytes
                .get(i + 1..i + 4)
                .and_then(|octal| std::str::from_utf8(octal).ok())
                .map(|octal| u8::from_str_radix(octal, 8))
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// A `/proc/PID/cmdline`: NUL-separated arguments; empty for kernel threads and zombies.
fn read_cmdline(path: &Path) -> Option<Vec<OsString>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.is_empty() {
        return None;
    }
    Some(
        bytes
            .split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| OsString::from_vec(arg.to_vec()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_host_files_and_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fc.log");
        RealHost.create_file(&file).unwrap();
        std::fs::write(&file, "kept\n").unwrap();
        RealHost.create_file(&file).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "kept\n",
            "not truncated"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let socket = dir.path().join("api.sock");
        assert!(!RealHost.socket_accepts(&socket));
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(RealHost.socket_accepts(&socket));
        assert_eq!(
            RealHost.sockets_in(dir.path()).unwrap(),
            std::slice::from_ref(&socket)
        );
        drop(listener);
        assert!(!RealHost.socket_accepts(&socket), "stale socket file");
        assert!(RealHost.exists(&socket));
        RealHost.remove_file(&socket).unwrap();
        RealHost.remove_file(&socket).unwrap();
        assert!(!RealHost.exists(&socket));
    }

    #[test]
    fn own_cmdline_is_readable() {
        let me = RealHost.cmdline(std::process::id()).unwrap();
        assert!(!me.is_empty());
        assert!(
            RealHost
                .processes()
                .iter()
                .any(|(pid, _)| *pid == std::process::id())
        );
    }
}

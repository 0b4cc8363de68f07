//! `POST /v1/shutdown`: ends the VM gracefully through the guest's own init, so services stop
//! and filesystems unmount cleanly. The agent flushes the page cache first, then asks PID 1
//! for a *reboot* the way that init understands: systemd through SIGRTMIN+5 (its documented
//! "reboot" signal), any other init through its `reboot` program. If the guest is still up
//! after [`FALLBACK_AFTER`], the agent syncs again and resets the machine through the kernel.
//!
//! A reboot, not a power-off, because a reboot is what ends the VM on every backend banger
//! runs: Firecracker on x86 has no power-off device (a powered-off guest only halts its vCPUs
//! and the process lives on until it is killed) but exits when the guest resets the machine
//! (`reboot=k`), and banger runs QEMU with `-no-reboot`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// How long the init gets to end the guest before the kernel is asked directly.
pub const FALLBACK_AFTER: Duration = Duration::from_secs(60);

/// Where `reboot` is looked for.
const REBOOT: [&str; 4] = [
    "/usr/sbin/reboot",
    "/sbin/reboot",
    "/usr/bin/reboot",
    "/bin/reboot",
];

/// How the agent ends the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// SIGRTMIN+5 to PID 1.
    Systemd,
    /// The init's `reboot` program.
    Program(PathBuf),
    /// `reboot(RB_AUTOBOOT)` straight away: no init the agent knows how to ask.
    Kernel,
    /// A program named on the command line (`--shutdown-command`), run instead of all of the
    /// above; for test rigs and images with their own procedure.
    Custom(PathBuf),
}

impl Method {
    /// Picks the method for the init running as PID 1 under `proc_root`.
    pub fn detect(proc_root: &Path, root: &Path) -> Method {
        let comm = std::fs::read_to_string(proc_root.join("1/comm")).unwrap_or_default();
        if comm.trim_end() == "systemd" {
            return Method::Systemd;
        }
        REBOOT
            .iter()
            .map(|p| root.join(p.trim_start_matches('/')))
            .find(|p| p.exists())
            .map_or(Method::Kernel, |p| {
                Method::Program(Path::new("/").join(p.strip_prefix(root).unwrap_or(&p)))
            })
    }

    /// Said in the 202 answer.
    pub fn describe(&self) -> String {
        match self {
            Method::Systemd => "systemd (SIGRTMIN+5 to PID 1)".into(),
            Method::Program(p) => format!("the init's {}", p.display()),
            Method::Kernel => "the kernel (reboot(RB_AUTOBOOT))".into(),
            Method::Custom(p) => format!("{} (--shutdown-command)", p.display()),
        }
    }

    /// Syncs and ends the guest. Returns only if the guest is still up afterwards (or with a
    /// custom command, once that command has finished).
    pub async fn end_guest(&self) {
        rustix::fs::sync();
        match self {
            Method::Custom(program) => {
                if let Err(e) = Command::new(program).status().await {
                    eprintln!(
                        "banger-agent: shutdown command {} failed: {e}",
                        program.display()
                    );
                }
                return;
            }
            Method::Systemd => {
                // SAFETY: kill(2) with a signal number; no memory is involved.
                let rc = unsafe { libc::kill(1, libc::SIGRTMIN() + 5) };
                if rc < 0 {
                    eprintln!(
                        "banger-agent: asking systemd to reboot failed: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
            Method::Program(program) => match Command::new(program).status().await {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!("banger-agent: {} {status}", program.display()),
                Err(e) => eprintln!("banger-agent: running {} failed: {e}", program.display()),
            },
            Method::Kernel => {}
        }
        if *self != Method::Kernel {
            tokio::time::sleep(FALLBACK_AFTER).await;
            eprintln!("banger-agent: the guest is still up; resetting it through the kernel");
        }
        rustix::fs::sync();
        if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::Restart) {
            eprintln!("banger-agent: reboot failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_follows_pid_1() {
        let proc_dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc_dir.path().join("1")).unwrap();

        std::fs::write(proc_dir.path().join("1/comm"), "systemd\n").unwrap();
        assert_eq!(
            Method::detect(proc_dir.path(), root.path()),
            Method::Systemd
        );

        std::fs::write(proc_dir.path().join("1/comm"), "init\n").unwrap();
        assert_eq!(Method::detect(proc_dir.path(), root.path()), Method::Kernel);

        std::fs::create_dir_all(root.path().join("sbin")).unwrap();
        // A power-off program is no use: on Firecracker it would leave the VM up, halted.
        std::fs::write(root.path().join("sbin/poweroff"), "").unwrap();
        assert_eq!(Method::detect(proc_dir.path(), root.path()), Method::Kernel);
        std::fs::write(root.path().join("sbin/reboot"), "").unwrap();
        assert_eq!(
            Method::detect(proc_dir.path(), root.path()),
            Method::Program("/sbin/reboot".into())
        );
        assert_eq!(
            Method::Program("/sbin/reboot".into()).describe(),
            "the init's /sbin/reboot"
        );
    }
}

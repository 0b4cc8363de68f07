//! A Firecracker process started before a VM needs it: running, its API socket open, nothing
//! configured. Starting Firecracker (the spawn, the loading of a 5 MB executable, the API
//! server coming up) is a couple of milliseconds of every launch that depend on nothing about
//! the VM but the id and socket path on its command line; a spare has them done already.
//!
//! A spare is started as the VM it will become: `--id ID --api-sock <dir>/ID.api`, where ID is
//! the id the caller gives the next VM, so the process reads in `ps` and in its log lines as the
//! VM it serves, like one a launch starts. A launch that adopts it keeps that socket for the VM
//! (the VM's record holds the socket its VMM serves, so stop, supervision and a restarted
//! daemon's reconcile find the process by it as they find any other), and moves the spare's
//! console log to the VM's. A spare nobody adopted is released like any VMM: killed, its socket
//! and console log removed. One whose process died, or that was started from another binary
//! than the launch uses, is released and the launch starts its own process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::Firecracker;
use super::binary::FirecrackerBinary;
use super::launch::{CleanupFailure, MAX_SOCKET_PATH, Resource, release_all};
use crate::FirecrackerError;
use crate::VmmError;
use crate::escalate;

/// A started, unconfigured Firecracker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spare {
    pub pid: u32,
    /// Its `--id`, which Firecracker prints on its log lines.
    pub id: String,
    pub api_socket: PathBuf,
    /// Its stdout and stderr, until a launch moves the file to the VM's console log.
    pub console_log: PathBuf,
    /// The executable it runs.
    pub binary: FirecrackerBinary,
}

impl Firecracker {
    /// Starts a spare for the VM `id`: its API socket `<socket_dir>/<id>.api` (where a launch
    /// of that VM puts it) and its console log `<log_dir>/<id>.console.log`. Returns once the
    /// process runs (its socket may take a few milliseconds more).
    pub fn spawn_spare(
        &self,
        id: &str,
        socket_dir: &Path,
        log_dir: &Path,
    ) -> Result<Spare, VmmError> {
        let id = id.to_owned();
        let api_socket = socket_dir.join(format!("{id}.api"));
        let len = api_socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(VmmError::InvalidSpec(format!(
                "socket path {} is {len} bytes; Unix sockets allow {MAX_SOCKET_PATH}",
                api_socket.display()
            )));
        }
        let console_log = log_dir.join(format!("{id}.console.log"));
        escalate::clear_stale_socket(&*self.host, &api_socket)?;
        let args: Vec<OsString> = vec![
            "--api-sock".into(),
            api_socket.clone().into(),
            "--id".into(),
            id.clone().into(),
        ];
        let pid = self
            .host
            .spawn(&self.binary.path, &args, &console_log)
            .map_err(FirecrackerError::Spawn)?;
        tracing::debug!(pid, %id, "started a spare Firecracker");
        Ok(Spare {
            pid,
            id,
            api_socket,
            console_log,
            binary: self.binary.clone(),
        })
    }

    /// Ends a spare nobody adopted: its process killed, its socket and console log removed.
    /// Safe for a spare whose process already died (its pid, perhaps another process's by now,
    /// is left alone).
    pub fn release_spare(&self, spare: Spare) -> Vec<CleanupFailure> {
        let mut resources = spare_resources(&spare);
        if !self.owns(spare.pid, &spare.api_socket) {
            resources.retain(|r| !matches!(r, Resource::Process { .. }));
        }
        let mut failures = release_all(&*self.host, resources, self.timeouts.kill_wait);
        if let Err(source) = self.host.remove_file(&spare.console_log) {
            failures.push(CleanupFailure::Remove {
                path: spare.console_log,
                source,
            });
        }
        failures
    }

    /// Whether a launch of this backend can adopt `spare`: the same executable, and the
    /// process still the one serving its socket.
    pub(crate) fn can_adopt(&self, spare: &Spare) -> bool {
        spare.binary == self.binary && self.owns(spare.pid, &spare.api_socket)
    }
}

/// What a spare holds, oldest first, as a launch records it.
pub(crate) fn spare_resources(spare: &Spare) -> Vec<Resource> {
    vec![
        Resource::Process { pid: spare.pid },
        Resource::ApiSocket {
            path: spare.api_socket.clone(),
        },
    ]
}

//! `bangerd`, banger's daemon: it owns the state (SQLite under the XDG state dir), runs the
//! long work as operations, and serves the one REST API every client (CLI, TUI, web console)
//! uses, on a Unix socket only its owner can open. It also serves the localhost web console
//! ([`web`]), a client of the same services behind a login only the socket's owner can start.
//!
//! The binary is thin ([`main`]); [`start`] runs a daemon inside any tokio runtime so tests can
//! drive a real daemon on a temporary socket with temporary XDG directories.

pub mod admission;
pub mod api;
mod api_error;
pub mod build;
pub mod capacity;
pub mod config;
pub mod dns;
pub mod doctor;
mod guest_api;
pub mod host;
pub mod image;
mod lifecycle;
pub mod machine;
pub mod operation;
pub mod ports;
pub mod promote;
pub mod snapshot;
pub mod vm;
pub mod warm;
pub mod web;

use std::time::Instant;

use banger_api::paths::Paths;
use banger_api::{ApiError, Capacity, DaemonInfo, Timestamp};
use banger_store::{NetworkPool, Store};

pub use lifecycle::{DaemonError, RunningDaemon, main, start, start_with};
pub use machine::HostDeps;

use crate::config::Config;
use crate::host::HostFacts;
use crate::operation::Operations;

/// The daemon's shared state, one per process.
pub struct Daemon {
    pub paths: Paths,
    pub config: Config,
    pub store: Store,
    pub pool: NetworkPool,
    pub ops: Operations,
    pub host: HostFacts,
    /// Refuses starts beyond the host's configured capacity.
    pub admission: admission::Admission,
    pub machines: machine::Machines,
    /// Ready-made VM disks.
    pub disks: machine::pool::DiskPool,
    /// The Firecracker process started ahead of the next start.
    pub spare: machine::spare::SpareVmm,
    /// Ready VMs restored from a snapshot ahead of need.
    pub warm: warm::WarmPool,
    pub build_id: String,
    pub web: web::Console,
    /// VM names on the bridge.
    pub dns: dns::Dns,
    started_at: Timestamp,
    started: Instant,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.paths.socket())
            .field("build_id", &self.build_id)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    pub fn info(&self) -> DaemonInfo {
        DaemonInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            build_id: self.build_id.clone(),
            pid: std::process::id(),
            socket: self.paths.socket().display().to_string(),
            state_dir: self.paths.state_dir.display().to_string(),
            log_file: self.paths.log_file().display().to_string(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs(),
            web: self.web.info(),
            dns_domain: self
                .config
                .dns
                .enabled
                .then(|| self.config.dns.domain.clone()),
        }
    }

    /// Asks the server to stop accepting requests and exit.
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Measures what banger's VMs hold of the host.
    pub fn capacity(&self) -> Result<Capacity, ApiError> {
        let vms = self.store.list_vms()?;
        let available = banger_host::resources::meminfo()
            .map(|m| m.available_bytes)
            .map_err(|e| ApiError::internal(format!("cannot read memory figures: {e}")))?;
        let fs = banger_host::disk::filesystem_usage(&self.paths.state_dir)
            .map_err(|e| ApiError::internal(format!("cannot measure the state filesystem: {e}")))?;
        let allocated =
            |dir: &std::path::Path| banger_host::disk::allocated_bytes(dir).unwrap_or(0);
        Ok(capacity::aggregate(
            &vms,
            self.host,
            self.admission.limits(),
            available,
            &self.paths.state_dir.display().to_string(),
            capacity::DiskFigures {
                fs_total_bytes: fs.total_bytes,
                fs_available_bytes: fs.available_bytes,
                vm_allocated_bytes: allocated(&self.paths.vms_dir()),
                image_allocated_bytes: allocated(&self.paths.images_dir()),
                snapshot_allocated_bytes: allocated(&self.paths.snapshots_dir()),
            },
        ))
    }
}

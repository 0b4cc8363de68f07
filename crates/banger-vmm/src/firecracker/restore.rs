//! Snapshots of a running VM and VMs restored from them.
//!
//! Firecracker saves a VM's memory and device state, not its disks, and it records each drive's
//! host path in the state file: a restore opens the drives where they were when the snapshot
//! was taken. So that a snapshot holds everything it needs and a restored VM never touches
//! another VM's disks, [`Firecracker::snapshot_vm`] points the paused VM's drives at the
//! snapshot's own copies for the moment Firecracker writes the state, then back; and
//! [`Firecracker::restore`] loads that state into a fresh Firecracker (its own tap through
//! `network_overrides`, its own vsock socket through `vsock_override`), points every drive at
//! the new VM's own files before the guest runs again, and resumes it. A restore that fails at
//! any step releases what it acquired, newest first, exactly as a launch does.

use std::path::{Path, PathBuf};

use super::Firecracker;
use super::client::ApiClient;
use super::jail::{self, JailFile, JailPlan};
use super::launch::{IFACE_ID, Resource, record, release_all, validate};
use super::logger::Logger;
use super::metrics::Metrics;
use super::snapshot::{
    MemoryBackend, MemoryBackendType, NetworkOverride, SnapshotCreateParams, SnapshotLoadParams,
    SnapshotType, VsockOverride,
};
use super::vm::VmState;
use crate::FirecrackerError;
use crate::{InstanceState, VmHandle, VmSpec, VmmError};
use banger_host::Signal;

/// One of the VM's drives and the file that holds its copy in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveCopy {
    /// Firecracker's drive id (`overlay`, `work`, ...).
    pub id: String,
    /// Where the running VM's drive is.
    pub live: PathBuf,
    /// The snapshot's copy, made by the caller while the VM is paused.
    pub copy: PathBuf,
}

/// Where a snapshot goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTarget {
    /// The VM state file Firecracker writes.
    pub state: PathBuf,
    /// The guest memory file Firecracker writes.
    pub memory: PathBuf,
    /// The drives to copy; drives not listed (a read-only base shared by many VMs) stay where
    /// they are in the snapshot.
    pub drives: Vec<DriveCopy>,
}

/// The files a restore reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSource {
    pub state: PathBuf,
    pub memory: PathBuf,
}

impl Firecracker {
    /// Snapshots the VM: pauses it through the API, runs `copy_disks` (which copies each of
    /// `target.drives` from `live` to `copy`), points those drives at their copies, writes the
    /// state and memory files, points the drives back, and resumes the guest if it was running.
    /// A VM paused by the user stays paused. When pointing a drive back fails the VM is left
    /// paused and the error says so: it must not run on the snapshot's copy.
    pub fn snapshot_vm(
        &self,
        vm: &VmHandle,
        target: &SnapshotTarget,
        copy_disks: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), VmmError> {
        match self.jail_dir_of(&vm.api_socket) {
            Some(dir) => self.snapshot_jailed(vm, &dir, target, copy_disks),
            None => self.snapshot_steps(vm, target, copy_disks),
        }
    }

    /// A jailed Firecracker writes and reads only inside its chroot: the snapshot's files (made
    /// empty first) and its copies of the drives are hard-linked there for the time of the
    /// snapshot, under the names a jailed restore places them at, and taken out afterwards. (A
    /// bind mount made now would not reach the jail's mount namespace: a jail on another
    /// filesystem than the snapshots cannot be snapshotted, and says so.)
    fn snapshot_jailed(
        &self,
        vm: &VmHandle,
        dir: &Path,
        target: &SnapshotTarget,
        copy_disks: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), VmmError> {
        let host = &*self.host;
        let record = jail::read_record(host, dir).map_err(|source| VmmError::File {
            path: dir.join(jail::RECORD),
            source,
        })?;
        let root = dir.join("root");
        // A restored VM's chroot still holds the links its restore read, and a snapshot the
        // last daemon did not finish left its own: they go first, or the links below would
        // find their names taken.
        clear_snapshot_links(host, &root).map_err(|source| VmmError::File {
            path: root.clone(),
            source,
        })?;
        let inside = |name: &str| Path::new("/").join(name);
        let mut placed = Vec::new();
        let place = |source: &Path, name: &str, placed: &mut Vec<Resource>| {
            let file = JailFile {
                source: source.to_owned(),
                inside: inside(name),
                writable: true,
            };
            placed.push(jail::place(host, &root, &file, record.uid, true)?);
            Ok::<(), VmmError>(())
        };
        let mut steps = || {
            for file in [&target.state, &target.memory] {
                host.create_file(file).map_err(|source| VmmError::File {
                    path: file.clone(),
                    source,
                })?;
            }
            place(&target.state, jail::SNAPSHOT_STATE, &mut placed)?;
            place(&target.memory, jail::SNAPSHOT_MEMORY, &mut placed)?;
            let mut copies = Vec::new();
            let mut copy_and_place = || {
                copy_disks()?;
                for drive in &target.drives {
                    place(
                        &drive.copy,
                        &jail::snapshot_drive_name(&drive.id),
                        &mut copies,
                    )
                    .map_err(|e| crate::error_chain(&e))?;
                }
                Ok(())
            };
            let inner = SnapshotTarget {
                state: inside(jail::SNAPSHOT_STATE),
                memory: inside(jail::SNAPSHOT_MEMORY),
                drives: target
                    .drives
                    .iter()
                    .map(|d| DriveCopy {
                        id: d.id.clone(),
                        live: inside(&jail::drive_name(&d.id)),
                        copy: inside(&jail::snapshot_drive_name(&d.id)),
                    })
                    .collect(),
            };
            let result = self.snapshot_steps(vm, &inner, &mut copy_and_place);
            placed.extend(copies);
            result
        };
        let result = steps();
        let failures = release_all(host, placed, self.timeouts.kill_wait);
        match (result, failures.is_empty()) {
            (Err(error), _) => Err(error),
            (Ok(()), true) => Ok(()),
            (Ok(()), false) => Err(VmmError::Release(failures)),
        }
    }

    /// Takes out of a jailed VM's chroot the links to snapshot files that a snapshot (or the
    /// VM's restore) placed there: after a daemon died during a snapshot they would keep the
    /// removed snapshot's memory and disk copies allocated until the VM stops. A VM that is
    /// not jailed has none.
    pub fn forget_snapshot_links(&self, api_socket: &Path) -> Result<(), VmmError> {
        let Some(dir) = self.jail_dir_of(api_socket) else {
            return Ok(());
        };
        let root = dir.join("root");
        clear_snapshot_links(&*self.host, &root)
            .map_err(|source| VmmError::File { path: root, source })
    }

    fn snapshot_steps(
        &self,
        vm: &VmHandle,
        target: &SnapshotTarget,
        copy_disks: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), VmmError> {
        let api = self.client(&vm.api_socket);
        let frozen = self.host.is_stopped(vm.pid);
        let was_running = !frozen
            && api
                .describe_instance()
                .map_err(|e| self.not_running_or(vm, e))?
                .state
                == InstanceState::Running;
        if frozen {
            // Firecracker only snapshots a VM it paused itself, and its process must run.
            self.host
                .signal(vm.pid, Signal::Cont)
                .map_err(FirecrackerError::Signal)?;
            self.settle(vm.pid, Signal::Cont)?;
        }
        if frozen || was_running {
            api.patch_vm(VmState::Paused)
                .map_err(|e| self.not_running_or(vm, e))?;
        }
        let mut pointed = Vec::new();
        let written = self.write_snapshot(&api, target, copy_disks, &mut pointed);
        let mut back = Vec::new();
        for drive in pointed.iter().rev() {
            if let Err(error) = api.patch_drive(&drive.id, &drive.live) {
                back.push(format!(
                    "drive {} still uses the snapshot's copy {}: {}",
                    drive.id,
                    drive.copy.display(),
                    crate::error_chain(&error)
                ));
            }
        }
        if !back.is_empty() {
            return Err(VmmError::Snapshot(format!(
                "{}; the VM stays paused: stop it",
                back.join("; ")
            )));
        }
        if was_running {
            api.patch_vm(VmState::Resumed)
                .map_err(|e| self.not_running_or(vm, e))?;
        }
        written
    }

    fn write_snapshot(
        &self,
        api: &ApiClient<'_>,
        target: &SnapshotTarget,
        copy_disks: &mut dyn FnMut() -> Result<(), String>,
        pointed: &mut Vec<DriveCopy>,
    ) -> Result<(), VmmError> {
        copy_disks().map_err(VmmError::Snapshot)?;
        for drive in &target.drives {
            api.patch_drive(&drive.id, &drive.copy)?;
            pointed.push(drive.clone());
        }
        api.create_snapshot(&SnapshotCreateParams {
            snapshot_type: Some(SnapshotType::Full),
            snapshot_path: target.state.clone(),
            mem_file_path: target.memory.clone(),
        })
    }

    /// Starts the VM `spec` from `snapshot` instead of booting it: a fresh Firecracker, its
    /// logger and metrics, the snapshot loaded onto `spec`'s tap and vsock socket, every drive
    /// of `spec` pointed at its file, then the guest resumed. `spec`'s vCPUs, memory, kernel
    /// and boot arguments are the snapshot's; only its id, paths, drives, tap and vsock socket
    /// are used. `beside` runs while the process starts, as for a launch.
    pub fn restore(
        &self,
        spec: &VmSpec,
        snapshot: &SnapshotSource,
        beside: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<VmHandle, VmmError> {
        validate(spec)?;
        if spec.vsock.is_some() && !self.binary.supports(&super::binary::VSOCK_OVERRIDE_VERSION) {
            return Err(VmmError::InvalidSpec(format!(
                "restoring a VM onto its own vsock socket needs Firecracker {} or newer; this is {}",
                super::binary::VSOCK_OVERRIDE_VERSION,
                self.binary.version
            )));
        }
        // A jailed restore finds the snapshot's files, and the drives its state names, in its
        // chroot: the drives the snapshot copied are the new VM's own files there too. Which
        // drives a snapshot copied is the caller's business (its config drive is read-only and
        // copied; the image's shared root is not), so every drive is placed under its
        // snapshot name as well: a link Firecracker does not open costs nothing.
        let mut extra = vec![
            JailFile {
                source: snapshot.state.clone(),
                inside: Path::new("/").join(jail::SNAPSHOT_STATE),
                writable: false,
            },
            JailFile {
                source: snapshot.memory.clone(),
                inside: Path::new("/").join(jail::SNAPSHOT_MEMORY),
                writable: false,
            },
        ];
        extra.extend(spec.drives.iter().map(|d| JailFile {
            source: d.path.clone(),
            inside: Path::new("/").join(jail::snapshot_drive_name(&d.id)),
            writable: !d.read_only,
        }));
        let plan = self.jail_plan(spec, &extra)?;
        let mut acquired = Vec::new();
        match self.restore_steps(spec, plan.as_ref(), snapshot, &mut acquired, beside) {
            Ok(handle) => Ok(handle),
            Err(error) => {
                let error = self.explain(error, &acquired, &spec.paths.console_log);
                let cleanup = release_all(&*self.host, acquired, self.timeouts.kill_wait);
                Err(VmmError::Launch {
                    vm_id: spec.vm_id.clone(),
                    error: Box::new(error),
                    cleanup,
                })
            }
        }
    }

    fn restore_steps(
        &self,
        spec: &VmSpec,
        plan: Option<&JailPlan>,
        snapshot: &SnapshotSource,
        acquired: &mut Vec<Resource>,
        beside: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<VmHandle, VmmError> {
        let (pid, api_socket) = self.start_process(spec, plan, None, acquired, beside)?;
        let (vsock_socket, inner, snapshot) = match plan {
            Some(plan) => (
                plan.vsock_socket.clone(),
                &plan.inner,
                SnapshotSource {
                    state: Path::new("/").join(jail::SNAPSHOT_STATE),
                    memory: Path::new("/").join(jail::SNAPSHOT_MEMORY),
                },
            ),
            None => (
                spec.vsock.as_ref().map(|v| v.uds_path.clone()),
                spec,
                snapshot.clone(),
            ),
        };
        let api = ApiClient::new(&*self.transport, &api_socket);
        api.put_logger(&Logger::to_file(&inner.paths.vmm_log, self.log_level))?;
        api.put_metrics(&Metrics {
            metrics_path: inner.paths.metrics.clone(),
        })?;
        if let Some(path) = &vsock_socket {
            // Bound by the load, before it answers.
            record(acquired, Resource::VsockSocket { path: path.clone() });
        }
        api.load_snapshot(&load_params(inner, &snapshot))?;
        for drive in &inner.drives {
            api.patch_drive(&drive.id, &drive.path)?;
        }
        api.patch_vm(VmState::Resumed)?;
        tracing::info!(vm = %spec.vm_id, pid, jailed = plan.is_some(), "Firecracker VM restored");
        Ok(VmHandle {
            vm_id: spec.vm_id.clone(),
            pid,
            api_socket,
            vsock_socket,
        })
    }
}

/// Removes the snapshot links in the chroot `root`: the state and memory files and the
/// drive copies (`snapshot-*`), links Firecracker no longer needs once a snapshot is written or
/// a restore loaded. A link does not hold an open file: a running restored guest keeps its
/// memory.
fn clear_snapshot_links(host: &dyn crate::host::ProcessHost, root: &Path) -> std::io::Result<()> {
    let prefix = jail::snapshot_drive_name("");
    for path in host.list_dir(root)? {
        let snapshot_file = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix));
        if snapshot_file {
            host.remove_file(&path)?;
        }
    }
    Ok(())
}

/// The `PUT /snapshot/load` of a restore of `spec`: paused after the load, so that its drives
/// can be pointed at its own files before the guest runs.
pub fn load_params(spec: &VmSpec, snapshot: &SnapshotSource) -> SnapshotLoadParams {
    SnapshotLoadParams {
        snapshot_path: snapshot.state.clone(),
        mem_backend: MemoryBackend {
            backend_type: MemoryBackendType::File,
            backend_path: snapshot.memory.clone(),
        },
        track_dirty_pages: None,
        resume_vm: Some(false),
        network_overrides: spec
            .net
            .iter()
            .map(|net| NetworkOverride {
                iface_id: IFACE_ID.to_owned(),
                host_dev_name: net.tap.clone(),
            })
            .collect(),
        vsock_override: spec.vsock.as_ref().map(|v| VsockOverride {
            uds_path: v.uds_path.clone(),
        }),
    }
}

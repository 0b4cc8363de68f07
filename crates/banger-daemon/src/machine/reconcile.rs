//! What a starting daemon does with the VMs the last one left: VMs whose VMM still runs as
//! recorded are adopted (supervised again, never restarted); VMs whose VMM is gone are recorded
//! stopped or failed and their tap, rules and sockets released; VMM processes and sockets in
//! banger's socket directory that no record owns are removed; the NAT table is rebuilt from the
//! adopted NAT VMs. The decisions are [`banger_vmm::reconcile::decide`]'s; this module gathers
//! the observations and carries the actions out.
//!
//! Only what this daemon's store knows is touched: taps are released for this store's VMs, the
//! NAT table is rebuilt only when one of its VMs needs rules, so a second banger (another state
//! directory, e.g. a test's) never removes what the first one runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use banger_api::{Vm, VmState, VmmKind};
use banger_host::network::{self, Resource, VmNet};
use banger_vmm::InstanceState;
use banger_vmm::reconcile::{Action, KillReason, Record, StopReason, decide};

use super::{disks, handle_of, supervise};
use crate::Daemon;

/// How long a killed orphan VMM gets to exit.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What reconcile did, for the log and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub adopted: Vec<String>,
    pub stopped: Vec<String>,
    pub killed: Vec<u32>,
    pub removed_sockets: usize,
    pub removed_taps: Vec<String>,
    /// VMs' and images' directories that no record owned.
    pub removed_dirs: Vec<String>,
}

/// Brings the host in line with the store. Runs before the daemon serves requests.
pub fn reconcile(d: &Arc<Daemon>) -> Summary {
    let mut summary = Summary::default();
    let vms = match d.store.list_vms() {
        Ok(vms) => vms,
        Err(e) => {
            tracing::error!(error = %e, "cannot read VMs to reconcile");
            return summary;
        }
    };
    let by_id: HashMap<&str, &Vm> = vms.iter().map(|vm| (vm.id.as_str(), vm)).collect();
    let socket_dir = d.paths.vm_sockets_dir();

    // One decision over every backend: each record is observed by the backend that started
    // it, and the scans are merged so no backend takes another's sockets for orphans.
    let backends = d.machines.backends.all();
    let backend_of = |kind: VmmKind| backends.iter().find(|b| b.kind() == kind);
    let records: Vec<Record> = vms
        .iter()
        .filter(|vm| vm.runtime.is_some() || vm.state.holds_resources())
        .map(|vm| Record {
            vm_id: vm.id.clone(),
            state: vm.state,
            pid: vm.runtime.as_ref().map(|r| r.pid),
            api_socket: vm.runtime.as_ref().map(|r| r.api_socket.clone().into()),
            vsock_socket: vm
                .runtime
                .as_ref()
                .and_then(|r| r.vsock_socket.clone().map(Into::into)),
            identity_pending: d
                .paths
                .vm_dir(&vm.id)
                .join(crate::snapshot::RESTORE_TOKEN)
                .exists(),
        })
        .collect();
    let observations: Vec<_> = records
        .iter()
        .map(|r| {
            let runtime = by_id.get(r.vm_id.as_str())?.runtime.as_ref()?;
            let backend = backend_of(runtime.vmm)?;
            // A VM its last daemon was snapshotting when it died: its Firecracker answers
            // once the snapshot is written.
            let snapshotting = d
                .paths
                .vm_dir(&r.vm_id)
                .join(crate::snapshot::SNAPSHOTTING)
                .exists();
            Some(backend.observe(
                runtime.pid,
                std::path::Path::new(&runtime.api_socket),
                snapshotting,
            ))
        })
        .collect();
    let scan = backends
        .iter()
        .map(|b| b.scan(&socket_dir))
        .reduce(|a, b| a.merge(b))
        .unwrap_or_default();
    for action in decide(&records, &observations, &scan) {
        tracing::info!(?action, "reconcile");
        match action {
            Action::Adopt { vm_id, pid, state } => {
                let state = match state {
                    InstanceState::Paused => VmState::Paused,
                    _ => VmState::Running,
                };
                let runtime = by_id.get(vm_id.as_str()).and_then(|vm| vm.runtime.clone());
                if let Err(e) = d
                    .store
                    .set_vm_run_state(&vm_id, state, runtime.as_ref(), None)
                {
                    tracing::error!(vm = %vm_id, error = %e, "cannot record an adopted VM");
                }
                // Its published ports, which died with the last daemon.
                if let Some(vm) = by_id.get(vm_id.as_str())
                    && let Err(e) = crate::ports::open_for_start(d, vm)
                {
                    tracing::warn!(vm = %vm.name, error = %e.message, "cannot restore published ports");
                    if let Err(store) =
                        d.store
                            .set_vm_run_state(&vm_id, state, runtime.as_ref(), Some(&e.message))
                    {
                        tracing::error!(vm = %vm_id, error = %store, "cannot record an adopted VM");
                    }
                }
                if let Some(vm) = by_id.get(vm_id.as_str()) {
                    crate::snapshot::recover_interrupted(d, vm);
                }
                if let Some(runtime) = &runtime {
                    supervise(
                        d,
                        &vm_id,
                        pid,
                        runtime.vmm,
                        runtime.api_socket.clone().into(),
                    );
                }
                summary.adopted.push(vm_id);
            }
            Action::MarkStopped { vm_id, reason } => {
                if let Some(vm) = by_id.get(vm_id.as_str()) {
                    mark_stopped(d, vm, reason);
                }
                summary.stopped.push(vm_id);
            }
            Action::Kill {
                pid,
                api_socket,
                reason,
            } => {
                // `decide` only names processes a backend owns (its binary serving a socket
                // in banger's directory); check again right before the signal.
                if backends.iter().any(|b| b.owns(pid, &api_socket)) {
                    if let Err(e) = banger_host::signal(pid, banger_host::Signal::Kill) {
                        tracing::warn!(pid, error = %e, "cannot kill a leftover VMM");
                    } else if !banger_host::wait_for_exit(pid, KILL_WAIT) {
                        tracing::warn!(pid, "a leftover VMM is still running after SIGKILL");
                    }
                    summary.killed.push(pid);
                }
                if reason == KillReason::Orphan {
                    remove_socket(&api_socket, &mut summary);
                }
            }
            Action::RemoveSocket { path } => remove_socket(&path, &mut summary),
        }
    }

    // Jails of VMs that do not run (now that leftover processes are gone): left by a crash
    // during a launch or a stop.
    let running: Vec<String> = d
        .store
        .list_vms()
        .unwrap_or_default()
        .into_iter()
        .filter(|vm| vm.runtime.is_some())
        .map(|vm| vm.id)
        .collect();
    for backend in &backends {
        match backend {
            super::Backend::Firecracker(fc) => {
                for failure in fc.release_idle_jails(&|id| running.iter().any(|r| r == id)) {
                    tracing::warn!(error = %failure, "cannot release a leftover jail");
                }
            }
            // Cgroups of this daemon's QEMU VMs that died while no daemon watched them.
            super::Backend::Qemu(qemu) => {
                let idle =
                    |id: &str| vms.iter().any(|vm| vm.id == id) && !running.iter().any(|r| r == id);
                for failure in qemu.release_idle_cgroups(&idle) {
                    tracing::warn!(error = %failure, "cannot remove a leftover cgroup");
                }
            }
        }
    }

    // Taps of this store's VMs that are not running: left by a crash between network setup
    // and recording the VMM, or by a failed teardown.
    let running_taps: Vec<String> = match d.store.list_vms() {
        Ok(now) => now
            .iter()
            .filter_map(|vm| vm.runtime.as_ref().map(|r| r.tap.clone()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let own_taps: Vec<String> = vms.iter().map(|vm| network::tap_name(&vm.id)).collect();
    match network::list_orphan_taps(&*d.machines.runner, &*d.machines.links, &running_taps) {
        Ok(orphans) => {
            for tap in orphans.into_iter().filter(|t| own_taps.contains(t)) {
                let _guard = d.machines.net_guard();
                match network::release(
                    &*d.machines.runner,
                    &*d.machines.links,
                    &d.machines.net,
                    &Resource::Tap { name: tap.clone() },
                ) {
                    Ok(()) => summary.removed_taps.push(tap),
                    Err(e) => {
                        tracing::warn!(%tap, error = %banger_vmm::error_chain(&e), "cannot remove a leftover tap")
                    }
                }
            }
        }
        Err(e) => tracing::debug!(error = %banger_vmm::error_chain(&e), "cannot list taps"),
    }

    // NAT rules of the adopted VMs, rebuilt atomically (a crash may have left the table
    // without them). Only when there are any: an empty rebuild would remove the table.
    let nat: Vec<VmNet> = d
        .store
        .list_vms()
        .unwrap_or_default()
        .iter()
        .filter(|vm| vm.nat)
        .filter_map(|vm| {
            let runtime = vm.runtime.as_ref()?;
            Some(VmNet {
                id: vm.id.clone(),
                tap: runtime.tap.clone(),
                ip: vm.network.ip.parse().ok()?,
                nat: true,
            })
        })
        .collect();
    if !nat.is_empty() {
        let _guard = d.machines.net_guard();
        if let Err(e) = network::rebuild_nat_table(&*d.machines.runner, &d.machines.net, &nat) {
            tracing::error!(error = %banger_vmm::error_chain(&e), "cannot rebuild the NAT rules of running VMs");
        }
    }
    // Snapshots and image builds a killed daemon did not finish.
    crate::snapshot::sweep(d);
    crate::build::sweep(d);
    // Directories no record owns: what a daemon killed between a VM's or an image's files
    // and its record left (a create, a register, a delete, which removes the record first).
    // Nothing runs yet, so nothing unrecorded is in the making.
    // A VM whose create the daemon died in has its record but not all its files (or none: it
    // died between the record and the directory): it goes, record and files (its tap went
    // above, with the taps of every VM that does not run).
    if let Ok(vms) = d.store.list_vms() {
        for vm in &vms {
            let dir = d.paths.vm_dir(&vm.id);
            if vm.runtime.is_none() && (dir.join(disks::MAKING).exists() || !dir.exists()) {
                tracing::info!(vm = %vm.name, "removing a VM whose create was interrupted");
                // Its directory goes with the files no record owns, below.
                if let Err(e) = d.store.delete_vm(&vm.id) {
                    tracing::error!(vm = %vm.name, error = %e, "cannot remove an unmade VM's record");
                }
            }
        }
    }
    if let Ok(vms) = d.store.list_vms() {
        let ids: Vec<String> = vms.into_iter().map(|vm| vm.id).collect();
        sweep_unowned(&d.paths.vms_dir(), &ids, &mut summary);
    }
    if let Ok(images) = d.store.list_images() {
        let ids: Vec<String> = images.into_iter().map(|image| image.id).collect();
        sweep_unowned(&d.paths.images_dir(), &ids, &mut summary);
    }
    if summary != Summary::default() {
        tracing::info!(?summary, "reconciled VMs with the host");
    }
    summary
}

/// Removes the directories in `dir` whose name is none of `ids`.
fn sweep_unowned(dir: &std::path::Path, ids: &[String], summary: &mut Summary) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || ids.contains(&name) {
            continue;
        }
        tracing::info!(dir = %entry.path().display(), "removing files no record owns");
        disks::remove_tree(&entry.path());
        summary
            .removed_dirs
            .push(entry.path().display().to_string());
    }
}

fn remove_socket(path: &std::path::Path, summary: &mut Summary) {
    match std::fs::remove_file(path) {
        Ok(()) => summary.removed_sockets += 1,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e, "cannot remove a leftover socket")
        }
    }
}

/// Records `vm` as no longer running and releases its tap, rules and sockets.
fn mark_stopped(d: &Daemon, vm: &Vm, reason: StopReason) {
    if let Some(runtime) = &vm.runtime {
        if let Ok(backend) = d.machines.backends.for_running(runtime.vmm) {
            // The process is gone or was killed: this only removes its sockets.
            if let Err(e) = backend.vmm().stop(&handle_of(vm, runtime), Duration::ZERO) {
                tracing::warn!(vm = %vm.name, error = %banger_vmm::error_chain(&e), "cannot release a stopped VMM");
            }
        }
        if let Err(e) = d.machines.teardown_network(vm, &runtime.tap) {
            tracing::warn!(vm = %vm.name, error = %e.message, "cannot take a stopped VM off the network");
        }
    }
    let (state, error) = match reason {
        // The daemon itself was interrupted: the VM did nothing wrong.
        StopReason::NoProcess | StopReason::NeverStarted | StopReason::StopInterrupted => {
            (VmState::Stopped, None)
        }
        StopReason::RestoreInterrupted => {
            // Its restore is over (the state and memory were loaded and their links removed);
            // the snapshot's token goes too: its next start boots the guest as itself.
            crate::snapshot::RestoreFiles::in_dir(&d.paths.vm_dir(&vm.id)).finish();
            (
                VmState::Stopped,
                Some(
                    "banger's daemon stopped while this VM was being restored from a snapshot, \
                     before its guest took its own identity; `banger vm start` boots it as itself"
                        .to_owned(),
                ),
            )
        }
        other => {
            let console = banger_vmm::console_tail(
                &d.paths.vm_dir(&vm.id).join(disks::CONSOLE_LOG),
                super::CONSOLE_LINES,
            )
            .unwrap_or_default();
            let mut why = format!(
                "its VMM ended while banger's daemon was not running ({})",
                describe(other)
            );
            if !console.is_empty() {
                why.push_str("; last console lines:\n");
                why.push_str(&console.join("\n"));
            }
            (VmState::Failed, Some(why))
        }
    };
    if let Err(e) = d
        .store
        .set_vm_run_state(&vm.id, state, None, error.as_deref())
    {
        tracing::error!(vm = %vm.name, error = %e, "cannot record a stopped VM");
    }
}

fn describe(reason: StopReason) -> &'static str {
    match reason {
        StopReason::NoProcess => "no VMM was recorded",
        StopReason::ProcessGone => "the process exited",
        StopReason::PidReused => "its pid now belongs to another process",
        StopReason::SocketGone => "its control socket was removed, so it could not be driven",
        StopReason::NotAnswering => "it did not answer on its control socket",
        StopReason::NeverStarted => "the instance was never started",
        StopReason::StopInterrupted => "a stop was under way",
        StopReason::RestoreInterrupted => "a restore from a snapshot was under way",
    }
}

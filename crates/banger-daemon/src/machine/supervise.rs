//! Supervision: noticing a VMM that exits without banger stopping it and recording its VM
//! stopped, or failed with why (an out-of-memory kill is named).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use banger_api::{VmRuntime, VmState};

use super::CONSOLE_LINES;
use super::disks;
use super::stop::stop_vm;
use crate::Daemon;

/// Watches the VMM process `pid` of VM `vm_id` and records the VM stopped (or failed) when the
/// process exits without banger having stopped it. The kernel tells (pidfd) the moment a
/// process exits; the backend then confirms its process is gone, which also covers a backend
/// whose processes are not the host's (a fake in tests), checked every 200 ms.
pub fn supervise(
    d: &Arc<Daemon>,
    vm_id: &str,
    pid: u32,
    kind: banger_api::VmmKind,
    api_socket: PathBuf,
) {
    let d = d.clone();
    let vm_id = vm_id.to_owned();
    d.machines.runtime.clone().spawn(async move {
        banger_vmm::watch_exit(pid).await;
        if let Ok(backend) = d.machines.backends.for_running(kind) {
            while backend.owns(pid, &api_socket) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let d2 = d.clone();
        let _ = tokio::task::spawn_blocking(move || on_exit(&d2, &vm_id, pid)).await;
    });
}

/// When the kernel's OOM killer killed a process of the VM's cgroup (a VMM that outgrew its
/// memory limit): the limit, e.g. `1280 MiB`. Read before the cgroup is removed.
fn out_of_memory(runtime: &VmRuntime) -> Option<String> {
    let (dir, limit) = match (&runtime.qemu, &runtime.jail) {
        (Some(qemu), _) => (qemu.cgroup.as_deref()?, qemu.memory_max),
        (None, Some(jail)) => (jail.cgroup.as_deref()?, jail.memory_max),
        (None, None) => return None,
    };
    let killed = banger_vmm::cgroup::oom_kills(std::path::Path::new(dir))?;
    (killed > 0).then(|| match limit {
        Some(bytes) => format!("{} MiB", bytes / (1024 * 1024)),
        None => "its limit".to_owned(),
    })
}

/// The VMM `pid` of VM `vm_id` exited. Unless a stop is under way (it releases everything
/// itself), release the VM's resources and record why it ended.
fn on_exit(d: &Daemon, vm_id: &str, pid: u32) {
    let vm = match d.store.find_vm(vm_id) {
        Ok(Some(vm)) => vm,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(vm = vm_id, error = %e, "cannot read a VM whose VMM exited");
            return;
        }
    };
    let Some(runtime) = vm.runtime.clone().filter(|r| r.pid == pid) else {
        return;
    };
    let Ok(vm) = d.store.transition_vm(
        &vm.id,
        &[VmState::Running, VmState::Paused],
        VmState::Stopping,
        "its VMM exited",
        None,
    ) else {
        // Starting (the start sees the exit itself) or stopping (the stop releases).
        return;
    };
    let dir = d.paths.vm_dir(&vm.id);
    let backend = d.machines.backends.for_running(runtime.vmm);
    let exit_code = backend
        .as_ref()
        .ok()
        .and_then(|b| b.exit_code(&dir.join(disks::VMM_LOG), &dir.join(disks::CONSOLE_LOG)));
    let console =
        banger_vmm::console_tail(&dir.join(disks::CONSOLE_LOG), CONSOLE_LINES).unwrap_or_default();
    let reason = match exit_code {
        Some(0) => None,
        Some(code) => Some(format!("its VMM (pid {pid}) exited with code {code}")),
        None => Some(match out_of_memory(&runtime) {
            Some(limit) => format!(
                "its VMM (pid {pid}) was killed by the kernel's OOM killer: it reached its \
                 cgroup's memory limit ({limit}; the guest's memory plus the VMM's overhead, \
                 `qemu_memory_overhead` or `jail_memory_overhead` in config.toml)"
            ),
            None => format!("its VMM (pid {pid}) was killed or crashed"),
        }),
    };
    let reason = reason.map(|r| {
        if console.is_empty() {
            r
        } else {
            format!("{r}; last console lines:\n{}", console.join("\n"))
        }
    });
    tracing::warn!(vm = %vm.name, pid, reason = reason.as_deref().unwrap_or("guest shut down"), "VMM exited on its own");
    let graceful = Duration::ZERO;
    match stop_vm(d, None, &vm, graceful) {
        Ok(_) => {
            if let Some(reason) = &reason
                && let Err(e) =
                    d.store
                        .set_vm_run_state(&vm.id, VmState::Failed, None, Some(reason))
            {
                tracing::error!(vm = %vm.name, error = %e, "cannot record a VM's failure");
            }
        }
        Err(e) => tracing::error!(vm = %vm.name, error = %e.message, "cannot release an exited VM"),
    }
}

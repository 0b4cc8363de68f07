//! Stopping a VM: the request, the stop operation (the guest asked to shut down, then its VMM
//! ended, then its network released), restart, pause and resume, and the stops a build or a
//! delete needs first.

use std::sync::Arc;
use std::time::Duration;

use banger_api::{ApiError, ErrorCode, Operation, OperationKind, Vm, VmRuntime, VmState};

use super::backend::Backend;
use super::guest;
use super::start::{admit_start, start_stages, start_vm};
use super::{RESTART_STOP_STAGE, STOP_STAGES, handle_of, vmm_error};
use crate::Daemon;
use crate::admission::Ask;
use crate::operation::OperationContext;

/// `POST /v1/vms/{name}/stop`.
pub fn request_stop(d: &Arc<Daemon>, name: &str) -> Result<Operation, ApiError> {
    let vm = begin_stop(d, name)?;
    let d2 = d.clone();
    Ok(d.ops.spawn(
        OperationKind::StopVm,
        &vm.name.clone(),
        STOP_STAGES,
        move |cx| {
            let vm = stop_vm(&d2, Some(cx), &vm, d2.config.defaults.stop_timeout)?;
            serde_json::to_value(&vm).map_err(|e| ApiError::internal(e.to_string()))
        },
    ))
}

/// Moves a running or paused VM to `stopping`; returns it as it was.
fn begin_stop(d: &Daemon, name: &str) -> Result<Vm, ApiError> {
    let vm = crate::vm::find(d, name)?;
    let hint = match vm.state {
        VmState::Starting | VmState::Stopping => {
            Some("wait for the operation in progress (`banger vm show NAME`)")
        }
        _ => None,
    };
    Ok(d.store.transition_vm(
        &vm.id,
        &[VmState::Running, VmState::Paused],
        VmState::Stopping,
        "only a running or paused VM can be stopped",
        hint,
    )?)
}

/// Stops `vm` (in state `stopping`): asks the guest to shut down for up to `graceful`, ends
/// its VMM, takes it off the network and records it stopped. Stopping is not cancellable: a
/// half-stopped VM helps nobody.
pub fn stop_vm(
    d: &Daemon,
    cx: Option<&OperationContext>,
    vm: &Vm,
    graceful: Duration,
) -> Result<Vm, ApiError> {
    stop_vm_noting(d, cx, vm, graceful).map(|(vm, _)| vm)
}

/// [`stop_vm`], also saying how the VMM ended (`None` when the VM had none).
fn stop_vm_noting(
    d: &Daemon,
    cx: Option<&OperationContext>,
    vm: &Vm,
    graceful: Duration,
) -> Result<(Vm, Option<banger_vmm::StopOutcome>), ApiError> {
    let m = &d.machines;
    let mut ended = None;
    let begin = |stage: &str| {
        if let Some(cx) = cx {
            cx.begin(stage);
        }
    };
    begin("vmm");
    // The forwards go first: nothing should connect to a guest that is shutting down.
    m.forwards.close(&vm.id);
    let mut errors = Vec::new();
    if let Some(runtime) = &vm.runtime {
        match m.backends.for_running(runtime.vmm) {
            Ok(backend) => match stop_guest(d, vm, runtime, &backend, graceful) {
                Ok(outcome) => {
                    tracing::info!(vm = %vm.name, ?outcome, "VMM stopped");
                    ended = Some(outcome);
                    if let Some(cx) = cx {
                        cx.done("vmm", Some(stop_note(outcome).into()));
                    }
                }
                Err(e) => errors.push(vmm_error("stop", vm, &e).message),
            },
            Err(e) => errors.push(e.message),
        }
        begin("network");
        if let Err(e) = m.teardown_network(vm, &runtime.tap) {
            errors.push(e.message);
        }
    }
    if let Some(cx) = cx {
        cx.done("network", None);
    }
    if errors.is_empty() {
        d.store
            .set_vm_run_state(&vm.id, VmState::Stopped, None, None)?;
        tracing::info!(vm = %vm.name, "VM stopped");
        Ok((crate::vm::find(d, &vm.id)?, ended))
    } else {
        let message = errors.join("; ");
        // The VMM or tap may still exist: `failed` keeps the record pointing at them for the
        // next stop or the next daemon's reconcile.
        d.store
            .set_vm_run_state(&vm.id, VmState::Failed, vm.runtime.as_ref(), Some(&message))?;
        Err(ApiError::internal(message)
            .with_hint("stop it again with `banger vm stop`; `banger doctor` checks the host"))
    }
}

/// Ends a VM's VMM: first through the guest agent when the image has one (it syncs the
/// guest's disks and powers it off, which works the same on every backend, where an ACPI power
/// button needs a daemon in the guest to listen), then through the backend, which asks the
/// guest once more and ends the VMM after what is left of `graceful`.
fn stop_guest(
    d: &Daemon,
    vm: &Vm,
    runtime: &VmRuntime,
    backend: &Backend,
    graceful: Duration,
) -> Result<banger_vmm::StopOutcome, banger_vmm::VmmError> {
    let handle = handle_of(vm, runtime);
    let started = std::time::Instant::now();
    let has_agent = d
        .store
        .find_image(&vm.image.id)
        .ok()
        .flatten()
        .is_some_and(|image| {
            image
                .manifest
                .services
                .iter()
                .any(|s| s.name == guest::AGENT_SERVICE)
        });
    if has_agent && !graceful.is_zero() && vm.state == VmState::Running {
        let asked = guest::agent(d, vm).ok().is_some_and(|agent| {
            d.machines
                .block_on(tokio::time::timeout(
                    graceful.min(Duration::from_secs(3)),
                    agent.shutdown(),
                ))
                .is_ok_and(|answer| answer.is_ok())
        });
        if asked {
            let api_socket = handle.api_socket.clone();
            while backend.owns(runtime.pid, &api_socket) && started.elapsed() < graceful {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !backend.owns(runtime.pid, &api_socket) {
                // Only the sockets are left to remove.
                backend.vmm().stop(&handle, Duration::ZERO)?;
                return Ok(banger_vmm::StopOutcome::ShutDown);
            }
        }
    }
    backend
        .vmm()
        .stop(&handle, graceful.saturating_sub(started.elapsed()))
}

fn stop_note(outcome: banger_vmm::StopOutcome) -> &'static str {
    match outcome {
        banger_vmm::StopOutcome::AlreadyExited => "the VMM had already exited",
        banger_vmm::StopOutcome::ShutDown => "the guest shut down",
        banger_vmm::StopOutcome::Terminated => {
            "the guest did not shut down in time; its VMM was terminated"
        }
        banger_vmm::StopOutcome::Killed => "the VMM had to be killed",
    }
}

/// `POST /v1/vms/{name}/restart`: stop, then start, as one operation.
pub fn request_restart(d: &Arc<Daemon>, name: &str) -> Result<Operation, ApiError> {
    // A VM that could not start again (the limits were lowered since it started) is not
    // stopped for nothing.
    let found = crate::vm::find(d, name)?;
    d.admission
        .check_fits_idle(Some(&found.name), found.vcpus, found.memory_mib, Ask::Start)?;
    let vm = begin_stop(d, name)?;
    let start = start_stages(d, &vm);
    let mut stages = vec![RESTART_STOP_STAGE];
    stages.extend(start.iter().map(String::as_str));
    let d2 = d.clone();
    Ok(d.ops.spawn(
        OperationKind::RestartVm,
        &vm.name.clone(),
        &stages,
        move |cx| {
            cx.begin(RESTART_STOP_STAGE);
            stop_vm(&d2, None, &vm, d2.config.defaults.stop_timeout)?;
            cx.done(RESTART_STOP_STAGE, None);
            // Admitted again: what it held was released by the stop, and another start may
            // have taken the room meanwhile. Refused, it stays stopped and says why.
            let vm = admit_start(
                &d2,
                &vm.id,
                &[VmState::Stopped],
                "it changed while restarting",
                None,
            )
            .inspect_err(|e| {
                if e.code == ErrorCode::OverCapacity
                    && let Err(store) = d2.store.set_vm_run_state(
                        &vm.id,
                        VmState::Stopped,
                        None,
                        Some(&e.message),
                    )
                {
                    tracing::error!(vm = %vm.name, error = %store, "cannot record a refused restart");
                }
            })?;
            let vm = start_vm(&d2, cx, &vm)?;
            serde_json::to_value(&vm).map_err(|e| ApiError::internal(e.to_string()))
        },
    ))
}

/// `POST /v1/vms/{name}/pause` (`pause = true`) and `/resume`.
pub fn pause_or_resume(d: &Daemon, name: &str, pause: bool) -> Result<Vm, ApiError> {
    let vm = crate::vm::find(d, name)?;
    let (from, to, verb) = if pause {
        (VmState::Running, VmState::Paused, "pause")
    } else {
        (VmState::Paused, VmState::Running, "resume")
    };
    let runtime = match (&vm.runtime, vm.state == from) {
        (Some(runtime), true) => runtime,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "VM {:?} is {}; only a {from} VM can be {verb}d",
                    vm.name, vm.state
                ),
            ));
        }
    };
    let backend = d.machines.backends.for_running(runtime.vmm)?;
    let handle = handle_of(&vm, runtime);
    let result = if pause {
        backend.vmm().pause(&handle)
    } else {
        backend.vmm().resume(&handle)
    };
    result.map_err(|e| vmm_error(verb, &vm, &e))?;
    d.store.transition_vm(
        &vm.id,
        &[from],
        to,
        &format!("it changed while being {verb}d"),
        None,
    )?;
    tracing::info!(vm = %vm.name, "VM {verb}d");
    crate::vm::find(d, &vm.id)
}

/// Stops a build's VM, which must be running, giving its guest at least a minute to power
/// off cleanly (its root becomes an image); the stopped VM and how its VMM ended.
pub fn stop_for_build(d: &Daemon, vm: &Vm) -> Result<(Vm, &'static str), ApiError> {
    let vm = begin_stop(d, &vm.id)?;
    let graceful = d.config.defaults.stop_timeout.max(Duration::from_secs(60));
    let (vm, outcome) = stop_vm_noting(d, None, &vm, graceful)?;
    Ok((vm, outcome.map_or("the VM had no VMM", stop_note)))
}

/// Stops a running or paused VM before it is deleted, giving its guest `graceful` to power
/// off; returns it as stored afterwards.
pub fn stop_for_delete(d: &Daemon, vm: &Vm, graceful: Duration) -> Result<Vm, ApiError> {
    match vm.state {
        VmState::Running | VmState::Paused => {
            let vm = begin_stop(d, &vm.id)?;
            stop_vm(d, None, &vm, graceful)
        }
        VmState::Starting | VmState::Stopping => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "VM {:?} is {}; it can be deleted once that finishes",
                vm.name, vm.state
            ),
        )),
        VmState::Failed if vm.runtime.is_some() => {
            // A failed stop left a runtime behind: finish that stop first.
            stop_vm(d, None, vm, Duration::ZERO)
        }
        VmState::Stopped | VmState::Failed => Ok(vm.clone()),
    }
}

//! Readiness: after its VMM starts, a VM waits for its guest agent and its image's services;
//! a VM that does not become ready stays running, with a diagnosis of what banger can see of
//! it (console lines, the VMM's exit, the agent) as its error.

use std::path::PathBuf;
use std::sync::Arc;

use banger_api::{ApiError, ErrorCode, Image, Vm, VmRuntime, VmState};
use banger_host::network;

use super::backend::Backend;
use super::{disks, guest};
use crate::Daemon;
use crate::operation::OperationContext;

/// Waits for the guest agent and the image's services (the stages after `started`), then
/// records the start's stage timings with the VM. A VM that does not become ready is left
/// running, with the diagnosis as its `last_error`.
pub(super) fn wait_until_ready(
    d: &Arc<Daemon>,
    cx: &OperationContext,
    vm: &Vm,
    image: &Image,
    backend: &Backend,
    mut runtime: VmRuntime,
) -> Result<Vm, ApiError> {
    let checks = &image.manifest.services;
    if checks.is_empty() {
        cx.done(
            "started",
            Some("instance started; the image declares no services to wait for".into()),
        );
    } else {
        cx.done("started", None);
    }
    let api_socket = PathBuf::from(&runtime.api_socket);
    let waited = guest::wait_ready(
        d,
        vm,
        checks,
        std::time::Instant::now(),
        d.config.defaults.ready_timeout,
        |stage| cx.begin(stage),
        || cx.cancelled(),
        || backend.owns(runtime.pid, &api_socket),
    );
    if let Err(error) = waited {
        let error = not_ready(d, vm, &runtime, backend, error);
        if let Ok(Some(now)) = d.store.find_vm(&vm.id)
            && now.state == VmState::Running
            && let Err(e) = d.store.set_vm_run_state(
                &vm.id,
                VmState::Running,
                Some(&runtime),
                Some(&error.message),
            )
        {
            tracing::error!(vm = %vm.name, error = %e, "cannot record why a VM is not ready");
        }
        return Err(error);
    }
    if let Some(last) = checks.last() {
        cx.done(&last.name, None);
    }
    runtime.boot = cx
        .snapshot()
        .stages
        .iter()
        .filter_map(|stage| {
            let (start, end) = (stage.started_at?, stage.ended_at?);
            Some(banger_api::BootTiming {
                stage: stage.name.clone(),
                ms: start.until(end).as_millis() as u64,
            })
        })
        .collect();
    d.store
        .set_vm_run_state(&vm.id, VmState::Running, Some(&runtime), None)?;
    crate::vm::find(d, &vm.id)
}

/// The error of a start whose VM runs but is not ready, with what banger can see of it.
fn not_ready(
    d: &Daemon,
    vm: &Vm,
    runtime: &VmRuntime,
    backend: &Backend,
    error: guest::ReadyError,
) -> ApiError {
    let (headline, seen) = match error {
        guest::ReadyError::Setup(e) => return e,
        guest::ReadyError::Cancelled => {
            return ApiError::new(
                ErrorCode::Cancelled,
                format!(
                    "stopped waiting for VM {} to become ready; it keeps running",
                    vm.name
                ),
            )
            .with_hint(format!("stop it with `banger vm stop {}`", vm.name));
        }
        guest::ReadyError::Died { check, seen } => (
            format!(
                "VM {}'s VMM exited while banger waited for {} (port {})",
                vm.name, check.name, check.port
            ),
            seen,
        ),
        guest::ReadyError::Timeout {
            check,
            seen,
            waited,
        } if check.name != guest::AGENT_SERVICE && check.name != guest::SSH_SERVICE => {
            let mut headline = format!(
                "VM {} did not become ready within {}: service {} (port {}) never answered",
                vm.name,
                humantime::format_duration(waited),
                check.name,
                check.port
            );
            let log = format!(
                "/{}",
                banger_image::bootstrap::guest::service_log(&check.name)
            );
            let tail = guest::agent(d, vm)
                .map_err(|e| format!("the guest agent cannot be reached to show {log}: {e}"))
                .and_then(|agent| {
                    d.machines
                        .block_on(guest::service_log_tail(&agent, &check.name))
                });
            match tail {
                Ok(lines) if lines.is_empty() => {
                    headline.push_str(&format!("\nservice {}'s log {log} is empty", check.name));
                }
                Ok(lines) => {
                    headline.push_str(&format!(
                        "\nlast lines of service {}'s log {log}:",
                        check.name
                    ));
                    for line in lines {
                        headline.push_str(&format!("\n    {line}"));
                    }
                }
                Err(why) => headline.push_str(&format!("\n{why}")),
            }
            (headline, seen)
        }
        guest::ReadyError::Timeout {
            check,
            seen,
            waited,
        } => (
            format!(
                "VM {} did not become ready within {}: {} (port {}) never answered",
                vm.name,
                humantime::format_duration(waited),
                check.name,
                check.port
            ),
            seen,
        ),
    };
    let dir = d.paths.vm_dir(&vm.id);
    let api_socket = PathBuf::from(&runtime.api_socket);
    let mut lines = vec![
        headline,
        format!("last attempt: {seen}"),
        format!(
            "VMM: {} pid {} {}",
            runtime.vmm,
            runtime.pid,
            if backend.owns(runtime.pid, &api_socket) {
                "running"
            } else {
                "not running"
            }
        ),
        format!(
            "control socket {}: {}",
            api_socket.display(),
            if api_socket.exists() {
                "present"
            } else {
                "missing"
            }
        ),
    ];
    let tap = d
        .machines
        .runner
        .run(&banger_host::CommandSpec::new("ip").args([
            "-br",
            "link",
            "show",
            "dev",
            &runtime.tap,
        ]))
        .map(|out| {
            out.stdout_lossy()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| format!("{} missing", runtime.tap));
    lines.push(format!("tap: {tap}"));
    lines.push(format!(
        "guest network: {}/{} via {}{}",
        vm.network.ip,
        vm.network.prefix_len,
        vm.network.gateway,
        if vm.nat { ", NAT on" } else { "" }
    ));
    if vm.nat {
        let listing = d.machines.runner.run(
            &d.machines
                .net
                .privilege
                .net_command("nft", ["-j", "list", "table", "inet", network::NFT_TABLE]),
        );
        let comment = network::vm_comment(&vm.id);
        lines.push(match listing {
            Ok(out) => {
                let rules = out.stdout_lossy().matches(comment.as_str()).count();
                format!(
                    "NAT rules ({comment}): {rules} in table inet {}",
                    network::NFT_TABLE
                )
            }
            Err(e) => format!("NAT rules: cannot list them: {e}"),
        });
    }
    let console = banger_vmm::console_tail(&dir.join(disks::CONSOLE_LOG), 15).unwrap_or_default();
    if console.is_empty() {
        lines.push("the guest console is empty".into());
    } else {
        lines.push("last console lines:".into());
        lines.extend(console.into_iter().map(|l| format!("    {l}")));
    }
    ApiError::new(ErrorCode::Unavailable, lines.join("\n")).with_hint(format!(
        "the VM is still running: `banger vm logs {0}` shows its whole console, `banger vm \
         stop {0}` stops it",
        vm.name
    ))
}

//! Runs the app's [`Effect`]s as background tasks on the TUI's thread (a `LocalSet`: the CLI's
//! runtime has one thread, and the daemon helpers' futures are not `Send`) and reports each
//! outcome back as a [`Msg`], so the render loop never waits for bangerd.
//!
//! The bootstrap reuses the CLI's [`Daemon`]: find it, then start it or replace an outdated
//! build, reporting each step with its timing. Reads go straight to the socket with the
//! daemon's client (polling must not start a daemon the user just stopped); actions go
//! through [`Daemon::call`], which starts or replaces bangerd like any CLI command would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_agent_protocol::protocol::Health;
use banger_api::{ApiError, ClientError, ErrorCode};
use tokio::sync::mpsc::UnboundedSender;

use super::app::{Acted, Action, Effect, Msg, Stage};
use crate::daemon::{Daemon, Found};
use crate::exit::Failure;
use crate::guest::SshSession;

/// How long a health request may take: a guest agent that hangs shows as unreachable instead
/// of holding the (single) health request forever.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Worker {
    tx: UnboundedSender<Msg>,
    /// Set by the bootstrap once bangerd answers.
    daemon: Arc<Mutex<Option<Daemon>>>,
}

impl Worker {
    pub fn new(tx: UnboundedSender<Msg>) -> Worker {
        Worker {
            tx,
            daemon: Arc::default(),
        }
    }

    /// bangerd, once the bootstrap found it.
    pub fn daemon(&self) -> Option<Daemon> {
        self.daemon.lock().ok().and_then(|d| d.clone())
    }

    /// Starts `effect` in the background.
    pub fn run(&self, effect: Effect) {
        let tx = self.tx.clone();
        if effect == Effect::Bootstrap {
            let slot = self.daemon.clone();
            tokio::task::spawn_local(bootstrap(tx, slot));
            return;
        }
        let Some(daemon) = self.daemon() else {
            let _ = tx.send(not_ready(effect));
            return;
        };
        tokio::task::spawn_local(async move {
            let client = daemon.client();
            let started = Instant::now();
            let msg = match effect {
                Effect::Bootstrap => return,
                Effect::LoadVms => Msg::Vms(api(client.list_vms().await), started.elapsed()),
                Effect::LoadImages => {
                    Msg::Images(api(client.list_images().await), started.elapsed())
                }
                Effect::LoadSnapshots => Msg::Snapshots(api(client.list_snapshots().await)),
                Effect::LoadCapacity => {
                    Msg::Capacity(api(client.capacity().await), started.elapsed())
                }
                Effect::Snapshot(vm, name) => {
                    let request = banger_api::SnapshotVmRequest { name };
                    let result = daemon
                        .call(async |c| c.snapshot_vm(&vm, &request).await)
                        .await
                        .map_err(|f| f.error);
                    Msg::Snapshotted(vm, result)
                }
                Effect::Clone(vm, name) => {
                    let request = banger_api::CloneVmRequest { name, nat: None };
                    Msg::Created(Box::new(
                        daemon
                            .call(async |c| c.clone_vm(&vm, &request).await)
                            .await
                            .map_err(|f| f.error),
                    ))
                }
                Effect::DeleteSnapshot(name) => {
                    let result = daemon
                        .call(async |c| c.delete_snapshot(&name).await)
                        .await
                        .map(drop)
                        .map_err(|f| f.error);
                    Msg::SnapshotDeleted(name, result)
                }
                Effect::LoadOperations => Msg::Operations(api(client.list_operations().await)),
                Effect::CreateVm(request) => Msg::Created(Box::new(
                    daemon
                        .call(async |c| c.create_vm(&request).await)
                        .await
                        .map_err(|f| f.error),
                )),
                Effect::Promote(request) => {
                    let result = daemon
                        .call(async |c| c.promote_image(&request).await)
                        .await
                        .map_err(|f| f.error);
                    Msg::Promoted(request, result)
                }
                Effect::Act(name, action) => {
                    let result = act(&daemon, &name, action).await.map_err(|f| f.error);
                    Msg::Acted(name, action, result)
                }
                Effect::LoadConsole(name, offset) => {
                    let result = api(client.console(&name, offset).await);
                    Msg::Console(name, offset, result)
                }
                Effect::LoadHealth(name) => {
                    let result = health(&daemon, &name).await;
                    Msg::Health(name, result)
                }
                Effect::PrepareSsh(name) => {
                    let result = SshSession::prepare(&daemon, &name, &[])
                        .await
                        .map_err(|f| f.error);
                    Msg::SshReady(name, result)
                }
            };
            // The receiver is gone only when the TUI is quitting.
            let _ = tx.send(msg);
        });
    }
}

/// Sends `action` for the VM `name`; start, stop and restart answer with their operation,
/// which the app follows by polling.
async fn act(daemon: &Daemon, name: &str, action: Action) -> Result<Acted, Failure> {
    if let Some(lifecycle) = action.lifecycle() {
        return daemon
            .call(async |c| c.vm_action(name, lifecycle).await)
            .await
            .map(Acted::Operation);
    }
    match action {
        Action::Delete => daemon
            .call(async |c| c.delete_vm(name).await)
            .await
            .map(|()| Acted::Deleted),
        Action::Reset => daemon
            .call(async |c| c.reset_vm(name).await)
            .await
            .map(|vm| Acted::Vm(Box::new(vm))),
        _ => {
            let pause = action == Action::Pause;
            daemon
                .call(async |c| c.pause_vm(name, pause).await)
                .await
                .map(|vm| Acted::Vm(Box::new(vm)))
        }
    }
}

/// The guest agent's health of VM `name`, within [`HEALTH_TIMEOUT`].
async fn health(daemon: &Daemon, name: &str) -> Result<Health, ApiError> {
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, daemon.client().guest_health(name))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the guest agent did not answer within {}s",
                    HEALTH_TIMEOUT.as_secs()
                ),
            )
            .with_hint(format!("`banger vm logs {name}` shows the guest console"))
        })?;
    api(answer)
}

fn api<T>(result: Result<T, ClientError>) -> Result<T, ApiError> {
    result.map_err(|e| Failure::from(e).error)
}

/// The answer to an effect asked for before bangerd was found.
fn not_ready(effect: Effect) -> Msg {
    let error = ApiError::new(
        banger_api::ErrorCode::Unavailable,
        "bangerd is not available yet",
    )
    .with_hint("press r to try to start it again");
    match effect {
        Effect::Bootstrap | Effect::LoadVms => Msg::Vms(Err(error), Duration::ZERO),
        Effect::LoadImages => Msg::Images(Err(error), Duration::ZERO),
        Effect::LoadSnapshots => Msg::Snapshots(Err(error)),
        Effect::Snapshot(vm, _) => Msg::Snapshotted(vm, Err(error)),
        Effect::Clone(..) => Msg::Created(Box::new(Err(error))),
        Effect::DeleteSnapshot(name) => Msg::SnapshotDeleted(name, Err(error)),
        Effect::LoadCapacity => Msg::Capacity(Err(error), Duration::ZERO),
        Effect::LoadOperations => Msg::Operations(Err(error)),
        Effect::CreateVm(_) => Msg::Created(Box::new(Err(error))),
        Effect::Promote(request) => Msg::Promoted(request, Err(error)),
        Effect::Act(name, action) => Msg::Acted(name, action, Err(error)),
        Effect::LoadConsole(name, offset) => Msg::Console(name, offset, Err(error)),
        Effect::LoadHealth(name) => Msg::Health(name, Err(error)),
        Effect::PrepareSsh(name) => Msg::SshReady(name, Err(error)),
    }
}

/// Finds bangerd, starting or replacing it when needed, one reported stage at a time.
async fn bootstrap(tx: UnboundedSender<Msg>, slot: Arc<Mutex<Option<Daemon>>>) {
    let send = |msg| {
        let _ = tx.send(msg);
    };
    let stage = |stage: Stage, started: Instant, result: Result<(), Failure>| match result {
        Ok(()) => {
            send(Msg::StageDone(stage, started.elapsed()));
            true
        }
        Err(f) => {
            send(Msg::BootstrapFailed(stage, started.elapsed(), f.error));
            false
        }
    };

    send(Msg::StageStarted(Stage::FindDaemon));
    let started = Instant::now();
    let found = match Daemon::locate() {
        Ok(daemon) => {
            let daemon = daemon.quiet();
            daemon.find().await.map(|found| (daemon, found))
        }
        Err(f) => Err(f),
    };
    let (daemon, found) = match found {
        Ok(ok) => {
            stage(Stage::FindDaemon, started, Ok(()));
            ok
        }
        Err(f) => {
            stage(Stage::FindDaemon, started, Err(f));
            return;
        }
    };
    let info = match found {
        Found::Ready(info) => info,
        Found::Absent | Found::Outdated(_) => {
            let which = if matches!(found, Found::Absent) {
                Stage::StartDaemon
            } else {
                Stage::RestartDaemon
            };
            send(Msg::StageStarted(which));
            let started = Instant::now();
            let result = if which == Stage::StartDaemon {
                daemon.spawn().await
            } else {
                daemon.replace_outdated().await
            };
            match result {
                Ok(info) => {
                    stage(which, started, Ok(()));
                    info
                }
                Err(f) => {
                    stage(which, started, Err(f));
                    return;
                }
            }
        }
    };
    if let Ok(mut slot) = slot.lock() {
        *slot = Some(daemon);
    }
    send(Msg::DaemonReady(info));
}

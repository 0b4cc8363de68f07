//! The TUI's state and how it changes: every key press, answer from bangerd and clock tick is a
//! [`Msg`]; [`App::update`] applies it and returns the [`Effect`]s (requests to bangerd) to run
//! in the background. Nothing here does I/O or reads a clock, so every behaviour — the staged
//! startup, polling cadence, selection, the create form, confirmations — is testable by
//! feeding messages, and `ui` renders any state without side effects.
//!
//! Actions on the selected VM (start, stop, restart, pause, resume, delete) are one
//! [`Action`] each, with a key in [`App::main_key`]; the ones that end what runs in a VM or
//! lose its disks ask first through [`Overlay::Confirm`]. bangerd decides whether an action is
//! allowed: a refusal (a stopped VM cannot be stopped) is shown with its hint, not guessed here.
//!
//! `P` asks for the image name a stopped VM becomes ([`Overlay::Promote`]) and starts the
//! promotion, followed like any operation; bangerd decides whether the VM's state allows it.
//!
//! Snapshots: `n` snapshots the selected VM and `C` clones it, each after asking a name
//! ([`Overlay::Name`]); the third view lists snapshots, where Enter restores the selected one
//! into a new VM (asking its name) and `d` deletes it (asking first).
//!
//! Inside a VM: `l` opens its console ([`Overlay::Logs`], read on while open), `S` or Enter
//! logs into a running VM with ssh — the one thing the TUI cannot do in the background: once
//! bangerd said how to reach the VM, the session waits in [`App::take_session`] for the main
//! loop, which hands it the terminal. The guest agent's health of each running VM is polled
//! one request at a time on a schedule of its own ([`App::health_of`]).
//!
//! It stays one file because it is one screen's state machine: every arm of [`App::update`] reads
//! and changes the same fields (selection, loads, requests in flight, the overlay), and the
//! overlays' own editing state is already in `form`, `name_prompt` and `promote`.

use std::collections::BTreeMap;
use std::time::Duration;

use banger_agent_protocol::protocol::Health;
use banger_api::{
    ApiError, Capacity, ConsoleChunk, CreateVmRequest, CreatedVm, DaemonInfo, ErrorCode, Image,
    Operation, OperationKind, OperationState, PromoteImageRequest, Snapshot, Timestamp, Vm,
    VmAction, VmState,
};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::form::{CreateForm, Outcome};
use super::logs::{Logs, LogsKey};
use super::name_prompt::{NameOutcome, NamePrompt, Naming};
use super::promote::{PromoteForm, PromoteOutcome};
use super::theme::Theme;
use crate::guest::SshSession;

/// Polling cadence when nothing is under way: VM list, capacity and operations are cheap
/// reads for bangerd (its list is its hot path, operations live in memory).
pub const POLL_IDLE: Duration = Duration::from_secs(2);
/// Polling cadence while an operation runs or an action waits for its answer, so stages move.
pub const POLL_BUSY: Duration = Duration::from_millis(500);
/// Images change only through operations (which trigger a reload when they end), so the
/// periodic poll reads them only every this many rounds, for changes made elsewhere.
const IMAGES_EVERY: u64 = 5;
/// How long a notice stays on the status line.
const NOTICE_FOR: Duration = Duration::from_secs(8);
/// How often the guest agent's health of a running VM is asked for; the selected VM's more
/// often, since its details show it. One request at a time for all VMs together.
pub const HEALTH_EVERY: Duration = Duration::from_secs(10);
pub const HEALTH_SELECTED_EVERY: Duration = Duration::from_secs(3);

/// A step of the startup, timed on the status line so that a slow one is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    FindDaemon,
    StartDaemon,
    RestartDaemon,
    LoadVms,
    LoadImages,
    LoadCapacity,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::FindDaemon => "find daemon",
            Stage::StartDaemon => "start daemon",
            Stage::RestartDaemon => "restart daemon",
            Stage::LoadVms => "load VMs",
            Stage::LoadImages => "load images",
            Stage::LoadCapacity => "load capacity",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageState {
    /// Started at this point of the app's clock.
    Running {
        since: Duration,
    },
    Done(Duration),
    Failed(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageReport {
    pub stage: Stage,
    pub state: StageState,
}

/// Data that arrives from bangerd in the background.
#[derive(Debug, Clone, PartialEq)]
pub enum Load<T> {
    Loading,
    Ready(T),
    /// Never loaded, for this reason.
    Failed(ApiError),
}

impl<T> Load<T> {
    pub fn ready(&self) -> Option<&T> {
        match self {
            Load::Ready(t) => Some(t),
            _ => None,
        }
    }

    /// A load still waiting takes the bootstrap's error: it will not arrive.
    fn fail(&mut self, error: &ApiError) {
        if matches!(self, Load::Loading) {
            *self = Load::Failed(error.clone());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Vms,
    Images,
    Snapshots,
}

/// What the user asks of the selected VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Pause,
    Resume,
    Delete,
    /// A stopped VM's root back to its image (`vm reset`).
    Reset,
}

impl Action {
    /// The verb, for refusals: "Cannot stop VM dev: …".
    pub fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Delete => "delete",
            Action::Reset => "reset",
        }
    }

    /// What the status line says while the request is on its way: "Stopping VM dev…".
    fn doing(self) -> &'static str {
        match self {
            Action::Start => "Starting",
            Action::Stop => "Stopping",
            Action::Restart => "Restarting",
            Action::Pause => "Pausing",
            Action::Resume => "Resuming",
            Action::Delete => "Deleting",
            Action::Reset => "Resetting the root of",
        }
    }

    /// What an immediate answer means: pause, resume and delete are done when bangerd answers.
    fn done(self) -> &'static str {
        match self {
            Action::Start => "Started",
            Action::Stop => "Stopped",
            Action::Restart => "Restarted",
            Action::Pause => "Paused",
            Action::Resume => "Resumed",
            Action::Delete => "Deleted",
            Action::Reset => "Reset the root of",
        }
    }

    /// The lifecycle request of the actions bangerd runs as an operation.
    pub fn lifecycle(self) -> Option<VmAction> {
        match self {
            Action::Start => Some(VmAction::Start),
            Action::Stop => Some(VmAction::Stop),
            Action::Restart => Some(VmAction::Restart),
            Action::Pause | Action::Resume | Action::Delete | Action::Reset => None,
        }
    }

    /// Whether to ask before doing it to `vm`: deleting loses its disks; stopping and
    /// restarting end what runs in it, which matters only while it runs. A stop asked of a
    /// stopped VM goes straight to bangerd, whose refusal says why.
    fn asks_first(self, vm: &Vm) -> bool {
        match self {
            // A reset loses what was changed outside /root; bangerd refuses it for a VM that
            // runs, so only a stopped one is asked about.
            Action::Reset => !vm.state.holds_resources(),
            Action::Delete => true,
            Action::Stop | Action::Restart => vm.state.holds_resources(),
            Action::Start | Action::Pause | Action::Resume => false,
        }
    }
}

/// bangerd's answer to an [`Action`].
#[derive(Debug, Clone, PartialEq)]
pub enum Acted {
    /// Start, stop, restart: the operation doing it, followed by polling.
    Operation(Operation),
    /// Pause, resume, reset: the VM as it is now.
    Vm(Box<Vm>),
    Deleted,
}

/// What covers the main view and takes the keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    Help,
    Create(Box<CreateForm>),
    /// Asks before doing `Action` (stop, restart or delete) to the VM of this name.
    Confirm(String, Action),
    /// A VM's console, read on while it is open.
    Logs(Box<Logs>),
    /// The image name a VM is promoted to.
    Promote(Box<PromoteForm>),
    /// The name of a snapshot, or of a new VM cloned or restored.
    Name(Box<NamePrompt>),
    /// Asks before deleting the snapshot of this name.
    ConfirmSnapshotDelete(String),
}

/// The guest agent's last answer about a running VM.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestHealth {
    /// When it was asked for, on the app's clock.
    pub checked: Duration,
    pub answer: Result<Health, ApiError>,
}

/// What the health column says about a VM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HealthShown<'a> {
    /// The VM does not run: there is no agent to ask.
    NotRunning,
    /// Running, not asked yet.
    Unknown,
    /// The agent answers and reports the guest ready.
    Ready(&'a Health),
    /// The agent answers; the guest's boot has not finished.
    Starting(&'a Health),
    /// The agent did not answer, for this reason.
    Unreachable(&'a ApiError),
}

/// How an ssh session from the TUI ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshEnded {
    /// ssh's exit code: the shell's, or 255 when ssh itself failed.
    pub code: i32,
    pub still_running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Info,
    Success,
    Error,
}

/// A line for the status row about what just happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub text: String,
    pub hint: Option<String>,
    pub since: Duration,
}

/// Everything that changes the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Key(KeyEvent),
    /// The terminal's size (columns, rows): at start and whenever it changes.
    Resize(u16, u16),
    /// Time passed (see [`App::set_clock`]).
    Tick,
    StageStarted(Stage),
    StageDone(Stage, Duration),
    /// The bootstrap gave up at `stage` after the given time.
    BootstrapFailed(Stage, Duration, ApiError),
    DaemonReady(DaemonInfo),
    /// Each load reports how long it took (the startup stages show it).
    Vms(Result<Vec<Vm>, ApiError>, Duration),
    Images(Result<Vec<Image>, ApiError>, Duration),
    Snapshots(Result<Vec<Snapshot>, ApiError>),
    /// bangerd answered a snapshot of the VM of this name.
    Snapshotted(String, Result<Snapshot, ApiError>),
    /// bangerd answered the deletion of the snapshot of this name.
    SnapshotDeleted(String, Result<(), ApiError>),
    Capacity(Result<Capacity, ApiError>, Duration),
    Operations(Result<Vec<Operation>, ApiError>),
    Created(Box<Result<CreatedVm, ApiError>>),
    /// bangerd answered a promotion: its operation, or why not.
    Promoted(PromoteImageRequest, Result<Operation, ApiError>),
    /// bangerd answered `Action` on the VM of this name.
    Acted(String, Action, Result<Acted, ApiError>),
    /// The console of the VM of this name, read from the offset asked for (`None`: its tail).
    Console(String, Option<u64>, Result<ConsoleChunk, ApiError>),
    /// The guest agent's health of the VM of this name.
    Health(String, Result<Health, ApiError>),
    /// How to ssh into the VM of this name, or why not.
    SshReady(String, Result<SshSession, ApiError>),
    /// The ssh session into the VM of this name is over.
    SshEnded(String, Result<SshEnded, ApiError>),
}

/// Work for the background: each becomes a task that answers with a [`Msg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Find bangerd, start or replace it as needed, then report it ready.
    Bootstrap,
    LoadVms,
    LoadImages,
    LoadSnapshots,
    LoadCapacity,
    LoadOperations,
    /// Create a VM; restoring a snapshot is one too (`from_snapshot`).
    CreateVm(CreateVmRequest),
    /// Snapshot the VM of this name, under the name given (else bangerd's default).
    Snapshot(String, Option<String>),
    /// Clone the VM of the first name into a new VM of the second.
    Clone(String, String),
    DeleteSnapshot(String),
    /// Promote a stopped VM to an image.
    Promote(PromoteImageRequest),
    /// Do `Action` to the VM of this name.
    Act(String, Action),
    /// Read the VM's console from this offset (`None`: its tail).
    LoadConsole(String, Option<u64>),
    /// Ask the VM's guest agent how it is; answered within a few seconds even when it hangs.
    LoadHealth(String),
    /// Ask bangerd how to ssh into the VM (the session itself runs in the foreground).
    PrepareSsh(String),
}

/// Loads on their way, so a slow answer is not asked for again on top of itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct InFlight {
    vms: bool,
    images: bool,
    snapshots: bool,
    capacity: bool,
    operations: bool,
    /// Create requests and VM actions waiting for their answer.
    actions: u32,
}

#[derive(Debug, Clone)]
pub struct App {
    pub theme: Theme,
    /// Time since the TUI started: stage timers, notices and the polling schedule use it.
    pub clock: Duration,
    /// Wall-clock time, for VM ages and uptimes.
    pub now: Timestamp,
    pub startup: Vec<StageReport>,
    /// Why bangerd could not be found or started, when it could not.
    pub bootstrap_error: Option<ApiError>,
    pub daemon: Option<DaemonInfo>,
    pub vms: Load<Vec<Vm>>,
    pub images: Load<Vec<Image>>,
    pub snapshots: Load<Vec<Snapshot>>,
    pub capacity: Load<Capacity>,
    /// Operations still running, as of the last poll.
    pub operations: Vec<Operation>,
    pub view: View,
    pub vm_cursor: usize,
    pub image_cursor: usize,
    pub snapshot_cursor: usize,
    pub overlay: Option<Overlay>,
    pub notice: Option<Notice>,
    /// The last refresh failed: what is shown may be out of date.
    pub poll_error: Option<ApiError>,
    pub quit: bool,
    /// The terminal's size, for the console view's page.
    pub size: (u16, u16),
    /// The guest agent's last answer for each running VM.
    pub health: BTreeMap<String, GuestHealth>,
    /// The VM whose health is being asked for (one request at a time).
    health_in_flight: Option<String>,
    /// An ssh session ready to take the terminal.
    session: Option<SshSession>,
    /// bangerd is being asked how to ssh into a VM: another press waits for that.
    preparing_ssh: bool,
    in_flight: InFlight,
    next_poll: Duration,
    polls: u64,
    /// The VM to keep selected across refreshes (the list may reorder or shrink).
    selected_vm: Option<String>,
    /// Ids of the finished operations bangerd reported last time (`None` before the first
    /// answer): one that newly appears finished changed something, even when it ran too
    /// briefly for a poll to see it running (a CLI `image register` of a small image).
    finished: Option<Vec<String>>,
    /// Operations this TUI started that no poll has listed yet, each with whether a poll
    /// asked before it started is still on its way (that answer cannot know it).
    unlisted: Vec<(String, bool)>,
}

impl App {
    /// The state of the very first frame: nothing known yet, finding bangerd.
    pub fn new(theme: Theme, now: Timestamp) -> App {
        App {
            theme,
            clock: Duration::ZERO,
            now,
            // The bootstrap's first step is under way as soon as anything is on screen.
            startup: vec![StageReport {
                stage: Stage::FindDaemon,
                state: StageState::Running {
                    since: Duration::ZERO,
                },
            }],
            bootstrap_error: None,
            daemon: None,
            vms: Load::Loading,
            images: Load::Loading,
            snapshots: Load::Loading,
            capacity: Load::Loading,
            operations: Vec::new(),
            view: View::Vms,
            vm_cursor: 0,
            image_cursor: 0,
            snapshot_cursor: 0,
            overlay: None,
            notice: None,
            poll_error: None,
            quit: false,
            size: (80, 24),
            health: BTreeMap::new(),
            health_in_flight: None,
            session: None,
            preparing_ssh: false,
            in_flight: InFlight::default(),
            next_poll: Duration::MAX,
            polls: 0,
            selected_vm: None,
            finished: None,
            unlisted: Vec::new(),
        }
    }

    /// The effects that start the TUI's work; the first frame is drawn before they run.
    pub fn start(&mut self) -> Vec<Effect> {
        vec![Effect::Bootstrap]
    }

    /// Moves the app's clocks; the caller does this before every [`App::update`].
    pub fn set_clock(&mut self, clock: Duration, now: Timestamp) {
        self.clock = clock;
        self.now = now;
    }

    /// How soon the app wants a [`Msg::Tick`]: often while timers run on screen, rarely when
    /// only uptimes move.
    pub fn tick_interval(&self) -> Duration {
        let stage_running = self
            .startup
            .iter()
            .any(|s| matches!(s.state, StageState::Running { .. }));
        if stage_running {
            Duration::from_millis(100)
        } else if self.busy() || matches!(self.overlay, Some(Overlay::Logs(_))) {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        }
    }

    /// Operations run or actions wait: poll faster.
    fn busy(&self) -> bool {
        !self.operations.is_empty() || self.in_flight.actions > 0
    }

    pub fn poll_interval(&self) -> Duration {
        if self.busy() { POLL_BUSY } else { POLL_IDLE }
    }

    pub fn selected_vm(&self) -> Option<&Vm> {
        self.vms.ready().and_then(|vms| vms.get(self.vm_cursor))
    }

    /// The running start, stop or restart of `vm`, whose stage its row and details show.
    pub fn operation_on(&self, vm: &Vm) -> Option<&Operation> {
        self.operations.iter().find(|op| {
            op.target == vm.name
                && matches!(
                    op.kind,
                    OperationKind::StartVm | OperationKind::StopVm | OperationKind::RestartVm
                )
        })
    }

    pub fn selected_image(&self) -> Option<&Image> {
        self.images
            .ready()
            .and_then(|images| images.get(self.image_cursor))
    }

    pub fn selected_snapshot(&self) -> Option<&Snapshot> {
        self.snapshots
            .ready()
            .and_then(|snapshots| snapshots.get(self.snapshot_cursor))
    }

    /// The names the create form's image field cycles through.
    pub fn image_names(&self) -> Vec<String> {
        self.images
            .ready()
            .map(|images| images.iter().map(|i| i.name.clone()).collect())
            .unwrap_or_default()
    }

    /// The notice still worth showing.
    pub fn current_notice(&self) -> Option<&Notice> {
        self.notice
            .as_ref()
            .filter(|n| self.clock.saturating_sub(n.since) < NOTICE_FOR)
    }

    /// The ssh session waiting for the terminal, if any; the main loop takes it, runs it
    /// and answers with [`Msg::SshEnded`].
    pub fn take_session(&mut self) -> Option<SshSession> {
        self.session.take()
    }

    /// What the health column shows for `vm`.
    pub fn health_of(&self, vm: &Vm) -> HealthShown<'_> {
        if vm.state != VmState::Running {
            return HealthShown::NotRunning;
        }
        match self.health.get(&vm.name).map(|h| &h.answer) {
            None => HealthShown::Unknown,
            Some(Ok(health)) if health.ready => HealthShown::Ready(health),
            Some(Ok(health)) => HealthShown::Starting(health),
            Some(Err(e)) => HealthShown::Unreachable(e),
        }
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(key) => self.key(key),
            Msg::Resize(width, height) => {
                self.size = (width, height);
                if let Some(Overlay::Logs(logs)) = &mut self.overlay {
                    logs.page = logs_page(height);
                }
                Vec::new()
            }
            Msg::Tick => {
                let mut effects = if self.daemon.is_some() && self.clock >= self.next_poll {
                    self.poll(self.polls.is_multiple_of(IMAGES_EVERY))
                } else {
                    Vec::new()
                };
                effects.extend(self.read_console());
                effects.extend(self.check_health());
                effects
            }
            Msg::Console(name, asked, result) => {
                if let Some(Overlay::Logs(logs)) = &mut self.overlay
                    && logs.name == name
                {
                    logs.answer(asked, result, self.clock);
                }
                Vec::new()
            }
            Msg::Health(name, answer) => {
                if self.health_in_flight.as_ref() == Some(&name) {
                    self.health_in_flight = None;
                }
                // A VM that stopped meanwhile keeps no answer: it would be stale at its next
                // start.
                let running = self.vms.ready().is_some_and(|vms| {
                    vms.iter()
                        .any(|vm| vm.name == name && vm.state == VmState::Running)
                });
                if running {
                    self.health.insert(
                        name,
                        GuestHealth {
                            checked: self.clock,
                            answer,
                        },
                    );
                }
                // Another VM may be due already (several started since the last round).
                self.check_health().into_iter().collect()
            }
            Msg::SshReady(name, result) => {
                self.preparing_ssh = false;
                match result {
                    Ok(session) => {
                        self.notify(NoticeKind::Info, format!("ssh into VM {name}…"), None);
                        self.session = Some(session);
                    }
                    Err(e) => self.notify_error(&format!("Cannot ssh into VM {name}"), e),
                }
                Vec::new()
            }
            Msg::SshEnded(name, result) => {
                match result {
                    // ssh's own failure (it cannot connect, the host key does not match):
                    // its message was on the terminal until the user pressed Enter.
                    Ok(SshEnded {
                        code: 255,
                        still_running,
                    }) => self.notify(
                        NoticeKind::Error,
                        format!("ssh into VM {name} failed (exit status 255)."),
                        Some(if still_running {
                            format!("`banger vm logs {name}` or l shows whether its sshd started")
                        } else {
                            format!("VM {name} is not running any more; s starts it")
                        }),
                    ),
                    Ok(SshEnded {
                        code,
                        still_running: true,
                    }) => self.notify(
                        NoticeKind::Info,
                        format!(
                            "Back from VM {name} (ssh exit status {code}); it is still running."
                        ),
                        Some("x stops it".into()),
                    ),
                    Ok(SshEnded { code, .. }) => self.notify(
                        NoticeKind::Success,
                        format!("Back from VM {name} (ssh exit status {code}); it has stopped."),
                        None,
                    ),
                    Err(e) => self.notify_error(&format!("Cannot ssh into VM {name}"), e),
                }
                // The guest may have been shut down from inside.
                self.refresh()
            }
            Msg::StageStarted(stage) => {
                self.stage(stage, StageState::Running { since: self.clock });
                Vec::new()
            }
            Msg::StageDone(stage, took) => {
                self.stage(stage, StageState::Done(took));
                Vec::new()
            }
            Msg::BootstrapFailed(stage, took, error) => {
                self.stage(stage, StageState::Failed(took));
                self.vms.fail(&error);
                self.images.fail(&error);
                self.snapshots.fail(&error);
                self.capacity.fail(&error);
                self.bootstrap_error = Some(error);
                Vec::new()
            }
            Msg::DaemonReady(info) => {
                self.daemon = Some(info);
                self.bootstrap_error = None;
                self.poll_error = None;
                for stage in [Stage::LoadVms, Stage::LoadImages, Stage::LoadCapacity] {
                    self.stage(stage, StageState::Running { since: self.clock });
                }
                self.polls = 0;
                self.poll(true)
            }
            Msg::Vms(result, took) => {
                self.in_flight.vms = false;
                self.loaded(Stage::LoadVms, result.as_ref().map(|_| ()), took);
                match result {
                    Ok(vms) => {
                        self.set_vms(vms);
                        // A VM that just came up is asked about at once, not at the next tick.
                        self.check_health().into_iter().collect()
                    }
                    Err(e) => {
                        self.failed_load(e, |app| &mut app.vms);
                        Vec::new()
                    }
                }
            }
            Msg::Images(result, took) => {
                self.in_flight.images = false;
                self.loaded(Stage::LoadImages, result.as_ref().map(|_| ()), took);
                match result {
                    Ok(images) => {
                        self.image_cursor = self.image_cursor.min(images.len().saturating_sub(1));
                        self.images = Load::Ready(images);
                    }
                    Err(e) => self.failed_load(e, |app| &mut app.images),
                }
                Vec::new()
            }
            Msg::Snapshots(result) => {
                self.in_flight.snapshots = false;
                match result {
                    Ok(snapshots) => {
                        self.snapshot_cursor =
                            self.snapshot_cursor.min(snapshots.len().saturating_sub(1));
                        self.snapshots = Load::Ready(snapshots);
                    }
                    Err(e) => self.failed_load(e, |app| &mut app.snapshots),
                }
                Vec::new()
            }
            Msg::Snapshotted(vm, result) => {
                self.in_flight.actions = self.in_flight.actions.saturating_sub(1);
                match result {
                    Ok(snapshot) => {
                        self.close_name_prompt();
                        self.notify(
                            NoticeKind::Success,
                            format!(
                                "Snapshot {} of VM {vm} taken ({} on disk).",
                                snapshot.name,
                                banger_api::validate::format_size(snapshot.size_bytes)
                            ),
                            Some("3 lists snapshots; Enter there restores one".into()),
                        );
                    }
                    Err(e) => self.name_refused(&format!("Cannot snapshot VM {vm}"), e),
                }
                self.refresh_snapshots()
            }
            Msg::SnapshotDeleted(name, result) => {
                self.in_flight.actions = self.in_flight.actions.saturating_sub(1);
                match result {
                    Ok(()) => self.notify(
                        NoticeKind::Success,
                        format!("Deleted snapshot {name}."),
                        None,
                    ),
                    Err(e) => self.notify_error(&format!("Cannot delete snapshot {name}"), e),
                }
                self.refresh_snapshots()
            }
            Msg::Capacity(result, took) => {
                self.in_flight.capacity = false;
                self.loaded(Stage::LoadCapacity, result.as_ref().map(|_| ()), took);
                match result {
                    Ok(capacity) => self.capacity = Load::Ready(capacity),
                    Err(e) => self.failed_load(e, |app| &mut app.capacity),
                }
                Vec::new()
            }
            Msg::Operations(result) => {
                self.in_flight.operations = false;
                match result {
                    Ok(all) => self.set_operations(all),
                    Err(e) => {
                        self.poll_error = Some(e);
                        Vec::new()
                    }
                }
            }
            Msg::Created(result) => {
                self.in_flight.actions = self.in_flight.actions.saturating_sub(1);
                match *result {
                    Ok(CreatedVm { vm, operation }) => {
                        if matches!(self.overlay, Some(Overlay::Create(_))) {
                            self.overlay = None;
                        }
                        self.close_name_prompt();
                        match operation {
                            Some(op) => {
                                self.notify(
                                    NoticeKind::Info,
                                    format!("Created VM {}; starting it…", vm.name),
                                    None,
                                );
                                self.track(op);
                            }
                            None => self.notify(
                                NoticeKind::Success,
                                format!("Created VM {} (not started).", vm.name),
                                None,
                            ),
                        }
                        self.selected_vm = Some(vm.name.clone());
                        self.view = View::Vms;
                        // Shown at once; the reload brings the daemon's order and capacity.
                        if let Load::Ready(vms) = &mut self.vms {
                            vms.push(vm);
                            let list = std::mem::take(vms);
                            self.set_vms(list);
                        }
                        self.refresh()
                    }
                    Err(e) => {
                        if let Some(Overlay::Create(form)) = &mut self.overlay {
                            form.refused(e);
                        } else {
                            self.name_refused("Creating the VM failed", e);
                        }
                        Vec::new()
                    }
                }
            }
            Msg::Promoted(request, result) => {
                self.in_flight.actions = self.in_flight.actions.saturating_sub(1);
                match result {
                    Ok(op) => {
                        if matches!(self.overlay, Some(Overlay::Promote(_))) {
                            self.overlay = None;
                        }
                        self.notify(
                            NoticeKind::Info,
                            format!("Promoting VM {} to image {}…", request.vm, request.name),
                            None,
                        );
                        self.track(op);
                    }
                    Err(e) => {
                        if let Some(Overlay::Promote(form)) = &mut self.overlay {
                            form.refused(e);
                        } else {
                            self.notify_error(&format!("Cannot promote VM {}", request.vm), e);
                        }
                    }
                }
                Vec::new()
            }
            Msg::Acted(name, action, result) => {
                self.in_flight.actions = self.in_flight.actions.saturating_sub(1);
                match result {
                    // The notice sent with the request ("Starting VM dev…") stays until the
                    // operation ends; its stage shows on the VM meanwhile.
                    Ok(Acted::Operation(op)) => self.track(op),
                    Ok(Acted::Vm(vm)) => {
                        self.notify(
                            NoticeKind::Success,
                            format!("{} VM {name}.", action.done()),
                            None,
                        );
                        if let Load::Ready(vms) = &mut self.vms
                            && let Some(shown) = vms.iter_mut().find(|v| v.name == vm.name)
                        {
                            *shown = *vm;
                        }
                    }
                    Ok(Acted::Deleted) => self.notify(
                        NoticeKind::Success,
                        format!("{} VM {name}.", action.done()),
                        None,
                    ),
                    Err(e) => self.notify_error(&format!("Cannot {} VM {name}", action.verb()), e),
                }
                self.refresh()
            }
        }
    }

    fn stage(&mut self, stage: Stage, state: StageState) {
        match self.startup.iter_mut().find(|s| s.stage == stage) {
            Some(report) => report.state = state,
            None => self.startup.push(StageReport { stage, state }),
        }
    }

    /// Ends a startup stage when this load was the first of its kind.
    fn loaded(&mut self, stage: Stage, result: Result<(), &ApiError>, took: Duration) {
        let running = self
            .startup
            .iter()
            .any(|s| s.stage == stage && matches!(s.state, StageState::Running { .. }));
        if running {
            let state = match result {
                Ok(()) => StageState::Done(took),
                Err(_) => StageState::Failed(took),
            };
            self.stage(stage, state);
        }
    }

    /// A load failed: data already shown stays (marked out of date by the status line);
    /// data never loaded shows the error in its place.
    fn failed_load<T>(&mut self, error: ApiError, load: impl Fn(&mut App) -> &mut Load<T>) {
        if load(self).ready().is_none() {
            *load(self) = Load::Failed(error.clone());
        }
        self.poll_error = Some(error);
    }

    fn set_vms(&mut self, vms: Vec<Vm>) {
        let wanted = self
            .selected_vm
            .as_ref()
            .and_then(|name| vms.iter().position(|vm| &vm.name == name));
        self.vm_cursor = wanted.unwrap_or(self.vm_cursor.min(vms.len().saturating_sub(1)));
        self.selected_vm = vms.get(self.vm_cursor).map(|vm| vm.name.clone());
        // Only running VMs have an agent to answer; a stopped one starts afresh next time.
        self.health.retain(|name, _| {
            vms.iter()
                .any(|vm| &vm.name == name && vm.state == VmState::Running)
        });
        self.vms = Load::Ready(vms);
        self.poll_error = None;
    }

    fn set_operations(&mut self, all: Vec<Operation>) -> Vec<Effect> {
        let mut running: Vec<Operation> = all
            .iter()
            .filter(|op| op.state == OperationState::Running)
            .cloned()
            .collect();
        // An operation this TUI just started stays shown when an answer to a poll sent before
        // it started does not list it yet; the next answer decides.
        let mut unlisted = std::mem::take(&mut self.unlisted);
        unlisted.retain_mut(|(id, stale_answer_due)| {
            if all.iter().any(|op| &op.id == id) || !*stale_answer_due {
                return false;
            }
            *stale_answer_due = false;
            if let Some(op) = self.operations.iter().find(|op| &op.id == id) {
                running.push(op.clone());
            }
            true
        });
        self.unlisted = unlisted;
        let finished: Vec<String> = all
            .iter()
            .filter(|op| op.state.is_finished())
            .map(|op| op.id.clone())
            .collect();
        let mut effects = Vec::new();
        if let Some(before) = &self.finished
            && finished.iter().any(|id| !before.contains(id))
        {
            effects = vec![
                Effect::LoadImages,
                Effect::LoadSnapshots,
                Effect::LoadVms,
                Effect::LoadCapacity,
            ];
        }
        self.finished = Some(finished);
        // Operations that were running and are not any more: say how they ended.
        let gone: Vec<Operation> = self
            .operations
            .iter()
            .filter(|old| !running.iter().any(|op| op.id == old.id))
            .cloned()
            .collect();
        for gone in &gone {
            self.ended(gone, all.iter().find(|op| op.id == gone.id));
            effects = vec![
                Effect::LoadImages,
                Effect::LoadSnapshots,
                Effect::LoadVms,
                Effect::LoadCapacity,
            ];
        }
        let speeding_up = self.operations.is_empty() && !running.is_empty();
        self.operations = running;
        if speeding_up {
            self.next_poll = self.next_poll.min(self.clock + POLL_BUSY);
        }
        effects.retain(|e| self.claim(e));
        effects
    }

    /// Says on the status line how `op` ended, as `ended` (its last state) reports it; a
    /// failure brings bangerd's hint along.
    fn ended(&mut self, op: &Operation, ended: Option<&Operation>) {
        let (kind, text, hint) = match ended.map(|op| op.state) {
            Some(OperationState::Succeeded) => (
                NoticeKind::Success,
                format!("{} succeeded.", describe(op)),
                None,
            ),
            Some(OperationState::Failed) => {
                let error = ended.and_then(|op| op.error.as_ref());
                (
                    NoticeKind::Error,
                    format!(
                        "{} failed: {}",
                        describe(op),
                        error.map_or("no reason given", |e| e.message.as_str())
                    ),
                    error.and_then(|e| e.hint.clone()),
                )
            }
            Some(OperationState::Cancelled) => (
                NoticeKind::Info,
                format!("{} was cancelled.", describe(op)),
                None,
            ),
            _ => (NoticeKind::Info, format!("{} ended.", describe(op)), None),
        };
        self.notify(kind, text, hint);
    }

    /// Follows an operation this TUI started: shown at once as running (so the VM shows its
    /// stage and polling speeds up), or, when it already ended, said how.
    fn track(&mut self, op: Operation) {
        if op.state.is_finished() {
            self.ended(&op, Some(&op));
            return;
        }
        if !self.operations.iter().any(|known| known.id == op.id) {
            self.unlisted
                .push((op.id.clone(), self.in_flight.operations));
            self.operations.push(op);
        }
        self.next_poll = self.next_poll.min(self.clock + POLL_BUSY);
    }

    /// Marks a load as in flight; false when it already is.
    fn claim(&mut self, effect: &Effect) -> bool {
        let flag = match effect {
            Effect::LoadVms => &mut self.in_flight.vms,
            Effect::LoadImages => &mut self.in_flight.images,
            Effect::LoadSnapshots => &mut self.in_flight.snapshots,
            Effect::LoadCapacity => &mut self.in_flight.capacity,
            Effect::LoadOperations => &mut self.in_flight.operations,
            _ => return true,
        };
        !std::mem::replace(flag, true)
    }

    /// One round of polling.
    fn poll(&mut self, with_images: bool) -> Vec<Effect> {
        let mut effects = vec![
            Effect::LoadVms,
            Effect::LoadCapacity,
            Effect::LoadOperations,
        ];
        if with_images {
            effects.extend([Effect::LoadImages, Effect::LoadSnapshots]);
        }
        effects.retain(|e| self.claim(e));
        self.polls += 1;
        self.next_poll = self.clock + self.poll_interval();
        effects
    }

    /// The next console read of the open console view, when one is due.
    fn read_console(&mut self) -> Option<Effect> {
        let Some(Overlay::Logs(logs)) = &mut self.overlay else {
            return None;
        };
        self.daemon.as_ref()?;
        let offset = logs.due(self.clock)?;
        Some(Effect::LoadConsole(logs.name.clone(), offset))
    }

    /// The next health request, when none is on its way and a running VM is due: the one
    /// waiting longest past its time (never asked: due at once), the selected one first on a
    /// tie.
    fn check_health(&mut self) -> Option<Effect> {
        if self.health_in_flight.is_some() || self.daemon.is_none() {
            return None;
        }
        let selected = self.selected_vm.as_deref();
        let name = self
            .vms
            .ready()?
            .iter()
            .filter(|vm| vm.state == VmState::Running)
            .filter_map(|vm| {
                let is_selected = selected == Some(vm.name.as_str());
                let due = match self.health.get(&vm.name) {
                    None => Duration::ZERO,
                    Some(h) if is_selected => h.checked + HEALTH_SELECTED_EVERY,
                    Some(h) => h.checked + HEALTH_EVERY,
                };
                (due <= self.clock).then_some((due, !is_selected, vm.name.clone()))
            })
            .min()
            .map(|(_, _, name)| name)?;
        self.health_in_flight = Some(name.clone());
        Some(Effect::LoadHealth(name))
    }

    /// Reload what an action changed, now rather than at the next poll.
    fn refresh(&mut self) -> Vec<Effect> {
        let mut effects = vec![Effect::LoadVms, Effect::LoadCapacity];
        effects.retain(|e| self.claim(e));
        effects
    }

    /// Reload after a snapshot was taken or deleted: the list, and the disk they take.
    fn refresh_snapshots(&mut self) -> Vec<Effect> {
        let mut effects = vec![Effect::LoadSnapshots, Effect::LoadVms, Effect::LoadCapacity];
        effects.retain(|e| self.claim(e));
        effects
    }

    /// The name prompt's request was answered yes: it closes.
    fn close_name_prompt(&mut self) {
        if matches!(self.overlay, Some(Overlay::Name(_))) {
            self.overlay = None;
        }
    }

    /// A refusal of what the name prompt sent shows in the prompt, which stays open to fix
    /// the name; without the prompt, on the status line.
    fn name_refused(&mut self, what: &str, error: ApiError) {
        if let Some(Overlay::Name(prompt)) = &mut self.overlay {
            prompt.refused(error);
        } else {
            self.notify_error(what, error);
        }
    }

    fn notify(&mut self, kind: NoticeKind, text: String, hint: Option<String>) {
        self.notice = Some(Notice {
            kind,
            text,
            hint,
            since: self.clock,
        });
    }

    fn notify_error(&mut self, what: &str, error: ApiError) {
        self.notify(
            NoticeKind::Error,
            format!("{what}: {}", error.message),
            error.hint,
        );
    }

    fn key(&mut self, key: KeyEvent) -> Vec<Effect> {
        // Terminals that report releases and repeats would otherwise act twice.
        if key.kind != KeyEventKind::Press {
            return Vec::new();
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return Vec::new();
        }
        match self.overlay.take() {
            None => self.main_key(key),
            Some(Overlay::Help) => {
                if !matches!(
                    key.code,
                    KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::Enter
                ) {
                    self.overlay = Some(Overlay::Help);
                }
                Vec::new()
            }
            Some(Overlay::Logs(mut logs)) => {
                if logs.key(key) == LogsKey::Keep {
                    self.overlay = Some(Overlay::Logs(logs));
                }
                Vec::new()
            }
            Some(Overlay::Confirm(name, action)) => match key.code {
                KeyCode::Char('y' | 'Y') => self.act(name, action),
                KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => Vec::new(),
                _ => {
                    self.overlay = Some(Overlay::Confirm(name, action));
                    Vec::new()
                }
            },
            Some(Overlay::ConfirmSnapshotDelete(name)) => match key.code {
                KeyCode::Char('y' | 'Y') => {
                    self.in_flight.actions += 1;
                    self.notify(NoticeKind::Info, format!("Deleting snapshot {name}…"), None);
                    vec![Effect::DeleteSnapshot(name)]
                }
                KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => Vec::new(),
                _ => {
                    self.overlay = Some(Overlay::ConfirmSnapshotDelete(name));
                    Vec::new()
                }
            },
            Some(Overlay::Name(mut prompt)) => match prompt.handle_key(key) {
                NameOutcome::Editing => {
                    self.overlay = Some(Overlay::Name(prompt));
                    Vec::new()
                }
                NameOutcome::Cancel => Vec::new(),
                NameOutcome::Submit(name) => {
                    let effect = match (&prompt.naming, name) {
                        (Naming::Snapshot { vm }, name) => Effect::Snapshot(vm.clone(), name),
                        (Naming::Clone { vm }, Some(name)) => Effect::Clone(vm.clone(), name),
                        (Naming::Restore { snapshot }, Some(name)) => {
                            Effect::CreateVm(CreateVmRequest {
                                name: Some(name),
                                from_snapshot: Some(snapshot.clone()),
                                ..CreateVmRequest::default()
                            })
                        }
                        // A new VM's name is never empty (the prompt refuses it).
                        (_, None) => {
                            self.overlay = Some(Overlay::Name(prompt));
                            return Vec::new();
                        }
                    };
                    self.overlay = Some(Overlay::Name(prompt));
                    self.in_flight.actions += 1;
                    vec![effect]
                }
            },
            Some(Overlay::Promote(mut form)) => match form.handle_key(key) {
                PromoteOutcome::Editing => {
                    self.overlay = Some(Overlay::Promote(form));
                    Vec::new()
                }
                PromoteOutcome::Cancel => Vec::new(),
                PromoteOutcome::Submit(request) => {
                    self.overlay = Some(Overlay::Promote(form));
                    self.in_flight.actions += 1;
                    vec![Effect::Promote(request)]
                }
            },
            Some(Overlay::Create(mut form)) => {
                let images = self.image_names();
                match form.handle_key(key, &images) {
                    Outcome::Editing => {
                        self.overlay = Some(Overlay::Create(form));
                        Vec::new()
                    }
                    Outcome::Cancel => Vec::new(),
                    Outcome::Submit(request) => {
                        self.overlay = Some(Overlay::Create(form));
                        self.in_flight.actions += 1;
                        vec![Effect::CreateVm(request)]
                    }
                }
            }
        }
    }

    /// Keys of the main view: navigation, views, and the actions on VMs.
    fn main_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.overlay = Some(Overlay::Help),
            KeyCode::Tab => {
                self.view = match self.view {
                    View::Vms => View::Images,
                    View::Images => View::Snapshots,
                    View::Snapshots => View::Vms,
                }
            }
            KeyCode::BackTab => {
                self.view = match self.view {
                    View::Vms => View::Snapshots,
                    View::Images => View::Vms,
                    View::Snapshots => View::Images,
                }
            }
            KeyCode::Char('1') => self.view = View::Vms,
            KeyCode::Char('2') => self.view = View::Images,
            KeyCode::Char('3') => self.view = View::Snapshots,
            KeyCode::Char('d') | KeyCode::Delete | KeyCode::Enter
                if self.view == View::Snapshots =>
            {
                self.snapshot_key(key.code);
            }
            KeyCode::Char('n') => self.open_name(|vm| Naming::Snapshot { vm }),
            KeyCode::Char('C') => self.open_name(|vm| Naming::Clone { vm }),
            KeyCode::Down | KeyCode::Char('j') => self.move_cursor(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_cursor(-1),
            KeyCode::PageDown => self.move_cursor(10),
            KeyCode::PageUp => self.move_cursor(-10),
            KeyCode::Home | KeyCode::Char('g') => self.move_cursor(isize::MIN),
            KeyCode::End | KeyCode::Char('G') => self.move_cursor(isize::MAX),
            KeyCode::Char('c') => {
                self.view = View::Vms;
                self.overlay = Some(Overlay::Create(Box::default()));
            }
            KeyCode::Char('d') | KeyCode::Delete => return self.ask(Action::Delete),
            KeyCode::Char('s') => return self.ask(Action::Start),
            KeyCode::Char('x') => return self.ask(Action::Stop),
            KeyCode::Char('R') => return self.ask(Action::Restart),
            KeyCode::Char('z') => return self.ask(Action::Reset),
            KeyCode::Char('p') => {
                // One key both ways: what the VM's state calls for.
                let paused = self
                    .selected_vm()
                    .is_some_and(|vm| vm.state == VmState::Paused);
                return self.ask(if paused {
                    Action::Resume
                } else {
                    Action::Pause
                });
            }
            KeyCode::Char('P') => self.open_promote(),
            KeyCode::Char('r') => return self.reload(),
            KeyCode::Char('l') => return self.open_logs(),
            KeyCode::Char('S') | KeyCode::Enter => return self.ssh(),
            _ => {}
        }
        Vec::new()
    }

    /// Enter and `d` in the snapshots view: restore the selected snapshot into a new VM (its
    /// name asked first), or delete it (asked first).
    fn snapshot_key(&mut self, code: KeyCode) {
        let Some(snapshot) = self.selected_snapshot() else {
            return;
        };
        let name = snapshot.name.clone();
        self.overlay = Some(if code == KeyCode::Enter {
            Overlay::Name(Box::new(NamePrompt::new(Naming::Restore {
                snapshot: name,
            })))
        } else {
            Overlay::ConfirmSnapshotDelete(name)
        });
    }

    /// `n` and `C` in the VM view: the name prompt of a snapshot or a clone of the selected
    /// VM. bangerd decides whether its state allows it (it must run or be paused, on
    /// Firecracker) and says why not.
    fn open_name(&mut self, naming: impl FnOnce(String) -> Naming) {
        if self.view != View::Vms {
            return;
        }
        if let Some(vm) = self.selected_vm() {
            self.overlay = Some(Overlay::Name(Box::new(NamePrompt::new(naming(
                vm.name.clone(),
            )))));
        }
    }

    /// `P`: the promote prompt for the selected VM. bangerd decides whether its state allows a
    /// promotion (only a stopped one's root can become an image) and says why not.
    fn open_promote(&mut self) {
        if self.view != View::Vms {
            return;
        }
        if let Some(vm) = self.selected_vm() {
            self.overlay = Some(Overlay::Promote(Box::new(PromoteForm::new(
                vm.name.clone(),
            ))));
        }
    }

    /// `l`: the selected VM's console, read at once and then on while the view is open.
    fn open_logs(&mut self) -> Vec<Effect> {
        if self.view != View::Vms {
            return Vec::new();
        }
        let Some(vm) = self.selected_vm() else {
            return Vec::new();
        };
        let mut logs = Logs::new(vm.name.clone());
        logs.page = logs_page(self.size.1);
        self.overlay = Some(Overlay::Logs(Box::new(logs)));
        self.read_console().into_iter().collect()
    }

    /// `S` or Enter: ssh into the selected VM when it runs; bangerd is asked how first, and
    /// the session takes the terminal once it answers.
    fn ssh(&mut self) -> Vec<Effect> {
        if self.view != View::Vms || self.preparing_ssh || self.session.is_some() {
            return Vec::new();
        }
        let Some(vm) = self.selected_vm() else {
            return Vec::new();
        };
        let name = vm.name.clone();
        let refusal = match vm.state {
            VmState::Running => None,
            VmState::Paused => Some("p resumes it"),
            VmState::Starting => Some("wait until it runs"),
            VmState::Stopped | VmState::Failed | VmState::Stopping => Some("s starts it"),
        };
        if let Some(hint) = refusal {
            let error = ApiError::new(
                ErrorCode::InvalidState,
                format!("VM {name} is {}, not running", vm.state),
            )
            .with_hint(hint);
            self.notify_error(&format!("Cannot ssh into VM {name}"), error);
            return Vec::new();
        }
        self.notify(NoticeKind::Info, format!("Connecting to VM {name}…"), None);
        self.preparing_ssh = true;
        vec![Effect::PrepareSsh(name)]
    }

    /// An action key in the VM view: asks first when the action calls for it, else sends it.
    fn ask(&mut self, action: Action) -> Vec<Effect> {
        if self.view != View::Vms {
            return Vec::new();
        }
        let Some(vm) = self.selected_vm() else {
            return Vec::new();
        };
        let name = vm.name.clone();
        if action.asks_first(vm) {
            self.overlay = Some(Overlay::Confirm(name, action));
            return Vec::new();
        }
        self.act(name, action)
    }

    /// Sends `action` for the VM `name`; the status line says so until bangerd answers.
    fn act(&mut self, name: String, action: Action) -> Vec<Effect> {
        self.in_flight.actions += 1;
        self.notify(
            NoticeKind::Info,
            format!("{} VM {name}…", action.doing()),
            None,
        );
        vec![Effect::Act(name, action)]
    }

    /// `r`: ask again now. When bangerd could not be reached, this runs the bootstrap again,
    /// which starts it if needed.
    fn reload(&mut self) -> Vec<Effect> {
        let bootstrapping = self.startup.iter().any(|s| {
            matches!(
                s.stage,
                Stage::FindDaemon | Stage::StartDaemon | Stage::RestartDaemon
            ) && matches!(s.state, StageState::Running { .. })
        });
        if bootstrapping {
            // One bootstrap at a time: two could each start a daemon.
            return Vec::new();
        }
        if self.daemon.is_none() || self.bootstrap_error.is_some() || self.poll_error.is_some() {
            self.daemon = None;
            self.bootstrap_error = None;
            self.startup.clear();
            self.stage(Stage::FindDaemon, StageState::Running { since: self.clock });
            self.notice = None;
            return vec![Effect::Bootstrap];
        }
        self.notify(NoticeKind::Info, "Reloading…".into(), None);
        self.poll(true)
    }

    fn move_cursor(&mut self, by: isize) {
        let (len, cursor) = match self.view {
            View::Vms => (self.vms.ready().map_or(0, Vec::len), &mut self.vm_cursor),
            View::Images => (
                self.images.ready().map_or(0, Vec::len),
                &mut self.image_cursor,
            ),
            View::Snapshots => (
                self.snapshots.ready().map_or(0, Vec::len),
                &mut self.snapshot_cursor,
            ),
        };
        if len == 0 {
            return;
        }
        *cursor = cursor.saturating_add_signed(by).min(len - 1);
        if self.view == View::Vms {
            self.selected_vm = self.selected_vm().map(|vm| vm.name.clone());
        }
    }
}

/// The rows the console view shows in a terminal `height` rows high: all but the header, the
/// capacity row, the status line, the view's borders and its key line.
pub fn logs_page(height: u16) -> usize {
    usize::from(height.saturating_sub(6)).max(1)
}

/// What the status line calls an operation, e.g. "register image debian".
pub fn describe(op: &Operation) -> String {
    let kind = serde_json::to_value(op.kind)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_else(|| "operation".into());
    format!("{kind} {}", op.target)
}

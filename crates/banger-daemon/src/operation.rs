//! Operations: long work (image registration today; VM start and image builds later) that the
//! API answers with `202` and an id. Each operation declares its named stages up front so a
//! client sees the whole plan, then reports start/end times, progress and the outcome of each.
//! Cancellation is cooperative: the work checks [`OperationContext::cancelled`] between steps and
//! rolls back what it did.
//!
//! Operations live in memory: they describe work in flight and shortly after. A bounded number
//! of finished ones is kept for clients that poll late. With a journal directory (the daemon's
//! `<state>/operations`), each running operation also has a file there, written when it starts
//! and when a stage begins and removed when it ends: a daemon that was killed leaves the files
//! of what it was doing, and the next one reports those operations failed, with the stage they
//! were in ([`Operations::recover`]), to a client that asks for them by id.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use banger_api::{
    ApiError, ErrorCode, Operation, OperationKind, OperationState, Progress, Stage, StageState,
    Timestamp,
};
use tokio::sync::watch;

/// Finished operations kept for late readers.
const KEEP_FINISHED: usize = 200;

struct Entry {
    tx: watch::Sender<Operation>,
    cancel: AtomicBool,
    /// This operation's file in the journal, while it runs.
    journal: Option<std::path::PathBuf>,
}

impl Entry {
    /// Writes the operation as it is now to its journal file (best effort: the journal only
    /// serves the report after a crash).
    fn journal(&self) {
        if let Some(path) = &self.journal {
            let op = self.tx.borrow().clone();
            if let Ok(json) = serde_json::to_vec(&op) {
                let partial = path.with_extension("partial");
                match std::fs::write(&partial, json) {
                    Ok(()) => {
                        let _ = std::fs::rename(&partial, path);
                    }
                    // A full disk cut it short: what was written goes, the last whole
                    // journal stays.
                    Err(_) => {
                        let _ = std::fs::remove_file(&partial);
                    }
                }
            }
        }
    }
}

/// All operations of this daemon.
#[derive(Clone, Default)]
pub struct Operations {
    inner: Arc<Mutex<Registry>>,
    journal: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Arc<Entry>>,
    finished: VecDeque<String>,
    order: Vec<String>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations").finish_non_exhaustive()
    }
}

impl Operations {
    /// Operations whose running ones are journaled in `dir` (made if missing).
    pub fn with_journal(dir: std::path::PathBuf) -> Operations {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot make the operations' journal");
        }
        Operations {
            inner: Arc::default(),
            journal: Some(dir),
        }
    }

    /// Takes in the operations a previous daemon left running in the journal: each is recorded
    /// failed (its running stage failed, the later ones skipped) with why, and kept among the
    /// finished ones for clients that ask for it; its file goes. Run before serving, once what
    /// they made has been cleaned up. Returns them.
    pub fn recover(&self) -> Vec<Operation> {
        let Some(dir) = &self.journal else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut recovered = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let op = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Operation>(&bytes).ok());
            let _ = std::fs::remove_file(&path);
            let Some(mut op) = op else { continue };
            let now = Timestamp::now();
            let stage = op
                .stages
                .iter()
                .find(|s| s.state == StageState::Running)
                .map(|s| s.name.clone());
            for s in op.stages.iter_mut() {
                match s.state {
                    StageState::Running => {
                        s.state = StageState::Failed;
                        s.ended_at = Some(now);
                    }
                    StageState::Pending => s.state = StageState::Skipped,
                    _ => {}
                }
            }
            let during = stage.map_or(String::new(), |s| format!(" during its stage {s:?}"));
            op.state = OperationState::Failed;
            op.ended_at = Some(now);
            op.version += 1;
            op.error = Some(
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "bangerd stopped while this operation ran{during} (it was killed or \
                         crashed); the next bangerd removed what it had made"
                    ),
                )
                .with_hint("run the command again"),
            );
            tracing::warn!(operation = %op.id, kind = ?op.kind, target = %op.target, "an operation a previous bangerd left unfinished is recorded failed");
            let id = op.id.clone();
            let entry = Arc::new(Entry {
                tx: watch::Sender::new(op.clone()),
                cancel: AtomicBool::new(false),
                journal: None,
            });
            {
                let mut registry = self.lock();
                registry.by_id.insert(id.clone(), entry);
                registry.order.push(id.clone());
            }
            self.retire(&id);
            recovered.push(op);
        }
        recovered
    }

    /// Registers an operation with its planned stages and runs `work` on the blocking pool.
    /// Returns the operation as first reported.
    pub fn spawn<F>(&self, kind: OperationKind, target: &str, stages: &[&str], work: F) -> Operation
    where
        F: FnOnce(&OperationContext) -> Result<serde_json::Value, ApiError> + Send + 'static,
    {
        let context = self.register(kind, target, stages);
        let first = context.snapshot();
        let registry = self.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&context)))
                .unwrap_or_else(|_| Err(ApiError::internal("the operation panicked")));
            context.finish(outcome);
            registry.retire(&context.id);
        });
        first
    }

    /// Registers an operation without running anything (the caller drives the context).
    pub fn register(&self, kind: OperationKind, target: &str, stages: &[&str]) -> OperationContext {
        let id = new_id();
        let op = Operation {
            id: id.clone(),
            kind,
            target: target.to_owned(),
            state: OperationState::Running,
            stages: stages
                .iter()
                .map(|name| Stage {
                    name: (*name).to_owned(),
                    state: StageState::Pending,
                    started_at: None,
                    ended_at: None,
                    message: None,
                    progress: None,
                })
                .collect(),
            error: None,
            result: None,
            cancel_requested: false,
            created_at: Timestamp::now(),
            ended_at: None,
            version: 1,
        };
        let entry = Arc::new(Entry {
            tx: watch::Sender::new(op),
            cancel: AtomicBool::new(false),
            journal: self
                .journal
                .as_ref()
                .map(|dir| dir.join(format!("{id}.json"))),
        });
        entry.journal();
        let mut registry = self.lock();
        registry.by_id.insert(id.clone(), entry.clone());
        registry.order.push(id.clone());
        OperationContext { id, entry }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the maps inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retire(&self, id: &str) {
        let mut registry = self.lock();
        registry.finished.push_back(id.to_owned());
        while registry.finished.len() > KEEP_FINISHED {
            if let Some(old) = registry.finished.pop_front() {
                registry.by_id.remove(&old);
                registry.order.retain(|x| x != &old);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<Operation> {
        self.lock().by_id.get(id).map(|e| e.tx.borrow().clone())
    }

    /// All known operations, oldest first.
    pub fn list(&self) -> Vec<Operation> {
        let registry = self.lock();
        registry
            .order
            .iter()
            .filter_map(|id| registry.by_id.get(id))
            .map(|e| e.tx.borrow().clone())
            .collect()
    }

    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<Operation>> {
        self.lock().by_id.get(id).map(|e| e.tx.subscribe())
    }

    /// Asks an operation to stop. Returns its state after the request.
    pub fn cancel(&self, id: &str) -> Option<Operation> {
        let entry = self.lock().by_id.get(id).cloned()?;
        entry.cancel.store(true, Ordering::SeqCst);
        entry.tx.send_modify(|op| {
            if !op.state.is_finished() && !op.cancel_requested {
                op.cancel_requested = true;
                op.version += 1;
            }
        });
        Some(entry.tx.borrow().clone())
    }

    /// Requests cancellation of everything still running (daemon shutdown).
    pub fn cancel_all(&self) -> Vec<String> {
        let running: Vec<String> = self
            .list()
            .into_iter()
            .filter(|op| !op.state.is_finished())
            .map(|op| op.id)
            .collect();
        for id in &running {
            self.cancel(id);
        }
        running
    }

    pub fn running(&self) -> usize {
        self.list()
            .iter()
            .filter(|op| !op.state.is_finished())
            .count()
    }
}

/// What the work of an operation uses to report itself.
pub struct OperationContext {
    id: String,
    entry: Arc<Entry>,
}

impl OperationContext {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn snapshot(&self) -> Operation {
        self.entry.tx.borrow().clone()
    }

    pub fn cancelled(&self) -> bool {
        self.entry.cancel.load(Ordering::SeqCst)
    }

    /// Fails with `cancelled` when cancellation was requested.
    pub fn check_cancelled(&self) -> Result<(), ApiError> {
        if self.cancelled() {
            Err(ApiError::new(
                ErrorCode::Cancelled,
                "the operation was cancelled",
            ))
        } else {
            Ok(())
        }
    }

    fn update(&self, f: impl FnOnce(&mut Operation)) {
        self.entry.tx.send_modify(|op| {
            f(op);
            op.version += 1;
        });
    }

    fn with_stage(&self, name: &str, f: impl FnOnce(&mut Stage)) {
        self.update(|op| {
            if let Some(stage) = op.stages.iter_mut().find(|s| s.name == name) {
                f(stage);
            }
        });
    }

    /// Marks a stage running. Ends whatever stage was running before.
    pub fn begin(&self, name: &str) {
        tracing::debug!(stage = name, "stage begins");
        let now = Timestamp::now();
        self.update(|op| {
            for stage in op.stages.iter_mut() {
                if stage.state == StageState::Running {
                    stage.state = StageState::Done;
                    stage.ended_at = Some(now);
                }
            }
            if let Some(stage) = op.stages.iter_mut().find(|s| s.name == name) {
                stage.state = StageState::Running;
                stage.started_at = Some(now);
            }
        });
        self.entry.journal();
    }

    /// Marks a stage done, with an optional note (e.g. "reflinked").
    pub fn done(&self, name: &str, message: Option<String>) {
        tracing::debug!(stage = name, "stage done");
        self.with_stage(name, |stage| {
            stage.state = StageState::Done;
            stage.ended_at = Some(Timestamp::now());
            if message.is_some() {
                stage.message = message;
            }
        });
    }

    /// Marks a stage as not needed by this run.
    pub fn skip(&self, name: &str, reason: &str) {
        self.with_stage(name, |stage| {
            stage.state = StageState::Skipped;
            stage.message = Some(reason.to_owned());
        });
    }

    /// Reports progress of a running stage.
    pub fn progress(&self, name: &str, done: u64, total: u64, unit: &str) {
        self.with_stage(name, |stage| {
            stage.progress = Some(Progress {
                done,
                total,
                unit: unit.to_owned(),
            });
        });
    }

    /// Records the outcome: running stages end failed/cancelled, pending ones skipped.
    fn finish(&self, outcome: Result<serde_json::Value, ApiError>) {
        // Out of the journal before the end is published: whoever sees it ended finds no file.
        if let Some(path) = &self.entry.journal {
            let _ = std::fs::remove_file(path);
        }
        let now = Timestamp::now();
        self.update(|op| {
            let (state, stage_state) = match &outcome {
                Ok(_) => (OperationState::Succeeded, StageState::Done),
                Err(e) if e.code == ErrorCode::Cancelled => {
                    (OperationState::Cancelled, StageState::Cancelled)
                }
                Err(_) => (OperationState::Failed, StageState::Failed),
            };
            for stage in op.stages.iter_mut() {
                match stage.state {
                    StageState::Running => {
                        stage.state = stage_state;
                        stage.ended_at = Some(now);
                    }
                    StageState::Pending => {
                        stage.state = if state == OperationState::Succeeded {
                            StageState::Done
                        } else {
                            StageState::Skipped
                        };
                    }
                    _ => {}
                }
            }
            op.state = state;
            op.ended_at = Some(now);
            match outcome {
                Ok(value) => op.result = Some(value),
                Err(error) => op.error = Some(error),
            }
        });
    }
}

fn new_id() -> String {
    format!("op-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn finished(ops: &Operations, id: &str) -> Operation {
        let mut rx = ops.subscribe(id).unwrap();
        rx.wait_for(|op| op.state.is_finished())
            .await
            .map(|op| op.clone())
            .unwrap()
    }

    #[tokio::test]
    async fn stages_run_in_order_and_record_the_result() {
        let ops = Operations::default();
        let first = ops.spawn(
            OperationKind::RegisterImage,
            "img",
            &["a", "b", "c"],
            |cx| {
                cx.begin("a");
                cx.progress("a", 5, 10, "bytes");
                cx.begin("b");
                cx.skip("c", "nothing to do");
                Ok(serde_json::json!({"ok": true}))
            },
        );
        assert_eq!(first.state, OperationState::Running);
        assert!(first.stages.iter().all(|s| s.state == StageState::Pending));
        let op = finished(&ops, &first.id).await;
        assert_eq!(op.state, OperationState::Succeeded);
        let states: Vec<_> = op.stages.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [StageState::Done, StageState::Done, StageState::Skipped]
        );
        assert_eq!(op.stages[0].progress.as_ref().unwrap().done, 5);
        assert!(op.stages[0].ended_at.is_some());
        assert_eq!(op.result.unwrap()["ok"], true);
        assert!(op.version > first.version);
    }

    #[tokio::test]
    async fn failure_marks_the_running_stage_and_skips_the_rest() {
        let ops = Operations::default();
        let first = ops.spawn(OperationKind::RegisterImage, "img", &["a", "b"], |cx| {
            cx.begin("a");
            Err(ApiError::invalid("broken"))
        });
        let op = finished(&ops, &first.id).await;
        assert_eq!(op.state, OperationState::Failed);
        assert_eq!(op.stages[0].state, StageState::Failed);
        assert_eq!(op.stages[1].state, StageState::Skipped);
        assert_eq!(op.error.unwrap().message, "broken");
    }

    #[tokio::test]
    async fn cancel_is_seen_by_the_work() {
        let ops = Operations::default();
        let first = ops.spawn(OperationKind::RegisterImage, "img", &["wait"], |cx| {
            cx.begin("wait");
            for _ in 0..500 {
                cx.check_cancelled()?;
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(serde_json::Value::Null)
        });
        let op = ops.cancel(&first.id).unwrap();
        assert!(op.cancel_requested);
        let op = finished(&ops, &first.id).await;
        assert_eq!(op.state, OperationState::Cancelled);
        assert_eq!(op.stages[0].state, StageState::Cancelled);
        assert_eq!(op.error.unwrap().code, ErrorCode::Cancelled);
    }

    #[tokio::test]
    async fn a_panicking_operation_fails_cleanly() {
        let ops = Operations::default();
        let first = ops.spawn(OperationKind::RegisterImage, "img", &["a"], |_| {
            panic!("boom");
        });
        let op = finished(&ops, &first.id).await;
        assert_eq!(op.state, OperationState::Failed);
        assert_eq!(op.error.unwrap().code, ErrorCode::Internal);
    }

    #[tokio::test]
    async fn finished_operations_are_bounded() {
        let ops = Operations::default();
        let mut last = String::new();
        for _ in 0..(KEEP_FINISHED + 5) {
            let op = ops.spawn(OperationKind::RegisterImage, "x", &[], |_| {
                Ok(serde_json::Value::Null)
            });
            finished(&ops, &op.id).await;
            last = op.id;
        }
        // Retirement happens right after the finish is published; give it a moment.
        for _ in 0..100 {
            if ops.list().len() <= KEEP_FINISHED {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ops.list().len(), KEEP_FINISHED);
        assert!(ops.get(&last).is_some());
    }

    /// A daemon killed mid-operation leaves its journal file; the next one reports the
    /// operation failed in the stage it was in. Finished operations leave no file.
    #[tokio::test]
    async fn operations_a_killed_daemon_left_are_reported_failed() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("operations");
        let ops = Operations::with_journal(journal.clone());
        let done = ops.spawn(OperationKind::RegisterImage, "fine", &["a"], |cx| {
            cx.begin("a");
            Ok(serde_json::Value::Null)
        });
        finished(&ops, &done.id).await;
        assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 0);

        // Registered and driven, never finished: as a killed daemon leaves it.
        let cx = ops.register(
            OperationKind::BootstrapImage,
            "debian",
            &["fetch", "unpack", "record"],
        );
        cx.begin("fetch");
        cx.begin("unpack");
        assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 1);

        let next = Operations::with_journal(journal.clone());
        let recovered = next.recover();
        assert_eq!(recovered.len(), 1);
        let op = next.get(cx.id()).expect("kept for clients that ask");
        assert_eq!(op.state, OperationState::Failed);
        assert_eq!(op.target, "debian");
        let states: Vec<StageState> = op.stages.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [StageState::Done, StageState::Failed, StageState::Skipped]
        );
        let error = op.error.unwrap();
        assert!(
            error.message.contains("during its stage \"unpack\""),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("killed or crashed"),
            "{}",
            error.message
        );
        assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 0);
        assert!(next.recover().is_empty(), "recovered once");
    }
}

#[cfg(test)]
mod journal_tests {
    use super::*;

    /// A journal write the disk cannot take leaves no `.partial` file behind, and the last
    /// whole journal of the operation stays readable.
    #[test]
    fn a_journal_write_on_a_full_disk_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("op-1.json");
        let op = Operation {
            id: "op-1".into(),
            kind: OperationKind::StartVm,
            target: "dev".into(),
            state: OperationState::Running,
            stages: Vec::new(),
            error: None,
            result: None,
            cancel_requested: false,
            created_at: Timestamp::now(),
            ended_at: None,
            version: 1,
        };
        let entry = Entry {
            tx: watch::Sender::new(op),
            cancel: AtomicBool::new(false),
            journal: Some(path.clone()),
        };
        entry.journal();
        let whole = std::fs::read(&path).unwrap();
        // The next write goes to /dev/full: every write there fails with ENOSPC.
        let partial = path.with_extension("partial");
        std::os::unix::fs::symlink("/dev/full", &partial).unwrap();
        entry.tx.send_modify(|op| op.version = 2);
        entry.journal();
        assert!(
            std::fs::symlink_metadata(&partial).is_err(),
            "the cut-short write is removed"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            whole,
            "the last whole one stays"
        );
    }
}

//! Following a long-running operation (202 + operation id) to its end: its stages are shown
//! live on stderr — one line each time a stage starts or ends, plus a redrawn progress line
//! when stderr is a terminal — and Ctrl-C asks bangerd to cancel it rather than leaving it
//! running unobserved.

use std::io::IsTerminal;

use banger_api::validate::format_size;
use banger_api::{
    ApiError, Client, ErrorCode, Operation, OperationState, Progress, Stage, StageState,
};

use crate::exit::{Exit, Failure};
use crate::output;

/// Follows `operation` until it ends. With `show_stages`, stages are printed on stderr.
/// Returns the operation once it succeeded; failure and cancellation become [`Failure`]s.
pub async fn follow(
    client: &Client,
    operation: Operation,
    show_stages: bool,
) -> Result<Operation, Failure> {
    let id = operation.id.clone();
    let mut reporter = Reporter::new(show_stages, std::io::stderr().is_terminal());
    reporter.update(&operation);
    let finished = if operation.state.is_finished() {
        operation
    } else {
        let watched = tokio::select! {
            watched = client.watch_operation(&id, |op| reporter.update(op)) => Some(watched),
            _ = tokio::signal::ctrl_c() => None,
        };
        match watched {
            Some(Ok(watched)) => watched,
            Some(Err(e)) => {
                reporter.finish();
                return Err(lost(&id, e));
            }
            None => cancel(client, &id, &mut reporter).await?,
        }
    };
    reporter.finish();
    match finished.state {
        OperationState::Succeeded => Ok(finished),
        OperationState::Cancelled => Err(Failure::operation(finished.error.unwrap_or_else(|| {
            ApiError::new(
                ErrorCode::Cancelled,
                format!("operation {id} was cancelled"),
            )
        }))),
        OperationState::Failed | OperationState::Running => {
            Err(Failure::operation(finished.error.unwrap_or_else(|| {
                ApiError::internal(format!("operation {id} failed without saying why"))
            })))
        }
    }
}

/// What following operation `id` met: bangerd's own answer as it is; a lost connection (a
/// daemon killed or crashed under the operation) says which operation, and that the next
/// bangerd reports what became of it.
fn lost(id: &str, e: banger_api::ClientError) -> Failure {
    match e {
        banger_api::ClientError::Api(e) => Failure::new(e),
        other => Failure::unavailable(
            format!("bangerd went away while operation {id} ran: {other}"),
            "the next banger command starts bangerd again, which removes what the operation \
             had made and reports it failed; run the command again",
        ),
    }
}

/// Follows `operation` until stage `stage` has ended (or the whole operation, if sooner),
/// then returns it, still running in bangerd. A failure before that is a [`Failure`].
pub async fn follow_until(
    client: &Client,
    operation: Operation,
    show_stages: bool,
    stage: &str,
) -> Result<Operation, Failure> {
    let id = operation.id.clone();
    let mut reporter = Reporter::new(show_stages, std::io::stderr().is_terminal());
    reporter.update(&operation);
    let mut current = operation;
    while !current.state.is_finished() && !crate::vm::stage_ended(&current, stage) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        current = client.get_operation(&id).await?;
        reporter.update(&current);
    }
    reporter.finish();
    match (current.state, &current.error) {
        (OperationState::Failed | OperationState::Cancelled, Some(error)) => {
            Err(Failure::operation(error.clone()))
        }
        _ => Ok(current),
    }
}

/// After a Ctrl-C: asks bangerd to cancel and waits for the operation to wind down; a second
/// Ctrl-C stops waiting.
async fn cancel(client: &Client, id: &str, reporter: &mut Reporter) -> Result<Operation, Failure> {
    reporter.clear_progress();
    output::eprint(&format!(
        "banger: cancelling operation {id} (press Ctrl-C again to stop waiting)\n"
    ));
    client.cancel_operation(id).await?;
    tokio::select! {
        watched = client.watch_operation(id, |op| reporter.update(op)) => Ok(watched?),
        _ = tokio::signal::ctrl_c() => Err(Failure {
            error: ApiError::new(
                ErrorCode::Cancelled,
                format!("stopped waiting for operation {id}, which bangerd is cancelling"),
            ),
            exit: Exit::Cancelled,
        }),
    }
}

/// Prints stage transitions as they arrive.
struct Reporter {
    enabled: bool,
    terminal: bool,
    last: Option<Operation>,
    /// The progress line on screen (written without a newline), if any.
    progress_shown: Option<String>,
}

impl Reporter {
    fn new(enabled: bool, terminal: bool) -> Self {
        Reporter {
            enabled,
            terminal,
            last: None,
            progress_shown: None,
        }
    }

    fn update(&mut self, operation: &Operation) {
        if !self.enabled {
            return;
        }
        let lines = transitions(self.last.as_ref(), operation);
        if !lines.is_empty() {
            self.clear_progress();
            output::eprint(&lines.concat());
        }
        if self.terminal
            && let Some(line) = progress_line(operation)
            && self.progress_shown.as_ref() != Some(&line)
        {
            // Erase the line and redraw it in place.
            output::eprint(&format!("\r\x1b[2K{line}"));
            self.progress_shown = Some(line);
        }
        self.last = Some(operation.clone());
    }

    fn clear_progress(&mut self) {
        if self.progress_shown.take().is_some() {
            output::eprint("\r\x1b[2K");
        }
    }

    fn finish(&mut self) {
        self.clear_progress();
    }
}

/// One line per stage that started or ended between `before` and `after`.
pub fn transitions(before: Option<&Operation>, after: &Operation) -> Vec<String> {
    let mut lines = Vec::new();
    for stage in &after.stages {
        let previous = before
            .and_then(|op| op.stages.iter().find(|s| s.name == stage.name))
            .map_or(StageState::Pending, |s| s.state);
        if previous != stage.state && stage.state != StageState::Pending {
            lines.push(format!("{}\n", stage_line(stage)));
        }
    }
    lines
}

/// `  copy-rootfs: running`, `  copy-rootfs: done in 1.3s, 100% of 16M`.
pub fn stage_line(stage: &Stage) -> String {
    let state = match stage.state {
        StageState::Pending => "pending",
        StageState::Running => "running",
        StageState::Done => "done",
        StageState::Failed => "failed",
        StageState::Skipped => "skipped",
        StageState::Cancelled => "cancelled",
    };
    let mut line = format!("  {}: {state}", stage.name);
    if let (Some(start), Some(end)) = (stage.started_at, stage.ended_at) {
        let word = if stage.state == StageState::Done {
            "in"
        } else {
            "after"
        };
        line.push_str(&format!(
            " {word} {}",
            output::format_duration(start.until(end))
        ));
    }
    if let Some(progress) = &stage.progress
        && stage.state != StageState::Skipped
    {
        line.push_str(&format!(", {}", progress_text(progress)));
    }
    if let Some(message) = &stage.message {
        line.push_str(&format!(": {message}"));
    }
    line
}

/// The running stage with progress, as redrawn on a terminal.
pub fn progress_line(operation: &Operation) -> Option<String> {
    operation
        .stages
        .iter()
        .find(|s| s.state == StageState::Running && s.progress.is_some())
        .map(stage_line)
}

/// `42% of 16M` for bytes, `3/10 files (30%)` for other units.
pub fn progress_text(progress: &Progress) -> String {
    let percent = (progress.done.min(progress.total) * 100)
        .checked_div(progress.total)
        .map(|p| format!("{p}%"));
    match (progress.unit.as_str(), percent) {
        ("bytes", Some(percent)) => format!("{percent} of {}", format_size(progress.total)),
        ("bytes", None) => format_size(progress.done),
        (unit, Some(percent)) => format!("{}/{} {unit} ({percent})", progress.done, progress.total),
        (unit, None) => format!("{} {unit}", progress.done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::validate::MIB;
    use banger_api::{OperationKind, Timestamp};

    const T0: i64 = 1_763_900_000_000;

    fn stage(name: &str, state: StageState, times: Option<(i64, Option<i64>)>) -> Stage {
        Stage {
            name: name.into(),
            state,
            started_at: times.map(|(s, _)| Timestamp(T0 + s)),
            ended_at: times.and_then(|(_, e)| e).map(|e| Timestamp(T0 + e)),
            message: None,
            progress: None,
        }
    }

    fn op(stages: Vec<Stage>) -> Operation {
        Operation {
            id: "op-1".into(),
            kind: OperationKind::RegisterImage,
            target: "debian".into(),
            state: OperationState::Running,
            stages,
            error: None,
            result: None,
            cancel_requested: false,
            created_at: Timestamp(T0),
            ended_at: None,
            version: 1,
        }
    }

    fn bytes(done: u64, total: u64) -> Option<Progress> {
        Some(Progress {
            done,
            total,
            unit: "bytes".into(),
        })
    }

    /// The updates a registration goes through, and what banger prints for each.
    #[test]
    fn a_registration_prints_one_line_per_transition() {
        use StageState::*;
        let mut updates = vec![
            op(vec![
                stage("check-files", Running, Some((0, None))),
                stage("copy-kernel", Pending, None),
                stage("copy-rootfs", Pending, None),
            ]),
            op(vec![
                stage("check-files", Done, Some((0, Some(3)))),
                stage("copy-kernel", Running, Some((3, None))),
                stage("copy-rootfs", Pending, None),
            ]),
        ];
        let mut kernel = stage("copy-kernel", Done, Some((3, Some(1_343))));
        kernel.progress = bytes(40 * MIB, 40 * MIB);
        let mut rootfs = stage("copy-rootfs", Running, Some((1_343, None)));
        rootfs.progress = bytes(700 * MIB, 2048 * MIB);
        updates.push(op(vec![
            stage("check-files", Done, Some((0, Some(3)))),
            kernel.clone(),
            rootfs.clone(),
        ]));
        // A progress-only change prints nothing on a non-terminal.
        rootfs.progress = bytes(1400 * MIB, 2048 * MIB);
        updates.push(op(vec![
            stage("check-files", Done, Some((0, Some(3)))),
            kernel.clone(),
            rootfs.clone(),
        ]));
        let mut failed = stage("copy-rootfs", Failed, Some((1_343, Some(75_000))));
        failed.progress = rootfs.progress.clone();
        failed.message = Some("no space left on device".into());
        updates.push(op(vec![
            stage("check-files", Done, Some((0, Some(3)))),
            kernel,
            failed,
        ]));

        let mut printed = String::new();
        let mut before: Option<&Operation> = None;
        for update in &updates {
            printed.push_str(&transitions(before, update).concat());
            before = Some(update);
        }
        insta::assert_snapshot!(printed, @r"
          check-files: running
          check-files: done in 3ms
          copy-kernel: running
          copy-kernel: done in 1.3s, 100% of 40M
          copy-rootfs: running, 34% of 2G
          copy-rootfs: failed after 1m 13s, 68% of 2G: no space left on device
        ");
        insta::assert_snapshot!(progress_line(&updates[3]).unwrap(), @"  copy-rootfs: running, 68% of 2G");
        assert_eq!(progress_line(&updates[1]), None);
    }

    #[test]
    fn a_stage_seen_first_when_finished_prints_once() {
        let first = op(vec![stage("check-files", StageState::Skipped, None)]);
        assert_eq!(transitions(None, &first), ["  check-files: skipped\n"]);
        assert!(transitions(Some(&first), &first).is_empty());
    }

    #[test]
    fn progress_in_other_units() {
        let files = Progress {
            done: 3,
            total: 10,
            unit: "files".into(),
        };
        assert_eq!(progress_text(&files), "3/10 files (30%)");
        let unknown_total = Progress {
            done: 5 * MIB,
            total: 0,
            unit: "bytes".into(),
        };
        assert_eq!(progress_text(&unknown_total), "5M");
    }
}

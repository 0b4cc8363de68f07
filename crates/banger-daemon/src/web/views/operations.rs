//! The operation views: an operation with its stages and progress, as pages show it and its
//! polling endpoint reports it, and the list and detail pages.

use askama::Template;

use banger_api::{Operation, OperationKind, OperationState, Stage, StageState};
use serde::Serialize;

use super::format::{
    console_hint, duration, image_href, operation_href, percent, size, time, vm_href,
};
use super::{Chrome, Link};

/// One stage of an operation; the polling endpoint sends these too.
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    pub name: String,
    pub state: &'static str,
    pub percent: u32,
    pub detail: String,
}

/// An operation as pages show it and `/operations/{id}/json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct OpView {
    pub id: String,
    pub href: String,
    pub json_href: String,
    pub cancel_href: String,
    pub kind: &'static str,
    pub target: String,
    /// The page of what the operation works on, when it has one (a VM; an image once
    /// registered).
    pub target_href: Option<String>,
    pub state: &'static str,
    pub running: bool,
    pub cancel_requested: bool,
    /// Overall progress, 0-100.
    pub percent: u32,
    /// What is happening now, e.g. "copy rootfs: 3M of 16M".
    pub current: String,
    pub stages: Vec<StageView>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub result: Option<Link>,
    pub created: String,
    pub ended: Option<String>,
}

pub(super) fn kind_label(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::RegisterImage => "Register image",
        OperationKind::BootstrapImage => "Bootstrap image",
        OperationKind::ExportImage => "Export image",
        OperationKind::ImportImage => "Import image",
        OperationKind::StartVm => "Start VM",
        OperationKind::StopVm => "Stop VM",
        OperationKind::RestartVm => "Restart VM",
        OperationKind::PromoteImage => "Promote VM to image",
        OperationKind::BuildImage => "Build image",
    }
}

pub(super) fn op_state(state: OperationState) -> &'static str {
    match state {
        OperationState::Running => "running",
        OperationState::Succeeded => "succeeded",
        OperationState::Failed => "failed",
        OperationState::Cancelled => "cancelled",
    }
}

pub(super) fn stage_state(state: StageState) -> &'static str {
    match state {
        StageState::Pending => "pending",
        StageState::Running => "running",
        StageState::Done => "done",
        StageState::Failed => "failed",
        StageState::Skipped => "skipped",
        StageState::Cancelled => "cancelled",
    }
}

/// Fraction of a stage's work done, when it reports progress.
pub(super) fn stage_fraction(stage: &Stage) -> Option<(u64, u64)> {
    stage
        .progress
        .as_ref()
        .filter(|p| p.total > 0)
        .map(|p| (p.done.min(p.total), p.total))
}

pub(super) fn stage_view(stage: &Stage) -> StageView {
    let percent = match stage.state {
        StageState::Done => 100,
        StageState::Running => stage_fraction(stage).map_or(0, |(d, t)| percent(d, t)),
        _ => 0,
    };
    let mut detail = Vec::new();
    if stage.state == StageState::Running
        && let Some(p) = &stage.progress
    {
        detail.push(if p.unit == "bytes" {
            format!("{} of {}", size(p.done), size(p.total))
        } else {
            format!("{} of {} {}", p.done, p.total, p.unit)
        });
    }
    if let (Some(start), Some(end)) = (stage.started_at, stage.ended_at) {
        detail.push(duration(start.until(end).as_millis() as u64));
    }
    if let Some(message) = &stage.message {
        detail.push(message.clone());
    }
    StageView {
        name: stage.name.clone(),
        state: stage_state(stage.state),
        percent,
        detail: detail.join(", "),
    }
}

impl From<&Operation> for OpView {
    fn from(op: &Operation) -> Self {
        let counted: Vec<&Stage> = op
            .stages
            .iter()
            .filter(|s| s.state != StageState::Skipped)
            .collect();
        let done = counted
            .iter()
            .filter(|s| s.state == StageState::Done)
            .count() as u64;
        let running = counted.iter().find(|s| s.state == StageState::Running);
        let percent = if op.state == OperationState::Succeeded {
            100
        } else if counted.is_empty() {
            0
        } else {
            // Each counted stage is an equal share; the running one adds what it reports.
            let share = running
                .and_then(|s| stage_fraction(s))
                .map_or(0, |(d, t)| d * 1000 / t);
            ((done * 1000 + share) * 100 / (counted.len() as u64 * 1000)).min(100) as u32
        };
        let current = match (op.state, running) {
            (OperationState::Running, Some(stage)) => {
                let view = stage_view(stage);
                if view.detail.is_empty() {
                    view.name
                } else {
                    format!("{}: {}", view.name, view.detail)
                }
            }
            (OperationState::Running, None) => "starting".to_owned(),
            // The state badge says it all.
            _ => String::new(),
        };
        let result = match (op.kind, op.state, &op.result) {
            (
                OperationKind::RegisterImage
                | OperationKind::BootstrapImage
                | OperationKind::ImportImage
                | OperationKind::PromoteImage
                | OperationKind::BuildImage,
                OperationState::Succeeded,
                Some(value),
            ) => value.get("name").and_then(|n| n.as_str()).map(|name| Link {
                label: format!("image {name}"),
                href: image_href(name),
            }),
            (
                OperationKind::StartVm | OperationKind::StopVm | OperationKind::RestartVm,
                OperationState::Succeeded,
                _,
            ) => Some(Link {
                label: format!("VM {}", op.target),
                href: vm_href(&op.target),
            }),
            _ => None,
        };
        let target_href = match op.kind {
            OperationKind::StartVm | OperationKind::StopVm | OperationKind::RestartVm => {
                Some(vm_href(&op.target))
            }
            OperationKind::RegisterImage
            | OperationKind::BootstrapImage
            | OperationKind::ImportImage
            | OperationKind::PromoteImage
            | OperationKind::BuildImage => result.as_ref().map(|link| link.href.clone()),
            // The image exported is the target; the result names a file, not a page.
            OperationKind::ExportImage => Some(image_href(&op.target)),
        };
        OpView {
            id: op.id.clone(),
            href: operation_href(&op.id),
            json_href: format!("{}/json", operation_href(&op.id)),
            cancel_href: format!("{}/cancel", operation_href(&op.id)),
            kind: kind_label(op.kind),
            target: op.target.clone(),
            target_href,
            state: op_state(op.state),
            running: !op.state.is_finished(),
            cancel_requested: op.cancel_requested,
            percent,
            current,
            stages: op.stages.iter().map(stage_view).collect(),
            error: op.error.as_ref().map(|e| e.message.clone()),
            hint: op
                .error
                .as_ref()
                .and_then(|e| console_hint(e.hint.as_deref())),
            result,
            created: time(op.created_at),
            ended: op.ended_at.map(time),
        }
    }
}

#[derive(Template)]
#[template(path = "operations.html")]
pub struct OperationListPage {
    pub chrome: Chrome,
    pub operations: Vec<OpView>,
}

#[derive(Template)]
#[template(path = "operation.html")]
pub struct OperationPage {
    pub chrome: Chrome,
    pub op: OpView,
}

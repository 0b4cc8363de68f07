//! Drawing: a pure function from an [`App`] to a frame, so that every screen — loading,
//! errors, lists, forms, overlays, any terminal size — has a snapshot test.
//!
//! Layout, top to bottom: a header (title, the two views, key hints), the capacity row, the
//! selected view (a list over the selected item's details), running operations (only while
//! there are any) and the status line. Small terminals drop the details first, then table
//! columns and bar figures; nothing here may panic at any size.
//!
//! The screens (the VM, image and snapshot views with their detail panes, the operations
//! and the status line) stay in this one file: they share the frame's layout and its helpers
//! for times and sizes, and are read together; the layout toolkit is in `layout` and what is
//! drawn over a screen in `overlays`.

use std::time::Duration;

use banger_api::validate::{MIB, format_size};
use banger_api::{
    Image, ImageFile, Operation, Snapshot, Stage as OpStage, StageState as OpStageState, Timestamp,
    Vm, VmState,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::app::{App, HealthShown, Load, NoticeKind, Overlay, StageState, View, describe};
use super::bars::{Meter, meter_row};
use super::layout::{
    Column, Content, Pair, key_values, list_and_detail, pair_rows, pane, pane_title,
    rows_or_placeholder, table, text_width, wrap,
};
use super::logs::Logs;
use super::overlays::{
    confirm, confirm_snapshot_delete, create_form, help, name_prompt, promote_form,
};
use super::theme::Theme;
use crate::output;

/// The marker of the selected row (also what the terminal test looks for).
pub const SELECTED: &str = "▶ ";
/// Operations listed at most; more are counted on the last line.
const MAX_OPERATION_ROWS: usize = 3;

pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let area = frame.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    // Operations get rows only when there is room for the list too.
    let op_rows = if area.height >= 16 {
        app.operations.len().min(MAX_OPERATION_ROWS) as u16
    } else {
        0
    };
    let [header_area, bars_area, main, ops_area, status_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(op_rows),
        Constraint::Length(1),
    ])
    .areas(area);
    header(frame, header_area, app);
    // One column of margin, in line with the header's title and the panes' contents.
    let margin = |r: Rect| Rect {
        x: r.x.saturating_add(1).min(r.right()),
        width: r.width.saturating_sub(2),
        ..r
    };
    capacity(frame, margin(bars_area), app);
    match app.view {
        View::Vms => vms_view(frame, main, app),
        View::Images => images_view(frame, main, app),
        View::Snapshots => snapshots_view(frame, main, app),
    }
    operations(frame, margin(ops_area), app);
    status(frame, margin(status_area), app);
    match &app.overlay {
        None => {}
        Some(Overlay::Help) => help(frame, area, &app.theme),
        Some(Overlay::Create(form)) => create_form(frame, area, app, form),
        Some(Overlay::Confirm(name, action)) => confirm(frame, area, &app.theme, name, *action),
        Some(Overlay::Promote(form)) => promote_form(frame, area, &app.theme, form),
        Some(Overlay::Name(prompt)) => name_prompt(frame, area, &app.theme, prompt),
        Some(Overlay::ConfirmSnapshotDelete(name)) => {
            confirm_snapshot_delete(frame, area, &app.theme, name)
        }
        // Over the lists and the operations; the status line stays in view.
        Some(Overlay::Logs(logs)) => logs_view(
            frame,
            Rect {
                height: main.height + ops_area.height,
                ..main
            },
            app,
            logs,
        ),
    }
}

fn header(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = &app.theme;
    let vm_count = count(&app.vms);
    let image_count = count(&app.images);
    let snapshot_count = count(&app.snapshots);
    let tab = |label: String, active: bool| {
        if active {
            Span::styled(label, t.tab_active())
        } else {
            Span::raw(label)
        }
    };
    let left = Line::from(vec![
        Span::styled(" banger ", t.title()),
        Span::raw(" "),
        tab(format!(" VMs {vm_count} "), app.view == View::Vms),
        Span::raw(" "),
        tab(format!(" Images {image_count} "), app.view == View::Images),
        Span::raw(" "),
        tab(
            format!(" Snapshots {snapshot_count} "),
            app.view == View::Snapshots,
        ),
    ]);
    let right = Line::from(vec![
        Span::styled("?", t.key()),
        Span::raw(" help  "),
        Span::styled("q", t.key()),
        Span::raw(" quit "),
    ]);
    let right_width = right.width() as u16;
    let room = area.width.saturating_sub(left.width() as u16);
    if room > right_width {
        let [l, r] =
            Layout::horizontal([Constraint::Min(0), Constraint::Length(right_width)]).areas(area);
        frame.render_widget(Paragraph::new(left), l);
        frame.render_widget(Paragraph::new(right), r);
    } else {
        frame.render_widget(Paragraph::new(left), area);
    }
}

/// A tab's count: the number of items, or how their loading stands.
fn count<T>(load: &Load<Vec<T>>) -> String {
    match load {
        Load::Loading => "…".into(),
        Load::Failed(_) => "!".into(),
        Load::Ready(items) => items.len().to_string(),
    }
}

fn capacity(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = &app.theme;
    let line = match &app.capacity {
        Load::Ready(capacity) => meter_row(&Meter::from_capacity(capacity), area.width, t),
        Load::Loading => {
            let mut spans = Vec::new();
            for (i, label) in ["CPU", "RAM", "Disk"].into_iter().enumerate() {
                if i > 0 {
                    spans.push(Span::raw("  "));
                }
                spans.push(Span::styled(format!("{label} "), t.label()));
                spans.push(Span::styled("loading…", t.dim()));
            }
            Line::from(spans)
        }
        // The panes below explain why bangerd is not there.
        Load::Failed(_) if app.bootstrap_error.is_some() => Line::from(vec![
            Span::styled("CPU ", t.label()),
            Span::styled("–  ", t.dim()),
            Span::styled("RAM ", t.label()),
            Span::styled("–  ", t.dim()),
            Span::styled("Disk ", t.label()),
            Span::styled("–", t.dim()),
        ]),
        Load::Failed(e) => Line::from(vec![
            Span::styled("Capacity ", t.label()),
            Span::styled(format!("unavailable: {}", e.message), t.error()),
        ]),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn vms_view(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = &app.theme;
    let empty = vec![Line::from(vec![
        Span::raw("No VMs yet. Press "),
        Span::styled("c", t.key()),
        Span::raw(" to create one."),
    ])];
    let title = pane_title("VMs", &app.vms);
    let Some(vms) = rows_or_placeholder(frame, area, app, &app.vms, &title, "VMs", empty) else {
        return;
    };
    let (list_area, detail_area) = list_and_detail(area, vms.len());
    let states: Vec<String> = vms.iter().map(|vm| state_text(vm, app)).collect();
    let health: Vec<Content<'_>> = vms.iter().map(|vm| health_cell(vm, app)).collect();
    let columns = [
        Column::new(
            "NAME",
            text_width(vms.iter().map(|v| v.name.len()), "NAME", 32),
            0,
        )
        .shrinks_to(12),
        Column::new(
            "STATE",
            text_width(states.iter().map(|s| s.chars().count()), "STATE", 22),
            1,
        )
        .shrinks_to(8),
        Column::new(
            "HEALTH",
            text_width(health.iter().map(|(h, _)| h.chars().count()), "HEALTH", 11),
            5,
        ),
        // The details show the image too: the first column to go in a narrow terminal.
        Column::new(
            "IMAGE",
            text_width(vms.iter().map(|v| v.image.name.len()), "IMAGE", 20),
            7,
        )
        .shrinks_to(8),
        Column::new("VCPUS", 5, 3).right(),
        Column::new("MEMORY", 6, 4).right(),
        Column::new(
            "IP",
            text_width(vms.iter().map(|v| v.network.ip.len()), "IP", 15),
            2,
        ),
        Column::new("UPTIME", 7, 6).right(),
    ];
    let plain = Style::new();
    let cells = vms
        .iter()
        .zip(states)
        .zip(health)
        .map(|((vm, state), health)| {
            vec![
                (vm.name.clone(), plain),
                (state, t.state(vm.state)),
                health,
                (vm.image.name.clone(), plain),
                (vm.vcpus.to_string(), plain),
                (memory(vm.memory_mib), plain),
                (vm.network.ip.clone(), plain),
                (uptime(vm, app), plain),
            ]
        })
        .collect();
    table(
        &columns,
        cells,
        app.vm_cursor,
        pane(title, t),
        list_area,
        frame,
        t,
    );
    if let (Some(detail_area), Some(vm)) = (detail_area, app.selected_vm()) {
        vm_detail(frame, detail_area, app, vm);
    }
}

fn memory(mib: u32) -> String {
    format_size(u64::from(mib) * MIB)
}

/// How long the VM's VMM has run ("-" for a VM without one: stopped, failed, or starting
/// before its VMM is up).
fn uptime(vm: &Vm, app: &App) -> String {
    match &vm.runtime {
        Some(rt) if vm.state.holds_resources() => {
            output::format_duration(rt.started_at.until(app.now))
        }
        _ => "-".into(),
    }
}

/// The health column: what the guest agent says about a running VM.
fn health_cell(vm: &Vm, app: &App) -> Content<'static> {
    let t = &app.theme;
    match app.health_of(vm) {
        HealthShown::NotRunning => ("-".into(), t.dim()),
        HealthShown::Unknown => ("…".into(), t.dim()),
        HealthShown::Ready(_) => ("ok".into(), t.success()),
        HealthShown::Starting(_) => ("starting".into(), t.busy()),
        HealthShown::Unreachable(_) => ("unreachable".into(), t.error()),
    }
}

/// The detail pane's account of the guest agent's answer: a pair short enough for a detail
/// column ("ok · up 1m 3s · agent 0.1.0"), and lines for under the pairs, at full width: the
/// boot's milestones as the guest timed them, or why the agent did not answer.
fn health_detail(vm: &Vm, app: &App, width: u16) -> (Option<Pair>, Vec<Line<'static>>) {
    let t = &app.theme;
    let summary = |state: &str, health: &banger_agent_protocol::protocol::Health| {
        // The guest's uptime as of now, not as of the answer.
        let since = app
            .health
            .get(&vm.name)
            .map_or(Duration::ZERO, |h| app.clock.saturating_sub(h.checked));
        format!(
            "{state} · up {} · agent {}",
            output::format_duration(Duration::from_millis(health.uptime_ms) + since),
            health.version,
        )
    };
    let labelled = |label: &'static str, text: &str, style: Style| -> Vec<Line<'static>> {
        wrap(text, usize::from(width).saturating_sub(label.len()))
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let head = if i == 0 {
                    Span::styled(label, t.dim())
                } else {
                    Span::raw(" ".repeat(label.len()))
                };
                Line::from(vec![head, Span::styled(piece, style)])
            })
            .collect()
    };
    let boot = |health: &banger_agent_protocol::protocol::Health| {
        let stages: Vec<String> = health
            .boot
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.name,
                    output::format_duration(Duration::from_millis(s.at_ms))
                )
            })
            .collect();
        if stages.is_empty() {
            Vec::new()
        } else {
            labelled("boot: ", &stages.join(" · "), Style::new())
        }
    };
    match app.health_of(vm) {
        HealthShown::NotRunning => (None, Vec::new()),
        HealthShown::Unknown => (Some(("health", "asking…".into(), t.dim())), Vec::new()),
        HealthShown::Ready(h) => (Some(("health", summary("ok", h), t.success())), boot(h)),
        HealthShown::Starting(h) => (Some(("health", summary("starting", h), t.busy())), boot(h)),
        HealthShown::Unreachable(e) => (
            Some(("health", "unreachable".into(), t.error())),
            labelled("unreachable: ", &e.message, t.error()),
        ),
    }
}

/// A VM's state, with the stage of the start or stop running on it: "starting · vmm".
fn state_text(vm: &Vm, app: &App) -> String {
    match app.operation_on(vm).and_then(current_stage) {
        Some(stage) => format!("{} · {}", vm.state, stage.name),
        None => vm.state.to_string(),
    }
}

fn vm_detail(frame: &mut Frame<'_>, area: Rect, app: &App, vm: &Vm) {
    let t = &app.theme;
    let block = pane(format!(" {} ", vm.name), t);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let net = &vm.network;
    let plain = Style::new();
    // Most useful first: a short pane shows the top of the list.
    let mut pairs: Vec<Pair> = vec![("state", vm.state.to_string(), t.state(vm.state))];
    if let Some(op) = app.operation_on(vm) {
        pairs.push(("operation", operation_text(op, app), t.busy()));
    }
    let (health, mut lines) = health_detail(vm, app, inner.width);
    pairs.extend(health);
    if let Some(rt) = &vm.runtime {
        // The backend that runs it, and what the VM asked for when that differs ("auto").
        let backend = if rt.vmm == vm.vmm {
            rt.vmm.to_string()
        } else {
            format!("{} ({})", rt.vmm, vm.vmm)
        };
        pairs.extend([
            ("up since", moment(rt.started_at), plain),
            ("vmm", backend, plain),
            ("pid", rt.pid.to_string(), plain),
            ("tap", rt.tap.clone(), plain),
        ]);
    }
    pairs.extend([
        ("image", vm.image.name.clone(), plain),
        ("vcpus", vm.vcpus.to_string(), plain),
        ("memory", memory(vm.memory_mib), plain),
        ("ip", format!("{}/{}", net.ip, net.prefix_len), plain),
        ("nat", if vm.nat { "on" } else { "off" }.into(), plain),
        (
            "disk",
            format!("{} copy-on-write root", format_size(vm.disk_bytes)),
            plain,
        ),
        (
            "work disk",
            format!("{} at /root", format_size(vm.work_disk_bytes)),
            plain,
        ),
    ]);
    // Published ports: the URL a browser opens on this host, and the guest port behind it.
    pairs.extend(vm.published_ports.iter().map(|p| {
        (
            "published",
            format!("{} → {}", p.url(), p.guest_port),
            plain,
        )
    }));
    // The image's own services: where the host reaches each.
    if let Some(image) = app
        .images
        .ready()
        .and_then(|images| images.iter().find(|i| i.id == vm.image.id))
    {
        let domain = app.daemon.as_ref().and_then(|d| d.dns_domain.as_deref());
        pairs.extend(
            banger_api::service::service_addresses(vm, &image.manifest.services, domain)
                .into_iter()
                .map(|s| ("service", format!("{} {}", s.name, s.text()), plain)),
        );
    }
    if vm.runtime.is_none() {
        pairs.push(("vmm", vm.vmm.to_string(), plain));
    }
    pairs.extend([
        ("gateway", net.gateway.clone(), plain),
        ("mac", net.mac.clone(), plain),
        ("vsock cid", net.vsock_cid.to_string(), plain),
        ("created", output::age(vm.created_at, app.now), plain),
        ("updated", output::age(vm.updated_at, app.now), plain),
        ("id", vm.id.clone(), plain),
    ]);
    if let Some(error) = &vm.last_error {
        if !lines.is_empty() {
            lines.push(Line::raw(""));
        }
        lines.extend(error_lines(vm.state, error, inner.width, t));
    }
    if lines.is_empty() {
        key_values(frame, inner, &pairs, t);
        return;
    }
    // The guest's boot and the last error go under the pairs, wrapped, the error with the
    // console lines it carries; they get at least half of a short pane, since on a failed VM
    // the reason is what matters.
    let height = inner.height;
    let wanted = u16::try_from(lines.len()).unwrap_or(u16::MAX);
    let for_pairs = pair_rows(inner.width, height, pairs.len());
    let pairs_height = if for_pairs.saturating_add(wanted) < height {
        // Room for all, and a blank row between.
        for_pairs + 1
    } else if for_pairs.saturating_add(wanted) == height {
        for_pairs
    } else {
        height - wanted.min(height.saturating_sub(for_pairs).max(height / 2))
    };
    let [pairs_area, error_area] =
        Layout::vertical([Constraint::Length(pairs_height), Constraint::Min(0)]).areas(inner);
    key_values(frame, pairs_area, &pairs, t);
    frame.render_widget(Paragraph::new(lines), error_area);
}

/// An instant short enough for a detail column: "2025-11-23 11:11:20 UTC".
fn moment(t: Timestamp) -> String {
    let text = t.to_string();
    match (text.get(..10), text.get(11..19)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => text,
    }
}

/// `last_error` as the detail pane shows it: "failure:" (the VM is failed) or "last error:"
/// (its last start did not complete), then the text wrapped to `width`, each of its own lines
/// (the console's last lines) keeping its indentation.
fn error_lines(state: VmState, error: &str, width: u16, t: &Theme) -> Vec<Line<'static>> {
    let label = if state == VmState::Failed {
        "failure: "
    } else {
        "last error: "
    };
    let width = usize::from(width);
    let mut lines = Vec::new();
    for (n, text) in error.lines().enumerate() {
        let body = text.trim_start();
        let indent = if n == 0 {
            label.len()
        } else {
            text.len() - body.len()
        };
        for (i, piece) in wrap(body, width.saturating_sub(indent))
            .into_iter()
            .enumerate()
        {
            let line = if n == 0 && i == 0 {
                Line::from(vec![
                    Span::styled(label, t.error()),
                    Span::styled(piece, t.error()),
                ])
            } else {
                Line::raw(format!("{:indent$}{piece}", ""))
            };
            lines.push(line);
        }
    }
    lines
}

fn images_view(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = &app.theme;
    let empty = vec![
        Line::raw("No images yet. Build the default one from Debian packages:"),
        Line::styled("banger image bootstrap debian", t.key()),
        Line::raw("or register your own:"),
        Line::styled(
            "banger image register --name NAME --kernel vmlinux --rootfs rootfs.ext4",
            t.key(),
        ),
    ];
    let title = pane_title("Images", &app.images);
    let Some(images) = rows_or_placeholder(frame, area, app, &app.images, &title, "images", empty)
    else {
        return;
    };
    let (list_area, detail_area) = list_and_detail(area, images.len());
    let kernel = |i: &Image| {
        i.manifest
            .kernel_version
            .clone()
            .unwrap_or_else(|| "-".into())
    };
    let columns = [
        Column::new(
            "NAME",
            text_width(images.iter().map(|i| i.name.len()), "NAME", 32),
            0,
        )
        .shrinks_to(12),
        Column::new("SOURCE", 12, 2),
        Column::new(
            "KERNEL",
            text_width(images.iter().map(|i| kernel(i).len()), "KERNEL", 24),
            3,
        )
        .shrinks_to(10),
        Column::new("SIZE", 6, 1).right(),
        Column::new("CREATED", 10, 4),
    ];
    let plain = Style::new();
    let cells = images
        .iter()
        .map(|image| {
            vec![
                (image.name.clone(), plain),
                match image.retired {
                    // No one's to pick now: the detail says what replaced it.
                    Some(_) => ("retired".to_string(), t.dim()),
                    None => (image.source.as_str().to_string(), plain),
                },
                (kernel(image), plain),
                (format_size(allocated(image)), plain),
                (output::age(image.created_at, app.now), plain),
            ]
        })
        .collect();
    table(
        &columns,
        cells,
        app.image_cursor,
        pane(title, t),
        list_area,
        frame,
        t,
    );
    if let (Some(detail_area), Some(image)) = (detail_area, app.selected_image()) {
        image_detail(frame, detail_area, app, image);
    }
}

fn snapshots_view(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = &app.theme;
    let empty = vec![
        Line::raw("No snapshots yet. Select a running Firecracker VM in the VM view and press"),
        Line::from(vec![
            Span::styled("n", t.key()),
            Span::raw(" to snapshot it, or "),
            Span::styled("C", t.key()),
            Span::raw(" to clone it; from the command line:"),
        ]),
        Line::styled("banger vm snapshot NAME [--name SNAP]", t.key()),
    ];
    let title = pane_title("Snapshots", &app.snapshots);
    let Some(snapshots) =
        rows_or_placeholder(frame, area, app, &app.snapshots, &title, "snapshots", empty)
    else {
        return;
    };
    let (list_area, detail_area) = list_and_detail(area, snapshots.len());
    let columns = [
        Column::new(
            "NAME",
            text_width(snapshots.iter().map(|s| s.name.len()), "NAME", 32),
            0,
        )
        .shrinks_to(12),
        Column::new(
            "VM",
            text_width(snapshots.iter().map(|s| s.vm.name.len()), "VM", 24),
            2,
        )
        .shrinks_to(8),
        Column::new(
            "IMAGE",
            text_width(snapshots.iter().map(|s| s.image.name.len()), "IMAGE", 24),
            3,
        )
        .shrinks_to(8),
        Column::new("MEMORY", 7, 1).right(),
        Column::new("SIZE", 6, 1).right(),
        Column::new("CREATED", 10, 4),
    ];
    let plain = Style::new();
    let cells = snapshots
        .iter()
        .map(|snapshot| {
            vec![
                (snapshot.name.clone(), plain),
                (snapshot.vm.name.clone(), plain),
                (snapshot.image.name.clone(), plain),
                (format_size(u64::from(snapshot.memory_mib) * MIB), plain),
                (format_size(snapshot.size_bytes), plain),
                (output::age(snapshot.created_at, app.now), plain),
            ]
        })
        .collect();
    table(
        &columns,
        cells,
        app.snapshot_cursor,
        pane(title, t),
        list_area,
        frame,
        t,
    );
    if let (Some(detail_area), Some(snapshot)) = (detail_area, app.selected_snapshot()) {
        snapshot_detail(frame, detail_area, app, snapshot);
    }
}

fn snapshot_detail(frame: &mut Frame<'_>, area: Rect, app: &App, snapshot: &Snapshot) {
    let t = &app.theme;
    let block = pane(format!(" {} · snapshot ", snapshot.name), t);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let pairs = [
        (
            "of VM",
            format!("{} ({})", snapshot.vm.name, snapshot.vm.id),
        ),
        ("image", snapshot.image.name.clone()),
        (
            "resources",
            format!(
                "{} vCPU, {} memory, {} disk, {} work disk",
                snapshot.vcpus,
                format_size(u64::from(snapshot.memory_mib) * MIB),
                format_size(snapshot.disk_bytes),
                format_size(snapshot.work_disk_bytes)
            ),
        ),
        (
            "size",
            format!("{} on disk", format_size(snapshot.size_bytes)),
        ),
        (
            "restores on",
            format!(
                "Firecracker {} on a {}",
                snapshot.firecracker_version, snapshot.cpu
            ),
        ),
        ("created", output::age(snapshot.created_at, app.now)),
        ("id", snapshot.id.clone()),
    ];
    let key_width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut lines: Vec<Line<'_>> = pairs
        .into_iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:<key_width$}  "), t.dim()),
                Span::raw(v),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::from(vec![
        Span::styled("Enter", t.key()),
        Span::raw(" restore into a new VM  "),
        Span::styled("d", t.key()),
        Span::raw(" delete"),
    ]));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

fn allocated(image: &Image) -> u64 {
    let f = &image.files;
    f.kernel.allocated_bytes
        + f.rootfs.allocated_bytes
        + f.initrd.as_ref().map_or(0, |i| i.allocated_bytes)
}

fn file(f: &ImageFile) -> String {
    format!(
        "{} ({}, {} allocated)",
        f.path,
        format_size(f.bytes),
        format_size(f.allocated_bytes)
    )
}

fn image_detail(frame: &mut Frame<'_>, area: Rect, app: &App, image: &Image) {
    let t = &app.theme;
    let m = &image.manifest;
    let block = pane(format!(" {} · manifest ", image.name), t);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut pairs = vec![
        ("source", image.source.as_str().to_string()),
        (
            "kernel version",
            m.kernel_version.clone().unwrap_or_else(|| "unknown".into()),
        ),
    ];
    if let Some(distro) = &m.distro {
        let suite = m
            .suite
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        pairs.push(("distro", format!("{distro}{suite}")));
    }
    pairs.push(("size", format!("{} on disk", format_size(allocated(image)))));
    if !m.services.is_empty() {
        let services: Vec<String> = m
            .services
            .iter()
            .map(|s| format!("{} ({})", s.name, s.port))
            .collect();
        pairs.push(("services", services.join(", ")));
    }
    if !m.packages.is_empty() {
        let names: Vec<&str> = m.packages.iter().map(|p| p.name.as_str()).collect();
        pairs.push(("packages", format!("{}: {}", names.len(), names.join(", "))));
    }
    pairs.push(("created from", m.created_from.clone()));
    pairs.push(("created", output::age(image.created_at, app.now)));
    if let Some(r) = &image.retired {
        pairs.push(("retired", output::retired(r, output::age(r.at, app.now))));
    }
    pairs.push(("kernel", file(&image.files.kernel)));
    pairs.push((
        "initrd",
        image
            .files
            .initrd
            .as_ref()
            .map_or_else(|| "none".into(), file),
    ));
    pairs.push(("rootfs", file(&image.files.rootfs)));
    pairs.push(("id", image.id.clone()));
    // Paths and package lists are long: one column, wrapped.
    let key_width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let lines: Vec<Line<'_>> = pairs
        .into_iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:<key_width$}  "), t.dim()),
                Span::raw(v),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

fn operations(frame: &mut Frame<'_>, area: Rect, app: &App) {
    if area.height == 0 {
        return;
    }
    let t = &app.theme;
    let rows = usize::from(area.height);
    let mut lines: Vec<Line<'_>> = app
        .operations
        .iter()
        .take(rows)
        .map(|op| operation_line(op, app))
        .collect();
    let more = app.operations.len().saturating_sub(rows);
    if more > 0
        && let Some(last) = lines.last_mut()
    {
        last.push_span(Span::styled(format!("  (+{more} more)"), t.dim()));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

/// The stage an operation is at: the running one, else the last that started.
fn current_stage(op: &Operation) -> Option<&OpStage> {
    op.stages
        .iter()
        .find(|s| s.state == OpStageState::Running)
        .or_else(|| {
            op.stages
                .iter()
                .rev()
                .find(|s| s.state != OpStageState::Pending)
        })
}

/// A stage's progress: "45% (128M/2G)".
fn progress_text(stage: &OpStage) -> Option<String> {
    let p = stage.progress.as_ref()?;
    let percent = super::bars::Gauge::new(p.done, p.total).percent_text();
    let figures = if p.unit == "bytes" {
        format!("{}/{}", format_size(p.done), format_size(p.total))
    } else {
        format!("{}/{} {}", p.done, p.total, p.unit)
    };
    Some(format!("{percent} ({figures})"))
}

/// "⟳ register image debian · copy rootfs 45% (128M/2G) · 3.2s"
fn operation_line(op: &Operation, app: &App) -> Line<'static> {
    let t = &app.theme;
    let mut spans = vec![
        Span::styled("⟳ ", t.busy()),
        Span::styled(describe(op), t.label()),
    ];
    if let Some(stage) = current_stage(op) {
        spans.push(Span::raw(format!(" · {}", stage.name)));
        if let Some(progress) = progress_text(stage) {
            spans.push(Span::styled(format!(" {progress}"), t.busy()));
        }
    }
    let took = op.created_at.until(app.now);
    spans.push(Span::styled(
        format!(" · {}", output::format_duration(took)),
        t.dim(),
    ));
    Line::from(spans)
}

/// An operation in its VM's detail pane, which names the VM already: "⟳ start · vmm · 1.2s".
fn operation_text(op: &Operation, app: &App) -> String {
    let kind = describe(op);
    let kind = kind.split(' ').next().unwrap_or_default();
    let mut text = format!("⟳ {kind}");
    if let Some(stage) = current_stage(op) {
        text.push_str(&format!(" · {}", stage.name));
        if let Some(progress) = progress_text(stage) {
            text.push_str(&format!(" {progress}"));
        }
    }
    text.push_str(&format!(
        " · {}",
        output::format_duration(op.created_at.until(app.now))
    ));
    text
}

fn status(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = &app.theme;
    let line = if let Some(notice) = app.current_notice() {
        let (mark, style) = match notice.kind {
            NoticeKind::Success => ("✓ ", t.success()),
            NoticeKind::Error => ("✗ ", t.error()),
            NoticeKind::Info => ("· ", t.busy()),
        };
        let mut spans = vec![
            Span::styled(mark, style),
            Span::styled(notice.text.clone(), style),
        ];
        if let Some(hint) = &notice.hint {
            spans.push(Span::styled(format!("  hint: {hint}"), t.dim()));
        }
        Line::from(spans)
    } else if let Some(e) = &app.poll_error {
        // What is on screen is the last answer; the message can be long, so the key first.
        Line::from(vec![
            Span::styled("✗ not refreshed ", t.error()),
            Span::styled("(r retries)", t.dim()),
            Span::styled(format!(": {}", e.message), t.error()),
        ])
    } else {
        stages(app)
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The startup stages with their timings: "find daemon 2ms · load VMs 3ms · …".
fn stages(app: &App) -> Line<'static> {
    let t = &app.theme;
    let mut spans = Vec::new();
    for (i, report) in app.startup.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" · ", t.dim()));
        }
        let label = report.stage.label();
        match report.state {
            StageState::Running { since } => spans.push(Span::styled(
                format!(
                    "{label} {}…",
                    output::format_duration(app.clock.saturating_sub(since))
                ),
                t.busy(),
            )),
            StageState::Done(took) => {
                spans.push(Span::styled(format!("{label} "), t.dim()));
                spans.push(Span::raw(output::format_duration(took)));
            }
            StageState::Failed(took) => spans.push(Span::styled(
                format!("{label} failed after {}", output::format_duration(took)),
                t.error(),
            )),
        }
    }
    Line::from(spans)
}

/// The console view: the lines that fit, ending where the view is scrolled to, with where
/// that is in its title and the keys (or why the last read failed) on its last row.
fn logs_view(frame: &mut Frame<'_>, area: Rect, app: &App, logs: &Logs) {
    let t = &app.theme;
    let state = app
        .vms
        .ready()
        .and_then(|vms| vms.iter().find(|vm| vm.name == logs.name))
        .map(|vm| vm.state);
    let position = if logs.scroll > 0 {
        format!(" {} lines back ", logs.scroll)
    } else {
        match state {
            Some(VmState::Running | VmState::Starting | VmState::Paused | VmState::Stopping) => {
                " following ".into()
            }
            Some(state) => format!(" {state}: its last boot "),
            None => " deleted ".into(),
        }
    };
    let block = pane(format!(" {} · console ", logs.name), t)
        .title_top(Line::styled(position, t.dim()).right_aligned());
    let inner = block.inner(area);
    frame.render_widget(Clear, area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let footer = inner.height >= 2;
    let [body, footer_area] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(u16::from(footer))]).areas(inner);
    let lines: Vec<Line<'_>> = if !logs.loaded {
        vec![Line::styled(
            format!("Reading the console of {}…", logs.name),
            t.dim(),
        )]
    } else if logs.is_empty() {
        let mut lines = vec![Line::raw(format!(
            "No console output from {} yet.",
            logs.name
        ))];
        if state != Some(VmState::Running) {
            lines.push(Line::styled(
                "It has not booted, or printed nothing; its next boot's console shows here.",
                t.dim(),
            ));
        }
        lines
    } else {
        logs.window(usize::from(body.height))
            .into_iter()
            .map(Line::raw)
            .collect()
    };
    let shift = u16::try_from(logs.shift).unwrap_or(u16::MAX);
    frame.render_widget(Paragraph::new(lines).scroll((0, shift)), body);
    if !footer {
        return;
    }
    let line = match &logs.error {
        Some(e) => Line::styled(
            format!("✗ cannot read the console: {}", e.message),
            t.error(),
        ),
        None => Line::from(vec![
            Span::styled("Esc", t.key()),
            Span::raw(" close  "),
            Span::styled("↑ ↓ PgUp PgDn", t.key()),
            Span::raw(" scroll  "),
            Span::styled("g G", t.key()),
            Span::raw(" first, follow  "),
            Span::styled("← →", t.key()),
            Span::raw(" shift"),
        ]),
    };
    frame.render_widget(Paragraph::new(line), footer_area);
}

//! What is drawn over a screen: the help, the confirmations of a VM action or a snapshot's
//! deletion, the promote form, the name prompt and the create form.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::app::{Action, App, Load};
use super::form::{CreateForm, Field};
use super::layout::{centered, key_line, pane, prompt_footer, rows, wrap};
use super::name_prompt::NamePrompt;
use super::promote::{PromoteField, PromoteForm};
use super::theme::Theme;

pub(super) fn help(frame: &mut Frame<'_>, area: Rect, t: &Theme) {
    let lines = vec![
        key_line(t, "↑ ↓  k j", "move the selection (g G: first, last)"),
        key_line(t, "Tab  1 2 3", "switch between VMs, images and snapshots"),
        key_line(t, "c", "create and start a VM (a form)"),
        key_line(t, "s  P", "start the selected VM; promote it to an image"),
        key_line(t, "x  R", "stop it, restart it (ask first while it runs)"),
        key_line(
            t,
            "p  z",
            "pause or resume it; reset a stopped one's root (asks first)",
        ),
        key_line(t, "d  Del", "delete it and its disks (asks first)"),
        key_line(t, "l", "its console: ↑ ↓ PgUp PgDn g G scroll, ← → shift"),
        key_line(
            t,
            "S  Enter",
            "ssh into it while it runs; leave the shell to return",
        ),
        key_line(
            t,
            "n  C",
            "snapshot it; clone it into a new VM (asks a name)",
        ),
        key_line(
            t,
            "Enter  d",
            "snapshots view: restore one into a new VM; delete it",
        ),
        key_line(t, "r", "reload now; starts bangerd if it is not answering"),
        key_line(t, "?  q", "this help (Esc closes it); q or Ctrl-C quits"),
        Line::styled("In the create form", t.label()),
        key_line(
            t,
            "Tab  ↑ ↓",
            "next or previous field; Enter creates, Esc cancels",
        ),
        key_line(t, "← →", "choose the image, toggle NAT (also Space)"),
        Line::styled("The bars", t.label()),
        Line::raw("CPU and RAM reserved by running VMs, of the host's total; disk allocated"),
        Line::raw("by VMs' disks and snapshots, of the filesystem holding banger's state."),
        Line::raw(if t.color {
            "Green below 70 %, yellow below 90 %, red from 90 %."
        } else {
            "! from 70 %, !! from 90 % (NO_COLOR is set)."
        }),
    ];
    let rect = centered(area, 76, rows(&lines, 76.min(area.width)) + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(pane(" Keys ", t)), rect);
}

/// The question before a stop, restart, reset or delete: what will happen, and the two keys.
pub(super) fn confirm(frame: &mut Frame<'_>, area: Rect, t: &Theme, name: &str, action: Action) {
    let (title, question, consequence, yes, no, border) = match action {
        Action::Stop => (
            " Stop VM ",
            "?",
            "The guest is asked to shut down; its VMM is ended if it has not within the stop \
             timeout. Its disks are kept.",
            " stop   ",
            " keep it running",
            t.busy(),
        ),
        Action::Restart => (
            " Restart VM ",
            "?",
            "The guest is shut down and booted again: what runs in it ends. Its disks are kept.",
            " restart   ",
            " keep it running",
            t.busy(),
        ),
        Action::Reset => (
            " Reset VM ",
            "'s root?",
            "Its root goes back to its image: what was changed outside /root is lost. Its work \
             disk, name and address are kept.",
            " reset   ",
            " keep it",
            t.busy(),
        ),
        // Only stop, restart, reset and delete ask first.
        _ => (
            " Delete VM ",
            " and its disks?",
            "Its overlay and work disk are removed; this cannot be undone.",
            " delete   ",
            " keep",
            t.error(),
        ),
    };
    let lines = vec![
        Line::from(vec![
            Span::raw(format!("{} VM ", capitalized(action.verb()))),
            Span::styled(name.to_string(), t.label()),
            Span::raw(question),
        ]),
        Line::raw(consequence),
        Line::raw(""),
        Line::from(vec![
            Span::styled("y", t.key()),
            Span::raw(yes),
            Span::styled("n", t.key()),
            Span::raw(no),
        ]),
    ];
    let rect = centered(area, 68, rows(&lines, 68.min(area.width)) + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(title, t).border_style(border)),
        rect,
    );
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The promote prompt: the image name, the work-seed box, and why the last try was refused.
pub(super) fn promote_form(frame: &mut Frame<'_>, area: Rect, t: &Theme, form: &PromoteForm) {
    let width = 68.min(area.width);
    let on_name = form.focus == PromoteField::Name;
    let mut name = vec![
        Span::styled(if on_name { "▶ " } else { "  " }, t.focused()),
        Span::styled(
            format!("{:<12}", "Image name"),
            if on_name { t.focused() } else { t.label() },
        ),
        Span::raw(form.name.clone()),
    ];
    if on_name {
        name.push(Span::styled(" ", t.selected()));
    }
    let checkbox = |field: PromoteField, label: &str, on: bool, help: &'static str| {
        let focused = form.focus == field;
        Line::from(vec![
            Span::styled(if focused { "▶ " } else { "  " }, t.focused()),
            Span::styled(
                format!("{label:<12}"),
                if focused { t.focused() } else { t.label() },
            ),
            Span::raw(if on { "[x] " } else { "[ ] " }),
            Span::styled(help, t.dim()),
        ])
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw("Promote VM "),
            Span::styled(form.vm.clone(), t.label()),
            Span::raw(" to a new image: its root with everything it changed."),
        ]),
        Line::raw(""),
        Line::from(name),
        checkbox(
            PromoteField::WithWork,
            "Work seed",
            form.with_work,
            "its /root seeds every new VM (Space)",
        ),
        checkbox(
            PromoteField::Replace,
            "Replace",
            form.replace,
            "take the name of an image that has it (Space)",
        ),
        Line::raw(""),
    ];
    prompt_footer(
        &mut lines,
        form.error.as_ref(),
        form.pending,
        "Promoting…",
        " promote  ",
        true,
        t,
    );
    let rect = centered(area, width, rows(&lines, width) + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(" Promote VM to image ", t)),
        rect,
    );
}

/// The name prompt of a snapshot, a clone or a restore: what will happen, the name, and why
/// the last try was refused.
pub(super) fn name_prompt(frame: &mut Frame<'_>, area: Rect, t: &Theme, prompt: &NamePrompt) {
    let width = 68.min(area.width);
    let (kind, optional) = prompt.naming.field();
    let label = if kind == "VM" { "New VM" } else { "Name" };
    let mut name = vec![
        Span::styled("▶ ", t.focused()),
        Span::styled(format!("{label:<12}"), t.focused()),
        Span::raw(prompt.name.clone()),
        Span::styled(" ", t.selected()),
    ];
    if optional && prompt.name.is_empty() {
        name.push(Span::styled(" (empty: a dated name)", t.dim()));
    }
    let mut lines = vec![
        Line::raw(prompt.naming.explain()),
        Line::raw(""),
        Line::from(name),
        Line::raw(""),
    ];
    let (busy, action) = match prompt.naming {
        super::name_prompt::Naming::Snapshot { .. } => ("Taking the snapshot…", " snapshot  "),
        super::name_prompt::Naming::Clone { .. } => ("Cloning…", " clone  "),
        super::name_prompt::Naming::Restore { .. } => ("Restoring…", " restore  "),
    };
    prompt_footer(
        &mut lines,
        prompt.error.as_ref(),
        prompt.pending,
        busy,
        action,
        false,
        t,
    );
    let rect = centered(area, width, rows(&lines, width) + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(prompt.naming.title(), t)),
        rect,
    );
}

/// The question before a snapshot is deleted.
pub(super) fn confirm_snapshot_delete(frame: &mut Frame<'_>, area: Rect, t: &Theme, name: &str) {
    let lines = vec![
        Line::from(vec![
            Span::raw("Delete snapshot "),
            Span::styled(name.to_string(), t.label()),
            Span::raw("?"),
        ]),
        Line::raw(
            "Its memory and disk copies are removed; VMs restored from it keep running. This \
             cannot be undone.",
        ),
        Line::raw(""),
        Line::from(vec![
            Span::styled("y", t.key()),
            Span::raw(" delete   "),
            Span::styled("n", t.key()),
            Span::raw(" keep"),
        ]),
    ];
    let rect = centered(area, 68, rows(&lines, 68.min(area.width)) + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(" Delete snapshot ", t).border_style(t.error())),
        rect,
    );
}

pub(super) fn create_form(frame: &mut Frame<'_>, area: Rect, app: &App, form: &CreateForm) {
    let t = &app.theme;
    let width = 78.min(area.width);
    // Label column, then the value; the hint follows when there is room.
    let label_width = 12;
    let value_width = 22;
    let show_hints = width >= 4 + 2 + label_width + value_width + 1 + 34;
    let mut lines = Vec::new();
    for field in Field::ALL {
        let focused = form.focus == field;
        let mut spans = vec![
            Span::styled(if focused { "▶ " } else { "  " }, t.focused()),
            Span::styled(
                format!("{:<w$}", field.label(), w = label_width as usize),
                if focused { t.focused() } else { t.label() },
            ),
        ];
        let (value, style) = field_value(form, field, app, focused);
        let mut shown = unicode_width::UnicodeWidthStr::width(value.as_str());
        spans.push(Span::styled(value, style));
        if focused && field.is_text() {
            spans.push(Span::styled(" ", t.selected()));
            shown += 1;
        }
        if show_hints {
            let pad = (value_width as usize).saturating_sub(shown);
            spans.push(Span::raw(" ".repeat(pad + 1)));
            spans.push(Span::styled(field.hint(), t.dim()));
        }
        lines.push(Line::from(spans));
        if let Some(e) = form.error(field) {
            let indent = 2 + usize::from(label_width);
            let inner = usize::from(width.saturating_sub(4));
            for (i, piece) in wrap(&e.message, inner.saturating_sub(indent + 2))
                .into_iter()
                .enumerate()
            {
                let mark = if i == 0 { "✗ " } else { "  " };
                lines.push(Line::styled(
                    format!("{:indent$}{mark}{piece}", ""),
                    t.error(),
                ));
            }
        }
    }
    lines.push(Line::raw(""));
    prompt_footer(
        &mut lines,
        form.general_error(),
        form.pending,
        "Creating…",
        " create and start  ",
        true,
        t,
    );
    let rect = centered(area, width, rows(&lines, width) + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(" Create VM ", t)),
        rect,
    );
}

/// The value of a field as shown, with its style: typed text, or what empty means.
fn field_value(form: &CreateForm, field: Field, app: &App, focused: bool) -> (String, Style) {
    let t = &app.theme;
    match field {
        Field::Image => {
            let name = match (&form.image, &app.images) {
                (Some(name), _) => name.clone(),
                (None, Load::Loading) => "configured default (images loading…)".into(),
                (None, Load::Ready(images)) if images.is_empty() => {
                    "configured default (no images registered)".into()
                }
                (None, _) => "configured default".into(),
            };
            let style = if form.image.is_some() {
                Style::new()
            } else {
                t.dim()
            };
            (format!("◀ {name} ▶"), style)
        }
        Field::Nat => (
            if form.nat { "[x] on" } else { "[ ] off" }.into(),
            Style::new(),
        ),
        _ => {
            let text = form.text(field);
            if text.is_empty() && !focused {
                let empty = if field == Field::Name {
                    "generated"
                } else {
                    "default"
                };
                (empty.into(), t.dim())
            } else {
                (text.to_string(), Style::new())
            }
        }
    }
}

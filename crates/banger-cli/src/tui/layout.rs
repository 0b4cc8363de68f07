//! The layout toolkit the screens are drawn with: bordered panes and their placeholders, a
//! list over its detail pane, tables whose columns shrink and drop to fit the width,
//! key-value pairs in one or two columns, word wrapping, a prompt's footer, centered rects
//! and key hints. None of it knows about VMs or images.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, HighlightSpacing, Padding, Paragraph, Row, Table, TableState, Wrap,
};

use super::app::{App, Load, StageState};
use super::theme::Theme;
use super::ui::SELECTED;
use crate::output;

/// A bordered pane.
pub(super) fn pane<'a>(title: impl Into<Line<'a>>, t: &Theme) -> Block<'a> {
    Block::bordered()
        .border_style(t.dim())
        .padding(Padding::horizontal(1))
        .title(title.into().style(t.title()))
}

/// A list pane's title: its name, with the count once the list is loaded.
pub(super) fn pane_title<T>(name: &str, load: &Load<Vec<T>>) -> String {
    match load.ready() {
        Some(rows) => format!(" {name} ({}) ", rows.len()),
        None => format!(" {name} "),
    }
}

/// Draws a list pane's loading, error or empty state in place of its list and returns `None`;
/// returns the loaded rows when there is a list to draw.
pub(super) fn rows_or_placeholder<'a, T>(
    frame: &mut Frame<'_>,
    area: Rect,
    app: &App,
    load: &'a Load<Vec<T>>,
    title: &str,
    what: &str,
    empty: Vec<Line<'static>>,
) -> Option<&'a [T]> {
    let Some(lines) = placeholder(load, what, empty, app) else {
        return Some(load.ready().map(Vec::as_slice).unwrap_or_default());
    };
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(title.to_owned(), &app.theme)),
        area,
    );
    None
}

/// What a list shows when it has no rows: loading, an error, or how to get some.
fn placeholder<T>(
    load: &Load<Vec<T>>,
    what: &str,
    empty: Vec<Line<'static>>,
    app: &App,
) -> Option<Vec<Line<'static>>> {
    let t = &app.theme;
    match load {
        Load::Loading => {
            let waiting = if app.daemon.is_none() {
                let stage = app
                    .startup
                    .iter()
                    .rev()
                    .find(|s| matches!(s.state, StageState::Running { .. }))
                    .map(|s| s.stage.label())
                    .unwrap_or("find daemon");
                format!("Loading {what}… (waiting for bangerd: {stage})")
            } else {
                format!("Loading {what}…")
            };
            Some(vec![Line::styled(waiting, t.dim())])
        }
        Load::Failed(e) => {
            let mut lines = vec![Line::styled(
                format!("Cannot load {what}: {}", e.message),
                t.error(),
            )];
            if let Some(hint) = &e.hint {
                lines.push(Line::raw(format!("hint: {hint}")));
            }
            lines.push(Line::from(vec![
                Span::raw("Press "),
                Span::styled("r", t.key()),
                Span::raw(" to try again."),
            ]));
            Some(lines)
        }
        Load::Ready(items) if items.is_empty() => Some(empty),
        Load::Ready(_) => None,
    }
}

/// Splits `area` into a list of `rows` rows (plus borders and header) and the detail pane
/// below it; the details go when the terminal is too short for both.
pub(super) fn list_and_detail(area: Rect, rows: usize) -> (Rect, Option<Rect>) {
    if area.height < 12 {
        return (area, None);
    }
    let wanted = rows as u16 + 3;
    let list = wanted.clamp(4, area.height / 2);
    let [list_area, detail_area] =
        Layout::vertical([Constraint::Length(list), Constraint::Min(0)]).areas(area);
    (list_area, Some(detail_area))
}

/// A table column: what it shows and how wide it wants to be. When the table is too wide,
/// columns first shrink to `min` (long names get an ellipsis), then are dropped in `drop`
/// order, highest first.
pub(super) struct Column {
    title: &'static str,
    width: u16,
    min: u16,
    right: bool,
    drop: u8,
}

impl Column {
    pub(super) fn new(title: &'static str, width: u16, drop: u8) -> Column {
        Column {
            title,
            width,
            min: width,
            right: false,
            drop,
        }
    }

    pub(super) fn right(mut self) -> Column {
        self.right = true;
        self
    }

    /// The column may shrink to `min` cells.
    pub(super) fn shrinks_to(mut self, min: u16) -> Column {
        self.min = min.min(self.width);
        self
    }
}

/// The columns that fit in `width` and how wide each gets, as (index, width) pairs.
fn fitting(columns: &[Column], width: u16) -> Vec<(usize, u16)> {
    let mut kept: Vec<usize> = (0..columns.len()).collect();
    let spacing = |kept: &[usize]| 2 * kept.len().saturating_sub(1) as u16;
    let sum = |kept: &[usize], w: fn(&Column) -> u16| -> u16 {
        kept.iter().map(|i| w(&columns[*i])).sum::<u16>() + spacing(kept)
    };
    while sum(&kept, |c| c.min) > width && kept.len() > 1 {
        let worst = kept
            .iter()
            .enumerate()
            .max_by_key(|(_, i)| columns[**i].drop)
            .map(|(pos, _)| pos)
            .unwrap_or(0);
        kept.remove(worst);
    }
    // Shrink what may shrink, by as little as needed.
    let mut over = sum(&kept, |c| c.width).saturating_sub(width);
    kept.iter()
        .map(|i| {
            let c = &columns[*i];
            let cut = over.min(c.width - c.min);
            over -= cut;
            (*i, c.width - cut)
        })
        .collect()
}

/// `text` cut to `width` columns, with an ellipsis when it was longer.
pub(super) fn fit(text: &str, width: u16) -> String {
    output::fit(text, usize::from(width))
}

pub(super) fn table<'a>(
    columns: &[Column],
    cells: Vec<Vec<Content<'a>>>,
    selected: usize,
    block: Block<'a>,
    area: Rect,
    frame: &mut Frame<'_>,
    t: &Theme,
) {
    let inner_width = block
        .inner(area)
        .width
        .saturating_sub(SELECTED.chars().count() as u16);
    let kept = fitting(columns, inner_width);
    let cell = |column: &Column, text: String, style: Style| {
        let line = Line::styled(text, style);
        Cell::from(if column.right {
            line.right_aligned()
        } else {
            line
        })
    };
    let header = Row::new(
        kept.iter()
            .map(|(i, _)| cell(&columns[*i], columns[*i].title.into(), Style::new())),
    )
    .style(t.label());
    let rows = cells.into_iter().map(|row| {
        Row::new(
            kept.iter()
                .map(|(i, width)| match row.get(*i) {
                    Some((text, style)) => cell(&columns[*i], fit(text, *width), *style),
                    None => Cell::default(),
                })
                .collect::<Vec<_>>(),
        )
    });
    let widths: Vec<Constraint> = kept.iter().map(|(_, w)| Constraint::Length(*w)).collect();
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .column_spacing(2)
        .highlight_symbol(SELECTED)
        .highlight_spacing(HighlightSpacing::Always)
        .row_highlight_style(t.selected());
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, area, &mut state);
}

pub(super) fn text_width(texts: impl Iterator<Item = usize>, title: &str, cap: usize) -> u16 {
    texts.max().unwrap_or(0).max(title.len()).min(cap) as u16
}

/// A cell's text and style; the column decides alignment and width.
pub(super) type Content<'a> = (String, Style);

/// A detail pane's line: a key, and its value with its style.
pub(super) type Pair = (&'static str, String, Style);

/// Key-value pairs in one or two columns, whichever the width allows.
pub(super) fn key_values(frame: &mut Frame<'_>, area: Rect, pairs: &[Pair], t: &Theme) {
    let two = two_columns(area, pairs.len());
    let render = |frame: &mut Frame<'_>, area: Rect, pairs: &[Pair]| {
        let key_width = pairs.iter().map(|(k, ..)| k.len()).max().unwrap_or(0);
        let lines: Vec<Line<'_>> = pairs
            .iter()
            .map(|(k, v, style)| {
                Line::from(vec![
                    Span::styled(format!("{k:<key_width$}  "), t.dim()),
                    Span::styled(v.clone(), *style),
                ])
            })
            .collect();
        frame.render_widget(Paragraph::new(lines), area);
    };
    if two {
        // Column by column: the left one full before the right one starts, so the most useful
        // pairs (first) are the ones a short pane shows.
        let per_column = pairs.len().div_ceil(2).min(usize::from(area.height)).max(1);
        let [left, right] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)])
            .spacing(2)
            .areas(area);
        render(frame, left, &pairs[..per_column]);
        let end = (2 * per_column).min(pairs.len());
        render(frame, right, &pairs[per_column..end]);
    } else {
        render(frame, area, pairs);
    }
}

/// Whether `count` pairs go in two columns: when one is too short and the pane wide enough.
fn two_columns(area: Rect, count: usize) -> bool {
    area.width >= 70 && count > usize::from(area.height)
}

/// The rows `count` pairs take in a pane `width` wide with room for `height` rows.
pub(super) fn pair_rows(width: u16, height: u16, count: usize) -> u16 {
    let area = Rect::new(0, 0, width, height);
    let rows = if two_columns(area, count) {
        count.div_ceil(2)
    } else {
        count
    };
    u16::try_from(rows).unwrap_or(u16::MAX)
}

/// Splits `text` into lines of at most `width` characters at spaces (a longer word is cut).
pub(super) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let current = lines.last_mut().expect("never empty");
        let len = current.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(String::new());
        }
        let current = lines.last_mut().expect("never empty");
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    lines
        .into_iter()
        .flat_map(|line| {
            let chars: Vec<char> = line.chars().collect();
            chars
                .chunks(width)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How many rows `lines` take when wrapped inside a padded pane `width` columns wide.
pub(super) fn rows(lines: &[Line<'_>], width: u16) -> u16 {
    let inner = usize::from(width.saturating_sub(4)).max(1);
    lines
        .iter()
        .map(|l| l.width().div_ceil(inner).max(1))
        .sum::<usize>()
        .try_into()
        .unwrap_or(u16::MAX)
}

/// The end of a prompt: its error and hint, then either what it is doing (`busy`) or its keys
/// (`Enter` does `action`).
pub(super) fn prompt_footer(
    lines: &mut Vec<Line<'static>>,
    error: Option<&banger_api::ApiError>,
    pending: bool,
    busy: &'static str,
    action: &'static str,
    fields: bool,
    t: &Theme,
) {
    if let Some(e) = error {
        lines.push(Line::styled(format!("✗ {}", e.message), t.error()));
        if let Some(hint) = &e.hint {
            lines.push(Line::raw(format!("hint: {hint}")));
        }
    }
    if pending {
        lines.push(Line::styled(busy, t.busy()));
    } else {
        let mut keys = vec![Span::styled("Enter", t.key()), Span::raw(action)];
        if fields {
            keys.extend([Span::styled("Tab", t.key()), Span::raw(" next field  ")]);
        }
        keys.extend([Span::styled("Esc", t.key()), Span::raw(" cancel")]);
        lines.push(Line::from(keys));
    }
}

/// A box of `width`×`height` centred in `area`, shrunk to fit.
pub(super) fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

pub(super) fn key_line<'a>(t: &Theme, keys: &'a str, what: &'a str) -> Line<'a> {
    Line::from(vec![
        Span::styled(format!("{keys:<12}"), t.key()),
        Span::raw(what),
    ])
}

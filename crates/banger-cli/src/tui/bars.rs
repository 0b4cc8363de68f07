//! The capacity bars of the status row: how full a resource is (a fraction of a total that may
//! be unknown, or overcommitted beyond 100 %), the pressure level its colour shows, and how the
//! three bars share one terminal row so that their numbers stay readable at every width.
//!
//! Percentages are whole numbers rounded down, and the level follows the same whole number:
//! a bar that reads "89%" is never coloured as if it were at 90.

use banger_api::Capacity;
use banger_api::validate::format_size;
use ratatui::text::{Line, Span};

use super::theme::Theme;

/// From this percentage on, a resource is under pressure (yellow).
pub const WARN_PERCENT: u64 = 70;
/// From this percentage on, a resource is nearly exhausted (red).
pub const CRITICAL_PERCENT: u64 = 90;

/// How much pressure a bar shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The total is unknown (zero): nothing to compare against.
    Unknown,
    Ok,
    Warn,
    Critical,
}

/// `used` out of `total`, in any unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge {
    pub used: u64,
    pub total: u64,
}

impl Gauge {
    pub fn new(used: u64, total: u64) -> Gauge {
        Gauge { used, total }
    }

    /// Whole percent, rounded down; above 100 when overcommitted; `None` when the total is 0.
    pub fn percent(self) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        // u128: bytes times 100 overflow u64 beyond 184 PB, which a sparse file can claim.
        let percent = u128::from(self.used) * 100 / u128::from(self.total);
        Some(u64::try_from(percent).unwrap_or(u64::MAX))
    }

    pub fn level(self) -> Level {
        match self.percent() {
            None => Level::Unknown,
            Some(p) if p >= CRITICAL_PERCENT => Level::Critical,
            Some(p) if p >= WARN_PERCENT => Level::Warn,
            Some(_) => Level::Ok,
        }
    }

    /// How many eighths of `cells` cells the bar fills: clamped to the bar (an overcommitted
    /// resource shows a full bar, its text says by how much), and never more than full.
    pub fn filled_eighths(self, cells: u16) -> u64 {
        let capacity = u64::from(cells) * 8;
        if self.total == 0 {
            return 0;
        }
        let eighths = u128::from(self.used) * u128::from(capacity) / u128::from(self.total);
        u64::try_from(eighths).unwrap_or(u64::MAX).min(capacity)
    }

    /// "42%", or "n/a" when the total is unknown.
    pub fn percent_text(self) -> String {
        match self.percent() {
            Some(p) => format!("{p}%"),
            None => "n/a".into(),
        }
    }
}

/// The cells of a bar `cells` wide: full blocks, one partial block, then light shade.
pub fn bar_cells(gauge: Gauge, cells: u16) -> (String, String) {
    const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = gauge.filled_eighths(cells);
    let full = (eighths / 8) as usize;
    let rest = (eighths % 8) as usize;
    let mut filled = "█".repeat(full);
    let mut used_cells = full;
    if rest > 0 {
        filled.push(PARTIAL[rest]);
        used_cells += 1;
    }
    let empty = "░".repeat(usize::from(cells).saturating_sub(used_cells));
    (filled, empty)
}

/// One of the three bars of the status row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    pub label: &'static str,
    pub gauge: Gauge,
    /// The figures, e.g. `4/16 vCPU`.
    pub figures: String,
}

impl Meter {
    /// The three meters of a capacity answer: CPU and RAM reserved by VMs that hold resources
    /// against admission control's limits (the host's totals when it is off: the figures then
    /// lack the word "limit"), and disk allocated by VMs against the state filesystem.
    pub fn from_capacity(c: &Capacity) -> [Meter; 3] {
        let cpu = Gauge::new(
            u64::from(c.cpu.reserved_vcpus),
            u64::from(c.cpu.vcpu_limit.unwrap_or(c.cpu.host_cpus)),
        );
        let ram = Gauge::new(
            c.memory.reserved_bytes,
            c.memory.limit_bytes.unwrap_or(c.memory.host_bytes),
        );
        let limit = |limited: bool| if limited { " limit" } else { "" };
        let disk = Gauge::new(
            c.disk.vm_allocated_bytes + c.disk.snapshot_allocated_bytes,
            c.disk.fs_total_bytes,
        );
        [
            Meter {
                label: "CPU",
                gauge: cpu,
                figures: format!(
                    "{}/{} vCPU{}",
                    cpu.used,
                    cpu.total,
                    limit(c.cpu.vcpu_limit.is_some())
                ),
            },
            Meter {
                label: "RAM",
                gauge: ram,
                figures: format!(
                    "{}/{}{}",
                    size(ram.used),
                    size(ram.total),
                    limit(c.memory.limit_bytes.is_some())
                ),
            },
            Meter {
                label: "Disk",
                gauge: disk,
                figures: format!("{}/{}", size(disk.used), size(disk.total)),
            },
        ]
    }
}

fn size(bytes: u64) -> String {
    if bytes == 0 {
        "0".into()
    } else {
        format_size(bytes)
    }
}

/// How much text a meter shows next to its bar; wider terminals get more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// Only the label and the percentage, no bar.
    Bare,
    /// Bar and percentage.
    Percent,
    /// Bar, figures and percentage.
    Full,
}

/// The smallest bar worth drawing.
const MIN_BAR: u16 = 4;
/// Between two meters.
const GAP: u16 = 2;

/// Lays three meters out on one row `width` cells wide: all three get the same amount of
/// text, the most that fits (figures, then only percentages, then no bars), and spare cells
/// widen the bars.
pub fn meter_row(meters: &[Meter; 3], width: u16, theme: &Theme) -> Line<'static> {
    let text = |m: &Meter, d: Detail| -> String {
        let mut t = match d {
            Detail::Full => format!("{} {}", m.figures, m.gauge.percent_text()),
            Detail::Percent | Detail::Bare => m.gauge.percent_text(),
        };
        t.push_str(theme.level_marker(m.gauge.level()));
        t
    };
    let need = |m: &Meter, d: Detail| -> u16 {
        // label, space, [bar], space, text
        let bar = if d == Detail::Bare { 0 } else { MIN_BAR + 3 };
        (m.label.len() + 1 + text(m, d).chars().count()) as u16 + bar
    };
    let total = |detail: &[Detail; 3]| -> u16 {
        meters
            .iter()
            .zip(detail)
            .map(|(m, d)| need(m, *d))
            .sum::<u16>()
            + GAP * 2
    };
    let detail = [Detail::Full, Detail::Percent, Detail::Bare]
        .into_iter()
        .map(|d| [d; 3])
        .find(|detail| total(detail) <= width)
        .unwrap_or([Detail::Bare; 3]);
    let spare = width.saturating_sub(total(&detail));
    let with_bars = detail.iter().filter(|d| **d != Detail::Bare).count() as u16;
    let mut spans = Vec::new();
    let mut given = 0;
    let mut nth_bar = 0;
    for (i, (m, d)) in meters.iter().zip(detail).enumerate() {
        if i > 0 {
            spans.push(Span::raw(" ".repeat(usize::from(GAP))));
        }
        spans.push(Span::styled(format!("{} ", m.label), theme.label()));
        if d != Detail::Bare {
            nth_bar += 1;
            // The last bar takes the remainder so the row ends flush.
            let extra = if nth_bar == with_bars {
                spare - given
            } else {
                spare / with_bars
            };
            given += extra;
            let (filled, empty) = bar_cells(m.gauge, MIN_BAR + extra);
            spans.push(Span::styled("▕", theme.dim()));
            spans.push(Span::styled(filled, theme.bar(m.gauge.level())));
            spans.push(Span::styled(empty, theme.dim()));
            spans.push(Span::styled("▏", theme.dim()));
            spans.push(Span::raw(" "));
        }
        spans.push(Span::styled(text(m, d), theme.level(m.gauge.level())));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_down_and_knows_unknown_totals() {
        assert_eq!(Gauge::new(0, 16).percent(), Some(0));
        assert_eq!(Gauge::new(8, 16).percent(), Some(50));
        assert_eq!(Gauge::new(1, 3).percent(), Some(33));
        assert_eq!(Gauge::new(2, 3).percent(), Some(66));
        assert_eq!(Gauge::new(16, 16).percent(), Some(100));
        assert_eq!(Gauge::new(20, 16).percent(), Some(125));
        assert_eq!(Gauge::new(0, 0).percent(), None);
        assert_eq!(Gauge::new(5, 0).percent(), None);
        assert_eq!(Gauge::new(5, 0).percent_text(), "n/a");
        // No overflow with byte counts near u64::MAX.
        assert_eq!(Gauge::new(u64::MAX, u64::MAX).percent(), Some(100));
        assert_eq!(Gauge::new(u64::MAX / 2, u64::MAX).percent(), Some(49));
    }

    #[test]
    fn levels_change_at_70_and_90_percent() {
        let level = |used| Gauge::new(used, 1000).level();
        assert_eq!(level(0), Level::Ok);
        assert_eq!(level(699), Level::Ok);
        assert_eq!(level(700), Level::Warn);
        // 89.9 % reads "89%" and is coloured like it.
        assert_eq!(level(899), Level::Warn);
        assert_eq!(level(900), Level::Critical);
        assert_eq!(level(1000), Level::Critical);
        assert_eq!(level(5000), Level::Critical);
        assert_eq!(Gauge::new(0, 0).level(), Level::Unknown);
    }

    #[test]
    fn bars_are_clamped_to_their_width() {
        assert_eq!(Gauge::new(0, 16).filled_eighths(10), 0);
        assert_eq!(Gauge::new(8, 16).filled_eighths(10), 40);
        assert_eq!(Gauge::new(16, 16).filled_eighths(10), 80);
        assert_eq!(Gauge::new(64, 16).filled_eighths(10), 80);
        assert_eq!(Gauge::new(3, 0).filled_eighths(10), 0);
        assert_eq!(Gauge::new(u64::MAX, 1).filled_eighths(u16::MAX), 8 * 65535);
        assert_eq!(Gauge::new(1, 2).filled_eighths(0), 0);
    }

    #[test]
    fn bar_cells_fill_whole_and_partial_blocks() {
        let cells = |used, total, width| {
            let (filled, empty) = bar_cells(Gauge::new(used, total), width);
            format!("{filled}{empty}")
        };
        assert_eq!(cells(0, 10, 8), "░░░░░░░░");
        assert_eq!(cells(5, 10, 8), "████░░░░");
        assert_eq!(cells(9, 10, 8), "███████▏");
        assert_eq!(cells(10, 10, 8), "████████");
        assert_eq!(cells(30, 10, 8), "████████");
        assert_eq!(cells(1, 3, 4), "█▎░░");
        assert_eq!(cells(1, 0, 4), "░░░░");
        for used in 0..=40 {
            assert_eq!(cells(used, 37, 7).chars().count(), 7, "used {used}");
        }
    }

    fn meters(percent: u64) -> [Meter; 3] {
        let gauge = Gauge::new(percent, 100);
        [
            Meter {
                label: "CPU",
                gauge,
                figures: "12/16 vCPU".into(),
            },
            Meter {
                label: "RAM",
                gauge,
                figures: "15.5G/31.2G".into(),
            },
            Meter {
                label: "Disk",
                gauge,
                figures: "120.5G/468.2G".into(),
            },
        ]
    }

    fn row_text(line: &Line<'_>) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn the_row_fills_its_width_and_degrades_step_by_step() {
        let theme = Theme::plain();
        for width in [120, 100, 80, 60, 40, 30] {
            let line = meter_row(&meters(50), width, &theme);
            let text = row_text(&line);
            assert!(
                text.chars().count() <= usize::from(width),
                "{width}: {text:?} is too wide"
            );
        }
        let wide = row_text(&meter_row(&meters(50), 100, &theme));
        assert_eq!(wide.chars().count(), 100, "{wide}");
        assert!(wide.contains("12/16 vCPU 50%"), "{wide}");
        assert!(wide.contains("120.5G/468.2G 50%"), "{wide}");
        let narrow = row_text(&meter_row(&meters(50), 40, &theme));
        assert!(!narrow.contains("vCPU"), "{narrow}");
        assert!(narrow.contains("50%"), "{narrow}");
        let tiny = row_text(&meter_row(&meters(50), 30, &theme));
        assert_eq!(tiny, "CPU 50%  RAM 50%  Disk 50%");
        // All three always show the same amount of detail.
        for width in 20..120 {
            let text = row_text(&meter_row(&meters(50), width, &theme));
            let bars = text.matches('▕').count();
            assert!(bars == 0 || bars == 3, "{width}: {text}");
            let figures = text.contains("12/16") as u8
                + text.contains("15.5G/31.2G") as u8
                + text.contains("120.5G/468.2G") as u8;
            assert!(figures == 0 || figures == 3, "{width}: {text}");
        }
    }
}

//! The TUI's styles in one place, so that `NO_COLOR` (<https://no-color.org>) is honoured
//! everywhere at once: with it set to anything non-empty, nothing is coloured and pressure is
//! told by symbols (`!`, `!!`) and bold text instead.

use banger_api::VmState;
use ratatui::style::{Color, Modifier, Style};

use super::bars::Level;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    /// Colours unless `NO_COLOR` is set to a non-empty value.
    pub fn from_env() -> Theme {
        Theme::for_no_color(std::env::var_os("NO_COLOR").as_deref())
    }

    /// The theme for this value of `NO_COLOR`.
    pub fn for_no_color(value: Option<&std::ffi::OsStr>) -> Theme {
        if value.is_some_and(|v| !v.is_empty()) {
            Theme::plain()
        } else {
            Theme::colored()
        }
    }

    pub fn colored() -> Theme {
        Theme { color: true }
    }

    pub fn plain() -> Theme {
        Theme { color: false }
    }

    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    /// Text that matters less: placeholders, units, separators.
    pub fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }

    pub fn label(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn title(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// The figures next to a bar.
    pub fn level(&self, level: Level) -> Style {
        match level {
            Level::Unknown => self.dim(),
            Level::Ok => Style::new(),
            Level::Warn => self.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            Level::Critical => self.fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }

    /// The filled part of a bar.
    pub fn bar(&self, level: Level) -> Style {
        match level {
            Level::Unknown => self.dim(),
            Level::Ok => self.fg(Color::Green),
            Level::Warn => self.fg(Color::Yellow),
            Level::Critical => self.fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }

    /// Appended to a bar's percentage when colours cannot tell the level.
    pub fn level_marker(&self, level: Level) -> &'static str {
        match (self.color, level) {
            (false, Level::Warn) => " !",
            (false, Level::Critical) => " !!",
            _ => "",
        }
    }

    pub fn state(&self, state: VmState) -> Style {
        match state {
            VmState::Running => self.fg(Color::Green),
            VmState::Starting | VmState::Stopping | VmState::Paused => self.fg(Color::Yellow),
            VmState::Failed => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            VmState::Stopped => self.dim(),
        }
    }

    /// The selected row of a list. Reversed video is not a colour, so it stays with NO_COLOR.
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// The tab being shown.
    pub fn tab_active(&self) -> Style {
        self.fg(Color::Cyan)
            .add_modifier(Modifier::BOLD | Modifier::REVERSED)
    }

    pub fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub fn success(&self) -> Style {
        self.fg(Color::Green)
    }

    /// Work under way: running stages and operations.
    pub fn busy(&self) -> Style {
        self.fg(Color::Yellow)
    }

    /// Keys in hints and help.
    pub fn key(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// The form field being edited.
    pub fn focused(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
}

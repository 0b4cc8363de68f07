//! The console view (`l` on a VM): the tail of the VM's serial console as bangerd records it,
//! followed while the view is open by reading on from the last offset, scrollable back and
//! sideways. A stopped VM shows its last boot's console.
//!
//! The console is whatever the guest printed: colour codes, cursor movements, terminal titles,
//! stray control bytes. None of it reaches the terminal: [`sanitize`] drops escape sequences
//! and control characters and expands tabs before a line is kept, so a guest can never move
//! the TUI's cursor or change its colours.

use std::collections::VecDeque;
use std::time::Duration;

use banger_api::{ApiError, ConsoleChunk};
use crossterm::event::{KeyCode, KeyEvent};

/// How often an open view reads on (a read from the last offset is a `stat` and usually
/// nothing for bangerd).
pub const LOGS_POLL: Duration = Duration::from_millis(500);
/// Lines kept; older ones are dropped as new ones arrive.
pub const MAX_LINES: usize = 5_000;
/// Columns ← and → shift long lines by.
pub const SHIFT: usize = 8;
const TAB: usize = 8;

/// What a key did to the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogsKey {
    Keep,
    Close,
}

/// The console of one VM as far as it has been read.
#[derive(Debug, Clone, PartialEq)]
pub struct Logs {
    pub name: String,
    /// Complete lines, sanitised.
    lines: VecDeque<String>,
    /// The last line while the guest has not ended it yet, as received (an escape sequence
    /// may be cut by the end of a read; it is sanitised whole once complete).
    partial: String,
    /// Where the next read continues; `None` before the first answer (read the tail).
    next_offset: Option<u64>,
    /// The first answer arrived.
    pub loaded: bool,
    /// The last read failed (what was read before stays).
    pub error: Option<ApiError>,
    /// Lines scrolled back from the end; 0 follows the console as it grows.
    pub scroll: usize,
    /// Columns shifted to the right.
    pub shift: usize,
    /// Rows the view shows, so that scrolling stops with the first line at the top.
    pub page: usize,
    in_flight: bool,
    next_read: Duration,
}

impl Logs {
    pub fn new(name: String) -> Logs {
        Logs {
            name,
            lines: VecDeque::new(),
            partial: String::new(),
            next_offset: None,
            loaded: false,
            error: None,
            scroll: 0,
            shift: 0,
            page: 1,
            in_flight: false,
            next_read: Duration::ZERO,
        }
    }

    /// The offset to read from when a read is due at `clock` and none is on its way; marks
    /// the read as on its way. `Some(None)` reads the tail.
    pub fn due(&mut self, clock: Duration) -> Option<Option<u64>> {
        if self.in_flight || clock < self.next_read {
            return None;
        }
        self.in_flight = true;
        Some(self.next_offset)
    }

    /// Takes bangerd's answer to the read from `asked` (`None`: the tail) made at `clock`.
    pub fn answer(
        &mut self,
        asked: Option<u64>,
        result: Result<ConsoleChunk, ApiError>,
        clock: Duration,
    ) {
        self.in_flight = false;
        self.next_read = clock + LOGS_POLL;
        let chunk = match result {
            Ok(chunk) => chunk,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        self.error = None;
        let mut text = chunk.text.as_str();
        match asked {
            // A log that restarted (a new boot replaced it) is read from its start.
            Some(offset) if chunk.offset < offset => {
                self.lines.clear();
                self.partial.clear();
                self.scroll = 0;
            }
            // The tail of a longer log starts inside a line: that piece is dropped.
            None if chunk.offset > 0 => match text.split_once('\n') {
                Some((_, rest)) => text = rest,
                None => text = "",
            },
            _ => {}
        }
        self.loaded = true;
        self.next_offset = Some(chunk.next_offset);
        self.push(text);
    }

    fn push(&mut self, text: &str) {
        let mut added = 0;
        let mut rest = text;
        while let Some((line, after)) = rest.split_once('\n') {
            self.partial.push_str(line);
            let raw = std::mem::take(&mut self.partial);
            self.lines.push_back(sanitize(&raw));
            added += 1;
            rest = after;
        }
        self.partial.push_str(rest);
        // Scrolled back: the lines on screen stay where they are as new ones arrive.
        if self.scroll > 0 {
            self.scroll += added;
        }
        while self.lines.len() > MAX_LINES {
            self.lines.pop_front();
        }
        self.scroll = self.scroll.min(self.max_scroll());
    }

    /// The furthest back the view goes: the first line at the top of a full page.
    fn max_scroll(&self) -> usize {
        self.len().saturating_sub(self.page.max(1))
    }

    /// The number of lines, the unfinished last one included.
    pub fn len(&self) -> usize {
        self.lines.len() + usize::from(!self.partial.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `height` lines that end [`Logs::scroll`] lines back, oldest first; a full page
    /// whenever there are enough lines.
    pub fn window(&self, height: usize) -> Vec<String> {
        let end = self.len() - self.scroll.min(self.len().saturating_sub(height));
        let start = end.saturating_sub(height);
        (start..end)
            .map(|i| match self.lines.get(i) {
                Some(line) => line.clone(),
                None => sanitize(&self.partial),
            })
            .collect()
    }

    /// Moves the view for `key`.
    pub fn key(&mut self, key: KeyEvent) -> LogsKey {
        let last = self.max_scroll();
        let page = self.page.max(1);
        match key.code {
            KeyCode::Esc | KeyCode::Char('q' | 'l') => return LogsKey::Close,
            KeyCode::Up | KeyCode::Char('k') => self.scroll = (self.scroll + 1).min(last),
            KeyCode::Down | KeyCode::Char('j') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageUp => self.scroll = (self.scroll + page).min(last),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(page),
            KeyCode::Home | KeyCode::Char('g') => self.scroll = last,
            KeyCode::End | KeyCode::Char('G') => self.scroll = 0,
            KeyCode::Left | KeyCode::Char('h') => self.shift = self.shift.saturating_sub(SHIFT),
            KeyCode::Right => self.shift += SHIFT,
            _ => {}
        }
        LogsKey::Keep
    }
}

/// `raw` as text that is safe to put on a terminal: escape sequences (CSI, OSC and the other
/// string sequences, two-byte escapes) and control characters removed, tabs expanded.
pub fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut column = 0;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' => {
                let spaces = TAB - column % TAB;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => skip_csi(&mut chars),
                // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // Character set designations carry one more byte.
                Some('(' | ')' | '*' | '+' | '-' | '.' | '/' | '#' | '%' | ' ') => {
                    chars.next();
                }
                // Any other escape is two bytes.
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if c.is_control() => {}
            c => {
                out.push(c);
                column += 1;
            }
        }
    }
    out
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
    }
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' if chars.peek() == Some(&'\\') => {
                chars.next();
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::plain_key as key;

    fn chunk(offset: u64, text: &str) -> ConsoleChunk {
        ConsoleChunk {
            offset,
            next_offset: offset + text.len() as u64,
            text: text.into(),
        }
    }

    #[test]
    fn escape_sequences_and_controls_never_reach_the_terminal() {
        let raw = "\u{1b}[1;32mOK\u{1b}[0m Started \u{1b}]0;title\u{7}ssh\u{1b}(B.\u{8}\u{7}\
                   \u{1b}]8;;http://x\u{1b}\\link\u{1b}7\u{1b}[2J\u{9b}31mred\u{0}";
        assert_eq!(sanitize(raw), "OK Started ssh.linkred");
        assert_eq!(sanitize("a\tb\tc"), "a       b       c");
        assert_eq!(sanitize("[    1.234] ünïcode ✓"), "[    1.234] ünïcode ✓");
        // A sequence cut at the end of the text is dropped, not shown half.
        assert_eq!(sanitize("text\u{1b}[3"), "text");
        assert!(
            sanitize("\u{1b}[?1049h\u{1b}[H\u{1b}c")
                .chars()
                .all(|c| !c.is_control())
        );
    }

    #[test]
    fn reads_on_from_the_last_offset_and_keeps_an_unfinished_line_whole() {
        let mut logs = Logs::new("dev".into());
        assert_eq!(logs.due(Duration::ZERO), Some(None), "the tail first");
        assert_eq!(logs.due(Duration::ZERO), None, "one read at a time");
        // The tail of a long log starts mid-line: that piece goes.
        logs.answer(
            None,
            Ok(chunk(100, "ot: done\nline 1\nline 2 \u{1b}[3")),
            ms(10),
        );
        assert!(logs.loaded);
        assert_eq!(logs.window(10), ["line 1", "line 2 "]);
        assert_eq!(logs.due(ms(100)), None, "not before the poll interval");
        let next = logs.due(ms(10) + LOGS_POLL).unwrap();
        assert_eq!(next, Some(126));
        // The escape sequence cut by the previous read completes here.
        logs.answer(next, Ok(chunk(126, "1mbold\u{1b}[0m\nline 3\n")), ms(600));
        assert_eq!(logs.window(10), ["line 1", "line 2 bold", "line 3"]);
        assert_eq!(logs.window(2), ["line 2 bold", "line 3"]);
    }

    #[test]
    fn a_replaced_log_starts_over_and_errors_keep_what_was_read() {
        let mut logs = Logs::new("dev".into());
        logs.due(Duration::ZERO);
        logs.answer(None, Ok(chunk(0, "old boot\n")), ms(1));
        let asked = logs.due(ms(1000)).unwrap();
        logs.answer(asked, Err(ApiError::internal("disk on fire")), ms(1000));
        assert_eq!(logs.window(5), ["old boot"]);
        assert!(logs.error.is_some());
        let asked = logs.due(ms(2000)).unwrap();
        assert_eq!(asked, Some(9));
        logs.answer(asked, Ok(chunk(0, "new\n")), ms(2000));
        assert_eq!(logs.window(5), ["new"]);
        assert!(logs.error.is_none());
    }

    #[test]
    fn scrolling_back_holds_the_view_while_lines_arrive() {
        let mut logs = Logs::new("dev".into());
        logs.due(Duration::ZERO);
        logs.page = 10;
        let text: String = (1..=30).map(|n| format!("{n}\n")).collect();
        logs.answer(None, Ok(chunk(0, &text)), ms(1));
        assert_eq!(logs.window(3), ["28", "29", "30"]);
        assert_eq!(logs.key(key(KeyCode::Up)), LogsKey::Keep);
        assert_eq!(logs.window(3), ["27", "28", "29"]);
        logs.key(key(KeyCode::PageUp));
        assert_eq!(logs.window(3), ["17", "18", "19"]);
        let asked = logs.due(ms(1000)).unwrap();
        logs.answer(asked, Ok(chunk(asked.unwrap(), "31\n32\n")), ms(1000));
        assert_eq!(logs.window(3), ["17", "18", "19"], "the view did not move");
        logs.key(key(KeyCode::Home));
        assert_eq!(logs.scroll, 32 - 10, "the first page, not past it");
        assert_eq!(logs.window(10)[0], "1");
        logs.key(key(KeyCode::Up));
        assert_eq!(logs.window(10)[0], "1");
        logs.key(key(KeyCode::Down));
        assert_eq!(logs.window(10)[0], "2", "one step down moves at once");
        logs.key(key(KeyCode::Char('G')));
        assert_eq!(logs.window(2), ["31", "32"], "following again");
        logs.key(key(KeyCode::Down));
        assert_eq!(logs.scroll, 0);
        logs.key(key(KeyCode::Right));
        logs.key(key(KeyCode::Right));
        logs.key(key(KeyCode::Left));
        assert_eq!(logs.shift, SHIFT);
        for code in [KeyCode::Esc, KeyCode::Char('q'), KeyCode::Char('l')] {
            assert_eq!(logs.key(key(code)), LogsKey::Close);
        }
    }

    #[test]
    fn only_the_newest_lines_are_kept() {
        let mut logs = Logs::new("dev".into());
        logs.due(Duration::ZERO);
        let text: String = (0..MAX_LINES + 10).map(|n| format!("{n}\n")).collect();
        logs.answer(None, Ok(chunk(0, &text)), ms(1));
        assert_eq!(logs.len(), MAX_LINES);
        assert_eq!(logs.window(1), [(MAX_LINES + 9).to_string()]);
        logs.key(key(KeyCode::Home));
        assert_eq!(logs.window(1), ["10"]);
        assert_eq!(logs.window(MAX_LINES + 5).len(), MAX_LINES);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}

//! The terminal while the TUI runs — raw mode, the alternate screen, a hidden cursor — and
//! putting all of it back on every way out: quitting, an error, and a panic. The panic hook
//! restores the terminal before the panic message is printed, so the message is readable and
//! the shell usable; the main loop then sees [`panicked`] and ends (a panic inside a
//! background task would otherwise leave the UI running on a restored terminal).
//!
//! An ssh session borrows the terminal: [`Screen::suspend`] puts it back as the shell had it,
//! [`Screen::resume`] takes it again and has the next frame drawn whole.

use std::io::{self, BufWriter, Stdout, Write};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::{cursor, execute, terminal};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use super::app::App;
use super::ui;

static PANICKED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// A whole frame is written in one go rather than in line-buffered pieces: no tearing, and
/// the first frame arrives as soon as it is drawn.
const FRAME_BUFFER: usize = 64 * 1024;

/// The terminal in TUI mode; dropping it restores the terminal.
pub struct Screen {
    terminal: Terminal<CrosstermBackend<BufWriter<Stdout>>>,
}

impl Screen {
    pub fn enter() -> io::Result<Screen> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        let setup =
            execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide).and_then(|()| {
                Terminal::new(CrosstermBackend::new(BufWriter::with_capacity(
                    FRAME_BUFFER,
                    io::stdout(),
                )))
            });
        match setup {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    pub fn draw(&mut self, app: &App) -> io::Result<()> {
        self.terminal.draw(|frame| ui::draw(frame, app)).map(|_| ())
    }

    /// The terminal's size in cells (columns, rows).
    pub fn size(&self) -> io::Result<(u16, u16)> {
        self.terminal.size().map(|s| (s.width, s.height))
    }

    /// Hands the terminal back in the state the shell left it (main screen, cursor, cooked
    /// mode), for a program that runs in the foreground.
    pub fn suspend(&mut self) -> io::Result<()> {
        self.terminal.backend_mut().flush()?;
        restore();
        Ok(())
    }

    /// Takes the terminal again after [`Screen::suspend`]; the next draw repaints everything,
    /// since the program that ran may have left anything on screen.
    pub fn resume(&mut self) -> io::Result<()> {
        terminal::enable_raw_mode()?;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        self.terminal.clear()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves TUI mode; harmless when the terminal is not in it.
pub fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
}

/// Whether any thread panicked since the TUI started.
pub fn panicked() -> bool {
    PANICKED.load(Ordering::SeqCst)
}

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            restore();
            previous(info);
        }));
    });
}

//! The terminal while the TUI runs — raw mode, the alternate screen, a hidden cursor — and
//! putting all of it back on every way out: quitting, an error, and a panic. The panic hook
//! restores the terminal before the panic message is printed, so the message is readable and
//! the shell usable; the main loop then sees [`panicked`] and ends (a panic inside a
//! background task would otherwise leave the UI running on a restored terminal).

use std::io::{self, BufWriter, Stdout};
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

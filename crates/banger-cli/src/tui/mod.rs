//! `banger tui`: a full-screen client of bangerd's API that shows VM capacity pressure at a
//! glance and never feels hung. The first frame is drawn before any I/O; finding or starting
//! bangerd and loading VMs, images and capacity run as background tasks whose stages and
//! timings show on the status line, and the render loop never waits for the network.
//!
//! The parts: `app` holds the state and turns messages (keys, answers, ticks) into new state plus
//! effects; `worker` runs those effects as tasks; `ui` draws an `&App` (pure, so every screen has a
//! snapshot test), from the toolkit in `layout` (panes, tables that fit their width, wrapping),
//! with `overlays` for what is drawn over a screen, `bars` for the capacity row, `form` for VM
//! creation, `promote` for the image name a VM is promoted to and `logs` for a VM's console;
//! `theme` holds the styles (honouring `NO_COLOR`); `terminal` enters and restores the terminal on
//! every way out, panics included.
//!
//! One thing runs in the foreground: an ssh session, which gets the terminal while the TUI
//! waits (see [`ssh_in_foreground`]).

mod app;
mod bars;
mod form;
mod layout;
mod logs;
mod name_prompt;
mod overlays;
mod promote;
mod terminal;
mod theme;
mod ui;
mod worker;

#[cfg(test)]
mod tests;

/// A key pressed without modifiers: what the screens' tests type.
#[cfg(test)]
fn plain_key(code: crossterm::event::KeyCode) -> crossterm::event::KeyEvent {
    crossterm::event::KeyEvent::new(code, crossterm::event::KeyModifiers::NONE)
}

use std::io::IsTerminal;
use std::time::Instant;

use banger_api::{ApiError, Timestamp};
use crossterm::event::{Event, EventStream};
use futures_util::{FutureExt, StreamExt};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::exit::Failure;
use crate::guest::SshSession;
use crate::output;
use app::{App, Msg, SshEnded};
use terminal::Screen;
use theme::Theme;
use worker::Worker;

/// Runs the TUI until the user quits.
pub async fn run() -> Result<(), Failure> {
    let launched = Instant::now();
    tokio::task::LocalSet::new()
        .run_until(run_local(launched))
        .await
}

async fn run_local(launched: Instant) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(Failure::invalid(
            "banger tui needs a terminal on stdin and stdout",
        ));
    }
    let mut app = App::new(Theme::from_env(), Timestamp::now());
    let mut screen = Screen::enter().map_err(terminal_failure)?;
    if let Ok((width, height)) = screen.size() {
        app.update(Msg::Resize(width, height));
    }
    screen.draw(&app).map_err(terminal_failure)?;
    // An interrupt from outside (raw mode makes Ctrl-C a key) quits like `q`, so the terminal
    // is restored; it also keeps one typed during an ssh session from ending banger.
    let mut interrupts = signal(SignalKind::interrupt())
        .map_err(|e| Failure::internal(format!("cannot watch for interrupts: {e}")))?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::new(tx);
    for effect in app.start() {
        worker.run(effect);
    }
    let mut events = EventStream::new();
    let mut next_tick = tokio::time::Instant::now() + app.tick_interval();
    loop {
        let msg = tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) => Msg::Key(key),
                Some(Ok(Event::Resize(width, height))) => Msg::Resize(width, height),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(terminal_failure(e)),
                // The terminal went away.
                None => break,
            },
            Some(msg) = rx.recv() => msg,
            Some(()) = interrupts.recv() => break,
            () = sleep_until(next_tick) => {
                next_tick = tokio::time::Instant::now() + app.tick_interval();
                Msg::Tick
            }
        };
        app.set_clock(launched.elapsed(), Timestamp::now());
        let mut effects = app.update(msg);
        if let Some(session) = app.take_session() {
            // Nothing may read the terminal while ssh has it: the event stream's reader
            // thread ends with it, and a new one starts afterwards.
            drop(events);
            let ended = ssh_in_foreground(&mut screen, &worker, session, &mut interrupts).await;
            events = EventStream::new();
            app.set_clock(launched.elapsed(), Timestamp::now());
            effects.extend(app.update(ended?));
            // The terminal may have been resized meanwhile.
            if let Ok((width, height)) = screen.size() {
                app.update(Msg::Resize(width, height));
            }
        }
        for effect in effects {
            worker.run(effect);
        }
        // A faster cadence (work started) takes effect now, not after the slow tick.
        next_tick = next_tick.min(tokio::time::Instant::now() + app.tick_interval());
        if app.quit || terminal::panicked() {
            break;
        }
        screen.draw(&app).map_err(terminal_failure)?;
    }
    drop(screen);
    if terminal::panicked() {
        return Err(Failure::internal(
            "banger tui stopped after an internal error (its message is printed above)",
        ));
    }
    Ok(())
}

/// Runs `session` with the terminal: the screen is suspended for it and taken back however
/// the session ends (an error, ssh missing, a panic in its thread), and the answer says how it
/// went. The main loop waits meanwhile; background requests go on and their answers queue.
async fn ssh_in_foreground(
    screen: &mut Screen,
    worker: &Worker,
    session: SshSession,
    interrupts: &mut Signal,
) -> Result<Msg, Failure> {
    let name = session.name().to_owned();
    if let Err(e) = screen.suspend() {
        screen.resume().map_err(terminal_failure)?;
        return Err(terminal_failure(e));
    }
    output::eprint(&format!(
        "banger: ssh into VM {name}; leaving its shell brings banger tui back\n"
    ));
    let after = session.clone();
    let ran = tokio::task::spawn_blocking(move || {
        let code = session.run()?;
        if code == 255 {
            // ssh's own failure: its message is on screen; let it be read before the TUI
            // covers it.
            output::eprint("banger: ssh failed (status 255); press Enter to return to banger tui");
            let _ = std::io::stdin().read_line(&mut String::new());
        }
        Ok::<i32, Failure>(code)
    })
    .await;
    // Ctrl-C typed while ssh connected was meant for it, not for the TUI.
    while let Some(Some(())) = interrupts.recv().now_or_never() {}
    screen.resume().map_err(terminal_failure)?;
    let result = match ran {
        Ok(Ok(code)) => {
            let still_running = match worker.daemon() {
                Some(daemon) => after.still_running(&daemon).await,
                None => false,
            };
            Ok(SshEnded {
                code,
                still_running,
            })
        }
        Ok(Err(failure)) => Err(failure.error),
        Err(e) => Err(ApiError::internal(format!(
            "the ssh session ended abnormally: {e}"
        ))),
    };
    Ok(Msg::SshEnded(name, result))
}

fn terminal_failure(e: std::io::Error) -> Failure {
    Failure::internal(format!("terminal error: {e}"))
}

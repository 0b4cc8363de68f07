//! `banger tui`: a full-screen client of bangerd's API that shows VM capacity pressure at a
//! glance and never feels hung. The first frame is drawn before any I/O; finding or starting
//! bangerd and loading VMs, images and capacity run as background tasks whose stages and
//! timings show on the status line, and the render loop never waits for the network.
//!
//! The parts: `app` holds the state and turns messages (keys, answers, ticks) into new state
//! plus effects; `worker` runs those effects as tasks; `ui` draws an `&App` (pure, so every
//! screen has a snapshot test), with `bars` for the capacity row and `form` for VM creation;
//! `theme` holds the styles (honouring `NO_COLOR`); `terminal` enters and restores the
//! terminal on every way out, panics included.

mod app;
mod bars;
mod form;
mod terminal;
mod theme;
mod ui;
mod worker;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::time::Instant;

use banger_api::Timestamp;
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::exit::Failure;
use app::{App, Msg};
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
    screen.draw(&app).map_err(terminal_failure)?;

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
                Some(Ok(Event::Resize(..))) => Msg::Resize,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(terminal_failure(e)),
                // The terminal went away.
                None => break,
            },
            Some(msg) = rx.recv() => msg,
            () = sleep_until(next_tick) => {
                next_tick = tokio::time::Instant::now() + app.tick_interval();
                Msg::Tick
            }
        };
        app.set_clock(launched.elapsed(), Timestamp::now());
        for effect in app.update(msg) {
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

fn terminal_failure(e: std::io::Error) -> Failure {
    Failure::internal(format!("terminal error: {e}"))
}

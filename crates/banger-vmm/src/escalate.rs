//! What every backend does the same way around its VMM process: clear a stale control socket
//! before a launch; end the process (ask the guest to shut down, each backend its own way, and
//! wait, then SIGTERM, then SIGKILL); and release what a launch acquired, newest first,
//! collecting every failure.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use banger_host::{ProcessError, Signal};

use crate::host::ProcessHost;
use crate::{StopOutcome, Timeouts, VmmError};

/// Removes a socket file nobody listens on (left by a VMM that died); refuses one a live process
/// serves.
pub(crate) fn clear_stale_socket(host: &dyn ProcessHost, socket: &Path) -> Result<(), VmmError> {
    if !host.exists(socket) {
        return Ok(());
    }
    if host.socket_accepts(socket) {
        return Err(VmmError::SocketInUse {
            path: socket.to_owned(),
        });
    }
    tracing::debug!(socket = %socket.display(), "removing a stale socket");
    host.remove_file(socket).map_err(|source| VmmError::File {
        path: socket.to_owned(),
        source,
    })
}

/// Why a process could not be ended; each backend words it as its own error.
#[derive(Debug)]
pub(crate) enum Stubborn {
    Signal(ProcessError),
    StillRunning,
}

/// Ends `pid`. Unless `graceful` is zero, `ask_guest` is called first: it asks the guest to shut
/// down and says whether the guest could hear it (a paused guest cannot); if so the guest gets
/// `graceful` to exit. Then SIGTERM and [`Timeouts::term_grace`], then SIGKILL and
/// [`Timeouts::kill_wait`]. `vmm` names the process in the log. Without `term` (a process
/// that cannot receive SIGTERM, such as the init of a pid namespace) SIGKILL follows the guest's
/// chance at once.
pub(crate) fn end_process(
    host: &dyn ProcessHost,
    pid: u32,
    graceful: Duration,
    timeouts: &Timeouts,
    vmm: &str,
    term: bool,
    ask_guest: impl FnOnce() -> bool,
) -> Result<StopOutcome, Stubborn> {
    let asked_guest = !graceful.is_zero() && ask_guest();
    if asked_guest && host.wait_for_exit(pid, graceful) {
        return Ok(StopOutcome::ShutDown);
    }
    if !term {
        if !host.pid_alive(pid) {
            return Ok(if asked_guest {
                StopOutcome::ShutDown
            } else {
                StopOutcome::AlreadyExited
            });
        }
        tracing::info!(pid, "{vmm} cannot receive SIGTERM; killing it");
        return kill(host, pid, timeouts.kill_wait).map(|()| StopOutcome::Killed);
    }
    match host.signal(pid, Signal::Term) {
        Ok(()) => {}
        // It exited between the guest's shutdown and the signal, or before anything.
        Err(ProcessError::Gone { .. }) if asked_guest => return Ok(StopOutcome::ShutDown),
        Err(ProcessError::Gone { .. }) => return Ok(StopOutcome::AlreadyExited),
        Err(e) => return Err(Stubborn::Signal(e)),
    }
    if host.wait_for_exit(pid, timeouts.term_grace) {
        return Ok(StopOutcome::Terminated);
    }
    tracing::warn!(pid, "{vmm} ignored SIGTERM; killing it");
    match host.signal(pid, Signal::Kill) {
        Ok(()) => {}
        Err(ProcessError::Gone { .. }) => return Ok(StopOutcome::Terminated),
        Err(e) => return Err(Stubborn::Signal(e)),
    }
    if host.wait_for_exit(pid, timeouts.kill_wait) {
        Ok(StopOutcome::Killed)
    } else {
        Err(Stubborn::StillRunning)
    }
}

/// Kills `pid` outright and waits up to `kill_wait` for it: whoever releases a launched process
/// has given up on its guest. One already gone is fine.
pub(crate) fn kill(host: &dyn ProcessHost, pid: u32, kill_wait: Duration) -> Result<(), Stubborn> {
    match host.signal(pid, Signal::Kill) {
        Ok(()) | Err(ProcessError::Gone { .. }) => {}
        Err(source) => return Err(Stubborn::Signal(source)),
    }
    if host.wait_for_exit(pid, kill_wait) {
        Ok(())
    } else {
        Err(Stubborn::StillRunning)
    }
}

/// Releases `acquired` newest first with `release`, going on past failures, and returns them
/// all.
pub(crate) fn release_newest_first<R: fmt::Display, E: fmt::Display>(
    acquired: Vec<R>,
    release: impl Fn(&R) -> Result<(), E>,
) -> Vec<E> {
    acquired
        .into_iter()
        .rev()
        .filter_map(|resource| {
            release(&resource)
                .inspect_err(|error| tracing::warn!(%resource, %error, "cannot release"))
                .err()
        })
        .collect()
}

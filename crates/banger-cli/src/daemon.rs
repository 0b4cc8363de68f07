//! Finding, starting, stopping and replacing bangerd, and the `banger daemon …` commands.
//!
//! Every request goes through [`Daemon::call`]: it sends the request naming the build of the
//! daemon binary banger would start now, starts bangerd when nothing answers on the socket, and
//! replaces a running bangerd of another build (which refuses with `daemon_outdated` without
//! acting), then sends the request once more. Both retries are safe because the first attempt
//! never reached a daemon that acted on it.
//!
//! Processes are created only through `banger_host::process`: the CLI never spawns anything
//! itself.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_api::build::build_id_of;
use banger_api::paths::Paths;
use banger_api::{Client, ClientError, DaemonInfo, ErrorCode};
use banger_host::process::{self, Signal};
use banger_host::program::{self, is_executable};
use tokio::time::{Instant, sleep};

use crate::cli::{DaemonCommand, OutputFormat};
use crate::exit::Failure;
use crate::output;

/// The variable that names the daemon binary explicitly (tests, unusual installs).
pub const DAEMON_BIN_VAR: &str = "BANGER_DAEMON_BIN";
/// How often banger looks whether a starting or stopping daemon got there.
const POLL: Duration = Duration::from_millis(20);
/// How long a freshly spawned bangerd may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a daemon asked to shut down may take before banger sends signals.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long each signal gets to take effect.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of the startup log quoted when bangerd fails to start.
const LOG_TAIL_LINES: usize = 12;

/// The daemon banger talks to: where its socket is, and which binary it would start.
#[derive(Debug, Clone)]
pub struct Daemon {
    paths: Paths,
    binary: PathBuf,
    build_id: String,
    /// Sends `build_id` with every request.
    client: Client,
    /// Keeps restart notices off stderr: a full-screen terminal UI reports them itself, and a
    /// stray line would land in the middle of its screen.
    quiet: bool,
}

/// Who answers on the daemon's socket, as [`Daemon::find`] sees it without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A daemon of the expected build.
    Ready(DaemonInfo),
    /// Nothing: bangerd is not running.
    Absent,
    /// A daemon of another build, which refuses requests until it is replaced.
    Outdated(DaemonInfo),
}

impl Daemon {
    /// Resolves the paths and the daemon binary from the environment; contacts nothing.
    pub fn locate() -> Result<Daemon, Failure> {
        let paths = paths()?;
        let binary = find_binary(
            std::env::var_os(DAEMON_BIN_VAR),
            std::env::current_exe().ok(),
            std::env::var_os("PATH"),
        )?;
        let build_id = build_id_of(&binary).map_err(|e| {
            Failure::unavailable(
                format!("cannot read the daemon binary {}: {e}", binary.display()),
                format!("reinstall banger, or set {DAEMON_BIN_VAR} to bangerd's path"),
            )
        })?;
        let client = Client::new(paths.socket()).expecting_build(build_id.clone());
        Ok(Daemon {
            paths,
            binary,
            build_id,
            client,
            quiet: false,
        })
    }

    /// The same daemon, without notices on stderr (see the `quiet` field).
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Asks who answers on the socket without starting or replacing anything, for callers
    /// that report each step of the bootstrap themselves (the TUI); follow it with
    /// [`Daemon::spawn`] or [`Daemon::replace_outdated`].
    pub async fn find(&self) -> Result<Found, Failure> {
        match self.plain().daemon_info().await {
            Ok(info) if info.build_id == self.build_id => Ok(Found::Ready(info)),
            Ok(info) => Ok(Found::Outdated(info)),
            Err(ClientError::Connect { .. }) => Ok(Found::Absent),
            Err(e) => Err(e.into()),
        }
    }

    /// The client that names this binary's build; use it after [`Daemon::call`] succeeded once
    /// (e.g. to follow an operation).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `request` against a daemon of the expected build, starting or replacing bangerd
    /// when needed.
    pub async fn call<T>(
        &self,
        request: impl AsyncFn(&Client) -> Result<T, ClientError>,
    ) -> Result<T, Failure> {
        match request(&self.client).await {
            Err(ClientError::Connect { .. }) => {
                self.spawn().await?;
            }
            Err(e) if e.is_code(ErrorCode::DaemonOutdated) => {
                self.replace_outdated().await?;
            }
            other => return other.map_err(Failure::from),
        }
        request(&self.client).await.map_err(Failure::from)
    }

    /// A client without the build header: a daemon of any build answers it, which is what
    /// asking an outdated daemon for its pid or to shut down needs.
    fn plain(&self) -> Client {
        Client::new(self.paths.socket())
    }

    /// Starts bangerd and waits until it answers.
    pub async fn spawn(&self) -> Result<DaemonInfo, Failure> {
        let runtime_dir = &self.paths.runtime_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runtime_dir)
            .map_err(|e| {
                Failure::unavailable(
                    format!("cannot create {}: {e}", runtime_dir.display()),
                    "check that $XDG_RUNTIME_DIR is writable",
                )
            })?;
        let startup_log = self.paths.startup_log();
        // The log is appended to; only what this start writes speaks for it.
        let log_start = std::fs::metadata(&startup_log).map_or(0, |m| m.len() as usize);
        let no_args: [OsString; 0] = [];
        let pid =
            process::spawn_detached(&self.binary, &no_args, &[], &startup_log).map_err(|e| {
                Failure::unavailable(
                    format!("cannot start bangerd: {}", chain(&e)),
                    format!("set {DAEMON_BIN_VAR} to a working bangerd"),
                )
            })?;
        let plain = self.plain();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match plain.daemon_info().await {
                Ok(info) => return Ok(info),
                // Still binding its socket, or still opening its state.
                Err(ClientError::Connect { .. }) => {}
                Err(e) if e.is_code(ErrorCode::Unavailable) => {}
                Err(e) => return Err(e.into()),
            }
            // A concurrent banger may have started a daemon that won the socket, so ours exited:
            // whoever answers is fine, hence the last look before giving up.
            let exited = !process::pid_alive(pid);
            // Ours lost the lock to a daemon that is still binding its socket: wait for that one.
            let lost_race = exited
                && std::fs::read(&startup_log).is_ok_and(|log| {
                    String::from_utf8_lossy(log.get(log_start..).unwrap_or_default())
                        .contains("already running")
                });
            if (exited && !lost_race) || Instant::now() >= deadline {
                if let Ok(info) = plain.daemon_info().await {
                    return Ok(info);
                }
                let what = if exited {
                    format!("bangerd (pid {pid}) exited while starting")
                } else {
                    format!(
                        "bangerd (pid {pid}) did not answer on {} within {}s",
                        self.paths.socket().display(),
                        START_TIMEOUT.as_secs()
                    )
                };
                return Err(Failure::unavailable(
                    format!("{what}; {}", log_tail(&startup_log, LOG_TAIL_LINES)),
                    format!(
                        "bangerd's log is {}; its startup output is in {}",
                        self.paths.log_file().display(),
                        startup_log.display()
                    ),
                ));
            }
            sleep(POLL).await;
        }
    }

    /// Replaces a running daemon of another build with this binary.
    pub async fn replace_outdated(&self) -> Result<DaemonInfo, Failure> {
        if !self.quiet {
            output::eprint(&format!(
                "banger: restarting bangerd (running build differs from {})\n",
                self.binary.display()
            ));
        }
        stop(&self.plain(), self.quiet).await?;
        self.spawn().await
    }
}

/// Asks the daemon answering on `client`'s socket to exit and waits until it has, escalating
/// to SIGTERM and SIGKILL. Returns the pid it stopped, or `None` when nothing was running.
/// With `quiet`, the escalation is not announced on stderr.
async fn stop(client: &Client, quiet: bool) -> Result<Option<u32>, Failure> {
    let pid = match client.daemon_info().await {
        Ok(info) => Some(info.pid),
        Err(ClientError::Connect { .. }) => return Ok(None),
        // A daemon that cannot describe itself can still be asked to leave.
        Err(_) => None,
    };
    match client.shutdown().await {
        Ok(()) => {}
        Err(ClientError::Connect { .. }) => return Ok(pid),
        // The daemon may close the connection as it exits, before answering.
        Err(ClientError::Protocol(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(pid) = pid else {
        let gone = wait_until(STOP_TIMEOUT, async || {
            matches!(client.daemon_info().await, Err(ClientError::Connect { .. }))
        })
        .await;
        return if gone {
            Ok(None)
        } else {
            Err(Failure::unavailable(
                "bangerd did not stop after being asked to",
                "find its pid with `banger daemon status` and end it",
            ))
        };
    };
    let exited = async || !process::pid_alive(pid);
    if wait_until(STOP_TIMEOUT, exited).await {
        return Ok(Some(pid));
    }
    for signal in [Signal::Term, Signal::Kill] {
        if !quiet {
            output::eprint(&format!(
                "banger: bangerd (pid {pid}) is still running; sending {signal}\n"
            ));
        }
        // The process may exit between the check and the signal: the wait tells.
        let _ = process::signal(pid, signal);
        if wait_until(SIGNAL_TIMEOUT, exited).await {
            return Ok(Some(pid));
        }
    }
    Err(Failure::unavailable(
        format!("bangerd (pid {pid}) survived SIGKILL"),
        "look at the process with `ps` and your system log",
    ))
}

/// Polls `done` until it says yes or `timeout` passes; returns whether it said yes.
async fn wait_until(timeout: Duration, done: impl AsyncFn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}

fn paths() -> Result<Paths, Failure> {
    Paths::from_env()
        .map_err(|e| Failure::internal(format!("cannot tell where banger keeps its files: {e}")))
}

/// Where the daemon binary is: `$BANGER_DAEMON_BIN`, else `bangerd` next to the running
/// `banger` (how `cargo install` and packages lay them out), else the first in `PATH`.
pub fn find_binary(
    explicit: Option<OsString>,
    current_exe: Option<PathBuf>,
    path_var: Option<OsString>,
) -> Result<PathBuf, Failure> {
    if let Some(explicit) = explicit.filter(|v| !v.is_empty()) {
        let path = std::path::absolute(&explicit).unwrap_or_else(|_| PathBuf::from(&explicit));
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(Failure::unavailable(
                format!(
                    "{DAEMON_BIN_VAR} names {}, which is not an executable file",
                    path.display()
                ),
                format!("point {DAEMON_BIN_VAR} at bangerd, or unset it"),
            ))
        };
    }
    let beside = current_exe
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| dir.join("bangerd"));
    if let Some(found) = beside
        .clone()
        .filter(|p| is_executable(p))
        .or_else(|| program::find_in_path(path_var.as_deref(), "bangerd"))
    {
        return Ok(found);
    }
    let looked = match &beside {
        Some(p) => format!("{} and PATH", p.display()),
        None => "PATH".into(),
    };
    Err(Failure::unavailable(
        format!("cannot find bangerd (looked at {looked})"),
        format!(
            "install banger and bangerd together (`cargo install --path crates/banger`), \
             or set {DAEMON_BIN_VAR} to bangerd's path"
        ),
    ))
}

// An error and its causes on one line: host errors keep the OS error in their source.
use banger_host::error_chain as chain;

/// The last `lines` non-empty lines of a log, introduced for an error message.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if all.is_empty() {
        return format!("its startup log {} is empty", path.display());
    }
    let tail = &all[all.len().saturating_sub(lines)..];
    let mut out = format!("the last lines of its startup log {}:", path.display());
    for line in tail {
        out.push_str("\n  ");
        out.push_str(line);
    }
    out
}

/// `banger daemon …`.
pub async fn run(command: &DaemonCommand, format: OutputFormat) -> Result<(), Failure> {
    let text = match command {
        DaemonCommand::Status => status(format).await?,
        DaemonCommand::Start => {
            let daemon = Daemon::locate()?;
            let (info, what) = match daemon.plain().daemon_info().await {
                Ok(info) if info.build_id == daemon.build_id => (info, "is already running"),
                Ok(_) => (daemon.replace_outdated().await?, "restarted"),
                Err(ClientError::Connect { .. }) => (daemon.spawn().await?, "started"),
                Err(e) => return Err(e.into()),
            };
            match format {
                OutputFormat::Json => output::json(&info),
                OutputFormat::Text => format!("bangerd {what} (pid {}).\n", info.pid),
            }
        }
        DaemonCommand::Stop => {
            let stopped = stop(&Client::new(paths()?.socket()), false).await?;
            stop_text(stopped, format)
        }
        DaemonCommand::Restart => {
            let daemon = Daemon::locate()?;
            let stopped = stop(&daemon.plain(), false).await?;
            let info = daemon.spawn().await?;
            match format {
                OutputFormat::Json => output::json(&info),
                OutputFormat::Text => format!(
                    "{}bangerd started (pid {}).\n",
                    stop_text(stopped, format),
                    info.pid
                ),
            }
        }
    };
    output::print(&text);
    Ok(())
}

fn stop_text(stopped: Option<u32>, format: OutputFormat) -> String {
    match (format, stopped) {
        (OutputFormat::Json, pid) => {
            output::json(&serde_json::json!({ "was_running": pid.is_some(), "pid": pid }))
        }
        (OutputFormat::Text, Some(pid)) => format!("bangerd stopped (pid {pid}).\n"),
        (OutputFormat::Text, None) => "bangerd is not running.\n".into(),
    }
}

/// `banger daemon status`: asks without starting anything.
async fn status(format: OutputFormat) -> Result<String, Failure> {
    let paths = paths()?;
    let socket = paths.socket();
    let info = match Client::new(&socket).daemon_info().await {
        Ok(info) => info,
        Err(ClientError::Connect { .. }) => {
            return Err(Failure::unavailable(
                format!("bangerd is not running (socket: {})", socket.display()),
                "start it with `banger daemon start`; any other banger command starts it too",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match format {
        OutputFormat::Json => output::json(&info),
        OutputFormat::Text => {
            // Only a hint: a missing binary does not make the running daemon's status wrong.
            let outdated = Daemon::locate()
                .ok()
                .filter(|d| d.build_id != info.build_id)
                .map(|d| d.binary.display().to_string());
            output::daemon_status(&info, outdated.as_deref())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;
    use std::os::unix::fs::PermissionsExt;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn explicit_binary_wins_and_must_be_executable() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = executable(dir.path(), "my-bangerd");
        let found = find_binary(Some(explicit.clone().into()), None, None).unwrap();
        assert_eq!(found, explicit);

        let missing = dir.path().join("nope");
        let err = find_binary(Some(missing.clone().into()), None, None).unwrap_err();
        assert_eq!(err.exit, Exit::Unavailable);
        assert_eq!(
            err.error.message,
            format!(
                "BANGER_DAEMON_BIN names {}, which is not an executable file",
                missing.display()
            )
        );
    }

    #[test]
    fn binary_beside_banger_comes_before_path() {
        let install = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let beside = executable(install.path(), "bangerd");
        executable(elsewhere.path(), "bangerd");
        let path_var = std::env::join_paths([elsewhere.path()]).unwrap();
        let found = find_binary(
            None,
            Some(install.path().join("banger")),
            Some(path_var.clone()),
        )
        .unwrap();
        assert_eq!(found, beside);

        std::fs::remove_file(&beside).unwrap();
        let found = find_binary(None, Some(install.path().join("banger")), Some(path_var)).unwrap();
        assert_eq!(found, elsewhere.path().join("bangerd"));
    }

    #[test]
    fn a_missing_binary_is_a_daemon_unavailable_error_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path_var = std::env::join_paths([dir.path()]).unwrap();
        let err = find_binary(
            None,
            Some(PathBuf::from("/opt/banger/bin/banger")),
            Some(path_var),
        )
        .unwrap_err();
        assert_eq!(err.exit, Exit::Unavailable);
        insta::assert_snapshot!(output::error(&err.error, OutputFormat::Text), @r"
        error: cannot find bangerd (looked at /opt/banger/bin/bangerd and PATH)
        hint: install banger and bangerd together (`cargo install --path crates/banger`), or set BANGER_DAEMON_BIN to bangerd's path
        ");
    }

    #[test]
    fn log_tail_quotes_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("bangerd.startup.log");
        assert!(log_tail(&log, 3).ends_with("is empty"));
        let text: String = (1..=20).map(|i| format!("line {i}\n\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log, 3).replace(&dir.path().display().to_string(), "DIR");
        insta::assert_snapshot!(tail, @r"
        the last lines of its startup log DIR/bangerd.startup.log:
          line 18
          line 19
          line 20
        ");
    }

    #[tokio::test]
    async fn stopping_nothing_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(dir.path().join("bangerd.sock"));
        assert_eq!(stop(&client, false).await.unwrap(), None);
    }
}

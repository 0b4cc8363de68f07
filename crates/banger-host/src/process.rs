//! Long-lived host processes (a VMM, a helper daemon): starting them detached from the daemon's
//! terminal and process group with their output in a log file, asking whether a pid is still
//! alive, signalling it and waiting for it to go. Commands that run to completion belong to
//! [`crate::runner`] instead.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::Pid;

/// The signals banger sends to the processes it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ask the process to exit.
    Term,
    /// End it now.
    Kill,
    /// Freeze every thread of it where it is (a pause the process cannot see).
    Stop,
    /// Let a stopped process run on.
    Cont,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Stop => "SIGSTOP",
            Signal::Cont => "SIGCONT",
        })
    }
}

impl Signal {
    fn to_rustix(self) -> rustix::process::Signal {
        match self {
            Signal::Term => rustix::process::Signal::TERM,
            Signal::Kill => rustix::process::Signal::KILL,
            Signal::Stop => rustix::process::Signal::STOP,
            Signal::Cont => rustix::process::Signal::CONT,
        }
    }
}

/// Starting or signalling a host process failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open the process log {}", path.display())]
    OpenLog { path: PathBuf, source: io::Error },

    #[error("{} does not exist", program.display())]
    NotFound { program: PathBuf },

    #[error("cannot start {}", program.display())]
    Spawn { program: PathBuf, source: io::Error },

    #[error("process {pid} is not running")]
    Gone { pid: u32 },

    #[error("cannot send {signal} to process {pid}")]
    Signal {
        pid: u32,
        signal: Signal,
        source: io::Error,
    },
}

/// Starts `program` in a session (and so a process group) of its own, so that a Ctrl-C aimed
/// at the daemon does not reach it, and the daemon's exit does not end it: when a parent exits
/// and leaves its child's process group orphaned, the kernel sends that group SIGHUP (then
/// SIGCONT) if a member is stopped, which ended a Firecracker paused with SIGSTOP whenever
/// bangerd restarted. A group in a session of its own is orphaned from the start, so no exit
/// makes it so. Stdin from `/dev/null`, stdout and stderr appended to `output_log` (created with
/// mode 0600). `env` is added to the inherited environment. Returns the pid without waiting; a
/// background thread reaps the child when it exits, so it never lingers as a zombie while this
/// process lives.
pub fn spawn_detached(
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    output_log: &Path,
) -> Result<u32, ProcessError> {
    let open_log_error = |source| ProcessError::OpenLog {
        path: output_log.to_owned(),
        source,
    };
    let stdout = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(output_log)
        .map_err(open_log_error)?;
    let stderr = stdout.try_clone().map_err(open_log_error)?;

    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls are
    // allowed: setsid(2) is one, and the closure allocates nothing.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
    }
    let mut child = command.spawn().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ProcessError::NotFound {
                program: program.to_owned(),
            }
        } else {
            ProcessError::Spawn {
                program: program.to_owned(),
                source,
            }
        }
    })?;
    let pid = child.id();
    tracing::debug!(pid, program = %program.display(), log = %output_log.display(), "started detached");

    let reaper = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || match child.wait() {
            Ok(status) => tracing::debug!(pid, %status, "detached process exited"),
            Err(error) => tracing::warn!(pid, %error, "cannot wait for detached process"),
        });
    if let Err(error) = reaper {
        // The process runs anyway; without a reaper it stays a zombie until we exit.
        tracing::warn!(pid, %error, "cannot start the reaper thread");
    }
    Ok(pid)
}

/// Runs `program` in the foreground with this process's terminal (stdin, stdout, stderr
/// inherited) and waits for it; returns the exit code a shell would report (128 + signal for a
/// program killed by a signal). For `banger vm ssh`, which hands the terminal to OpenSSH.
pub fn run_interactive(program: &str, args: &[String]) -> Result<i32, ProcessError> {
    use std::os::unix::process::ExitStatusExt;
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ProcessError::NotFound {
                    program: PathBuf::from(program),
                }
            } else {
                ProcessError::Spawn {
                    program: PathBuf::from(program),
                    source,
                }
            }
        })?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn to_pid(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Whether `pid` names a live process. A process we may not signal (`EPERM`) is alive; a zombie
/// (exited, not yet reaped by its parent) is not.
pub fn pid_alive(pid: u32) -> bool {
    let Some(raw) = to_pid(pid) else {
        return false;
    };
    match rustix::process::test_kill_process(raw) {
        Ok(()) | Err(Errno::PERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

/// Exited, not yet reaped. A multi-threaded process (bangerd, Firecracker, QEMU) shows its
/// main thread as a zombie while its other threads are still exiting, and until the last one
/// has, its file descriptors (sockets, the tap) are still open: it counts as a zombie only once
/// no other thread is left.
fn is_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) if stat_state(&stat) == Some('Z') => {
            std::fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |tasks| tasks.count() <= 1)
        }
        _ => false,
    }
}

/// Whether `pid` is stopped by a signal (`SIGSTOP`): state `T` in `/proc/PID/stat`.
pub fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat_state(&stat) == Some('T'))
}

/// The state letter of a `/proc/PID/stat` line: the first field after the parenthesised
/// command name, which may itself contain spaces and parentheses.
fn stat_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Sends `signal` to process `pid`. A process that is already gone is [`ProcessError::Gone`].
pub fn signal(pid: u32, signal: Signal) -> Result<(), ProcessError> {
    let raw = to_pid(pid).ok_or(ProcessError::Gone { pid })?;
    deliver(
        pid,
        signal,
        rustix::process::kill_process(raw, signal.to_rustix()),
    )
}

/// Sends `signal` to every process of the group `pgid`; a process started by
/// [`spawn_detached`] leads a group whose id is its pid, so this also reaches its children.
pub fn signal_group(pgid: u32, signal: Signal) -> Result<(), ProcessError> {
    let raw = to_pid(pgid).ok_or(ProcessError::Gone { pid: pgid })?;
    deliver(
        pgid,
        signal,
        rustix::process::kill_process_group(raw, signal.to_rustix()),
    )
}

fn deliver(pid: u32, signal: Signal, result: rustix::io::Result<()>) -> Result<(), ProcessError> {
    tracing::debug!(pid, ?signal, "signalling");
    match result {
        Ok(()) => Ok(()),
        Err(Errno::SRCH) => Err(ProcessError::Gone { pid }),
        Err(errno) => Err(ProcessError::Signal {
            pid,
            signal,
            source: errno.into(),
        }),
    }
}

/// Polls until `pid` is no longer alive or `timeout` passes; true when it exited.
pub fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if !pid_alive(pid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn detached_sleep_is_alive_in_its_own_group_until_killed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        let pid = spawn_detached(Path::new("sleep"), &os(&["30"]), &[], &log).unwrap();
        assert!(pid_alive(pid));
        let pgid = rustix::process::getpgid(to_pid(pid)).unwrap();
        assert_eq!(pgid.as_raw_nonzero().get() as u32, pid, "own process group");
        assert_ne!(pgid, rustix::process::getpgrp(), "not in our group");
        // Its own session: a paused (SIGSTOP) VMM is not sent SIGHUP when the daemon exits.
        let sid = rustix::process::getsid(to_pid(pid)).unwrap();
        assert_eq!(sid.as_raw_nonzero().get() as u32, pid, "own session");
        let mode = std::fs::metadata(&log).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        assert!(!wait_for_exit(pid, Duration::from_millis(50)));
        signal(pid, Signal::Term).unwrap();
        assert!(
            wait_for_exit(pid, Duration::from_secs(10)),
            "reaped after TERM"
        );
        assert!(!pid_alive(pid));
        // Exited is not yet reaped: a signal reaches a zombie until the reaper thread has
        // waited for it, which a busy machine can delay.
        let reaped = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < reaped, "the reaper never waited for {pid}");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(matches!(
            signal(pid, Signal::Kill),
            Err(ProcessError::Gone { .. })
        ));
    }

    #[test]
    fn signal_group_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("group.log");
        let pid = spawn_detached(
            Path::new("sh"),
            &os(&["-c", "sleep 30 & echo $!; wait"]),
            &[],
            &log,
        )
        .unwrap();
        // The grandchild's pid is the first line of the log.
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild: u32 = loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if let Some(line) = text.lines().next() {
                break line.trim().parse().unwrap();
            }
            assert!(Instant::now() < deadline, "grandchild never reported");
            std::thread::sleep(Duration::from_millis(10));
        };
        signal_group(pid, Signal::Kill).unwrap();
        assert!(wait_for_exit(pid, Duration::from_secs(10)));
        // The grandchild is reparented to init (or a subreaper), which reaps it.
        assert!(wait_for_exit(grandchild, Duration::from_secs(10)));
    }

    #[test]
    fn output_and_env_go_to_the_appended_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        std::fs::write(&log, "earlier\n").unwrap();
        let pid = spawn_detached(
            Path::new("/bin/sh"),
            &os(&[
                "-c",
                "echo out $BANGER_T; echo err >&2; read x || echo no-stdin",
            ]),
            &[("BANGER_T".into(), "v".into())],
            &log,
        )
        .unwrap();
        assert!(wait_for_exit(pid, Duration::from_secs(10)));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "earlier\nout v\nerr\nno-stdin\n"
        );
    }

    #[test]
    fn missing_program_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = spawn_detached(
            Path::new("/nonexistent/firecracker"),
            &[],
            &[],
            &dir.path().join("log"),
        )
        .unwrap_err();
        assert!(matches!(err, ProcessError::NotFound { .. }), "{err:?}");
        assert_eq!(err.to_string(), "/nonexistent/firecracker does not exist");
    }

    #[test]
    fn unusable_pids_are_not_alive() {
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
        assert!(pid_alive(std::process::id()));
        assert!(pid_alive(1), "init exists; EPERM would count as alive");
    }

    #[test]
    fn a_process_whose_main_thread_exited_is_alive_while_another_thread_runs() {
        // The state of a multi-threaded process being killed: its main thread is a zombie,
        // another thread still runs (and still holds the process's descriptors).
        let Ok(mut child) = std::process::Command::new("python3")
            .args([
                "-c",
                "import ctypes, threading, time\n\
                 threading.Thread(target=lambda: time.sleep(1.5)).start()\n\
                 time.sleep(0.2)\n\
                 ctypes.CDLL(None).pthread_exit(None)\n",
            ])
            .spawn()
        else {
            banger_test_support::skip!("python3 not found");
            return;
        };
        let pid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let zombie_leader = loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat_state(&stat) == Some('Z') {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(zombie_leader, "the main thread never exited");
        if child.try_wait().unwrap().is_none() {
            assert!(
                pid_alive(pid),
                "a thread still runs, so the process is alive"
            );
        }
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }

    #[test]
    fn stat_state_survives_odd_command_names() {
        assert_eq!(stat_state("42 (sleep) S 1 42 42 0"), Some('S'));
        assert_eq!(stat_state("42 (a) b) Z 1 42"), Some('Z'));
        assert_eq!(stat_state("garbage"), None);
    }

    #[test]
    fn a_stopped_process_is_alive_and_stopped_until_continued() {
        let dir = tempfile::tempdir().unwrap();
        let pid = spawn_detached(
            Path::new("sleep"),
            &os(&["30"]),
            &[],
            &dir.path().join("log"),
        )
        .unwrap();
        let wait = |want: bool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_stopped(pid) != want {
                assert!(Instant::now() < deadline, "stopped never became {want}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        assert!(!is_stopped(pid));
        signal(pid, Signal::Stop).unwrap();
        wait(true);
        assert!(pid_alive(pid));
        signal(pid, Signal::Cont).unwrap();
        wait(false);
        signal(pid, Signal::Kill).unwrap();
        assert!(wait_for_exit(pid, Duration::from_secs(5)));
        assert!(!is_stopped(pid));
    }

    #[test]
    fn signal_error_names_the_signal() {
        let err = ProcessError::Signal {
            pid: 7,
            signal: Signal::Term,
            source: io::Error::from_raw_os_error(1),
        };
        assert_eq!(err.to_string(), "cannot send SIGTERM to process 7");
    }
}

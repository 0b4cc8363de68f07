//! `POST /v1/exec`: runs a command for the host and streams it both ways in the framing of
//! [`banger_agent_protocol::frame`]. The request body's first frame says what to run (and as
//! whom); later frames carry standard input, terminal resizes and signals. The answer streams
//! stdout/stderr frames and ends with one exit frame.
//!
//! Every command runs in its own process group (with a TTY: its own session, the terminal
//! as controlling terminal), and the group is killed with SIGKILL when the client goes away
//! before the command has exited: a hung-up connection, an aborted request body, or hyper
//! dropping the answer. After the command exits, output still in the pipes is forwarded for
//! up to [`DRAIN_AFTER_EXIT`]; background processes that keep the pipes open past that are
//! left running, as a shell would.
//!
//! Once the answer has ended, the rest of the request body is still read (and dropped) until
//! the client ends it or [`INPUT_AFTER_END`] passes: closing the connection while the client
//! is still writing its input would make its write fail, and an HTTP client that fails a
//! write gives up reading too, losing the exit frame it had not read yet (through
//! Firecracker's vsock, the closing guest even drops bytes still on their way to the host).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use banger_agent_protocol::frame::{Frame, FrameDecoder, FrameError, FrameKind};
use banger_agent_protocol::protocol::{ErrorBody, ExecRequest, ExitStatus, TtySize};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::account::{Account, AccountError};
use super::fdio::FdStream;

/// How long output is still forwarded after the command exited.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How long the rest of the request body is read after the answer ended.
pub const INPUT_AFTER_END: Duration = Duration::from_secs(10);

/// Bytes read from the command per frame.
const CHUNK: usize = 64 * 1024;

/// The `PATH` commands get unless the request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The request could not be turned into a running command; answered before streaming starts.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the exec request body must start with a start frame, got {0:?}")]
    NoStart(Option<FrameKind>),

    #[error(transparent)]
    Frame(#[from] FrameError),

    #[error("the exec start frame is not a valid request: {0}")]
    BadRequest(#[source] serde_json::Error),

    #[error("argv is empty: name the program to run")]
    EmptyArgv,

    #[error("the working directory {0} does not exist in the guest")]
    NoCwd(String),

    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },

    #[error(transparent)]
    User(#[from] AccountError),

    #[error("cannot set up a terminal: {0}")]
    Pty(#[source] io::Error),

    #[error("the client went away before sending the start frame")]
    Hangup,
}

impl ExecError {
    /// HTTP status, error code and hint for the answer.
    pub fn http(&self) -> (u16, &'static str, Option<String>) {
        match self {
            ExecError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => (
                404,
                "command_not_found",
                Some(format!(
                    "the program is looked up in PATH ({DEFAULT_PATH} unless the request sets \
                     PATH); give its full path or install it in the image"
                )),
            ),
            ExecError::Spawn { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                (
                    403,
                    "permission_denied",
                    Some("is the file executable?".into()),
                )
            }
            ExecError::Spawn { .. } | ExecError::Pty(_) => (500, "exec_failed", None),
            ExecError::NoCwd(_) => (400, "no_such_directory", None),
            ExecError::User(AccountError::Unknown(_)) => (
                400,
                "no_such_user",
                Some("name a user of the guest's /etc/passwd, or a numeric uid there".into()),
            ),
            ExecError::User(_) => (500, "exec_failed", None),
            _ => (400, "bad_exec_request", None),
        }
    }
}

/// Frames of an exec request body.
pub struct FrameInput {
    body: Incoming,
    decoder: FrameDecoder,
    ended: bool,
}

/// Why the input stopped.
#[derive(Debug)]
enum InputError {
    Frame(FrameError),
    /// The body broke off: the client hung up.
    Hangup,
}

impl FrameInput {
    pub fn new(body: Incoming) -> Self {
        FrameInput {
            body,
            decoder: FrameDecoder::new(),
            ended: false,
        }
    }

    async fn next(&mut self) -> Result<Option<Frame>, InputError> {
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(InputError::Frame)? {
                return Ok(Some(frame));
            }
            if self.ended {
                self.decoder.finish().map_err(InputError::Frame)?;
                return Ok(None);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                    }
                }
                Some(Err(_)) => return Err(InputError::Hangup),
                None => self.ended = true,
            }
        }
    }

    /// Reads and drops the rest of the body until the client ends it, hangs up, or
    /// [`INPUT_AFTER_END`] passes, so the connection stays up while the client writes.
    async fn drain(mut self) {
        if self.ended {
            return;
        }
        let _ = tokio::time::timeout(INPUT_AFTER_END, async {
            while let Some(Ok(_)) = self.body.frame().await {}
        })
        .await;
    }
}

/// Reads the start frame and starts the command.
pub async fn start(mut input: FrameInput) -> Result<Session, ExecError> {
    let first = match input.next().await {
        Ok(first) => first,
        Err(InputError::Frame(e)) => return Err(e.into()),
        Err(InputError::Hangup) => return Err(ExecError::Hangup),
    };
    let request = match first {
        Some(frame) if frame.kind == FrameKind::Start => {
            serde_json::from_slice::<ExecRequest>(&frame.payload).map_err(ExecError::BadRequest)?
        }
        other => return Err(ExecError::NoStart(other.map(|f| f.kind))),
    };
    let (child, io) = spawn(&request)?;
    Ok(Session { child, io, input })
}

/// Who runs the request: its user from the guest's account files, root when it names none.
fn account(request: &ExecRequest) -> Result<Account, ExecError> {
    match &request.user {
        Some(user) => Ok(Account::lookup(Path::new("/etc"), user)?),
        None => Ok(Account::root()),
    }
}

/// The environment a command starts with: a clean, predictable base (the agent's own
/// environment is its init's business) for the account it runs as, then what the request
/// sets.
pub fn environment(request: &ExecRequest, account: &Account) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("PATH", DEFAULT_PATH),
        ("HOME", &account.home),
        ("USER", &account.name),
        ("LOGNAME", &account.name),
        ("SHELL", &account.shell),
        ("LANG", "C.UTF-8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if request.tty.is_some() {
        env.insert("TERM".into(), "xterm-256color".into());
    }
    env.extend(request.env.clone());
    env
}

/// Where the command starts: the request's directory, else the user's home (`/root`, the
/// work disk, for root), else `/`.
fn working_dir(request: &ExecRequest, account: &Account) -> Result<String, ExecError> {
    match &request.cwd {
        Some(cwd) if Path::new(cwd).is_dir() => Ok(cwd.clone()),
        Some(cwd) => Err(ExecError::NoCwd(cwd.clone())),
        None if Path::new(&account.home).is_dir() => Ok(account.home.clone()),
        None => Ok("/".into()),
    }
}

/// The command's side of the conversation.
enum SessionIo {
    Pipes {
        stdin: Option<tokio::process::ChildStdin>,
        stdout: tokio::process::ChildStdout,
        stderr: tokio::process::ChildStderr,
    },
    Tty {
        master: FdStream,
    },
}

/// A started command.
pub struct Session {
    child: Child,
    io: SessionIo,
    input: FrameInput,
}

fn spawn(request: &ExecRequest) -> Result<(Child, SessionIo), ExecError> {
    let program = request.argv.first().ok_or(ExecError::EmptyArgv)?;
    let account = account(request)?;
    let cwd = working_dir(request, &account)?;
    let mut command = Command::new(program);
    command
        .args(&request.argv[1..])
        .env_clear()
        .envs(environment(request, &account))
        .current_dir(&cwd);
    if request.user.is_some() {
        become_user(&mut command, &account);
    }
    let spawn_error = |source| ExecError::Spawn {
        program: program.clone(),
        source,
    };
    match request.tty {
        None => {
            command
                .stdin(if request.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            let mut child = command.spawn().map_err(spawn_error)?;
            let io = SessionIo::Pipes {
                stdin: child.stdin.take(),
                stdout: child
                    .stdout
                    .take()
                    .ok_or_else(|| spawn_error(missing("stdout")))?,
                stderr: child
                    .stderr
                    .take()
                    .ok_or_else(|| spawn_error(missing("stderr")))?,
            };
            Ok((child, io))
        }
        Some(size) => {
            let (master, slave) = open_pty(size).map_err(ExecError::Pty)?;
            let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(ExecError::Pty);
            command
                .stdin(stdio(&slave)?)
                .stdout(stdio(&slave)?)
                .stderr(stdio(&slave)?);
            // SAFETY: the closure runs in the child between fork and exec and only makes
            // async-signal-safe system calls (setsid, ioctl).
            unsafe {
                command.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = command.spawn().map_err(spawn_error)?;
            // Our copies of the terminal's slave side must be gone, or reading the master
            // would never see the end once the command exits.
            drop(slave);
            let master = FdStream::new(master).map_err(ExecError::Pty)?;
            Ok((child, SessionIo::Tty { master }))
        }
    }
}

/// Drops the child to `account` between fork and exec. Done by hand rather than with
/// `Command::uid`/`gid` because those keep root's supplementary groups unless std decides
/// otherwise, and the account's own groups must be set before the uid changes.
fn become_user(command: &mut Command, account: &Account) {
    let (uid, gid) = (account.uid, account.gid);
    let groups: Vec<libc::gid_t> = account.groups.clone();
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (setgroups, setgid, setuid) on memory allocated before
    // the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setgid(gid) < 0
                || libc::setuid(uid) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn missing(what: &str) -> io::Error {
    io::Error::other(format!("the child's {what} pipe is missing"))
}

/// A new pseudo-terminal of the given size: (master, slave).
fn open_pty(size: TtySize) -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    set_size(&master, size)?;
    Ok((master, slave))
}

fn set_size(master: impl AsFd, size: TtySize) -> io::Result<()> {
    let winsize = rustix::termios::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(master, winsize)?)
}

/// Kills the command's process group when dropped while armed: whatever ends the session
/// early (hang-up, an aborted task, a panic) takes the command with it.
struct GroupKiller {
    pgid: Option<i32>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: kill(2) on a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

type Sink = mpsc::Sender<Result<Bytes, io::Error>>;

/// How the output side ended.
enum OutputEnd {
    /// All output read (EOF on every stream).
    Eof,
    /// Nobody receives the answer any more.
    Hangup,
}

impl Session {
    /// Streams the command until it exits (sending the exit frame) or the client goes away
    /// (killing its process group).
    /// Runs the command to its end, sending an alive frame every `heartbeat` meanwhile.
    pub async fn run(self, out: Sink, heartbeat: Duration) {
        let Session {
            mut child,
            io,
            mut input,
        } = self;
        let mut killer = GroupKiller {
            pgid: child.id().and_then(|pid| i32::try_from(pid).ok()),
        };

        let (mut input_writer, output): (Option<InputWriter>, _) = match io {
            SessionIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => (
                stdin.map(|s| InputWriter::Pipe(Box::new(s))),
                Output::Pipes(stdout, stderr),
            ),
            SessionIo::Tty { master } => {
                let master = std::sync::Arc::new(master);
                (Some(InputWriter::Tty(master.clone())), Output::Tty(master))
            }
        };

        // The output is pumped by a task of its own: writing a large input to a command that
        // echoes it (`cat`) must not stop its output from being read, or both pipes fill and
        // the command, the agent and the client wait on each other for ever.
        let mut output = tokio::spawn(output.pump(out.clone()));
        let mut output_done = false;
        // Whether the pump task ended (its handle must not be polled again).
        let mut pump_ended = false;
        let mut input_done = false;
        let mut status: Option<std::process::ExitStatus> = None;
        let drain = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain);
        // The alive frames (HEARTBEAT_HEADER): skipped, not queued, when the answer is full,
        // since then the client is not waiting on the agent but the agent on the client.
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                frame = input.next(), if !input_done => match frame {
                    Ok(Some(frame)) => {
                        if let Err(e) = apply_input(&mut input_writer, &frame, killer.pgid).await {
                            send_error(&out, "bad_exec_input", &e.to_string()).await;
                            killer.kill();
                            break;
                        }
                    }
                    // A clean end of the body closes standard input; the command goes on.
                    Ok(None) => {
                        input_done = true;
                        input_writer = None;
                    }
                    Err(InputError::Frame(e)) => {
                        send_error(&out, "bad_exec_input", &e.to_string()).await;
                        killer.kill();
                        break;
                    }
                    Err(InputError::Hangup) => {
                        killer.kill();
                        break;
                    }
                },
                end = &mut output, if !pump_ended => match end {
                    Ok(OutputEnd::Eof) => {
                        pump_ended = true;
                        output_done = true;
                    }
                    Ok(OutputEnd::Hangup) | Err(_) => {
                        killer.kill();
                        break;
                    }
                },
                exited = child.wait(), if status.is_none() => match exited {
                    Ok(s) => {
                        status = Some(s);
                        drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                    }
                    Err(e) => {
                        send_error(&out, "exec_failed", &format!("waiting for the command failed: {e}")).await;
                        killer.kill();
                        break;
                    }
                },
                () = &mut drain => output_done = true,
                _ = heartbeat.tick() => {
                    let _ = out.try_send(Ok(Frame::new(FrameKind::Alive, Bytes::new()).encode()));
                }
                () = out.closed() => {
                    killer.kill();
                    break;
                }
            }
            if let (Some(s), true) = (status, output_done) {
                let exit = ExitStatus {
                    code: s.code(),
                    signal: s.signal(),
                };
                let payload = serde_json::to_vec(&exit).unwrap_or_default();
                // After the drain deadline the pump may still wait on pipes a background
                // process holds: stop it, and be sure it sent its last frame before the exit.
                if !pump_ended {
                    output.abort();
                    let _ = (&mut output).await;
                }
                killer.disarm();
                let _ = out
                    .send(Ok(Frame::new(FrameKind::Exit, payload).encode()))
                    .await;
                // The answer ends here; the connection stays while the client writes.
                drop(out);
                input.drain().await;
                return;
            }
        }
        // Ended early: the group is dead; collect the command so it leaves no zombie.
        output.abort();
        drop(killer);
        drop(out);
        let _ = child.wait().await;
        input.drain().await;
    }
}

enum InputWriter {
    Pipe(Box<tokio::process::ChildStdin>),
    Tty(std::sync::Arc<FdStream>),
}

async fn apply_input(
    writer: &mut Option<InputWriter>,
    frame: &Frame,
    pgid: Option<i32>,
) -> Result<(), FrameError> {
    match frame.kind {
        FrameKind::Stdin => {
            let result = match writer {
                Some(InputWriter::Pipe(pipe)) => pipe.write_all(&frame.payload).await,
                Some(InputWriter::Tty(master)) => write_all_fd(master, &frame.payload).await,
                None => Ok(()),
            };
            // The command closed its input (or exited): later input has nowhere to go.
            if result.is_err() {
                *writer = None;
            }
        }
        FrameKind::StdinEof => {
            // Closing a terminal's input would hang the terminal up; it ignores EOF frames
            // (send ^D as data instead).
            if matches!(writer, Some(InputWriter::Pipe(_))) {
                *writer = None;
            }
        }
        FrameKind::Resize => {
            let (rows, cols) = frame.resize_size()?;
            if let Some(InputWriter::Tty(master)) = writer {
                let _ = set_size(master.fd(), TtySize { rows, cols });
            }
        }
        FrameKind::Signal => {
            let signal = frame.signal_number()?;
            // With a terminal the signal goes where the terminal's own ^C would: its
            // foreground process group (a shell's running job), else the session.
            let foreground = match writer {
                Some(InputWriter::Tty(master)) => rustix::termios::tcgetpgrp(master.fd())
                    .ok()
                    .map(|p| p.as_raw_nonzero().get()),
                _ => None,
            };
            if let Some(group) = foreground.or(pgid) {
                // SAFETY: kill(2) on a negative pid signals that process group; no memory
                // involved.
                unsafe {
                    libc::kill(-group, signal);
                }
            }
        }
        // A second start frame, or a frame only the agent sends.
        other => return Err(FrameError::Unexpected(other)),
    }
    Ok(())
}

async fn write_all_fd(master: &FdStream, mut data: &[u8]) -> io::Result<()> {
    // `&FdStream` is not `AsyncWrite`; the descriptor is shared with the output reader, so
    // write through a borrowed handle.
    let mut handle = SharedFd(master);
    while !data.is_empty() {
        let n = handle.write(data).await?;
        data = &data[n..];
    }
    Ok(())
}

/// A shared reference to an [`FdStream`] usable as a reader or writer: the terminal master
/// is read by the output pump and written by the input side at the same time.
struct SharedFd<'a>(&'a FdStream);

impl AsyncRead for SharedFd<'_> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.0.poll_read_shared(cx, buf)
    }
}

impl AsyncWrite for SharedFd<'_> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.0.poll_write_shared(cx, data)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

enum Output {
    Pipes(tokio::process::ChildStdout, tokio::process::ChildStderr),
    Tty(std::sync::Arc<FdStream>),
}

impl Output {
    async fn pump(self, out: Sink) -> OutputEnd {
        match self {
            Output::Pipes(stdout, stderr) => {
                let (a, b) = tokio::join!(
                    pump(stdout, FrameKind::Stdout, &out),
                    pump(stderr, FrameKind::Stderr, &out)
                );
                match (a, b) {
                    (OutputEnd::Eof, OutputEnd::Eof) => OutputEnd::Eof,
                    _ => OutputEnd::Hangup,
                }
            }
            Output::Tty(master) => pump(SharedFd(&master), FrameKind::Stdout, &out).await,
        }
    }
}

/// Forwards one stream as frames of `kind` until EOF. A read error is the end of the stream
/// (a terminal whose last user closed it answers EIO).
async fn pump(mut reader: impl AsyncRead + Unpin, kind: FrameKind, out: &Sink) -> OutputEnd {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return OutputEnd::Eof,
            Ok(n) => n,
        };
        let frame = Frame::new(kind, Bytes::copy_from_slice(&buf[..n])).encode();
        if out.send(Ok(frame)).await.is_err() {
            return OutputEnd::Hangup;
        }
    }
}

async fn send_error(out: &Sink, code: &str, message: &str) {
    let body = ErrorBody {
        code: code.to_owned(),
        message: message.to_owned(),
        hint: None,
    };
    let payload = serde_json::to_vec(&body).unwrap_or_default();
    let _ = out
        .send(Ok(Frame::new(FrameKind::Error, payload).encode()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_clean_and_the_request_wins() {
        let mut request = ExecRequest::new(["env"]);
        request.env.insert("PATH".into(), "/opt/bin".into());
        request.env.insert("FOO".into(), "bar".into());
        let env = environment(&request, &Account::root());
        assert_eq!(env["PATH"], "/opt/bin");
        assert_eq!(env["FOO"], "bar");
        assert_eq!(env["HOME"], "/root");
        assert!(!env.contains_key("TERM"));

        request.tty = Some(TtySize { rows: 24, cols: 80 });
        assert_eq!(
            environment(&request, &Account::root())["TERM"],
            "xterm-256color"
        );
    }

    #[test]
    fn spawn_errors_map_to_statuses() {
        let not_found = ExecError::Spawn {
            program: "nope".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(not_found.http().0, 404);
        assert_eq!(not_found.http().1, "command_not_found");
        assert_eq!(ExecError::EmptyArgv.http().0, 400);
        assert_eq!(ExecError::NoCwd("/x".into()).http().1, "no_such_directory");
    }
}

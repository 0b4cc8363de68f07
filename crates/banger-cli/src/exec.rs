//! `banger vm exec`: one command in a VM with this process's standard streams attached, the
//! way `docker exec` attaches them. It owns the client side of bangerd's framed exec stream
//! (one HTTP/1.1 request whose body carries input frames while the answer carries output
//! frames), the local terminal's raw mode for `-t`, and the relaying of signals and window
//! sizes.
//!
//! Every stream is relayed in bounded chunks through bounded channels: standard input is read
//! by a thread of its own (a blocking read of a terminal must never hold up the runtime, nor
//! keep the process from exiting), and output is written by another, so a command that reads
//! or writes gigabytes runs in a few hundred KiB here.

use std::io::{IsTerminal, Read, Write};

use banger_agent_protocol::frame::{Frame, FrameDecoder, FrameKind};
use banger_agent_protocol::protocol::{ErrorBody, ExecRequest, ExitStatus, TtySize};
use banger_api::{ApiError, ErrorCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::VmCommand;
use crate::daemon::Daemon;
use crate::exit::Failure;

/// Bytes read from standard input per frame (the agent's own chunk size).
const CHUNK: usize = 64 * 1024;

/// Chunks in flight on each local channel: enough to keep the pipe busy, few enough that a
/// slow side holds the other back instead of filling memory.
const DEPTH: usize = 4;

/// Runs `vm exec`; the result is the command's exit code (128 + N when signal N ended it).
pub async fn run(command: &VmCommand) -> Result<i32, Failure> {
    let VmCommand::Exec {
        name,
        interactive,
        tty,
        env,
        workdir,
        user,
        command,
    } = command
    else {
        return Err(Failure::internal("not vm exec"));
    };
    let stdin_is_terminal = std::io::stdin().is_terminal();
    // Like ssh: input that is not a terminal (a pipe, a file) is the command's; a terminal's
    // is passed only when asked for (-i), so `vm exec dev -- make` in a shell does not keep
    // reading the keyboard.
    let pass_stdin = *interactive || !stdin_is_terminal;
    let mut request = ExecRequest::new(command.iter().cloned());
    request.env = env.iter().cloned().collect();
    request.cwd = workdir.clone();
    request.user = user.clone();
    request.stdin = pass_stdin;
    request.tty = tty.then(terminal_size);

    let daemon = Daemon::locate()?;
    // A plain call first: it starts or replaces bangerd as needed and says clearly when the
    // VM does not exist, before a stream that cannot be sent twice is set up.
    daemon
        .call(async |client| client.get_vm(name).await)
        .await?;

    let (frames, body) = mpsc::channel::<Bytes>(DEPTH);
    let start = serde_json::to_vec(&request).map_err(|e| Failure::internal(e.to_string()))?;
    // The channel is empty: this does not wait.
    let _ = frames
        .send(Frame::new(FrameKind::Start, start).encode())
        .await;
    let response = daemon.client().exec_frames(name, body).await?;

    // Raw mode only once the command runs: an error before leaves the terminal as it was.
    let _raw = (request.tty.is_some() && pass_stdin && stdin_is_terminal)
        .then(RawMode::enable)
        .transpose()?;

    let input = tokio::spawn(relay_input(
        frames,
        pass_stdin,
        request.tty.is_some() && std::io::stdout().is_terminal(),
    ));
    let result = relay_output(name, response.into_body()).await;
    input.abort();
    result
}

/// The local terminal's size, or 24x80 when there is none.
fn terminal_size() -> TtySize {
    match crossterm::terminal::size() {
        Ok((cols, rows)) if cols > 0 && rows > 0 => TtySize { rows, cols },
        _ => TtySize { rows: 24, cols: 80 },
    }
}

/// Keeps the local terminal in raw mode (keys, Ctrl-C included, go to the guest's terminal
/// as bytes) and restores it when dropped: on the normal exit, on an error and while a panic
/// unwinds. A panic message is printed before unwinding, so the hook restores it first.
struct RawMode;

impl RawMode {
    fn enable() -> Result<RawMode, Failure> {
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| Failure::internal(format!("cannot put the terminal in raw mode: {e}")))?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = crossterm::terminal::disable_raw_mode();
            previous(info);
        }));
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Sends standard input (when passed), window sizes (`resize`) and the signals this process
/// gets as frames, until the session ends and this task is aborted.
async fn relay_input(frames: mpsc::Sender<Bytes>, pass_stdin: bool, resize: bool) {
    // Without input the guest's stdin is /dev/null already, and the (closed) channel is never
    // polled.
    let mut stdin_open = pass_stdin;
    let mut stdin = if pass_stdin {
        read_stdin()
    } else {
        mpsc::channel(1).1
    };
    let (Ok(mut int), Ok(mut term), Ok(mut hup), Ok(mut winch)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::window_change()),
    ) else {
        return;
    };
    loop {
        let frame = tokio::select! {
            chunk = stdin.recv(), if stdin_open => match chunk {
                Some(data) => Frame::new(FrameKind::Stdin, data),
                None => {
                    stdin_open = false;
                    Frame::new(FrameKind::StdinEof, Bytes::new())
                }
            },
            _ = int.recv() => Frame::signal("INT"),
            _ = term.recv() => Frame::signal("TERM"),
            _ = hup.recv() => Frame::signal("HUP"),
            _ = winch.recv(), if resize => {
                let size = terminal_size();
                Frame::resize(size.rows, size.cols)
            }
        };
        if frames.send(frame.encode()).await.is_err() {
            return;
        }
    }
}

/// Standard input in chunks, read by a thread: the channel closes at EOF (or a read error).
/// The thread is never joined; a read of a terminal can block past the session's end, and
/// the process exits without waiting for it.
fn read_stdin() -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(DEPTH);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                return;
            }
        }
    });
    rx
}

/// Which local stream a chunk of output goes to.
enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// Writes output on a thread of its own, so a slow reader of banger's stdout holds back the
/// command (through the bounded channel) without stalling signals and input.
fn write_output() -> (mpsc::Sender<Output>, std::thread::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Output>(DEPTH);
    let writer = std::thread::spawn(move || {
        let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
        let mut stdout_open = true;
        while let Some(chunk) = rx.blocking_recv() {
            // A closed stdout (`| head`) drops the rest, as a pipe does; the command's exit
            // still decides banger's.
            match chunk {
                Output::Stdout(data) if stdout_open => {
                    stdout_open = stdout
                        .write_all(&data)
                        .and_then(|()| stdout.flush())
                        .is_ok();
                }
                Output::Stdout(_) => {}
                Output::Stderr(data) => {
                    let _ = stderr.write_all(&data).and_then(|()| stderr.flush());
                }
            }
        }
    });
    (tx, writer)
}

/// Reads output frames until the exit frame, whose code it returns once everything before it
/// is written.
async fn relay_output(name: &str, mut body: hyper::body::Incoming) -> Result<i32, Failure> {
    let broken = |what: String| {
        Failure::new(
            ApiError::new(ErrorCode::Unavailable, what)
                .with_hint(format!("`banger vm logs {name}` shows the guest console")),
        )
    };
    let (out, writer) = write_output();
    let mut decoder = FrameDecoder::new();
    let result = 'frames: loop {
        while let Some(frame) = decoder
            .next_frame()
            .map_err(|e| broken(format!("the command's output stream broke: {e}")))?
        {
            let sent = match frame.kind {
                FrameKind::Stdout => out.send(Output::Stdout(frame.payload)).await,
                FrameKind::Stderr => out.send(Output::Stderr(frame.payload)).await,
                FrameKind::Exit => {
                    break 'frames serde_json::from_slice::<ExitStatus>(&frame.payload)
                        .map(|status| status.shell_code())
                        .map_err(|e| broken(format!("unreadable exit status: {e}")));
                }
                FrameKind::Error => {
                    let message = serde_json::from_slice::<ErrorBody>(&frame.payload)
                        .map(|body| body.message)
                        .unwrap_or_else(|_| String::from_utf8_lossy(&frame.payload).into_owned());
                    break 'frames Err(broken(message));
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                break 'frames Err(Failure::internal("the output writer stopped"));
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    decoder.push(&data);
                }
            }
            Some(Err(e)) => break Err(broken(format!("the connection to bangerd broke: {e}"))),
            None => {
                break Err(broken(
                    "the command's output ended without its exit status".into(),
                ));
            }
        }
    };
    drop(out);
    // Everything the command wrote is out before banger exits with its code.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    result
}

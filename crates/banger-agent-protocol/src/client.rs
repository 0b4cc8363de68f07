//! The host's client of the guest agent. It speaks HTTP/1.1 over whatever stream a
//! [`Connect`] gives it, one connection per call, and attaches the VM's token to every
//! request:
//!
//! - Firecracker: a Unix stream through the VM's hybrid-vsock socket, through
//!   [`ConnectWith`] around `banger_vmm::firecracker::hybrid_vsock::connect` (see
//!   `docs/guest-agent.md`);
//! - TCP to the VM's private IP ([`Tcp`]), where vsock is unavailable (QEMU here);
//! - anything else that is `AsyncRead + AsyncWrite` (tests use loopback TCP and in-memory pipes).
//!
//! The client never creates processes; it only moves bytes.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::archive::{self, ArchiveError, Owners, TopName, Unpacked};
use crate::body::{CHUNK, ChannelBody, ChannelReader, ChannelWriter};
use crate::frame::{Frame, FrameDecoder, FrameError, FrameKind};
use crate::protocol::{
    self, CopyInSummary, ErrorBody, ExecRequest, ExitStatus, Health, IdentityApplied,
    IdentityRequest, ListeningPort, PathStat, ShutdownAccepted, Stats,
};

/// Opens a fresh byte stream to the agent.
pub trait Connect: Send + Sync {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn connect(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Where it connects, for error messages (`tcp 172.30.0.2:1024`).
    fn describe(&self) -> String;
}

/// TCP to the agent's `--listen` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp(pub SocketAddr);

impl Connect for Tcp {
    type Stream = TcpStream;

    async fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(self.0).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn describe(&self) -> String {
        format!("tcp {}", self.0)
    }
}

/// Any async function that produces a stream, e.g. Firecracker's hybrid-vsock connector.
#[derive(Clone)]
pub struct ConnectWith<F> {
    what: String,
    connect: F,
}

impl<F> ConnectWith<F> {
    /// `what` names the transport in error messages.
    pub fn new(what: impl Into<String>, connect: F) -> Self {
        ConnectWith {
            what: what.into(),
            connect,
        }
    }
}

impl<F, Fut, S, E> Connect for ConnectWith<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<S, E>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    type Stream = S;

    async fn connect(&self) -> io::Result<S> {
        (self.connect)().await.map_err(io::Error::other)
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// A call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the guest agent over {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },

    /// The agent answered with an error.
    #[error("the guest agent refused the request ({status}): {}", body.message)]
    Api { status: u16, body: ErrorBody },

    /// The agent reported a failure in the middle of a stream.
    #[error("the guest agent failed: {}", .0.message)]
    Failed(ErrorBody),

    /// The conversation broke: the agent or the guest went away, or sent garbage.
    #[error("talking to the guest agent failed: {0}")]
    Protocol(String),

    /// The local side of a file copy failed.
    #[error(transparent)]
    Local(#[from] ArchiveError),

    /// Nothing came back in time: a guest that is hung, out of memory or not booted yet, or a
    /// transport that lost its way (a VMM that accepts the connection but never reaches the
    /// guest). Every call ends, with this, instead of waiting forever.
    #[error("the guest agent over {target} did not {waited_for} within {}s", after.as_secs_f32())]
    Timeout {
        target: String,
        waited_for: &'static str,
        after: Duration,
    },
}

impl AgentError {
    /// The agent's error code, when it answered with one (`unauthorized`, `not_found`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            AgentError::Api { body, .. } | AgentError::Failed(body) => Some(&body.code),
            _ => None,
        }
    }

    /// What the user can do about it, when the agent said.
    pub fn hint(&self) -> Option<&str> {
        match self {
            AgentError::Api { body, .. } | AgentError::Failed(body) => body.hint.as_deref(),
            _ => None,
        }
    }

    fn protocol(e: impl std::fmt::Display) -> Self {
        AgentError::Protocol(e.to_string())
    }
}

type RequestBody = UnsyncBoxBody<Bytes, io::Error>;

/// Aborts the connection's task when dropped: dropping a streamed call hangs up, and the
/// agent kills what it was running for it.
struct Connection(JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a connection (for Firecracker: through the hybrid vsock, until the guest accepts)
/// may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent may take to answer a request's head once it has the whole request:
/// its answers start at once (an exec's head comes when the command has started), so a
/// longer silence means the guest is not running it.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a running command's stream may stay silent, not even an alive frame, before the
/// guest counts as gone: twelve of the agent's heartbeats
/// ([`HEARTBEAT_EVERY`](crate::protocol::HEARTBEAT_EVERY)) missed in a row. Only for agents
/// that announce the heartbeat.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// The client of one VM's agent.
#[derive(Clone)]
pub struct AgentClient<C> {
    connector: C,
    token: String,
    connect_timeout: Duration,
    answer_timeout: Duration,
    silence_limit: Duration,
}

/// Whether a request's answer is bounded by [`AgentClient::answer_timeout`]: an upload's answer
/// comes only after the whole upload, however long that takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Prompt,
    AfterUpload,
}

impl<C> std::fmt::Debug for AgentClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentClient { .. }")
    }
}

impl<C: Connect> AgentClient<C> {
    pub fn new(connector: C, token: impl Into<String>) -> Self {
        AgentClient {
            connector,
            token: token.into(),
            connect_timeout: CONNECT_TIMEOUT,
            answer_timeout: ANSWER_TIMEOUT,
            silence_limit: SILENCE_LIMIT,
        }
    }

    /// Other deadlines than [`CONNECT_TIMEOUT`] and [`ANSWER_TIMEOUT`].
    pub fn with_timeouts(mut self, connect: Duration, answer: Duration) -> Self {
        self.connect_timeout = connect;
        self.answer_timeout = answer;
        self
    }

    /// Another limit than [`SILENCE_LIMIT`] on a running command's silent stream.
    pub fn with_silence_limit(mut self, limit: Duration) -> Self {
        self.silence_limit = limit;
        self
    }

    /// `GET /v1/healthz`.
    pub async fn health(&self) -> Result<Health, AgentError> {
        self.get_json("/v1/healthz").await
    }

    /// `GET /v1/ports`.
    pub async fn ports(&self) -> Result<Vec<ListeningPort>, AgentError> {
        self.get_json("/v1/ports").await
    }

    /// `GET /v1/stats`.
    pub async fn stats(&self) -> Result<Stats, AgentError> {
        self.get_json("/v1/stats").await
    }

    /// `POST /v1/shutdown`: the guest powers off shortly after answering.
    pub async fn shutdown(&self) -> Result<ShutdownAccepted, AgentError> {
        let (response, _conn) = self
            .send(Method::POST, "/v1/shutdown", empty(), Answer::Prompt)
            .await?;
        read_json(response).await
    }

    /// `POST /v1/identity`: a VM restored from another VM's snapshot takes on its own identity
    /// (files, hostname, network, SSH host key, token, clock, RNG). Call it with the token the
    /// guest still has (the source's); when `request` carries a new token, later calls need a
    /// client with that one.
    pub async fn apply_identity(
        &self,
        request: &IdentityRequest,
    ) -> Result<IdentityApplied, AgentError> {
        let body = serde_json::to_vec(request).map_err(AgentError::protocol)?;
        let body = http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync();
        let (response, _conn) = self
            .send(Method::POST, "/v1/identity", body, Answer::Prompt)
            .await?;
        read_json(response).await
    }

    /// `POST /v1/exec`: starts `request` and returns the live session. Set `request.stdin`
    /// to send input through [`ExecSession::input`].
    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecSession, AgentError> {
        let (tx, body) = ChannelBody::channel();
        let start = serde_json::to_vec(request).map_err(AgentError::protocol)?;
        // The channel has room: this does not wait.
        let _ = tx
            .send(Ok(Frame::new(FrameKind::Start, start).encode()))
            .await;
        let (response, conn) = self
            .send(
                Method::POST,
                "/v1/exec",
                body.boxed_unsync(),
                Answer::Prompt,
            )
            .await?;
        // An agent that announces its heartbeat is held to the silence limit.
        let heartbeat = response
            .headers()
            .get(crate::protocol::HEARTBEAT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let silence = heartbeat.map(|_| self.silence_limit);
        Ok(ExecSession {
            input: ExecInput { tx: Some(tx) },
            events: ExecEvents {
                body: response.into_body(),
                decoder: FrameDecoder::new(),
                finished: false,
                silence,
                target: self.connector.describe(),
                _conn: conn,
            },
        })
    }

    /// Runs `request` to completion and collects its output; `stdin`, when given, is sent as
    /// its whole standard input.
    pub async fn exec_output(
        &self,
        request: &ExecRequest,
        stdin: Option<Vec<u8>>,
    ) -> Result<ExecOutput, AgentError> {
        let mut request = request.clone();
        request.stdin = stdin.is_some();
        let session = self.exec(&request).await?;
        let (mut input, mut events) = session.split();
        // Input is written alongside reading output, so neither side's buffers can fill up
        // and stall the other.
        let writer = tokio::spawn(async move {
            if let Some(data) = stdin {
                let _ = input.write(&data).await;
                let _ = input.close().await;
            }
            input
        });
        let mut output = ExecOutput::default();
        let status = loop {
            match events.next().await? {
                Some(ExecEvent::Stdout(b)) => output.stdout.extend_from_slice(&b),
                Some(ExecEvent::Stderr(b)) => output.stderr.extend_from_slice(&b),
                Some(ExecEvent::Exit(status)) => break status,
                None => unreachable!("ExecEvents::next ends with an exit or an error"),
            }
        };
        writer.abort();
        output.status = status;
        Ok(output)
    }

    /// `GET /v1/stat?path=P`: what the guest path is (a missing path is an answer, not an
    /// error).
    pub async fn stat(&self, path: &str) -> Result<PathStat, AgentError> {
        self.get_json(&format!("/v1/stat?{}", protocol::path_query(path)))
            .await
    }

    /// `PUT /v1/files?path=DIR`: extracts the tar archive read from `tar` into the guest
    /// directory `dir` (created when missing), the files owned by root.
    pub async fn copy_in<R>(&self, dir: &str, tar: R) -> Result<CopyInSummary, AgentError>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.copy_in_with(dir, Owners::Extractor, tar).await
    }

    /// [`Self::copy_in`] with the extracted files' owners chosen by `owners`.
    pub async fn copy_in_with<R>(
        &self,
        dir: &str,
        owners: Owners,
        mut tar: R,
    ) -> Result<CopyInSummary, AgentError>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let (tx, body) = ChannelBody::channel();
        let feeder = tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match tar.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        if tx
                            .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        let shown = e.to_string();
                        let _ = tx.send(Err(e)).await;
                        return Err(shown);
                    }
                }
            }
        });
        let result = self.put_files(dir, owners, body).await;
        if let Ok(Err(local)) = feeder.await {
            return Err(AgentError::Protocol(format!(
                "reading the archive to send failed: {local}"
            )));
        }
        result
    }

    /// Copies the host file or directory `local` into the guest directory `dir`, under its own
    /// name (`/home/me/src` into `/root` gives `/root/src`).
    pub async fn copy_in_path(&self, local: &Path, dir: &str) -> Result<CopyInSummary, AgentError> {
        let (tx, body) = ChannelBody::channel();
        let local = local.to_owned();
        let packer = tokio::task::spawn_blocking(move || {
            let mut writer = ChannelWriter::new(tx.clone());
            let result = archive::pack(&local, &mut writer).and_then(|w| {
                std::io::Write::flush(w).map_err(|source| ArchiveError::Io {
                    what: "sending the archive".into(),
                    source,
                })
            });
            if let Err(e) = &result {
                // Break the upload so the agent does not take a short archive for a whole one.
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
            result
        });
        let result = self.put_files(dir, Owners::Extractor, body).await;
        match packer.await {
            // A local failure is the real story; the agent's complaint about the broken
            // upload is a consequence.
            Ok(Err(e)) if !matches!(&e, ArchiveError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe) => {
                Err(e.into())
            }
            _ => result,
        }
    }

    async fn put_files(
        &self,
        dir: &str,
        owners: Owners,
        body: ChannelBody,
    ) -> Result<CopyInSummary, AgentError> {
        let mut uri = format!("/v1/files?{}", protocol::path_query(dir));
        if owners == Owners::Archive {
            uri.push_str(&format!(
                "&{}",
                protocol::param(protocol::OWNERS_PARAM, "archive")
            ));
        }
        let (response, _conn) = self
            .send(Method::PUT, &uri, body.boxed_unsync(), Answer::AfterUpload)
            .await?;
        read_json(response).await
    }

    /// `GET /v1/files?path=P`: a tar archive of the guest file or directory `path`, entries
    /// named from its own name. Read it with [`archive::unpack`], or use [`Self::copy_out_to`].
    pub async fn copy_out(&self, path: &str) -> Result<CopyOut, AgentError> {
        self.copy_out_as(path, None).await
    }

    /// [`Self::copy_out`] with the archive's top entry called `top` rather than `path`'s own
    /// name (`None`).
    pub async fn copy_out_as(
        &self,
        path: &str,
        top: Option<&TopName>,
    ) -> Result<CopyOut, AgentError> {
        let mut uri = format!("/v1/files?{}", protocol::path_query(path));
        match top {
            Some(TopName::Named(name)) => {
                uri.push_str(&format!("&{}", protocol::param(protocol::NAME_PARAM, name)));
            }
            Some(TopName::Contents) => {
                uri.push_str(&format!("&{}", protocol::param(protocol::NAME_PARAM, ".")));
            }
            None => {}
        }
        let (response, conn) = self
            .send(Method::GET, &uri, empty(), Answer::Prompt)
            .await?;
        Ok(CopyOut {
            body: response.into_body(),
            current: Bytes::new(),
            _conn: conn,
        })
    }

    /// Copies the guest file or directory `path` into the host directory `dest` (created when
    /// missing), refusing anything in the archive that would land outside it.
    pub async fn copy_out_to(&self, path: &str, dest: &Path) -> Result<Unpacked, AgentError> {
        let mut archive_stream = self.copy_out(path).await?;
        let (tx, rx) = mpsc::channel(crate::body::CHANNEL_DEPTH);
        let dest: PathBuf = dest.to_owned();
        let extract =
            tokio::task::spawn_blocking(move || archive::unpack(ChannelReader::new(rx), &dest));
        let mut buf = vec![0u8; CHUNK];
        let mut transfer_error = None;
        loop {
            match archive_stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    transfer_error = Some(e.to_string());
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
        drop(tx);
        let unpacked = extract.await.map_err(AgentError::protocol)?;
        match (unpacked, transfer_error) {
            (_, Some(e)) => Err(AgentError::Protocol(format!(
                "the archive from the guest broke off: {e}"
            ))),
            (result, None) => Ok(result?),
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, AgentError> {
        let (response, _conn) = self
            .send(Method::GET, path, empty(), Answer::Prompt)
            .await?;
        read_json(response).await
    }

    /// Sends one request on a new connection; an error status becomes [`AgentError::Api`].
    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: RequestBody,
        answer: Answer,
    ) -> Result<(Response<Incoming>, Connection), AgentError> {
        let timeout = |waited_for, after| AgentError::Timeout {
            target: self.connector.describe(),
            waited_for,
            after,
        };
        let stream = tokio::time::timeout(self.connect_timeout, self.connector.connect())
            .await
            .map_err(|_| timeout("accept the connection", self.connect_timeout))?
            .map_err(|source| AgentError::Connect {
                target: self.connector.describe(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(AgentError::protocol)?;
        let connection = Connection(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, "banger-agent")
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .body(body)
            .map_err(AgentError::protocol)?;
        let response = match answer {
            Answer::Prompt => {
                tokio::time::timeout(self.answer_timeout, sender.send_request(request))
                    .await
                    .map_err(|_| timeout("answer", self.answer_timeout))?
            }
            Answer::AfterUpload => sender.send_request(request).await,
        }
        .map_err(AgentError::protocol)?;
        if response.status().is_success() {
            return Ok((response, connection));
        }
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(AgentError::protocol)?
            .to_bytes();
        let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
            code: "unexpected_answer".into(),
            message: format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
            hint: None,
        });
        Err(AgentError::Api { status, body })
    }
}

fn empty() -> RequestBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn read_json<T: DeserializeOwned>(response: Response<Incoming>) -> Result<T, AgentError> {
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(AgentError::protocol)?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        AgentError::Protocol(format!("the agent's answer is not the expected JSON: {e}"))
    })
}

/// A running command: its input and its events.
pub struct ExecSession {
    input: ExecInput,
    events: ExecEvents,
}

impl ExecSession {
    pub fn input(&mut self) -> &mut ExecInput {
        &mut self.input
    }

    /// The next output or the exit; see [`ExecEvents::next`].
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, AgentError> {
        self.events.next().await
    }

    /// Input and output apart, to drive them from different tasks.
    pub fn split(self) -> (ExecInput, ExecEvents) {
        (self.input, self.events)
    }
}

/// The command's standard input (or terminal). Dropping it closes input; it never ends the
/// command.
pub struct ExecInput {
    tx: Option<mpsc::Sender<Result<Bytes, io::Error>>>,
}

impl ExecInput {
    async fn send(&self, frame: Frame) -> Result<(), AgentError> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| AgentError::Protocol("standard input is already closed".into()))?;
        tx.send(Ok(frame.encode()))
            .await
            .map_err(|_| AgentError::Protocol("the exec connection is closed".into()))
    }

    /// Sends `data` to the command's input.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), AgentError> {
        for chunk in data.chunks(CHUNK) {
            self.send(Frame::new(FrameKind::Stdin, Bytes::copy_from_slice(chunk)))
                .await?;
        }
        Ok(())
    }

    /// Closes the command's input (it reads EOF). Ignored by TTY sessions: send `^D`.
    pub async fn close(&mut self) -> Result<(), AgentError> {
        self.send(Frame::new(FrameKind::StdinEof, Bytes::new()))
            .await?;
        Ok(())
    }

    /// Tells a TTY session its terminal's new size.
    pub async fn resize(&mut self, rows: u16, cols: u16) -> Result<(), AgentError> {
        self.send(Frame::resize(rows, cols)).await
    }

    /// Sends signal `name` (`INT`, `TERM`, ... see [`crate::frame::SIGNALS`]) to the command's
    /// process group (with a TTY: the terminal's foreground group).
    pub async fn signal(&mut self, name: &str) -> Result<(), AgentError> {
        self.send(Frame::signal(name)).await
    }

    /// Sends one frame as it is, for a relay that already speaks the framing (bangerd's exec
    /// route). Only input frames make sense here; the agent refuses others.
    pub async fn forward(&mut self, frame: Frame) -> Result<(), AgentError> {
        self.send(frame).await
    }
}

/// What a running command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    /// Always the last event.
    Exit(ExitStatus),
}

/// The command's output, in the order the agent read it. Dropping this hangs up: the agent
/// kills the command's process group if it is still running.
pub struct ExecEvents {
    body: Incoming,
    decoder: FrameDecoder,
    finished: bool,
    /// How long the stream may stay silent (an agent with a heartbeat), else unbounded.
    silence: Option<Duration>,
    /// The agent's transport, for the silence error.
    target: String,
    _conn: Connection,
}

impl ExecEvents {
    /// The next event; `Ok(None)` only after the exit was returned. A stream that ends
    /// without an exit is an error: the agent or the guest went away.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, AgentError> {
        if self.finished {
            return Ok(None);
        }
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(frame_error)? {
                return match frame.kind {
                    FrameKind::Stdout => Ok(Some(ExecEvent::Stdout(frame.payload))),
                    FrameKind::Stderr => Ok(Some(ExecEvent::Stderr(frame.payload))),
                    FrameKind::Exit => {
                        self.finished = true;
                        let status =
                            serde_json::from_slice(&frame.payload).map_err(AgentError::protocol)?;
                        Ok(Some(ExecEvent::Exit(status)))
                    }
                    FrameKind::Error => {
                        self.finished = true;
                        let body =
                            serde_json::from_slice(&frame.payload).map_err(AgentError::protocol)?;
                        Err(AgentError::Failed(body))
                    }
                    // The agent is there; the command runs on.
                    FrameKind::Alive => continue,
                    other => Err(frame_error(FrameError::Unexpected(other))),
                };
            }
            let frame = match self.silence {
                Some(limit) => tokio::time::timeout(limit, self.body.frame())
                    .await
                    .map_err(|_| AgentError::Timeout {
                        target: self.target.clone(),
                        waited_for: "say the running command is still there (the guest \
                                     stopped answering; the command may still run in it)",
                        after: limit,
                    })?,
                None => self.body.frame().await,
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(AgentError::Protocol(format!("the exec stream broke: {e}")));
                }
                None => {
                    return Err(AgentError::Protocol(
                        "the exec stream ended without an exit status (the agent or the guest \
                         went away)"
                            .into(),
                    ));
                }
            }
        }
    }
}

fn frame_error(e: FrameError) -> AgentError {
    AgentError::Protocol(e.to_string())
}

/// A finished command's collected output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Default for ExecOutput {
    fn default() -> Self {
        ExecOutput {
            status: ExitStatus {
                code: None,
                signal: None,
            },
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }
}

/// The tar archive streaming from `GET /v1/files`. A transfer that breaks off reads as an
/// error, never as a short archive.
pub struct CopyOut {
    body: Incoming,
    current: Bytes,
    _conn: Connection,
}

impl AsyncRead for CopyOut {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.current = data;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(self.current.len());
        let chunk = self.current.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

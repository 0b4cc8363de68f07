//! The agent itself, as it runs in the guest: listeners, the token check, and the routing of
//! the `/v1` endpoints to their modules. This is the only part of the agent that creates
//! processes (exec and shutdown); the host's client (in banger-agent-protocol) never does.
//!
//! Robustness: each connection is its own task (a panic or a bad request ends that connection
//! only), request heads are bounded ([`MAX_HEAD_BYTES`], [`HEAD_TIMEOUT`]), and at most
//! [`MAX_CONNECTIONS`] connections are served at once (more wait to be accepted).

pub mod account;
pub mod exec;
pub mod fdio;
pub mod files;
pub mod identity;
pub mod ports;
pub mod shutdown;
pub mod stats;
pub mod vsock;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use banger_agent_protocol::archive::{self, ArchiveError};
use banger_agent_protocol::body::ChannelBody;
use banger_agent_protocol::protocol::{
    self, BootStage, CopyInSummary, ErrorBody, Health, ShutdownAccepted,
};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Largest request head (request line and headers) accepted; hyper's buffer bound.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A client has this long to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

type AgentBody = UnsyncBoxBody<Bytes, io::Error>;

/// The per-VM secret every request must present as `Authorization: Bearer <token>`.
///
/// Clones of a `Token` share one secret: [`Token::replace`] (a restored clone taking on its
/// own identity, `POST /v1/identity`) changes it for every server holding a clone, including
/// agents served connection by connection with [`serve_stream`].
#[derive(Clone)]
pub struct Token(Arc<RwLock<Arc<[u8]>>>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the agent token {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the agent token {} is empty", path.display())]
    Empty { path: PathBuf },

    #[error("the agent token {} can be read by other users (mode {mode:o}); it must be 0600", path.display())]
    Exposed { path: PathBuf, mode: u32 },
}

impl Token {
    pub fn new(token: impl Into<Vec<u8>>) -> Self {
        Token(Arc::new(RwLock::new(token.into().into())))
    }

    /// From now on, only `token` is accepted.
    pub fn replace(&self, token: impl Into<Vec<u8>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = token.into().into();
    }

    /// Reads the token file banger wrote into the VM (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        use std::os::unix::fs::PermissionsExt;
        let read_error = |source| TokenError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read(path).map_err(read_error)?;
        let token = text.trim_ascii();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Token::new(token))
    }

    /// Whether an `Authorization` header carries this token. The comparison takes the same
    /// time wherever the first difference is, so response timing reveals nothing about the
    /// token's bytes.
    pub fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        let Some(given) = header.and_then(|h| h.as_bytes().strip_prefix(b"Bearer ")) else {
            return false;
        };
        let token = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        constant_time_eq(given, &token)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub token: Token,
    /// TCP addresses to listen on (the VM's private IP, port 1024).
    pub tcp: Vec<SocketAddr>,
    /// The vsock port, or `None` for no vsock listener.
    pub vsock_port: Option<u32>,
    pub shutdown: shutdown::Method,
    /// Where the proc filesystem is mounted (`/proc`).
    pub proc_root: PathBuf,
    /// Kernel uptime when the agent process started.
    pub started_at: Duration,
    /// The milestones of the boot before the agent (from banger's `/init`), in order.
    pub boot_stages: Vec<BootStage>,
    /// How often a running exec sends its alive frame
    /// ([`HEARTBEAT_EVERY`](protocol::HEARTBEAT_EVERY) unless told otherwise).
    pub heartbeat: Duration,
}

/// The stages of an [`INIT_STAGES_FILE`](protocol::INIT_STAGES_FILE); lines that do not parse are skipped (an image with
/// its own initramfs may leave anything there, or nothing).
pub fn parse_boot_stages(text: &str) -> Vec<BootStage> {
    text.lines()
        .filter_map(|line| {
            let (name, ms) = line.trim().split_once(' ')?;
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            valid.then_some(())?;
            Some(BootStage {
                name: name.to_owned(),
                at_ms: ms.trim().parse().ok()?,
            })
        })
        .collect()
}

/// The agent cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on TCP {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },

    #[error(
        "no listener: vsock is unavailable ({vsock}) and no TCP address was given (--listen IP:PORT)"
    )]
    NoListener { vsock: String },
}

struct State {
    config: Config,
    listeners: Vec<String>,
    listening_at: Duration,
    /// What `POST /v1/identity` acts through; `None` for an agent served in-process without
    /// effects, which refuses it.
    identity: Option<Arc<dyn identity::Effects>>,
    /// One identity change at a time.
    identity_lock: Arc<Mutex<()>>,
}

/// Binds every listener and serves until the process ends.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let mut names = Vec::new();
    let mut tcp = Vec::new();
    for addr in &config.tcp {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Tcp {
                addr: *addr,
                source,
            })?;
        let local = listener.local_addr().unwrap_or(*addr);
        names.push(format!("tcp:{local}"));
        tcp.push(listener);
    }
    let mut vsock_error = String::from("disabled");
    let vsock = match config.vsock_port {
        Some(port) => match vsock::VsockListener::bind(port) {
            Ok(listener) => {
                names.push(format!("vsock:{port}"));
                Some(listener)
            }
            Err(e) => {
                vsock_error = e.to_string();
                eprintln!("banger-agent: no vsock listener on port {port}: {e}");
                None
            }
        },
        None => None,
    };
    if names.is_empty() {
        return Err(ServeError::NoListener { vsock: vsock_error });
    }
    let listening_at = stats::uptime(&config.proc_root).unwrap_or(config.started_at);
    eprintln!("banger-agent: listening on {}", names.join(", "));
    let state = Arc::new(State {
        config,
        listeners: names,
        listening_at,
        identity: Some(Arc::new(identity::RealEffects::guest())),
        identity_lock: Arc::default(),
    });
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));

    let mut tasks = tokio::task::JoinSet::new();
    for listener in tcp {
        let (state, permits) = (state.clone(), permits.clone());
        tasks.spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let state = state.clone();
                        tokio::spawn(async move {
                            serve_connection(stream, state).await;
                            drop(permit);
                        });
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        });
    }
    if let Some(listener) = vsock {
        let (state, permits) = (state.clone(), permits.clone());
        tasks.spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                match listener.accept().await {
                    Ok(stream) => {
                        let state = state.clone();
                        tokio::spawn(async move {
                            serve_connection(stream, state).await;
                            drop(permit);
                        });
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection that arrived by some other way than the agent's listeners: tests
/// that play a VMM's transport (bangerd's relay of exec, for one) run the agent in-process.
/// Such an agent is not in a guest, so it refuses `POST /v1/identity`; see
/// [`serve_stream_with`].
pub async fn serve_stream<S>(stream: S, config: Config)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_stream_inner(stream, config, None).await;
}

/// [`serve_stream`] answering `POST /v1/identity` through `effects` (in tests, an
/// [`identity::Recorder`], so the host is never touched).
pub async fn serve_stream_with<S>(stream: S, config: Config, effects: Arc<dyn identity::Effects>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_stream_inner(stream, config, Some(effects)).await;
}

async fn serve_stream_inner<S>(
    stream: S,
    config: Config,
    effects: Option<Arc<dyn identity::Effects>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let listening_at = config.started_at;
    let state = Arc::new(State {
        config,
        listeners: vec!["stream".into()],
        listening_at,
        identity: effects,
        identity_lock: IDENTITY_LOCK.clone(),
    });
    serve_connection(stream, state).await;
}

/// Agents served connection by connection share one lock, so two identity changes never
/// interleave there either.
static IDENTITY_LOCK: std::sync::LazyLock<Arc<Mutex<()>>> = std::sync::LazyLock::new(Arc::default);

/// Out of descriptors or a connection reset before accept: say so, pause, go on.
async fn accept_failed(e: io::Error) {
    eprintln!("banger-agent: accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_connection<S>(stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(req, &state).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    // Errors here are the client's (bad request, hang-up); the connection just ends.
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The endpoints: (method, path).
const ROUTES: [(&str, &str); 9] = [
    ("GET", "/v1/healthz"),
    ("GET", "/v1/stat"),
    ("POST", "/v1/exec"),
    ("GET", "/v1/files"),
    ("PUT", "/v1/files"),
    ("GET", "/v1/ports"),
    ("GET", "/v1/stats"),
    ("POST", "/v1/shutdown"),
    ("POST", "/v1/identity"),
];

async fn handle(req: Request<Incoming>, state: &State) -> Response<AgentBody> {
    if !state
        .config
        .token
        .accepts(req.headers().get(protocol::AUTHORIZATION))
    {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong agent token",
            Some(format!(
                "send `Authorization: Bearer <token>` with the VM's token (in the guest: {})",
                protocol::TOKEN_FILE
            )),
        );
        response
            .headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return response;
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/healthz") => json(StatusCode::OK, &health(state)),
        (Method::POST, "/v1/exec") => {
            match exec::start(exec::FrameInput::new(req.into_body())).await {
                Ok(session) => {
                    let (tx, body) = ChannelBody::channel();
                    let every = state.config.heartbeat;
                    tokio::spawn(session.run(tx, every));
                    let mut response = Response::new(body.boxed_unsync());
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/vnd.banger.exec-frames"),
                    );
                    response.headers_mut().insert(
                        protocol::HEARTBEAT_HEADER,
                        HeaderValue::from(every.as_secs()),
                    );
                    response
                }
                Err(e) => {
                    let (status, code, hint) = e.http();
                    error(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                        code,
                        &e.to_string(),
                        hint,
                    )
                }
            }
        }
        (Method::PUT, "/v1/files") => {
            let dir = match absolute_path(query.as_deref()) {
                Ok(dir) => dir,
                Err(response) => return *response,
            };
            let owners =
                match protocol::query_param(query.as_deref(), protocol::OWNERS_PARAM).as_deref() {
                    None | Some("extractor") => archive::Owners::Extractor,
                    Some("archive") => archive::Owners::Archive,
                    Some(other) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "bad_query",
                            &format!("owners={other:?} is neither `extractor` nor `archive`"),
                            None,
                        );
                    }
                };
            match files::put(dir, owners, req.into_body()).await {
                Ok(done) => json(
                    StatusCode::OK,
                    &CopyInSummary {
                        entries: done.entries,
                        bytes: done.bytes,
                    },
                ),
                Err(e) => archive_error(&e),
            }
        }
        (Method::GET, "/v1/stat") => {
            let path = match absolute_path(query.as_deref()) {
                Ok(path) => path,
                Err(response) => return *response,
            };
            match files::stat(&path) {
                Ok(stat) => json(StatusCode::OK, &stat),
                Err(e) => error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!("cannot look at {} in the guest: {e}", path.display()),
                    None,
                ),
            }
        }
        (Method::GET, "/v1/files") => {
            let path = match absolute_path(query.as_deref()) {
                Ok(path) => path,
                Err(response) => return *response,
            };
            let top = match protocol::query_param(query.as_deref(), protocol::NAME_PARAM) {
                Some(name) if name == "." => Some(archive::TopName::Contents),
                Some(name) => match archive::TopName::named(&name) {
                    Ok(top) => Some(top),
                    Err(e) => return archive_error(&e),
                },
                None => None,
            };
            if let Err(e) = std::fs::symlink_metadata(&path) {
                let status = if e.kind() == io::ErrorKind::NotFound {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::FORBIDDEN
                };
                return error(
                    status,
                    "not_found",
                    &format!("cannot read {} in the guest: {e}", path.display()),
                    None,
                );
            }
            if top == Some(archive::TopName::Contents)
                && !std::fs::metadata(&path).is_ok_and(|m| m.is_dir())
            {
                return error(
                    StatusCode::CONFLICT,
                    "not_a_directory",
                    &format!(
                        "{} is not a directory, so it has no contents to copy",
                        path.display()
                    ),
                    None,
                );
            }
            let top = match top {
                Some(top) => top,
                None => match path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(archive::TopName::named)
                {
                    Some(Ok(top)) => top,
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "bad_path",
                            &format!("{} has no name to archive it under", path.display()),
                            Some("copy a file or directory inside it".into()),
                        );
                    }
                },
            };
            let mut response = Response::new(files::get(&path, top).boxed_unsync());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
            response
        }
        (Method::GET, "/v1/ports") => {
            let proc_root = state.config.proc_root.clone();
            match tokio::task::spawn_blocking(move || ports::listening(&proc_root)).await {
                Ok(Ok(ports)) => json(StatusCode::OK, &ports),
                Ok(Err(e)) => internal(&e.to_string()),
                Err(e) => internal(&e.to_string()),
            }
        }
        (Method::GET, "/v1/stats") => {
            let proc_root = state.config.proc_root.clone();
            match tokio::task::spawn_blocking(move || stats::collect(&proc_root)).await {
                Ok(Ok(stats)) => json(StatusCode::OK, &stats),
                Ok(Err(e)) => internal(&e.to_string()),
                Err(e) => internal(&e.to_string()),
            }
        }
        (Method::POST, "/v1/shutdown") => {
            let method = state.config.shutdown.clone();
            let accepted = ShutdownAccepted {
                method: method.describe(),
            };
            eprintln!(
                "banger-agent: shutdown requested; ending the guest via {}",
                accepted.method
            );
            tokio::spawn(async move {
                // Let the 202 reach the host before the guest goes down.
                tokio::time::sleep(Duration::from_millis(200)).await;
                method.end_guest().await;
            });
            json(StatusCode::ACCEPTED, &accepted)
        }
        (Method::POST, "/v1/identity") => apply_identity(req, state).await,
        (_, path) if ROUTES.iter().any(|(_, p)| *p == path) => {
            let allowed: Vec<&str> = ROUTES
                .iter()
                .filter(|(_, p)| *p == path)
                .map(|(m, _)| *m)
                .collect();
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{path} answers {}", allowed.join(", ")),
                None,
            )
        }
        (_, path) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no endpoint {path}"),
            Some(format!(
                "the agent answers {}",
                ROUTES.map(|(_, p)| p).join(", ")
            )),
        ),
    }
}

/// `POST /v1/identity` ([`identity`]).
async fn apply_identity(req: Request<Incoming>, state: &State) -> Response<AgentBody> {
    let Some(effects) = state.identity.clone() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported",
            "this agent is served in-process, not in a guest, and has no identity to change",
            Some("serve it with serve_stream_with and identity effects".into()),
        );
    };
    let body = match http_body_util::Limited::new(req.into_body(), identity::MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_identity",
                &format!(
                    "cannot read the identity request (at most {} bytes): {e}",
                    identity::MAX_REQUEST_BYTES
                ),
                None,
            );
        }
    };
    let request: protocol::IdentityRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_identity",
                &format!("the identity request is not valid JSON of the right shape: {e}"),
                None,
            );
        }
    };
    let token = state.config.token.clone();
    let lock = state.identity_lock.clone();
    let applied = tokio::task::spawn_blocking(move || {
        let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
        identity::apply(effects.as_ref(), &request, &token)
    })
    .await;
    match applied {
        Ok(Ok(applied)) => {
            eprintln!(
                "banger-agent: identity applied: hostname {}, {} files{}",
                applied.hostname.as_deref().unwrap_or("(unchanged)"),
                applied.files.len(),
                if applied.token_changed {
                    ", new token"
                } else {
                    ""
                }
            );
            json(StatusCode::OK, &applied)
        }
        Ok(Err(e @ identity::IdentityError::Invalid(_))) => error(
            StatusCode::BAD_REQUEST,
            "bad_identity",
            &e.to_string(),
            None,
        ),
        Ok(Err(e @ identity::IdentityError::Failed { .. })) => {
            eprintln!("banger-agent: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "identity_failed",
                &e.to_string(),
                Some("the guest is part-way between two identities; discard it".into()),
            )
        }
        Err(e) => internal(&e.to_string()),
    }
}

fn health(state: &State) -> Health {
    let uptime = stats::uptime(&state.config.proc_root).unwrap_or_default();
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    Health {
        ready: true,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname,
        uptime_ms: uptime.as_millis() as u64,
        boot: state
            .config
            .boot_stages
            .iter()
            .cloned()
            .chain([
                BootStage {
                    name: "agent_started".into(),
                    at_ms: state.config.started_at.as_millis() as u64,
                },
                BootStage {
                    name: "agent_listening".into(),
                    at_ms: state.listening_at.as_millis() as u64,
                },
            ])
            .collect(),
        listeners: state.listeners.clone(),
    }
}

/// The absolute path of a `?path=` query, or the 400 answer saying what is wrong with it.
fn absolute_path(query: Option<&str>) -> Result<PathBuf, Box<Response<AgentBody>>> {
    match protocol::query_path(query) {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        Some(path) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_path",
            &format!("{path:?} is not an absolute guest path"),
            None,
        ))),
        None => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "the path query parameter is missing or not valid percent-encoded UTF-8",
            Some("call /v1/files?path=/absolute/path".into()),
        ))),
    }
}

fn archive_error(e: &ArchiveError) -> Response<AgentBody> {
    let (status, code) = match e {
        ArchiveError::Unsafe { .. } => (StatusCode::BAD_REQUEST, "unsafe_archive"),
        ArchiveError::Unsupported { .. } | ArchiveError::Corrupt(_) => {
            (StatusCode::BAD_REQUEST, "bad_archive")
        }
        ArchiveError::NotADirectory { .. } | ArchiveError::NoContents { .. } => {
            (StatusCode::CONFLICT, "not_a_directory")
        }
        ArchiveError::BadName { .. } => (StatusCode::BAD_REQUEST, "bad_name"),
        ArchiveError::NoName { .. } | ArchiveError::Io { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "io_error")
        }
    };
    error(status, code, &e.to_string(), None)
}

fn internal(message: &str) -> Response<AgentBody> {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", message, None)
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<AgentBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    hint: Option<String>,
) -> Response<AgentBody> {
    json(
        status,
        &ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
            hint,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_stages_file_lines() {
        let stages = parse_boot_stages("init_started 5\n\ngarbage\nx y\ninit_switch_root 2400\n");
        let got: Vec<(&str, u64)> = stages.iter().map(|s| (s.name.as_str(), s.at_ms)).collect();
        assert_eq!(got, [("init_started", 5), ("init_switch_root", 2400)]);
        assert!(parse_boot_stages("").is_empty());
        assert!(
            parse_boot_stages("<b> 5\n").is_empty(),
            "names are plain words"
        );
    }

    #[test]
    fn the_token_must_match_exactly() {
        let token = Token::new("s3cret-token");
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(token.accepts(Some(&header("Bearer s3cret-token"))));
        for wrong in [
            "Bearer s3cret-tokeN",
            "Bearer s3cret-token2",
            "Bearer s3cret",
            "Bearer ",
            "bearer s3cret-token",
            "s3cret-token",
            "Basic s3cret-token",
        ] {
            assert!(!token.accepts(Some(&header(wrong))), "{wrong}");
        }
        assert!(!token.accepts(None));
    }

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn token_files_must_be_private_and_non_empty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-token");
        std::fs::write(&path, "abc123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let token = Token::from_file(&path).unwrap();
        assert!(token.accepts(Some(&HeaderValue::from_static("Bearer abc123"))));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Token::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("mode 644"), "{err}");

        std::fs::write(&path, "\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Token::from_file(&path),
            Err(TokenError::Empty { .. })
        ));

        let err = Token::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read the agent token"),
            "{err}"
        );
    }
}

//! The async client of bangerd's API: HTTP/1.1 over the daemon's Unix socket, one connection
//! per request (a local socket connect costs microseconds, and it keeps the client stateless).

use std::path::{Path, PathBuf};

use banger_agent_protocol::protocol::{CopyInSummary, Health, ListeningPort, PathStat, Stats};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, body::Incoming};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use crate::{
    ApiError, BUILD_ID_HEADER, Capacity, ConsoleChunk, CreateVmRequest, CreatedVm, DaemonInfo,
    DoctorReport, ErrorCode, Image, Operation, RegisterImageRequest, SshAccess, UpdateVmRequest,
    Vm, VmAction, WebLogin,
};
use crate::{BootstrapImageRequest, ExportImageRequest, ImportImageRequest};
use crate::{PublishPortRequest, PublishedPort};

/// Why a request did not produce the answer the caller wanted.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error("cannot reach bangerd at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// The conversation broke (daemon died mid-request, garbage on the socket).
    #[error("talking to bangerd failed: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The API error, if the daemon answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }

    pub fn is_code(&self, code: ErrorCode) -> bool {
        self.api().is_some_and(|e| e.code == code)
    }
}

/// Client of one daemon socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    build_id: Option<String>,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            build_id: None,
        }
    }

    /// Sends `build_id` with every request: a daemon of another build refuses with
    /// [`ErrorCode::DaemonOutdated`] instead of acting.
    pub fn expecting_build(mut self, build_id: impl Into<String>) -> Self {
        self.build_id = Some(build_id.into());
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A fresh HTTP/1.1 connection to the daemon, ready for one request.
    async fn connect<B>(&self) -> Result<SendRequest<B>, ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        tokio::spawn(async move {
            // The connection ends with the response; its error, if any, surfaces there.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// A request to the daemon, with this client's build id when it expects one.
    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "bangerd");
        match &self.build_id {
            Some(id) => request.header(BUILD_ID_HEADER, id),
            None => request,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let mut sender = self.connect().await?;
        let mut request = self.request(method, path);
        let has_body = body.is_some();
        if has_body {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends a request and returns status and body, turning error statuses into
    /// [`ClientError::Api`].
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = self.send_ok(method, path, body).await?;
        let status = response.status();
        let bytes = collect_body(response).await?;
        Ok((status, bytes))
    }

    /// Sends a request; an answer with an error status becomes the API error it carries, any
    /// other comes back with its body still to be read (streams are read as they arrive).
    async fn send_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        ok_or_error(self.send(method, path, body).await?).await
    }

    /// `GET path`, the answer decoded.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// `method path` without a body, the answer decoded.
    async fn act<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T, ClientError> {
        self.call(method, path, None::<&()>).await
    }

    /// `method path` with `body` as JSON, the answer decoded.
    async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.call(method, path, Some(body)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (_, bytes) = self.raw(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!("bangerd sent an answer banger cannot read: {e}"))
        })
    }

    pub async fn daemon_info(&self) -> Result<DaemonInfo, ClientError> {
        self.get("/v1/daemon").await
    }

    /// Asks the daemon to exit gracefully.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.raw(Method::POST, "/v1/daemon/shutdown", None)
            .await
            .map(|_| ())
    }

    /// Mints a one-time login URL for the web console (valid for a few minutes, single use).
    /// Only the socket's owner can ask, which is what makes the console the owner's.
    pub async fn web_login(&self) -> Result<WebLogin, ClientError> {
        self.act(Method::POST, "/v1/web/login").await
    }

    /// Runs the daemon's host checks.
    pub async fn doctor(&self) -> Result<DoctorReport, ClientError> {
        self.get("/v1/doctor").await
    }

    pub async fn capacity(&self) -> Result<Capacity, ClientError> {
        self.get("/v1/capacity").await
    }

    pub async fn list_vms(&self) -> Result<Vec<Vm>, ClientError> {
        self.get("/v1/vms").await
    }

    pub async fn get_vm(&self, name: &str) -> Result<Vm, ClientError> {
        self.get(&format!("/v1/vms/{}", escape(name))).await
    }

    /// Creates a VM; when it is being started, the answer carries the start operation.
    pub async fn create_vm(&self, request: &CreateVmRequest) -> Result<CreatedVm, ClientError> {
        self.send_json(Method::POST, "/v1/vms", request).await
    }

    /// Starts, stops or restarts VM `name` (`action` is `start`, `stop` or `restart`); follow
    /// the operation with [`Client::watch_operation`].
    pub async fn vm_action(&self, name: &str, action: VmAction) -> Result<Operation, ClientError> {
        let path = format!("/v1/vms/{}/{}", escape(name), action.as_str());
        self.act(Method::POST, &path).await
    }

    /// A piece of VM `name`'s guest console from byte `offset` (the end when `None`).
    pub async fn console(
        &self,
        name: &str,
        offset: Option<u64>,
    ) -> Result<ConsoleChunk, ClientError> {
        let query = offset.map(|o| format!("?offset={o}")).unwrap_or_default();
        self.get(&format!("/v1/vms/{}/console{query}", escape(name)))
            .await
    }

    /// What OpenSSH needs to log into VM `name`.
    pub async fn ssh_access(&self, name: &str) -> Result<SshAccess, ClientError> {
        self.get(&format!("/v1/vms/{}/ssh", escape(name))).await
    }

    /// The guest agent's health in VM `name`, as bangerd relays it.
    pub async fn guest_health(&self, name: &str) -> Result<Health, ClientError> {
        self.guest_info(name, "health").await
    }

    /// The listening sockets in VM `name`, as its guest agent lists them.
    pub async fn guest_ports(&self, name: &str) -> Result<Vec<ListeningPort>, ClientError> {
        self.guest_info(name, "ports").await
    }

    /// The memory, load and disks of VM `name`, as its guest agent reports them.
    pub async fn guest_stats(&self, name: &str) -> Result<Stats, ClientError> {
        self.guest_info(name, "stats").await
    }

    /// `GET /v1/vms/{name}/{what}`: one of the guest agent's answers that bangerd relays.
    async fn guest_info<T: DeserializeOwned>(
        &self,
        name: &str,
        what: &str,
    ) -> Result<T, ClientError> {
        self.get(&format!("/v1/vms/{}/{what}", escape(name))).await
    }

    /// Starts a command in VM `name`; `request` is the agent's exec request as JSON (no
    /// standard input, no terminal). The answer's body streams the agent's frames.
    pub async fn exec(
        &self,
        name: &str,
        request: Vec<u8>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        self.send_ok(
            Method::POST,
            &format!("/v1/vms/{}/exec", escape(name)),
            Some(request),
        )
        .await
    }

    /// Starts a framed, full-duplex exec session in VM `name`: `frames` is the request body (a
    /// start frame, then input frames, sent as they come while the answer streams), and the
    /// answer's body streams output frames. See docs/guest-agent.md for the framing.
    pub async fn exec_frames(
        &self,
        name: &str,
        frames: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let response = self
            .send_streaming(
                Method::POST,
                &format!("/v1/vms/{}/exec", escape(name)),
                EXEC_FRAMES,
                ReceiverBody(frames),
            )
            .await?;
        ok_or_error(response).await
    }

    /// Sends a request whose body streams from `body` while the answer is read: HTTP/1.1
    /// allows both at once, which is what an interactive exec needs.
    async fn send_streaming(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: ReceiverBody,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let mut sender = self.connect().await?;
        let request = self
            .request(method, path)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Extracts the tar archive streaming from `tar` (chunks as they are made, the channel's
    /// end being the archive's) into directory `dir` of VM `name`, the files owned by root or,
    /// with `keep_owners`, by the uids and gids the archive records. The archive is never held
    /// whole: each chunk waits for room on the way to the guest.
    pub async fn copy_in(
        &self,
        name: &str,
        dir: &str,
        keep_owners: bool,
        tar: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Result<CopyInSummary, ClientError> {
        let mut path = format!("/v1/vms/{}/files?path={}", escape(name), escape(dir));
        if keep_owners {
            path.push_str("&owners=archive");
        }
        let response = self
            .send_streaming(Method::PUT, &path, "application/x-tar", ReceiverBody(tar))
            .await?;
        let bytes = collect_body(ok_or_error(response).await?).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// A tar archive of `path` in VM `name`, its top entry called `top` (`.` for a
    /// directory's bare contents) or, when `None`, `path`'s own name: the answer, whose body
    /// streams the archive as the guest makes it.
    pub async fn copy_out(
        &self,
        name: &str,
        path: &str,
        top: Option<&str>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let mut uri = format!("/v1/vms/{}/files?path={}", escape(name), escape(path));
        if let Some(top) = top {
            uri.push_str(&format!("&name={}", escape(top)));
        }
        self.send_ok(Method::GET, &uri, None).await
    }

    /// What `path` is in VM `name` (the agent's `PathStat`: `kind`, `target`, `mode`).
    pub async fn file_stat(&self, name: &str, path: &str) -> Result<PathStat, ClientError> {
        self.get(&format!(
            "/v1/vms/{}/files/stat?path={}",
            escape(name),
            escape(path)
        ))
        .await
    }

    /// Gives stopped VM `name` a fresh root from its image; its work disk and identity stay.
    pub async fn reset_vm(&self, name: &str) -> Result<Vm, ClientError> {
        self.act(Method::POST, &format!("/v1/vms/{}/reset", escape(name)))
            .await
    }

    /// Pauses (`pause = true`) or resumes VM `name`.
    pub async fn pause_vm(&self, name: &str, pause: bool) -> Result<Vm, ClientError> {
        let verb = if pause { "pause" } else { "resume" };
        self.act(Method::POST, &format!("/v1/vms/{}/{verb}", escape(name)))
            .await
    }

    pub async fn update_vm(
        &self,
        name: &str,
        request: &UpdateVmRequest,
    ) -> Result<Vm, ClientError> {
        self.send_json(Method::PATCH, &format!("/v1/vms/{}", escape(name)), request)
            .await
    }

    /// The host ports forwarded to VM `name`.
    pub async fn published_ports(&self, name: &str) -> Result<Vec<PublishedPort>, ClientError> {
        self.get(&format!("/v1/vms/{}/ports/published", escape(name)))
            .await
    }

    /// Publishes a host port to VM `name` (bound at once when the VM runs); answers with the
    /// VM as stored.
    pub async fn publish_port(
        &self,
        name: &str,
        request: &PublishPortRequest,
    ) -> Result<Vm, ClientError> {
        self.send_json(
            Method::POST,
            &format!("/v1/vms/{}/ports/published", escape(name)),
            request,
        )
        .await
    }

    /// Stops forwarding `host_port` to VM `name`; answers with the VM as stored.
    pub async fn unpublish_port(&self, name: &str, host_port: u16) -> Result<Vm, ClientError> {
        self.act(
            Method::DELETE,
            &format!("/v1/vms/{}/ports/published/{host_port}", escape(name)),
        )
        .await
    }

    pub async fn delete_vm(&self, name: &str) -> Result<(), ClientError> {
        self.raw(Method::DELETE, &format!("/v1/vms/{}", escape(name)), None)
            .await
            .map(|_| ())
    }

    /// Snapshots running or paused VM `name`.
    pub async fn snapshot_vm(
        &self,
        name: &str,
        request: &crate::SnapshotVmRequest,
    ) -> Result<crate::Snapshot, ClientError> {
        self.send_json(
            Method::POST,
            &format!("/v1/vms/{}/snapshot", escape(name)),
            request,
        )
        .await
    }

    /// Clones VM `name`: a new VM restored from a snapshot of it, starting.
    pub async fn clone_vm(
        &self,
        name: &str,
        request: &crate::CloneVmRequest,
    ) -> Result<CreatedVm, ClientError> {
        self.send_json(
            Method::POST,
            &format!("/v1/vms/{}/clone", escape(name)),
            request,
        )
        .await
    }

    /// The warm pool of every image that has one.
    pub async fn list_pool(&self) -> Result<Vec<crate::PoolEntry>, ClientError> {
        self.get("/v1/pool").await
    }

    /// Keeps `size` ready VMs of `image` (0 turns its pool off).
    pub async fn set_pool(&self, image: &str, size: i64) -> Result<crate::PoolEntry, ClientError> {
        self.send_json(
            Method::PUT,
            &format!("/v1/pool/{}", escape(image)),
            &crate::SetPoolRequest { size },
        )
        .await
    }

    pub async fn list_snapshots(&self) -> Result<Vec<crate::Snapshot>, ClientError> {
        self.get("/v1/snapshots").await
    }

    pub async fn get_snapshot(&self, name: &str) -> Result<crate::Snapshot, ClientError> {
        self.get(&format!("/v1/snapshots/{}", escape(name))).await
    }

    pub async fn delete_snapshot(&self, name: &str) -> Result<crate::Snapshot, ClientError> {
        self.act(Method::DELETE, &format!("/v1/snapshots/{}", escape(name)))
            .await
    }

    pub async fn list_images(&self) -> Result<Vec<Image>, ClientError> {
        self.get("/v1/images").await
    }

    pub async fn get_image(&self, name: &str) -> Result<Image, ClientError> {
        self.get(&format!("/v1/images/{}", escape(name))).await
    }

    /// Starts an image registration; follow it with [`Client::watch_operation`].
    pub async fn register_image(
        &self,
        request: &RegisterImageRequest,
    ) -> Result<Operation, ClientError> {
        self.send_json(Method::POST, "/v1/images", request).await
    }

    /// Starts an image bootstrap; follow it with [`Client::watch_operation`].
    pub async fn bootstrap_image(
        &self,
        request: &BootstrapImageRequest,
    ) -> Result<Operation, ClientError> {
        self.send_json(Method::POST, "/v1/images/bootstrap", request)
            .await
    }

    /// Starts building an image from a recipe; follow it with [`Client::watch_operation`].
    pub async fn build_image(
        &self,
        request: &crate::BuildImageRequest,
    ) -> Result<Operation, ClientError> {
        self.send_json(Method::POST, "/v1/images/build", request)
            .await
    }

    /// Starts making an image of a stopped VM's root; follow it with
    /// [`Client::watch_operation`].
    pub async fn promote_image(
        &self,
        request: &crate::PromoteImageRequest,
    ) -> Result<Operation, ClientError> {
        self.send_json(Method::POST, "/v1/images/promote", request)
            .await
    }

    /// Starts writing an image into one file; follow it with [`Client::watch_operation`].
    pub async fn export_image(
        &self,
        name: &str,
        request: &ExportImageRequest,
    ) -> Result<Operation, ClientError> {
        self.send_json(
            Method::POST,
            &format!("/v1/images/{}/export", escape(name)),
            request,
        )
        .await
    }

    /// Starts making an image from an exported file; follow it with
    /// [`Client::watch_operation`].
    pub async fn import_image(
        &self,
        request: &ImportImageRequest,
    ) -> Result<Operation, ClientError> {
        self.send_json(Method::POST, "/v1/images/import", request)
            .await
    }

    pub async fn delete_image(&self, name: &str) -> Result<(), ClientError> {
        self.raw(
            Method::DELETE,
            &format!("/v1/images/{}", escape(name)),
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn list_operations(&self) -> Result<Vec<Operation>, ClientError> {
        self.get("/v1/operations").await
    }

    pub async fn get_operation(&self, id: &str) -> Result<Operation, ClientError> {
        self.get(&format!("/v1/operations/{}", escape(id))).await
    }

    pub async fn cancel_operation(&self, id: &str) -> Result<Operation, ClientError> {
        self.act(
            Method::POST,
            &format!("/v1/operations/{}/cancel", escape(id)),
        )
        .await
    }

    /// Follows an operation through its streaming endpoint, calling `on_update` for every
    /// version, and returns the finished operation.
    pub async fn watch_operation(
        &self,
        id: &str,
        mut on_update: impl FnMut(&Operation),
    ) -> Result<Operation, ClientError> {
        let mut body = self
            .send_ok(
                Method::GET,
                &format!("/v1/operations/{}/stream", escape(id)),
                None,
            )
            .await?
            .into_body();
        let mut buffer = Vec::new();
        let mut last: Option<Operation> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buffer.extend_from_slice(data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let op: Operation = serde_json::from_slice(&line)
                    .map_err(|e| ClientError::Protocol(format!("bad operation update: {e}")))?;
                on_update(&op);
                last = Some(op);
            }
        }
        match last {
            Some(op) if op.state.is_finished() => Ok(op),
            // The stream ended early (daemon restarted?): ask once more for the final word.
            _ => self.get_operation(id).await,
        }
    }
}

/// The media type of a framed exec stream, both ways.
pub const EXEC_FRAMES: &str = "application/vnd.banger.exec-frames";

/// A request body fed chunk by chunk from a channel; it ends when the sender is dropped. The
/// channel's bound is the back-pressure: a sender waits while the daemon is not reading.
struct ReceiverBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ReceiverBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

/// `response` when its status is not an error's; otherwise the API error its body carries.
async fn ok_or_error(
    response: hyper::Response<Incoming>,
) -> Result<hyper::Response<Incoming>, ClientError> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(response);
    }
    let bytes = collect_body(response).await?;
    Err(ClientError::Api(decode_error(status, &bytes)))
}

/// The whole body of `response`.
async fn collect_body(response: hyper::Response<Incoming>) -> Result<Bytes, ClientError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .to_bytes())
}

fn decode_error(status: StatusCode, bytes: &[u8]) -> ApiError {
    serde_json::from_slice::<ApiError>(bytes).unwrap_or_else(|_| {
        ApiError::internal(format!(
            "bangerd answered {status} with a body banger cannot read: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))
    })
}

/// What stays as it is in a percent-encoded path segment or query value: RFC 3986's
/// unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-escapes a path segment or query value (RFC 3986 unreserved characters stay). Names
/// are DNS labels, but a user can type anything and the daemon must see it verbatim to say what
/// was wrong with it. The web console's links are encoded the same way.
pub fn escape(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_path_segments() {
        assert_eq!(escape("dev-1"), "dev-1");
        assert_eq!(escape("a/b c"), "a%2Fb%20c");
        assert_eq!(escape("<x>"), "%3Cx%3E");
        // Every byte of a multi-byte character, and the unreserved marks kept.
        assert_eq!(escape("é~_."), "%C3%A9~_.");
    }

    #[test]
    fn undecodable_error_bodies_become_internal_errors() {
        let e = decode_error(StatusCode::BAD_GATEWAY, b"oops");
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("502"));
    }

    #[tokio::test]
    async fn connect_failure_names_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(dir.path().join("nope.sock"));
        let err = client.list_vms().await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }));
        assert!(err.to_string().contains("nope.sock"));
    }
}

//! The typed client of Firecracker's API socket, and the [`Transport`] it sends requests
//! through.
//!
//! [`UnixTransport`] is a small blocking HTTP/1.1 client over `std::os::unix::net::UnixStream`,
//! one connection per call, rather than hyper over tokio: every caller of this crate already
//! runs on a blocking thread (launch waits for processes and sockets with deadlines), the peer
//! is one known server (Firecracker's `micro_http`, which always sends `Content-Length` except
//! on 1xx/204 and never chunks), the requests are a dozen small JSON bodies, and a blocking
//! socket gives each call a plain read/write deadline. A launch's configuration requests are
//! pipelined on one connection ([`Transport::send_all`]): with one round trip instead of eight
//! and no runtime hop per request, talking to the API costs a launch about a millisecond.
//!
//! Firecracker's error bodies (`{"fault_message": "..."}`) become [`FirecrackerError::Api`] with the
//! message verbatim.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::actions::{ActionType, InstanceActionInfo};
use super::boot_source::BootSource;
use super::drive::{Drive, PartialDrive};
use super::instance_info::{FirecrackerVersion, InstanceInfo};
use super::logger::Logger;
use super::machine_config::MachineConfiguration;
use super::metrics::Metrics;
use super::network_interface::NetworkInterface;
use super::snapshot::{SnapshotCreateParams, SnapshotLoadParams};
use super::vm::{Vm, VmState};
use super::vm_config::FullVmConfiguration;
use super::vsock::Vsock;
use crate::FirecrackerError;
use crate::VmmError;

/// A response body larger than this is not Firecracker talking.
const MAX_BODY: usize = 4 << 20;

/// The HTTP methods Firecracker's API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Patch,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API request: method, path and an optional JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub body: Option<Vec<u8>>,
    /// A deadline shorter than the transport's, for callers that must not wait long on a
    /// Firecracker that may be hung (stop, reconcile).
    pub timeout: Option<Duration>,
}

impl ApiRequest {
    /// `PUT /drives/rootfs`, as errors and logs name a request.
    pub fn resource(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What the API answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The conversation with the API socket broke.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect")]
    Connect(#[source] io::Error),

    #[error("cannot send the request")]
    Send(#[source] io::Error),

    #[error("cannot read the answer")]
    Receive(#[source] io::Error),

    #[error("no answer within {0:?}")]
    TimedOut(Duration),

    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// Sends requests to the API socket at `socket` and returns the answers, whatever their status.
pub trait Transport: Send + Sync + fmt::Debug {
    fn send(&self, socket: &Path, request: &ApiRequest) -> Result<ApiResponse, TransportError>;

    /// Sends all of `requests` and returns their answers in order; every request is sent even
    /// when an earlier one is refused. [`UnixTransport`] pipelines them on one connection.
    fn send_all(
        &self,
        socket: &Path,
        requests: &[ApiRequest],
    ) -> Result<Vec<ApiResponse>, TransportError> {
        requests.iter().map(|r| self.send(socket, r)).collect()
    }
}

/// HTTP/1.1 over Firecracker's Unix socket, one connection per request.
#[derive(Debug, Clone, Copy)]
pub struct UnixTransport {
    /// How long one request may take, connect to last byte. Firecracker answers configuration
    /// requests in well under a millisecond; `InstanceStart` and snapshots take longer.
    pub timeout: Duration,
}

impl Default for UnixTransport {
    fn default() -> Self {
        UnixTransport {
            timeout: Duration::from_secs(10),
        }
    }
}

impl Transport for UnixTransport {
    fn send(&self, socket: &Path, request: &ApiRequest) -> Result<ApiResponse, TransportError> {
        let mut answers = self.send_all(socket, std::slice::from_ref(request))?;
        answers
            .pop()
            .ok_or_else(|| TransportError::Malformed("no answer".into()))
    }

    /// HTTP/1.1 pipelining: every request is written at once on one connection, then the
    /// answers are read in order. Firecracker's server parses as many requests as a read brings
    /// and answers each in turn, so a launch's configuration costs one round trip instead of
    /// eight.
    fn send_all(
        &self,
        socket: &Path,
        requests: &[ApiRequest],
    ) -> Result<Vec<ApiResponse>, TransportError> {
        let timeout = requests
            .iter()
            .filter_map(|r| r.timeout)
            .min()
            .map_or(self.timeout, |t| t.min(self.timeout))
            .max(Duration::from_millis(1));
        let timed_out = |e: io::Error, wrap: fn(io::Error) -> TransportError| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                TransportError::TimedOut(timeout)
            }
            _ => wrap(e),
        };
        let stream = UnixStream::connect(socket).map_err(TransportError::Connect)?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(TransportError::Connect)?;

        let mut bytes = Vec::new();
        for request in requests {
            encode(request, &mut bytes);
        }
        (&stream)
            .write_all(&bytes)
            .map_err(|e| timed_out(e, TransportError::Send))?;

        let mut reader = BufReader::new(&stream);
        requests
            .iter()
            .map(|_| {
                read_response(&mut reader).map_err(|e| match e {
                    ReadError::Io(e) => timed_out(e, TransportError::Receive),
                    ReadError::Malformed(detail) => TransportError::Malformed(detail),
                })
            })
            .collect()
    }
}

/// Appends `request` as HTTP/1.1 to `out`.
fn encode(request: &ApiRequest, out: &mut Vec<u8>) {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n",
        request.method, request.path
    );
    if let Some(body) = &request.body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    if let Some(body) = &request.body {
        out.extend_from_slice(body);
    }
}

enum ReadError {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads one HTTP/1.1 response: status line, headers, and a body of `Content-Length` bytes
/// (none when the header is absent, which Firecracker does only for 1xx and 204).
fn read_response(mut reader: impl BufRead) -> Result<ApiResponse, ReadError> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(ReadError::Malformed(
            "connection closed before an answer".into(),
        ));
    }
    let mut words = line.split_whitespace();
    let status = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| ReadError::Malformed(format!("bad status line {:?}", line.trim())))?,
        _ => {
            return Err(ReadError::Malformed(format!(
                "bad status line {:?}",
                line.trim()
            )));
        }
    };

    let mut content_length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(ReadError::Malformed(
                "connection closed in the headers".into(),
            ));
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(ReadError::Malformed(format!("bad header {header:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<usize>()
                .map_err(|_| ReadError::Malformed(format!("bad Content-Length {value:?}")))?;
            if length > MAX_BODY {
                return Err(ReadError::Malformed(format!(
                    "a {length}-byte body is too large"
                )));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("deprecation") {
            // Firecracker marks deprecated endpoints and fields this way; banger should learn of
            // it from its logs long before the removal.
            tracing::warn!("Firecracker says a request banger sent is deprecated");
        }
    }

    let mut body = vec![0; content_length.unwrap_or(0)];
    reader.read_exact(&mut body)?;
    Ok(ApiResponse { status, body })
}

/// Typed requests to one Firecracker API socket.
#[derive(Debug, Clone, Copy)]
pub struct ApiClient<'a> {
    transport: &'a dyn Transport,
    socket: &'a Path,
    timeout: Option<Duration>,
}

impl<'a> ApiClient<'a> {
    pub fn new(transport: &'a dyn Transport, socket: &'a Path) -> Self {
        ApiClient {
            transport,
            socket,
            timeout: None,
        }
    }

    /// Every request of this client gives up after `timeout` (or the transport's own deadline
    /// when that is shorter).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn socket(&self) -> &Path {
        self.socket
    }

    /// Sends `request`; a non-2xx answer becomes [`FirecrackerError::Api`] with Firecracker's
    /// `fault_message` verbatim (or the raw body when it is not the usual JSON).
    pub fn send(&self, request: &ApiRequest) -> Result<ApiResponse, VmmError> {
        let mut answers = self.send_all(std::slice::from_ref(request))?;
        answers.pop().ok_or_else(|| {
            FirecrackerError::BadAnswer {
                resource: request.resource(),
                detail: "no answer".into(),
            }
            .into()
        })
    }

    /// Sends `requests` together (see [`Transport::send_all`]); the first refusal among the
    /// answers becomes [`FirecrackerError::Api`], with Firecracker's `fault_message` verbatim (or the
    /// raw body when it is not the usual JSON). Every request is sent whatever the answers, so
    /// only requests that may all be applied belong in one call.
    pub fn send_all(&self, requests: &[ApiRequest]) -> Result<Vec<ApiResponse>, VmmError> {
        let requests: Vec<ApiRequest> = requests
            .iter()
            .map(|r| ApiRequest {
                timeout: self.timeout.or(r.timeout),
                ..r.clone()
            })
            .collect();
        for request in &requests {
            tracing::debug!(socket = %self.socket.display(), request = %request.resource(), "firecracker api");
        }
        let answers = self
            .transport
            .send_all(self.socket, &requests)
            .map_err(|source| FirecrackerError::Transport {
                socket: self.socket.to_owned(),
                source,
            })?;
        if answers.len() != requests.len() {
            return Err(FirecrackerError::BadAnswer {
                resource: requests
                    .last()
                    .map(ApiRequest::resource)
                    .unwrap_or_default(),
                detail: format!("{} answers to {} requests", answers.len(), requests.len()),
            }
            .into());
        }
        for (request, response) in requests.iter().zip(&answers) {
            if !(200..300).contains(&response.status) {
                return Err(FirecrackerError::Api {
                    resource: request.resource(),
                    status: response.status,
                    fault_message: fault_message(&response.body),
                }
                .into());
            }
        }
        Ok(answers)
    }

    fn put(&self, path: &str, body: &impl Serialize) -> Result<(), VmmError> {
        self.send_json(Method::Put, path, body)
    }

    fn send_json(&self, method: Method, path: &str, body: &impl Serialize) -> Result<(), VmmError> {
        let request = json_request(method, path, body)?;
        self.send(&request).map(drop)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, VmmError> {
        let request = ApiRequest {
            method: Method::Get,
            path: path.to_owned(),
            body: None,
            timeout: None,
        };
        let response = self.send(&request)?;
        serde_json::from_slice(&response.body).map_err(|e| {
            FirecrackerError::BadAnswer {
                resource: request.resource(),
                detail: e.to_string(),
            }
            .into()
        })
    }

    pub fn put_logger(&self, logger: &Logger) -> Result<(), VmmError> {
        self.put("/logger", logger)
    }

    pub fn put_metrics(&self, metrics: &Metrics) -> Result<(), VmmError> {
        self.put("/metrics", metrics)
    }

    pub fn put_machine_config(&self, config: &MachineConfiguration) -> Result<(), VmmError> {
        self.put("/machine-config", config)
    }

    pub fn put_boot_source(&self, boot: &BootSource) -> Result<(), VmmError> {
        self.put("/boot-source", boot)
    }

    pub fn put_drive(&self, drive: &Drive) -> Result<(), VmmError> {
        self.put(&format!("/drives/{}", drive.drive_id), drive)
    }

    /// Points drive `drive_id` of a started or restored VM at `path`.
    pub fn patch_drive(&self, drive_id: &str, path: &Path) -> Result<(), VmmError> {
        let drive = PartialDrive {
            drive_id: drive_id.to_owned(),
            path_on_host: Some(path.to_owned()),
        };
        self.send_json(Method::Patch, &format!("/drives/{drive_id}"), &drive)
    }

    pub fn put_network_interface(&self, iface: &NetworkInterface) -> Result<(), VmmError> {
        self.put(&format!("/network-interfaces/{}", iface.iface_id), iface)
    }

    pub fn put_vsock(&self, vsock: &Vsock) -> Result<(), VmmError> {
        self.put("/vsock", vsock)
    }

    pub fn action(&self, action_type: ActionType) -> Result<(), VmmError> {
        self.put("/actions", &InstanceActionInfo::from(action_type))
    }

    pub fn patch_vm(&self, state: VmState) -> Result<(), VmmError> {
        self.send_json(Method::Patch, "/vm", &Vm { state })
    }

    pub fn describe_instance(&self) -> Result<InstanceInfo, VmmError> {
        self.get("/")
    }

    pub fn vm_config(&self) -> Result<FullVmConfiguration, VmmError> {
        self.get("/vm/config")
    }

    pub fn version(&self) -> Result<FirecrackerVersion, VmmError> {
        self.get("/version")
    }

    pub fn create_snapshot(&self, params: &SnapshotCreateParams) -> Result<(), VmmError> {
        self.put("/snapshot/create", params)
    }

    pub fn load_snapshot(&self, params: &SnapshotLoadParams) -> Result<(), VmmError> {
        self.put("/snapshot/load", params)
    }
}

/// A request with `body` serialized as JSON.
pub fn json_request(
    method: Method,
    path: &str,
    body: &impl Serialize,
) -> Result<ApiRequest, VmmError> {
    let body = serde_json::to_vec(body).map_err(|e| {
        // Only a path that is not UTF-8 fails to serialize.
        VmmError::InvalidSpec(format!("{method} {path}: {e}"))
    })?;
    Ok(ApiRequest {
        method,
        path: path.to_owned(),
        body: Some(body),
        timeout: None,
    })
}

/// Firecracker's `Error.fault_message`, or the body itself when it is something else.
fn fault_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Fault {
        fault_message: String,
    }
    match serde_json::from_slice::<Fault>(body) {
        Ok(fault) => fault.fault_message,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    }
}

/// Where a request went, for a [`Transport`] test double or a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    pub socket: PathBuf,
    pub request: ApiRequest,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    /// A one-shot server: accepts `answers.len()` connections in turn, records each request
    /// as received and replies with the canned bytes.
    fn serve(
        answers: Vec<&'static str>,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        std::thread::JoinHandle<Vec<String>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut conn, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                head.push_str(&String::from_utf8(body).unwrap());
                seen.push(head);
                conn.write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        (dir, socket, server)
    }

    /// A canned HTTP answer with a correct `Content-Length`.
    fn answer(status: &str, body: &str) -> &'static str {
        let text = if body.is_empty() {
            format!(
                "HTTP/1.1 {status} \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
            )
        } else {
            format!(
                "HTTP/1.1 {status} \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        Box::leak(text.into_boxed_str())
    }

    #[test]
    fn unix_transport_speaks_http_1_1() {
        let info =
            r#"{"id":"vm-1","state":"Running","vmm_version":"1.16.1","app_name":"Firecracker"}"#;
        let (_dir, socket, server) = serve(vec![answer("204", ""), answer("200", info)]);
        let transport = UnixTransport::default();
        let client = ApiClient::new(&transport, &socket);
        client.action(ActionType::InstanceStart).unwrap();
        let info = client.describe_instance().unwrap();
        assert_eq!(info.id, "vm-1");
        assert_eq!(info.state, crate::InstanceState::Running);
        let seen = server.join().unwrap();
        let body = r#"{"action_type":"InstanceStart"}"#;
        assert_eq!(
            seen[0],
            format!(
                "PUT /actions HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        );
        assert_eq!(
            seen[1],
            "GET / HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n"
        );
    }

    #[test]
    fn a_batch_is_pipelined_on_one_connection_and_the_first_refusal_reported() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let refusal = r#"{"fault_message":"Invalid vcpu count"}"#;
        let answers = format!(
            "{}{}{}",
            answer("204", ""),
            answer("400", refusal),
            answer("204", "")
        );
        let server = std::thread::spawn(move || {
            // One connection carries all three requests; they arrive before any answer is sent.
            let (mut conn, _) = listener.accept().unwrap();
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            while received.windows(4).filter(|w| w == b"HTTP").count() < 3
                || !received.ends_with(b"}")
            {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "closed early");
                received.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answers.as_bytes()).unwrap();
            String::from_utf8(received).unwrap()
        });
        let transport = UnixTransport::default();
        let client = ApiClient::new(&transport, &socket);
        let batch = [
            json_request(
                Method::Put,
                "/logger",
                &serde_json::json!({"level": "Info"}),
            )
            .unwrap(),
            json_request(
                Method::Put,
                "/machine-config",
                &serde_json::json!({"vcpu_count": 3}),
            )
            .unwrap(),
            json_request(Method::Put, "/vsock", &serde_json::json!({"guest_cid": 3})).unwrap(),
        ];
        let err = client.send_all(&batch).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PUT /machine-config: Firecracker answered 400: Invalid vcpu count"
        );
        let received = server.join().unwrap();
        // Bodies carry no newline: each request line follows the previous body directly.
        let paths: Vec<&str> = received
            .match_indices("PUT /")
            .map(|(at, _)| received[at..].split(' ').nth(1).unwrap())
            .collect();
        assert_eq!(paths, ["/logger", "/machine-config", "/vsock"]);
    }

    #[test]
    fn fault_message_is_surfaced_verbatim() {
        let body =
            r#"{"fault_message":"Invalid kernel path: No such file or directory (os error 2)"}"#;
        let (_dir, socket, server) = serve(vec![answer("400", body)]);
        let transport = UnixTransport::default();
        let err = ApiClient::new(&transport, &socket)
            .put_boot_source(&BootSource {
                kernel_image_path: "/nope/vmlinux".into(),
                initrd_path: None,
                boot_args: None,
            })
            .unwrap_err();
        match &err {
            VmmError::Firecracker(FirecrackerError::Api {
                resource,
                status,
                fault_message,
            }) => {
                assert_eq!(resource, "PUT /boot-source");
                assert_eq!(*status, 400);
                assert_eq!(
                    fault_message,
                    "Invalid kernel path: No such file or directory (os error 2)"
                );
            }
            other => panic!("expected an API error, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "PUT /boot-source: Firecracker answered 400: Invalid kernel path: No such file or \
             directory (os error 2)"
        );
        server.join().unwrap();
    }

    #[test]
    fn a_non_json_error_body_is_kept_as_text() {
        assert_eq!(fault_message(b"  plain words\n"), "plain words");
        assert_eq!(fault_message(br#"{"fault_message":"x"}"#), "x");
    }

    #[test]
    fn nobody_listening_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.sock");
        let err = ApiClient::new(&UnixTransport::default(), &socket)
            .describe_instance()
            .unwrap_err();
        assert!(
            matches!(
                err,
                VmmError::Firecracker(FirecrackerError::Transport {
                    source: TransportError::Connect(_),
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        let transport = UnixTransport::default();
        let err = transport
            .send(
                &socket,
                &ApiRequest {
                    method: Method::Get,
                    path: "/".into(),
                    body: None,
                    timeout: Some(Duration::from_millis(50)),
                },
            )
            .unwrap_err();
        assert!(matches!(err, TransportError::TimedOut(_)), "{err:?}");
    }

    #[test]
    fn malformed_answers_are_rejected() {
        let read = |text: &str| read_response(io::Cursor::new(text.as_bytes().to_vec()));
        assert!(matches!(read(""), Err(ReadError::Malformed(_))));
        assert!(matches!(
            read("SSH-2.0\r\n\r\n"),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            read("HTTP/1.1 200 \r\nContent-Length: 99999999999\r\n\r\n"),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            read("HTTP/1.1 200 \r\nContent-Length: 10\r\n\r\nshort"),
            Err(ReadError::Io(_))
        ));
        let ok = read("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .ok()
            .unwrap();
        assert_eq!(ok.body, b"{}");
    }
}

//! The routes that reach inside a running VM, for `vm exec`, `vm cp`, `vm ssh`, `vm logs`,
//! `vm health`, `vm ports` and `vm stats`: the daemon holds the VM's agent token and the way to
//! reach its agent, so clients never need either. Exec is relayed frame by frame in both
//! directions at once (the request body keeps streaming input while the answer streams output).

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use banger_agent_protocol::client::{ExecEvent, ExecEvents};
use banger_agent_protocol::frame::{Frame, FrameDecoder, FrameKind};
use banger_agent_protocol::protocol::ExecRequest;
use banger_api::{ApiError, ConsoleChunk, ErrorCode, SshAccess};
use serde::Deserialize;

use crate::Daemon;
use crate::api::{Answer, Body, Failure, Params};
use crate::machine::{console, disks, guest};

/// The API error for a failed call to the guest agent. An answer from the agent (a missing
/// file, a refused archive, a path that is in the way) is the user's to fix and carries the
/// agent's own status and hint; only a call that got no answer suggests the agent is down.
fn agent_error(vm: &str) -> impl FnOnce(banger_agent_protocol::client::AgentError) -> Failure + '_ {
    move |e| agent_failure(vm, e)
}

fn agent_failure(vm: &str, e: banger_agent_protocol::client::AgentError) -> Failure {
    use banger_agent_protocol::client::AgentError;
    let hint = e.hint().map(str::to_owned);
    let code = match &e {
        AgentError::Api { status, .. } => match status {
            400 | 403 | 422 => ErrorCode::InvalidInput,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::InvalidState,
            _ => ErrorCode::Internal,
        },
        AgentError::Failed(_) => ErrorCode::Internal,
        AgentError::Local(local) if local.is_refusal() => ErrorCode::InvalidInput,
        AgentError::Local(_) => ErrorCode::Internal,
        AgentError::Connect { .. } | AgentError::Protocol(_) | AgentError::Timeout { .. } => {
            ErrorCode::Unavailable
        }
    };
    let mut error = ApiError::new(code, e.to_string());
    error.hint = hint.or_else(|| match e {
        AgentError::Timeout { .. } => Some(format!(
            "the guest is running but its agent is silent: it may be hung, out of memory or \
             still booting; `banger vm logs {vm}` shows the guest console, \
             `banger vm restart {vm}` reboots it"
        )),
        AgentError::Connect { .. } | AgentError::Protocol(_) => Some(format!(
            "the guest agent may not be up yet or may have stopped; `banger vm logs {vm}` \
             shows the guest console"
        )),
        // The agent answered: whatever it said is the story, not its health.
        AgentError::Api { .. } | AgentError::Failed(_) | AgentError::Local(_) => None,
    });
    Failure(error)
}

async fn running_vm(d: &Arc<Daemon>, name: String) -> Result<banger_api::Vm, Failure> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || crate::vm::find(&d, &name))
        .await
        .map_err(|e| Failure(ApiError::internal(e.to_string())))?
        .map_err(Failure)
}

/// `GET /v1/vms/{name}/health`: the guest agent's health.
#[utoipa::path(get, path = "/v1/vms/{name}/health", params(("name" = String, Path, description = "VM name or id")), responses(
    (status = 200, body = banger_agent_protocol::protocol::Health),
    (status = 404, body = ApiError), (status = 409, body = ApiError, description = "the VM is not running"),
    (status = 500, body = ApiError), (status = 503, body = ApiError, description = "the guest agent does not answer")))]
pub async fn health(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    let result: Answer<Response> = async {
        let vm = running_vm(&d, name).await?;
        let agent = guest::agent(&d, &vm)?;
        let health = agent.health().await.map_err(agent_error(&vm.name))?;
        Ok(axum::Json(health).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/vms/{name}/ports`: the guest's listening sockets.
#[utoipa::path(get, path = "/v1/vms/{name}/ports", params(("name" = String, Path, description = "VM name or id")), responses(
    (status = 200, body = [banger_agent_protocol::protocol::ListeningPort]),
    (status = 404, body = ApiError), (status = 409, body = ApiError, description = "the VM is not running"),
    (status = 500, body = ApiError), (status = 503, body = ApiError, description = "the guest agent does not answer")))]
pub async fn ports(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    let result: Answer<Response> = async {
        let vm = running_vm(&d, name).await?;
        let agent = guest::agent(&d, &vm)?;
        Ok(axum::Json(agent.ports().await.map_err(agent_error(&vm.name))?).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/vms/{name}/stats`: the guest's memory, load and disks.
#[utoipa::path(get, path = "/v1/vms/{name}/stats", params(("name" = String, Path, description = "VM name or id")), responses(
    (status = 200, body = banger_agent_protocol::protocol::Stats),
    (status = 404, body = ApiError), (status = 409, body = ApiError, description = "the VM is not running"),
    (status = 500, body = ApiError), (status = 503, body = ApiError, description = "the guest agent does not answer")))]
pub async fn stats(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    let result: Answer<Response> = async {
        let vm = running_vm(&d, name).await?;
        let agent = guest::agent(&d, &vm)?;
        Ok(axum::Json(agent.stats().await.map_err(agent_error(&vm.name))?).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// How long a client's input is still read after the command's side of an exec ended.
const INPUT_AFTER_END: std::time::Duration = std::time::Duration::from_secs(10);

/// The media type of a framed exec stream, both ways (see docs/guest-agent.md).
pub const EXEC_FRAMES: &str = "application/vnd.banger.exec-frames";

/// `POST /v1/vms/{name}/exec`: runs a command through the guest agent. The answer streams the
/// agent's frames (stdout, stderr, then exit) as [`EXEC_FRAMES`]. The request is either
///
/// - framed ([`EXEC_FRAMES`]): a start frame, then stdin, stdin EOF, resize and signal frames
///   while the answer streams: a full-duplex conversation relayed frame by frame, so input
///   and output of any size pass in bounded memory; or
/// - a JSON exec request, for simple clients: no standard input, no terminal.
#[utoipa::path(post, path = "/v1/vms/{name}/exec", params(("name" = String, Path, description = "VM name or id")),
    request_body(description = "a JSON exec request (no standard input, no terminal), or a \
        framed conversation (application/vnd.banger.exec-frames: a start frame holding the \
        same request, then stdin, stdin-EOF, resize and signal frames; docs/guest-agent.md)",
        content((banger_agent_protocol::protocol::ExecRequest = "application/json"),
                (crate::api::Binary = "application/vnd.banger.exec-frames"))),
    responses(
    (status = 200, description = "the command's stdout, stderr, then exit (or error) frames, \
        streamed as the command runs", content_type = "application/vnd.banger.exec-frames",
        body = crate::api::Binary),
    (status = 400, body = ApiError), (status = 404, body = ApiError),
    (status = 409, body = ApiError, description = "the VM is not running"),
    (status = 413, body = ApiError), (status = 415, body = ApiError),
    (status = 500, body = ApiError),
    (status = 422, body = ApiError, description = "standard input or a terminal asked in a JSON request"),
    (status = 503, body = ApiError, description = "the guest agent does not answer")))]
pub async fn exec(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let framed = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(EXEC_FRAMES));
    let result = if framed {
        exec_framed(&d, name, request.into_body()).await
    } else {
        exec_json(&d, name, request).await
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn exec_json(
    d: &Arc<Daemon>,
    name: String,
    request: axum::extract::Request,
) -> Answer<Response> {
    use axum::extract::FromRequest;
    let Body(exec) = Body::<ExecRequest>::from_request(request, d).await?;
    check_argv(&exec)?;
    if exec.stdin || exec.tty.is_some() {
        return Err(Failure(
            ApiError::new(
                ErrorCode::Unsupported,
                "a JSON exec request runs its command without standard input or a terminal",
            )
            .with_hint(format!(
                "send the request as {EXEC_FRAMES} (a start frame, then input frames), as \
                 `banger vm exec` does"
            )),
        ));
    }
    let vm = running_vm(d, name).await?;
    let agent = guest::agent(d, &vm)?;
    let (_input, events) = agent
        .exec(&exec)
        .await
        .map_err(agent_error(&vm.name))?
        .split();
    Ok(frames_answer(events, None))
}

fn check_argv(request: &ExecRequest) -> Result<(), Failure> {
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return Err(Failure(
            ApiError::invalid("no command to run").with_hint("banger vm exec NAME -- CMD..."),
        ));
    }
    Ok(())
}

/// The frames of a request body, in order.
struct InputFrames {
    body: axum::body::BodyDataStream,
    decoder: FrameDecoder,
}

impl InputFrames {
    /// The next frame; `Ok(None)` at a clean end of the body, `Err` for a broken framing or
    /// a body that broke off (the client hung up).
    async fn next(&mut self) -> Result<Option<Frame>, String> {
        use futures_util::StreamExt;
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(|e| e.to_string())? {
                return Ok(Some(frame));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => return Err(format!("the request body broke off: {e}")),
                None => {
                    self.decoder.finish().map_err(|e| e.to_string())?;
                    return Ok(None);
                }
            }
        }
    }
}

async fn exec_framed(d: &Arc<Daemon>, name: String, body: HttpBody) -> Answer<Response> {
    let mut frames = InputFrames {
        body: body.into_data_stream(),
        decoder: FrameDecoder::new(),
    };
    let bad = |message: String| {
        Failure(ApiError::invalid(message).with_hint(
            "a framed exec request starts with a start frame carrying the exec request as JSON",
        ))
    };
    let exec = match frames.next().await.map_err(bad)? {
        Some(frame) if frame.kind == FrameKind::Start => {
            serde_json::from_slice::<ExecRequest>(&frame.payload)
                .map_err(|e| bad(format!("the start frame is not an exec request: {e}")))?
        }
        other => {
            return Err(bad(format!(
                "the first frame must be a start frame, not {:?}",
                other.map(|f| f.kind)
            )));
        }
    };
    check_argv(&exec)?;
    let vm = running_vm(d, name).await?;
    let agent = guest::agent(d, &vm)?;
    let (mut input, events) = agent
        .exec(&exec)
        .await
        .map_err(agent_error(&vm.name))?
        .split();
    // The rest of the body is relayed as it comes, while the answer streams: each frame waits
    // for room on the agent's connection, so a fast sender is held back by a slow command
    // rather than buffered here.
    let (hangup_tx, hangup_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        loop {
            match frames.next().await {
                Ok(Some(frame)) => match frame.kind {
                    FrameKind::Stdin
                    | FrameKind::StdinEof
                    | FrameKind::Resize
                    | FrameKind::Signal => {
                        if input.forward(frame).await.is_err() {
                            // The agent's side is gone: the command exited, or the answer
                            // says why it broke.
                            break;
                        }
                    }
                    other => {
                        let _ = hangup_tx
                            .send(format!("a {other:?} frame cannot follow the start frame"));
                        break;
                    }
                },
                // A clean end closes the command's input; the command goes on. Dropping
                // `input` ends the agent's request body the same way.
                Ok(None) => return,
                Err(e) => {
                    let _ = hangup_tx.send(e);
                    return;
                }
            }
        }
        // The client may still be writing. The rest of its body is read and dropped, for a
        // while: closing the connection under it would fail its writes, and an HTTP client
        // whose write fails stops reading too, before the end of the answer.
        drop(input);
        let _ = tokio::time::timeout(INPUT_AFTER_END, async {
            while let Ok(Some(_)) = frames.next().await {}
        })
        .await;
    });
    Ok(frames_answer(events, Some(hangup_rx)))
}

/// Streams the agent's events as frames. When `hangup` fires (the client's request body broke
/// off or went wrong), the answer ends with an error frame and the agent's connection is
/// dropped, which makes the agent kill the command.
fn frames_answer(
    events: ExecEvents,
    hangup: Option<tokio::sync::oneshot::Receiver<String>>,
) -> Response {
    let hangup = async move {
        match hangup {
            Some(rx) => match rx.await {
                Ok(why) => why,
                // The relay ended without complaint: nothing to wait for.
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    let state = Some((events, Box::pin(hangup)));
    let stream = futures_util::stream::unfold(state, |state| async move {
        let (mut events, mut hangup) = state?;
        let event = tokio::select! {
            event = events.next() => event,
            why = &mut hangup => {
                let frame = error_frame("bad_exec_input", why);
                return Some((Ok::<_, std::io::Error>(frame.encode()), None));
            }
        };
        let frame = match event {
            Ok(Some(ExecEvent::Stdout(bytes))) => Frame::new(FrameKind::Stdout, bytes),
            Ok(Some(ExecEvent::Stderr(bytes))) => Frame::new(FrameKind::Stderr, bytes),
            Ok(Some(ExecEvent::Exit(status))) => {
                let json = serde_json::to_vec(&status).unwrap_or_default();
                return Some((Ok(Frame::new(FrameKind::Exit, json).encode()), None));
            }
            Ok(None) => return None,
            Err(e) => {
                let frame = error_frame(e.code().unwrap_or("agent_failed"), e.to_string());
                return Some((Ok(frame.encode()), None));
            }
        };
        Some((Ok(frame.encode()), Some((events, hangup))))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, EXEC_FRAMES)],
        HttpBody::from_stream(stream),
    )
        .into_response()
}

fn error_frame(code: &str, message: String) -> Frame {
    let body = banger_agent_protocol::protocol::ErrorBody {
        code: code.to_owned(),
        message,
        hint: None,
    };
    Frame::new(
        FrameKind::Error,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    path: String,
}

/// `?path=DIR[&owners=archive]` of a copy into the guest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyInQuery {
    path: String,
    /// `archive` keeps the archive's uids and gids (`vm cp -a`); the default is root's.
    #[serde(default)]
    owners: Option<CopyOwners>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyOwners {
    Extractor,
    Archive,
}

/// `?path=P[&name=N]` of a copy out of the guest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyOutQuery {
    path: String,
    /// The archive's top entry is called `name` rather than `path`'s own name; `.` sends a
    /// directory's contents without the directory.
    #[serde(default)]
    name: Option<String>,
}

/// `GET /v1/vms/{name}/files/stat?path=P`: what the guest path `P` is (`kind` is `missing`
/// when there is nothing), so a client can apply `docker cp`'s rules before copying.
#[utoipa::path(get, path = "/v1/vms/{name}/files/stat",
    params(("name" = String, Path, description = "VM name or id"), ("path" = String, Query, description = "an absolute guest path")),
    responses((status = 200, body = banger_agent_protocol::protocol::PathStat),
    (status = 400, body = ApiError), (status = 404, body = ApiError),
    (status = 409, body = ApiError, description = "the VM is not running"),
    (status = 500, body = ApiError), (status = 503, body = ApiError, description = "the guest agent does not answer")))]
pub async fn stat(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Params(query): Params<PathQuery>,
) -> Response {
    let result: Answer<Response> = async {
        let vm = running_vm(&d, name).await?;
        let agent = guest::agent(&d, &vm)?;
        let stat = agent
            .stat(&query.path)
            .await
            .map_err(agent_error(&vm.name))?;
        Ok(axum::Json(stat).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT /v1/vms/{name}/files?path=DIR`: the request body, a tar archive, is extracted into the
/// guest directory `DIR` by the agent (which refuses entries that would land outside it).
#[utoipa::path(put, path = "/v1/vms/{name}/files",
    params(("name" = String, Path, description = "VM name or id"), ("path" = String, Query, description = "the guest directory to extract into"),
        ("owners" = Option<String>, Query, description = "`archive` keeps the archive's uids and \
            gids; by default the files are root's")),
    request_body(content = crate::api::Binary, content_type = "application/x-tar",
        description = "a tar archive"),
    responses((status = 200, body = banger_agent_protocol::protocol::CopyInSummary),
    (status = 400, body = ApiError, description = "a bad query, or an archive entry the agent refuses"),
    (status = 404, body = ApiError), (status = 409, body = ApiError),
    (status = 500, body = ApiError), (status = 503, body = ApiError, description = "the guest agent does not answer")))]
pub async fn copy_in(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Params(query): Params<CopyInQuery>,
    body: HttpBody,
) -> Response {
    let result: Answer<Response> = async {
        let vm = running_vm(&d, name).await?;
        let agent = guest::agent(&d, &vm)?;
        use futures_util::TryStreamExt;
        let reader = tokio_util::io::StreamReader::new(
            body.into_data_stream().map_err(std::io::Error::other),
        );
        let owners = match query.owners {
            Some(CopyOwners::Archive) => banger_agent_protocol::archive::Owners::Archive,
            _ => banger_agent_protocol::archive::Owners::Extractor,
        };
        let summary = agent
            .copy_in_with(&query.path, owners, reader)
            .await
            .map_err(agent_error(&vm.name))?;
        Ok(axum::Json(summary).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/vms/{name}/files?path=P`: a tar archive of the guest file or directory `P`.
#[utoipa::path(get, path = "/v1/vms/{name}/files",
    params(("name" = String, Path, description = "VM name or id"), ("path" = String, Query, description = "the guest file or directory"),
        ("name" = Option<String>, Query, description = "the archive's top entry's name instead \
            of the path's own; `.` sends a directory's contents")),
    responses((status = 200, description = "a tar archive", content_type = "application/x-tar",
        body = crate::api::Binary),
    (status = 400, body = ApiError), (status = 404, body = ApiError, description = "no such VM, or no such guest path"),
    (status = 409, body = ApiError), (status = 500, body = ApiError),
    (status = 503, body = ApiError, description = "the guest agent does not answer")))]
pub async fn copy_out(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Params(query): Params<CopyOutQuery>,
) -> Response {
    let result: Answer<Response> = async {
        let top = match query.name.as_deref() {
            None => None,
            Some(".") => Some(banger_agent_protocol::archive::TopName::Contents),
            Some(n) => Some(
                banger_agent_protocol::archive::TopName::named(n)
                    .map_err(|e| Failure(ApiError::invalid(e.to_string())))?,
            ),
        };
        let vm = running_vm(&d, name).await?;
        let agent = guest::agent(&d, &vm)?;
        let tar = agent
            .copy_out_as(&query.path, top.as_ref())
            .await
            .map_err(agent_error(&vm.name))?;
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-tar")],
            HttpBody::from_stream(tokio_util::io::ReaderStream::new(tar)),
        )
            .into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
pub struct ConsoleQuery {
    offset: Option<u64>,
}

/// `GET /v1/vms/{name}/console?offset=N`: the guest console from byte `offset` (the last
/// 64 KiB of the current boot when absent), at most 1 MiB, and where to continue. Offsets run
/// on across boots (see [`console`]).
#[utoipa::path(get, path = "/v1/vms/{name}/console",
    params(("name" = String, Path, description = "VM name or id"), ("offset" = Option<u64>, Query, description = "where to read from; the last \
        64 KiB of the current boot when absent")),
    responses((status = 200, body = ConsoleChunk), (status = 400, body = ApiError),
    (status = 404, body = ApiError), (status = 500, body = ApiError)))]
pub async fn console(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Params(query): Params<ConsoleQuery>,
) -> Response {
    let d2 = d.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<ConsoleChunk, ApiError> {
        let vm = crate::vm::find(&d2, &name)?;
        console::read(&d2.paths.vm_dir(&vm.id), query.offset)
    })
    .await;
    match result {
        Ok(Ok(chunk)) => axum::Json(chunk).into_response(),
        Ok(Err(e)) => Failure(e).into_response(),
        Err(e) => Failure(ApiError::internal(e.to_string())).into_response(),
    }
}

/// `GET /v1/vms/{name}/ssh`: what OpenSSH needs to log into the VM as root: its address,
/// banger's key and a `known_hosts` file with exactly the VM's own host key.
#[utoipa::path(get, path = "/v1/vms/{name}/ssh", params(("name" = String, Path, description = "VM name or id")), responses(
    (status = 200, body = SshAccess), (status = 404, body = ApiError),
    (status = 409, body = ApiError, description = "the VM has no SSH host key on record"),
    (status = 500, body = ApiError)))]
pub async fn ssh(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    let d2 = d.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<SshAccess, ApiError> {
        let vm = crate::vm::find(&d2, &name)?;
        let dir = d2.paths.vm_dir(&vm.id);
        let host_key = std::fs::read_to_string(dir.join(disks::HOST_KEY_PUB)).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidState,
                format!("VM {} has no SSH host key on record: {e}", vm.name),
            )
            .with_hint("VMs created by older banger builds have none; create the VM again")
        })?;
        let mut fields = host_key.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            return Err(ApiError::internal(format!(
                "VM {}'s SSH host key record is not a public key",
                vm.name
            )));
        };
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("{} {kind} {key}\n", vm.network.ip)).map_err(|e| {
            ApiError::internal(format!("cannot write {}: {e}", known_hosts.display()))
        })?;
        let identity = match &d2.config.ssh_key {
            Some(key) => key.clone(),
            None => d2.paths.state_dir.join("ssh/id_ed25519"),
        };
        Ok(SshAccess {
            user: "root".into(),
            host: vm.network.ip.clone(),
            port: 22,
            identity_file: identity.display().to_string(),
            known_hosts_file: known_hosts.display().to_string(),
            running: vm.state == banger_api::VmState::Running,
        })
    })
    .await;
    match result {
        Ok(Ok(access)) => axum::Json(access).into_response(),
        Ok(Err(e)) => Failure(e).into_response(),
        Err(e) => Failure(ApiError::internal(e.to_string())).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_agent_protocol::client::AgentError;
    use banger_agent_protocol::protocol::ErrorBody;

    /// Regression: copying a file over an existing directory was answered by the agent, yet
    /// the CLI said "the guest agent may not be up yet". An answer is the agent's story.
    #[test]
    fn an_answer_from_the_agent_does_not_blame_the_agent() {
        let refused = AgentError::Api {
            status: 400,
            body: ErrorBody {
                code: "unsafe_archive".into(),
                message: "refusing archive entry \"x.txt\": it would replace an existing directory"
                    .into(),
                hint: None,
            },
        };
        let Failure(error) = agent_failure("dev", refused);
        assert_eq!(error.code, ErrorCode::InvalidInput);
        assert_eq!(error.hint, None);

        let missing = AgentError::Api {
            status: 404,
            body: ErrorBody {
                code: "not_found".into(),
                message: "cannot read /root/nope in the guest".into(),
                hint: None,
            },
        };
        assert_eq!(agent_failure("dev", missing).0.code, ErrorCode::NotFound);

        // No answer at all is where the agent's health is the likely story.
        let down = AgentError::Connect {
            target: "tcp 172.30.0.2:1024".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let Failure(error) = agent_failure("dev", down);
        assert_eq!(error.code, ErrorCode::Unavailable);
        let hint = error.hint.unwrap();
        assert!(hint.contains("may not be up yet"), "{hint}");
        assert!(
            hint.contains("`banger vm logs dev`"),
            "names the VM: {hint}"
        );
    }
}

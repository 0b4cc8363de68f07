//! The agent's side of an exec connection at the byte level, on a Unix socket pair as
//! Firecracker's vsock hands it one: after the exit frame the agent must keep the connection
//! while the client still writes its input. A connection closed under a writing client makes
//! the client's write fail, and an HTTP client that fails a write stops reading too, losing
//! the exit frame it had not read yet.

use std::time::Duration;

use banger_agent::guest::{self, Config, Token};
use banger_agent_protocol::frame::{Frame, FrameKind};
use banger_agent_protocol::protocol::ExecRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "exec-token-0123456789";

fn config() -> Config {
    Config {
        token: Token::new(TOKEN),
        tcp: Vec::new(),
        vsock_port: None,
        shutdown: guest::shutdown::Method::Kernel,
        proc_root: "/proc".into(),
        started_at: Duration::ZERO,
        boot_stages: Vec::new(),
        heartbeat: banger_agent_protocol::protocol::HEARTBEAT_EVERY,
    }
}

/// One chunk of a chunked request body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads the answer into `seen` until `needle` appears in it.
async fn read_until(
    stream: &mut tokio::net::unix::OwnedReadHalf,
    seen: &mut Vec<u8>,
    needle: &[u8],
) {
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if seen.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "the answer never held {:?}: {:?}",
        String::from_utf8_lossy(needle),
        String::from_utf8_lossy(seen)
    );
}

/// Sends the head of an exec of `true` with standard input, and its start frame; the body
/// stays open.
async fn start_true(write: &mut tokio::net::unix::OwnedWriteHalf) {
    let mut request = ExecRequest::new(["true"]);
    request.stdin = true;
    let start = Frame::new(FrameKind::Start, serde_json::to_vec(&request).unwrap()).encode();
    let mut head = format!(
        "POST /v1/exec HTTP/1.1\r\nHost: banger-agent\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/vnd.banger.exec-frames\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(&chunk(&start));
    write.write_all(&head).await.unwrap();
}

#[tokio::test]
async fn the_connection_stays_up_while_the_client_writes_after_the_exit() {
    let (client, server) = tokio::net::UnixStream::pair().unwrap();
    let agent = tokio::spawn(guest::serve_stream(server, config()));
    let (mut read, mut write) = client.into_split();
    start_true(&mut write).await;

    // The command exits at once; its exit frame comes while the input is still open.
    let mut answer = Vec::new();
    read_until(&mut read, &mut answer, br#"{"code":0"#).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A client whose input comes later (a pipe that reaches EOF after the command ended)...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let eof = Frame::new(FrameKind::StdinEof, bytes::Bytes::new()).encode();
    write
        .write_all(&chunk(&eof))
        .await
        .expect("the agent closed the connection while the client was still writing its input");
    tokio::time::sleep(Duration::from_millis(300)).await;
    write
        .write_all(b"0\r\n\r\n")
        .await
        .expect("the agent closed the connection before the client ended its input");
    // ...ends its body, and then the answer has ended too: the connection is idle, kept
    // alive for another request until the client closes it.
    read_until(&mut read, &mut answer, b"0\r\n\r\n").await;
    drop(write);
    drop(read);
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent kept a closed connection")
        .unwrap();
}

#[tokio::test]
async fn a_client_that_never_ends_its_input_is_let_go() {
    let (client, server) = tokio::net::UnixStream::pair().unwrap();
    let agent = tokio::spawn(guest::serve_stream(server, config()));
    let (mut read, mut write) = client.into_split();
    start_true(&mut write).await;
    read_until(&mut read, &mut Vec::new(), br#"{"code":0"#).await;
    // The body stays open and the client says nothing more: after a while the agent closes
    // the connection rather than keep it for ever.
    let limit = guest::exec::INPUT_AFTER_END + Duration::from_secs(10);
    tokio::time::timeout(limit, agent)
        .await
        .expect("the agent kept a connection whose input never ended")
        .unwrap();
}

//! Connecting from the host to a guest vsock port through Firecracker's hybrid vsock: connect
//! to the VM's vsock Unix socket, write `CONNECT <port>\n`, and read Firecracker's `OK <n>\n`
//! acknowledgement; the stream then carries the guest service's bytes (banger's agent speaks
//! HTTP on port 1024). Async, because the agent client that uses it is.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The longest acknowledgement line Firecracker sends (`OK ` and a 32-bit port number).
const MAX_ACK: usize = 32;

/// Connecting to a guest port failed.
#[derive(Debug, thiserror::Error)]
pub enum HybridVsockError {
    #[error("cannot connect to the vsock socket {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the vsock connection to guest port {port} broke")]
    Io {
        port: u32,
        #[source]
        source: io::Error,
    },

    /// Firecracker closes the connection without a word when nothing listens on the port.
    #[error("nothing answers on guest vsock port {port}")]
    Refused { port: u32 },

    #[error("unexpected answer to CONNECT {port}: {answer:?}")]
    Unexpected { port: u32, answer: String },
}

/// A stream to guest vsock `port` of the VM whose vsock device listens on `socket`.
pub async fn connect(socket: &Path, port: u32) -> Result<UnixStream, HybridVsockError> {
    let mut stream =
        UnixStream::connect(socket)
            .await
            .map_err(|source| HybridVsockError::Connect {
                socket: socket.to_owned(),
                source,
            })?;
    let io_error = |source| HybridVsockError::Io { port, source };
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(io_error)?;

    // Byte by byte: whatever follows the newline already belongs to the guest's protocol.
    let mut line = Vec::with_capacity(MAX_ACK);
    loop {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.map_err(io_error)?;
        if n == 0 {
            return Err(if line.is_empty() {
                HybridVsockError::Refused { port }
            } else {
                HybridVsockError::Unexpected {
                    port,
                    answer: String::from_utf8_lossy(&line).into_owned(),
                }
            });
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > MAX_ACK {
            return Err(HybridVsockError::Unexpected {
                port,
                answer: String::from_utf8_lossy(&line).into_owned(),
            });
        }
    }
    let answer = String::from_utf8_lossy(&line);
    match answer.strip_prefix("OK ") {
        Some(host_port) if host_port.trim().parse::<u32>().is_ok() => Ok(stream),
        _ => Err(HybridVsockError::Unexpected {
            port,
            answer: answer.into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn vsock_server(
        reply: &'static [u8],
    ) -> (tempfile::TempDir, PathBuf, tokio::task::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("v.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 64];
            let n = conn.read(&mut request).await.unwrap();
            conn.write_all(reply).await.unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (dir, socket, task)
    }

    #[tokio::test]
    async fn connect_writes_connect_and_keeps_what_follows_the_ack() {
        let (_dir, socket, server) = vsock_server(b"OK 1073741824\nHTTP/1.1 200 OK\r\n").await;
        let mut stream = connect(&socket, 1024).await.unwrap();
        assert_eq!(server.await.unwrap(), "CONNECT 1024\n");
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "HTTP/1.1 200 OK\r\n");
    }

    #[tokio::test]
    async fn a_closed_connection_means_nothing_listens() {
        let (_dir, socket, server) = vsock_server(b"").await;
        let err = connect(&socket, 52).await.unwrap_err();
        server.await.unwrap();
        assert_eq!(err.to_string(), "nothing answers on guest vsock port 52");
    }

    #[tokio::test]
    async fn garbage_is_unexpected() {
        let (_dir, socket, server) = vsock_server(b"NO\n").await;
        let err = connect(&socket, 52).await.unwrap_err();
        server.await.unwrap();
        assert!(
            matches!(err, HybridVsockError::Unexpected { .. }),
            "{err:?}"
        );
    }
}

//! `PUT /v1/files?path=DIR` (extract the tar body into `DIR`) and `GET /v1/files?path=P` (a
//! tar of `P`). The archive work is [`crate::archive`]'s, on a blocking thread; this module
//! moves the bytes between hyper's async bodies and the synchronous tar code through bounded
//! channels, so a large copy streams in constant memory.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::archive::{self, ArchiveError, Unpacked};
use crate::body::{CHANNEL_DEPTH, ChannelBody};

/// Bytes per chunk of an outgoing archive.
const CHUNK: usize = 64 * 1024;

/// A synchronous reader over chunks arriving on a channel.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A synchronous writer that sends full chunks into a channel.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Extracts the request body into `dir`.
pub async fn put(dir: PathBuf, mut body: Incoming) -> Result<Unpacked, ArchiveError> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let extract = tokio::task::spawn_blocking(move || {
        archive::unpack(
            ChannelReader {
                rx,
                current: Bytes::new(),
            },
            &dir,
        )
    });
    // Feed the extractor until the body ends or the extractor stops listening (it failed, or
    // it reached the archive's end marker).
    while let Some(frame) = body.frame().await {
        let item = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue,
            },
            Err(e) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, e)),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    extract.await.map_err(|e| ArchiveError::Io {
        what: "extracting the archive".into(),
        source: io::Error::other(e),
    })?
}

/// A streamed tar archive of `path`. Failures after the first bytes abort the body, so the
/// client sees a broken transfer rather than a short archive.
pub fn get(path: &Path) -> ChannelBody {
    let (tx, body) = ChannelBody::channel();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = archive::pack(&path, &mut writer).and_then(|w| {
            w.flush().map_err(|source| ArchiveError::Io {
                what: "sending the archive".into(),
                source,
            })
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    body
}

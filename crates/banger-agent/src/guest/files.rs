//! `PUT /v1/files?path=DIR` (extract the tar body into `DIR`) and `GET /v1/files?path=P` (a
//! tar of `P`). The archive work is [`crate::archive`]'s, on a blocking thread; this module
//! moves the bytes between hyper's async bodies and the synchronous tar code through bounded
//! channels, so a large copy streams in constant memory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::archive::{self, ArchiveError, Unpacked};
use crate::body::{CHANNEL_DEPTH, ChannelBody, ChannelReader, ChannelWriter};

/// How long the rest of a refused upload is read before answering.
const DRAIN_REFUSED_UPLOAD: std::time::Duration = std::time::Duration::from_secs(5);

/// Extracts the request body into `dir`.
pub async fn put(dir: PathBuf, mut body: Incoming) -> Result<Unpacked, ArchiveError> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let extract =
        tokio::task::spawn_blocking(move || archive::unpack(ChannelReader::new(rx), &dir));
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
    let result = extract.await.map_err(|e| ArchiveError::Io {
        what: "extracting the archive".into(),
        source: io::Error::other(e),
    })?;
    if result.is_err() {
        drain(&mut body).await;
    }
    result
}

/// Reads and discards what is left of a refused upload, for a short while, so the client gets
/// to read the error answer instead of a connection reset in the middle of its upload.
async fn drain(body: &mut Incoming) {
    let _ = tokio::time::timeout(DRAIN_REFUSED_UPLOAD, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// A streamed tar archive of `path`. Failures after the first bytes abort the body, so the
/// client sees a broken transfer rather than a short archive.
pub fn get(path: &Path) -> ChannelBody {
    let (tx, body) = ChannelBody::channel();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter::new(tx.clone());
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

//! `PUT /v1/files?path=DIR` (extract the tar body into `DIR`), `GET /v1/files?path=P` (a
//! tar of `P`) and `GET /v1/stat?path=P` (what `P` is, so the host can apply `docker cp`'s
//! rules before it sends or asks for anything). The archive work is
//! [`banger_agent_protocol::archive`]'s, on a blocking thread; this module moves the bytes
//! between hyper's async bodies and the synchronous tar code through bounded channels, so a
//! large copy streams in constant memory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use banger_agent_protocol::archive::{self, ArchiveError, Owners, TopName, Unpacked};
use banger_agent_protocol::body::{CHANNEL_DEPTH, ChannelBody, ChannelReader, ChannelWriter};
use banger_agent_protocol::protocol::{PathKind, PathStat};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

/// How long the rest of a refused upload is read before answering.
const DRAIN_REFUSED_UPLOAD: std::time::Duration = std::time::Duration::from_secs(5);

/// What `path` is. A missing path, or one with a non-directory on the way (`ENOTDIR`), is
/// [`PathKind::Missing`]; other failures (permissions) are errors.
pub fn stat(path: &Path) -> io::Result<PathStat> {
    let kind_of = |m: &std::fs::Metadata| {
        let t = m.file_type();
        if t.is_dir() {
            PathKind::Directory
        } else if t.is_file() {
            PathKind::File
        } else if t.is_symlink() {
            PathKind::Symlink
        } else {
            PathKind::Other
        }
    };
    let missing = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if missing(&e) => {
            return Ok(PathStat {
                kind: PathKind::Missing,
                target: None,
                mode: 0,
            });
        }
        Err(e) => return Err(e),
    };
    let kind = kind_of(&meta);
    let target = match kind {
        PathKind::Symlink => Some(match std::fs::metadata(path) {
            Ok(m) => kind_of(&m),
            Err(e) if missing(&e) => PathKind::Missing,
            Err(e) => return Err(e),
        }),
        _ => None,
    };
    use std::os::unix::fs::PermissionsExt;
    Ok(PathStat {
        kind,
        target,
        mode: meta.permissions().mode() & 0o7777,
    })
}

/// Extracts the request body into `dir`.
pub async fn put(
    dir: PathBuf,
    owners: Owners,
    mut body: Incoming,
) -> Result<Unpacked, ArchiveError> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let extract = tokio::task::spawn_blocking(move || {
        archive::unpack_with(ChannelReader::new(rx), &dir, owners)
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

/// A streamed tar archive of `path`, its top entry called `top`. Failures after the first
/// bytes abort the body, so the client sees a broken transfer rather than a short archive.
pub fn get(path: &Path, top: TopName) -> ChannelBody {
    let (tx, body) = ChannelBody::channel();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter::new(tx.clone());
        let result = archive::pack_as(&path, &top, &mut writer).and_then(|w| {
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

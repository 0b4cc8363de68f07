//! Copying disk images without inflating them: a reflink (shared extents, instant) when the
//! filesystem can, otherwise a copy of only the source's data extents that leaves its holes as
//! holes. Progress is reported as the copy advances and the caller may cancel; a copy that does
//! not finish leaves no partial file behind.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// Bytes copied between two progress reports.
const CHUNK: u64 = 4 << 20;

/// How [`copy_file`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// The copy shares the source's extents (`FICLONE`); it cost no space or time.
    Reflink,
    /// Only the source's data was copied; its holes stayed holes.
    Sparse,
}

/// Copying a file failed; the partial destination has been removed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot open {}", path.display())]
    Open { path: PathBuf, source: io::Error },

    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },

    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },

    #[error("cannot create {}", path.display())]
    Create { path: PathBuf, source: io::Error },

    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write {}", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("copy cancelled")]
    Cancelled,
}

/// Copies `src` to the new file `dst` (mode 0644; an existing `dst` is refused), by reflink when
/// possible, else sparsely. `progress(done, total)` is called at least every 4 MiB of source
/// offset and once the copy is complete; returning `Break` cancels the copy. On any failure or
/// cancellation `dst` is removed.
pub fn copy_file(
    src: &Path,
    dst: &Path,
    progress: &mut dyn FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<CopyMethod, CopyError> {
    copy(src, dst, progress, true)
}

fn copy(
    src: &Path,
    dst: &Path,
    progress: &mut dyn FnMut(u64, u64) -> ControlFlow<()>,
    try_reflink: bool,
) -> Result<CopyMethod, CopyError> {
    let source = File::open(src).map_err(|source| CopyError::Open {
        path: src.to_owned(),
        source,
    })?;
    let meta = source.metadata().map_err(|source| CopyError::Open {
        path: src.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(CopyError::NotAFile {
            path: src.to_owned(),
        });
    }
    let total = meta.len();

    let target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dst)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                CopyError::Exists {
                    path: dst.to_owned(),
                }
            } else {
                CopyError::Create {
                    path: dst.to_owned(),
                    source,
                }
            }
        })?;
    let partial = RemoveOnDrop(Some(dst));

    let method = match try_reflink.then(|| rustix::fs::ioctl_ficlone(&target, &source)) {
        Some(Ok(())) => {
            if progress(total, total).is_break() {
                return Err(CopyError::Cancelled);
            }
            CopyMethod::Reflink
        }
        attempt => {
            if let Some(Err(errno)) = attempt {
                tracing::debug!(src = %src.display(), %errno, "no reflink; copying data extents");
            }
            copy_extents(&source, src, &target, dst, total, progress)?;
            CopyMethod::Sparse
        }
    };
    target.sync_all().map_err(|source| CopyError::Write {
        path: dst.to_owned(),
        source,
    })?;
    partial.keep();
    Ok(method)
}

/// Copies the data extents of `source` into the empty `target`, skipping holes and all-zero
/// chunks so the copy is at most as allocated as the source.
fn copy_extents(
    source: &File,
    src: &Path,
    target: &File,
    dst: &Path,
    total: u64,
    progress: &mut dyn FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<(), CopyError> {
    let read_error = |source: io::Error| CopyError::Read {
        path: src.to_owned(),
        source,
    };
    let write_error = |source: io::Error| CopyError::Write {
        path: dst.to_owned(),
        source,
    };
    target.set_len(total).map_err(write_error)?;

    let mut buf = vec![0u8; CHUNK.min(total) as usize];
    let mut reported = 0;
    let mut pos = 0;
    while pos < total {
        let (data, hole) = match next_extent(source, pos, total) {
            Ok(Some(extent)) => extent,
            Ok(None) => break,
            Err(errno) => return Err(read_error(errno.into())),
        };
        let mut offset = data;
        while offset < hole {
            // Chunks end on CHUNK-aligned offsets so reports come at a steady pace.
            let end = ((offset / CHUNK + 1) * CHUNK).min(hole);
            let chunk = &mut buf[..(end - offset) as usize];
            source.read_exact_at(chunk, offset).map_err(read_error)?;
            if chunk.iter().any(|&b| b != 0) {
                target.write_all_at(chunk, offset).map_err(write_error)?;
            }
            offset = end;
            reported = offset;
            if progress(offset, total).is_break() {
                return Err(CopyError::Cancelled);
            }
        }
        pos = hole;
    }
    if reported < total && progress(total, total).is_break() {
        return Err(CopyError::Cancelled);
    }
    Ok(())
}

/// The next data extent at or after `pos` as `(start, end)`, or `None` past the last one. On a
/// filesystem without `SEEK_DATA` the rest of the file counts as one extent.
fn next_extent(file: &File, pos: u64, total: u64) -> Result<Option<(u64, u64)>, Errno> {
    let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
        Ok(data) => data,
        Err(Errno::NXIO) => return Ok(None),
        Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(Some((pos, total))),
        Err(errno) => return Err(errno),
    };
    if data >= total {
        return Ok(None);
    }
    let hole = rustix::fs::seek(file, SeekFrom::Hole(data))?;
    Ok(Some((data, hole.min(total))))
}

/// Removes the file at its path when dropped, unless [`RemoveOnDrop::keep`] was called.
struct RemoveOnDrop<'a>(Option<&'a Path>);

impl RemoveOnDrop<'_> {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0
            && let Err(error) = std::fs::remove_file(path)
        {
            tracing::warn!(path = %path.display(), %error, "cannot remove partial copy");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::allocated_bytes;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    const MIB: u64 = 1 << 20;

    /// A 200 MiB file with 1 MiB of data at 0 and 1 MiB at 100 MiB.
    fn sparse_source(dir: &Path) -> PathBuf {
        let path = dir.join("src.img");
        let file = File::create(&path).unwrap();
        file.set_len(200 * MIB).unwrap();
        let pattern: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
        file.write_all_at(&pattern, 0).unwrap();
        file.write_all_at(&pattern, 100 * MIB).unwrap();
        path
    }

    fn same_content(a: &Path, b: &Path) -> bool {
        let (mut a, mut b) = (File::open(a).unwrap(), File::open(b).unwrap());
        let (mut x, mut y) = (vec![0; CHUNK as usize], vec![0; CHUNK as usize]);
        loop {
            let n = a.read(&mut x).unwrap();
            let mut m = 0;
            while m < n {
                let k = b.read(&mut y[m..n]).unwrap();
                if k == 0 {
                    return false;
                }
                m += k;
            }
            if n == 0 {
                return b.read(&mut y[..1]).unwrap() == 0;
            }
            if x[..n] != y[..n] {
                return false;
            }
        }
    }

    fn check_sparse_copy(try_reflink: bool) {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_source(dir.path());
        let dst = dir.path().join("dst.img");
        let mut calls = Vec::new();
        let method = copy(
            &src,
            &dst,
            &mut |done, total| {
                calls.push((done, total));
                ControlFlow::Continue(())
            },
            try_reflink,
        )
        .unwrap();
        if !try_reflink {
            assert_eq!(method, CopyMethod::Sparse);
        }
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 200 * MIB);
        assert!(same_content(&src, &dst), "copy differs from source");
        let allocated = allocated_bytes(&dst).unwrap();
        assert!(allocated < 8 * MIB, "dst allocated {allocated} bytes");
        assert_eq!(calls.last(), Some(&(200 * MIB, 200 * MIB)));
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
        let mode = std::fs::metadata(&dst).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644 & !current_umask());
    }

    fn current_umask() -> u32 {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o777)
            .open(&probe)
            .unwrap();
        !std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn sparse_copy_is_identical_and_stays_sparse() {
        check_sparse_copy(false);
    }

    #[test]
    fn copy_file_is_identical_whatever_the_method() {
        check_sparse_copy(true);
    }

    #[test]
    fn cancelling_at_the_second_report_removes_dst() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_source(dir.path());
        let dst = dir.path().join("dst.img");
        let mut calls = 0;
        let err = copy(
            &src,
            &dst,
            &mut |_, _| {
                calls += 1;
                if calls == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
            false,
        )
        .unwrap_err();
        assert!(matches!(err, CopyError::Cancelled), "{err:?}");
        assert_eq!(calls, 2);
        assert!(!dst.exists(), "partial copy left behind");
    }

    #[test]
    fn existing_dst_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_source(dir.path());
        let dst = dir.path().join("dst.img");
        std::fs::write(&dst, "precious").unwrap();
        let err = copy_file(&src, &dst, &mut |_, _| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(err, CopyError::Exists { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("{} already exists", dst.display()));
        assert_eq!(std::fs::read(&dst).unwrap(), b"precious");
    }

    #[test]
    fn missing_or_directory_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("dst.img");
        let mut go = |_, _| ControlFlow::Continue(());
        let err = copy_file(&dir.path().join("nope"), &dst, &mut go).unwrap_err();
        assert!(matches!(err, CopyError::Open { .. }), "{err:?}");
        let err = copy_file(dir.path(), &dst, &mut go).unwrap_err();
        assert!(matches!(err, CopyError::NotAFile { .. }), "{err:?}");
        assert!(!dst.exists());
    }

    #[test]
    fn empty_and_dense_files_copy() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        File::create(&empty).unwrap();
        let mut go = |_, _| ControlFlow::Continue(());
        copy(&empty, &dir.path().join("empty2"), &mut go, false).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("empty2")).unwrap().len(),
            0
        );

        let dense = dir.path().join("dense");
        let content: Vec<u8> = (0..(9 * MIB + 7)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&dense, &content).unwrap();
        copy(&dense, &dir.path().join("dense2"), &mut go, false).unwrap();
        assert_eq!(std::fs::read(dir.path().join("dense2")).unwrap(), content);
    }
}

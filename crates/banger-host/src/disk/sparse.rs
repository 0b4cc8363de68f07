//! Writing a stream into a file without allocating its zero blocks. A root filesystem that
//! arrives as a stream (an image archive being imported) is mostly zeros; written as they come,
//! a 2 GiB `rootfs.ext4` would occupy 2 GiB. Here every all-zero block is skipped with a seek,
//! so the file holds only its data and keeps the rest as holes.

use std::fs::File;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;

/// Bytes read from the stream at a time, and between two progress reports.
const CHUNK: usize = 1 << 20;
/// The granularity of the zero test: a filesystem block, so a chunk that mixes data and zero
/// blocks (ext4 metadata does) still leaves its zero blocks unallocated.
const BLOCK: usize = 4096;
/// Compared against with `==` (a `memcmp`): fast even in an unoptimised test build, where a
/// byte loop over gigabytes is not.
static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];

/// Writing a stream sparsely failed.
#[derive(Debug, thiserror::Error)]
pub enum SparseWriteError {
    #[error("cannot read the stream")]
    Read(#[source] io::Error),

    #[error("cannot write the file")]
    Write(#[source] io::Error),

    #[error("the stream ended after {got} of {expected} bytes")]
    Short { expected: u64, got: u64 },

    #[error("writing cancelled")]
    Cancelled,
}

/// Copies exactly `len` bytes of `input` into the empty file `target`, leaving all-zero 4 KiB
/// blocks as holes, and sets the file's length to `len` at the end (so trailing zeros cost
/// nothing either). `progress(done, len)` is called after each MiB and at the end; returning
/// `Break` stops with [`SparseWriteError::Cancelled`]. The caller removes a partial file.
pub fn write_sparse(
    input: &mut dyn Read,
    target: &File,
    len: u64,
    progress: &mut dyn FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<(), SparseWriteError> {
    let mut buf = vec![0u8; CHUNK];
    let mut offset: u64 = 0;
    while offset < len {
        let want = (len - offset).min(CHUNK as u64) as usize;
        let chunk = &mut buf[..want];
        read_full(input, chunk).map_err(SparseWriteError::Read)?;
        write_data_blocks(target, chunk, offset).map_err(SparseWriteError::Write)?;
        offset += want as u64;
        if progress(offset, len).is_break() {
            return Err(SparseWriteError::Cancelled);
        }
    }
    if len == 0 && progress(0, 0).is_break() {
        return Err(SparseWriteError::Cancelled);
    }
    target.set_len(len).map_err(SparseWriteError::Write)
}

/// Fills `buf` from `input`; a stream that ends first is an error.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the stream ended {} bytes early", buf.len() - filled),
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes the runs of non-zero blocks of `chunk` at their offsets, one write per run.
fn write_data_blocks(target: &File, chunk: &[u8], offset: u64) -> io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut at = 0;
    while at < chunk.len() {
        let end = (at + BLOCK).min(chunk.len());
        let zero = chunk[at..end] == ZERO_BLOCK[..end - at];
        match (zero, run_start) {
            (false, None) => run_start = Some(at),
            (true, Some(start)) => {
                target.write_all_at(&chunk[start..at], offset + start as u64)?;
                run_start = None;
            }
            _ => {}
        }
        at = end;
    }
    if let Some(start) = run_start {
        target.write_all_at(&chunk[start..], offset + start as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::allocated_bytes;

    const MIB: u64 = 1 << 20;

    /// 64 MiB of zeros with a few data blocks: one at 0, one MiB at 32 MiB, a block at the end.
    fn mostly_zeros() -> Vec<u8> {
        let mut data = vec![0u8; 64 * MIB as usize];
        data[..5].copy_from_slice(b"start");
        for (i, b) in data[32 * MIB as usize..33 * MIB as usize]
            .iter_mut()
            .enumerate()
        {
            *b = (i % 251) as u8 + 1;
        }
        let end = data.len();
        data[end - 3..].copy_from_slice(b"end");
        data
    }

    #[test]
    fn zero_blocks_become_holes_and_the_content_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        let data = mostly_zeros();
        let mut reports = Vec::new();
        write_sparse(
            &mut data.as_slice(),
            &file,
            data.len() as u64,
            &mut |d, t| {
                reports.push((d, t));
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let allocated = allocated_bytes(&path).unwrap();
        assert!(allocated < 4 * MIB, "allocated {allocated} bytes");
        assert_eq!(reports.len(), 64);
        assert_eq!(reports.last(), Some(&(64 * MIB, 64 * MIB)));
    }

    #[test]
    fn trailing_zeros_still_give_the_full_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        let data = vec![0u8; 3 * MIB as usize + 17];
        write_sparse(
            &mut data.as_slice(),
            &file,
            data.len() as u64,
            &mut |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), data.len() as u64);
        assert!(allocated_bytes(&path).unwrap() < MIB);
    }

    #[test]
    fn a_short_stream_and_a_cancel_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("out")).unwrap();
        let err = write_sparse(&mut &b"abc"[..], &file, 10, &mut |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert!(matches!(err, SparseWriteError::Read(_)), "{err:?}");

        let data = mostly_zeros();
        let mut calls = 0;
        let err = write_sparse(
            &mut data.as_slice(),
            &file,
            data.len() as u64,
            &mut |_, _| {
                calls += 1;
                if calls == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap_err();
        assert!(matches!(err, SparseWriteError::Cancelled), "{err:?}");
    }
}

//! A VM's guest console log, one file per boot: each start moves the last boot's
//! `console.log` to `console.log.1` (replacing the one before), so the log a start's failure
//! quotes and `vm logs` shows is the boot being started.
//!
//! Readers follow the console by byte offset (`GET /v1/vms/{name}/console?offset=N`). So that
//! a reader following across a restart goes on with the new boot instead of losing its place,
//! offsets run on across boots: each log records where it starts in that running count
//! (`console.log.start`, `console.log.1.start`; absent means 0, as for a VM from before), and a
//! read continues in whichever kept log holds its offset: the rest of the previous boot, then
//! the current one from its start.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use banger_api::{ApiError, ConsoleChunk};

use super::disks::CONSOLE_LOG;

/// Most bytes of the console one read returns.
pub const CHUNK: u64 = 1 << 20;
/// Where a read without an offset starts: this far before the end of the current boot's log.
pub const TAIL: u64 = 64 << 10;

fn previous(dir: &Path) -> PathBuf {
    dir.join(format!("{CONSOLE_LOG}.1"))
}

/// The file recording where `log` starts in the running count of console bytes.
fn start_file(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".start");
    PathBuf::from(name)
}

fn start_of(log: &Path) -> u64 {
    fs::read_to_string(start_file(log))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn len_of(log: &Path) -> Option<u64> {
    fs::metadata(log).ok().map(|m| m.len())
}

/// Keeps the last boot's log as `console.log.1`, before a start. A log that cannot be moved
/// is appended to, as before per-boot logs (logged, not an error: a start does not fail on it).
pub fn rotate(dir: &Path) {
    let current = dir.join(CONSOLE_LOG);
    let Some(len) = len_of(&current) else {
        return;
    };
    let start = start_of(&current);
    let previous = previous(dir);
    let moved = fs::write(start_file(&previous), start.to_string())
        .and_then(|()| fs::rename(&current, &previous))
        .and_then(|()| fs::write(start_file(&current), (start + len).to_string()));
    if let Err(e) = moved {
        tracing::warn!(log = %current.display(), error = %e, "cannot keep the previous console log");
    }
}

/// The console from offset `from` (the tail of the current boot when `None`), at most
/// [`CHUNK`] bytes.
pub fn read(dir: &Path, from: Option<u64>) -> Result<ConsoleChunk, ApiError> {
    let current = dir.join(CONSOLE_LOG);
    let current_start = start_of(&current);
    let Some(current_len) = len_of(&current) else {
        return Ok(ConsoleChunk {
            offset: current_start,
            next_offset: current_start,
            text: String::new(),
        });
    };
    let current_end = current_start + current_len;
    let previous = previous(dir);
    let previous_start = start_of(&previous);
    let previous_end = len_of(&previous).map(|len| previous_start + len);
    let (log, start, at) = match from {
        None => (&current, current_start, current_len.saturating_sub(TAIL)),
        Some(offset) if (current_start..=current_end).contains(&offset) => {
            (&current, current_start, offset - current_start)
        }
        // The rest of the boot before, which the reader had not finished.
        Some(offset) if previous_end.is_some_and(|end| (previous_start..end).contains(&offset)) => {
            (&previous, previous_start, offset - previous_start)
        }
        // Older than what is kept, or from a log that was replaced behind banger's back:
        // the current boot from its start.
        Some(_) => (&current, current_start, 0),
    };
    let internal = |e: io::Error| ApiError::internal(format!("cannot read {}: {e}", log.display()));
    let mut file = File::open(log).map_err(internal)?;
    file.seek(SeekFrom::Start(at)).map_err(internal)?;
    let mut bytes = Vec::new();
    file.take(CHUNK).read_to_end(&mut bytes).map_err(internal)?;
    Ok(ConsoleChunk {
        offset: start + at,
        next_offset: start + at + bytes.len() as u64,
        text: String::from_utf8_lossy(&bytes).replace('\r', ""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(dir: &Path, text: &str) {
        use std::io::Write;
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(CONSOLE_LOG))
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    /// Follows the console as `vm logs -f` does, from `from`, until it has nothing new.
    fn follow(dir: &Path, mut from: u64) -> (String, u64) {
        let mut seen = String::new();
        loop {
            let chunk = read(dir, Some(from)).unwrap();
            assert_eq!(chunk.offset, from, "no gap, no overlap");
            if chunk.text.is_empty() {
                return (seen, from);
            }
            seen.push_str(&chunk.text);
            from = chunk.next_offset;
        }
    }

    #[test]
    fn a_reader_follows_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let empty = read(dir, None).unwrap();
        assert_eq!((empty.offset, empty.text.as_str()), (0, ""));

        append(dir, "boot 1 line 1\n");
        let first = read(dir, None).unwrap();
        assert_eq!(first.text, "boot 1 line 1\n");
        append(dir, "boot 1 line 2\n");

        // A restart: the new boot writes more than the first had before the reader looks again.
        rotate(dir);
        append(
            dir,
            "boot 2: a much longer first line than boot 1 ever wrote\n",
        );
        let (seen, at) = follow(dir, first.next_offset);
        assert_eq!(
            seen,
            "boot 1 line 2\nboot 2: a much longer first line than boot 1 ever wrote\n"
        );

        // The tail is the current boot's alone.
        assert_eq!(
            read(dir, None).unwrap().text,
            "boot 2: a much longer first line than boot 1 ever wrote\n"
        );
        let kept = fs::read_to_string(dir.join("console.log.1")).unwrap();
        assert_eq!(kept, "boot 1 line 1\nboot 1 line 2\n");

        // Two more boots: a reader still at the end of boot 2 continues with boot 3; one whose
        // place is no longer kept goes on with the current boot.
        rotate(dir);
        append(dir, "boot 3\n");
        rotate(dir);
        append(dir, "boot 4\n");
        let (seen, _) = follow(dir, at);
        assert_eq!(seen, "boot 3\nboot 4\n");
        let lost = read(dir, Some(first.next_offset)).unwrap();
        assert_eq!(lost.text, "boot 4\n");
        assert_eq!(lost.offset, at + "boot 3\n".len() as u64);
    }

    #[test]
    fn a_log_from_before_per_boot_logs_reads_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), "old\n");
        let chunk = read(dir.path(), Some(0)).unwrap();
        assert_eq!((chunk.offset, chunk.next_offset), (0, 4));
        // An offset past the end (the file was replaced outside banger) starts over.
        let chunk = read(dir.path(), Some(100)).unwrap();
        assert_eq!((chunk.offset, chunk.text.as_str()), (0, "old\n"));
    }
}

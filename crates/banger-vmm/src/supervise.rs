//! Noticing that a VMM process ended on its own, and reading what it left behind: the last
//! lines of a console log and the exit code Firecracker writes to its log. The daemon awaits
//! [`watch_exit`] for every VM it runs; when it resolves without a stop having been asked for,
//! the daemon records the VM as stopped (or failed, with [`console_tail`]) and releases its
//! host resources.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How often [`watch_exit`] looks when the kernel cannot notify it (no pidfd).
const POLL: Duration = Duration::from_millis(200);

/// How much of a log's end [`console_tail`] reads at a time.
const CHUNK: u64 = 8192;

/// Resolves when process `pid` has exited (or does not exist). Uses a pidfd, which the kernel
/// makes readable the moment the process exits, whoever its parent is (it need not be ours: an
/// adopted VMM was started by a previous daemon); falls back to polling every 200 ms.
/// Needs a tokio runtime with I/O enabled.
pub async fn watch_exit(pid: u32) {
    match pidfd(pid) {
        // SAFETY: `fd` is an open pidfd that the AsyncFd takes ownership of; an `OwnedFd`
        // returns the same descriptor from `as_raw_fd` until it is dropped with the AsyncFd.
        Ok(Some(fd)) => match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            Ok(fd) => {
                if fd.readable().await.is_ok() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(pid, %error, "cannot register the pidfd; polling")
            }
        },
        Ok(None) => return,
        Err(error) => tracing::debug!(pid, %error, "no pidfd; polling"),
    }
    while banger_host::pid_alive(pid) {
        tokio::time::sleep(POLL).await;
    }
}

/// A non-blocking pidfd for `pid`, `None` when there is no such process.
fn pidfd(pid: u32) -> io::Result<Option<std::os::fd::OwnedFd>> {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(None);
    };
    match rustix::process::pidfd_open(raw, PidfdFlags::NONBLOCK) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::SRCH) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

/// The last `n` lines of the text file at `path` (a console log may be large: only its end is
/// read). Invalid UTF-8 is replaced, carriage returns dropped; a missing file has no lines.
pub fn console_tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let len = file.metadata()?.len();
    let mut start = len;
    let mut tail: Vec<u8> = Vec::new();
    // Read backwards until the buffer holds n complete lines (n + 1 newlines, not counting a
    // final one) or the whole file.
    while start > 0 {
        let newlines = tail.iter().filter(|b| **b == b'\n').count();
        let trailing = usize::from(tail.last() == Some(&b'\n'));
        if newlines >= n + trailing {
            break;
        }
        let step = CHUNK.min(start);
        start -= step;
        file.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0; usize::try_from(step).unwrap_or(usize::MAX)];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
    }
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..]
        .iter()
        .map(|line| line.replace('\r', ""))
        .collect())
}

/// The exit code Firecracker logged when it exited (`... exit_code=N`), `None` when its log
/// ends without one, as it does when the process was killed.
pub fn exit_code_from_log(vmm_log: &Path) -> Option<i32> {
    let lines = console_tail(vmm_log, 20).ok()?;
    lines.iter().rev().find_map(|line| {
        let (_, code) = line.rsplit_once("exit_code=")?;
        code.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        assert!(console_tail(&log, 5).unwrap().is_empty(), "missing file");

        std::fs::write(&log, "one\r\ntwo\nthree\n").unwrap();
        assert_eq!(console_tail(&log, 2).unwrap(), ["two", "three"]);
        assert_eq!(console_tail(&log, 10).unwrap(), ["one", "two", "three"]);
        assert!(console_tail(&log, 0).unwrap().is_empty());

        std::fs::write(&log, "no newline at the end").unwrap();
        assert_eq!(console_tail(&log, 1).unwrap(), ["no newline at the end"]);
    }

    #[test]
    fn tail_of_a_large_log_reads_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(
            console_tail(&log, 3).unwrap(),
            ["line 19997", "line 19998", "line 19999"]
        );
        let many = console_tail(&log, 2_000).unwrap();
        assert_eq!(many.len(), 2_000);
        assert_eq!(many[0], "line 18000");
        // Invalid UTF-8 does not make the tail unreadable.
        std::fs::write(&log, b"ok\n\xff\xfe broken\n").unwrap();
        assert_eq!(console_tail(&log, 1).unwrap(), ["\u{fffd}\u{fffd} broken"]);
    }

    #[test]
    fn exit_code_is_read_from_firecrackers_last_words() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("firecracker.log");
        std::fs::write(
            &log,
            "2026-11-23T14:56:20.8 [vm:main] Running Firecracker v1.16.1\n\
             2026-11-23T14:56:29.9 [vm:main] Firecracker exiting with error. exit_code=1\n",
        )
        .unwrap();
        assert_eq!(exit_code_from_log(&log), Some(1));
        std::fs::write(
            &log,
            "[vm:main] Firecracker exiting successfully. exit_code=0\n",
        )
        .unwrap();
        assert_eq!(exit_code_from_log(&log), Some(0));
        std::fs::write(&log, "[vm:main] Running Firecracker v1.16.1\n").unwrap();
        assert_eq!(exit_code_from_log(&log), None, "killed: no last words");
    }

    #[tokio::test]
    async fn watch_exit_resolves_when_the_process_ends() {
        let dir = tempfile::tempdir().unwrap();
        let pid = banger_host::spawn_detached(
            Path::new("sleep"),
            &["30".into()],
            &[],
            &dir.path().join("out.log"),
        )
        .unwrap();
        let watch = tokio::spawn(watch_exit(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!watch.is_finished(), "still running");
        let killed = Instant::now();
        banger_host::signal(pid, banger_host::Signal::Kill).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("noticed")
            .unwrap();
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "{:?}",
            killed.elapsed()
        );
    }

    #[tokio::test]
    async fn watch_exit_of_a_missing_process_resolves_at_once() {
        tokio::time::timeout(Duration::from_secs(1), watch_exit(u32::MAX))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), watch_exit(0))
            .await
            .unwrap();
    }
}

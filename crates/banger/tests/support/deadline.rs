//! Commands a test runs with a deadline: a call that hangs (a guest that stops answering, a
//! stream that never ends) fails the test, naming the command and what it printed so far,
//! instead of hanging the whole test run. A call still running after a while says so on the
//! test binary's real standard error, which the test harness does not capture, so a run that
//! is killed from outside still shows where it was.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one command of an end-to-end test may take: `BANGER_TEST_CALL_DEADLINE` seconds,
/// else 15 minutes (an image build with a kernel module, nested, takes a few).
pub fn default_limit() -> Duration {
    std::env::var("BANGER_TEST_CALL_DEADLINE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(900), Duration::from_secs)
}

/// What a command left: its exit status, standard output and standard error.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The most memory the command's process held at once (its VmHWM, sampled while it ran),
    /// in KiB.
    pub peak_rss_kib: u64,
}

impl Finished {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// A line on the test binary's own standard error, past the harness's capture.
pub fn note(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Runs `cmd` with `input` on its standard input, collecting its output; kills it and panics
/// when it is still running after `limit`. `what` names it in the notes and the panic.
pub fn run(cmd: Command, input: Option<&[u8]>, what: &str, limit: Duration) -> Finished {
    try_run(cmd, input, what, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run`] that returns what it would panic with (for clean-up in `Drop`, where a second
/// panic would abort and leave everything running).
pub fn try_run(
    mut cmd: Command,
    input: Option<&[u8]>,
    what: &str,
    limit: Duration,
) -> Result<Finished, String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());

    let started = Instant::now();
    let mut next_note = Duration::from_secs(120);
    let mut pause = Duration::from_millis(1);
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib = 0;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(hwm) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            peak_rss_kib = peak_rss_kib.max(hwm);
        }
        if let Some(status) = child.try_wait().map_err(|e| format!("{what}: {e}"))? {
            break status;
        }
        let elapsed = started.elapsed();
        if elapsed >= limit {
            let _ = child.kill();
            let _ = child.wait();
            let out = collect(stdout, Duration::from_secs(5));
            let err = collect(stderr, Duration::from_secs(5));
            return Err(format!(
                "{what} did not finish within {}s and was killed\n--- stdout\n{}\n--- stderr\n{}",
                limit.as_secs(),
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            ));
        }
        if elapsed >= next_note {
            note(&format!(
                "    ... {what}: still running after {}s (deadline {}s)",
                elapsed.as_secs(),
                limit.as_secs()
            ));
            next_note += Duration::from_secs(120);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    // A process the command left behind may hold its pipes open; what it printed itself is
    // in by now.
    Ok(Finished {
        status,
        stdout: collect(stdout, Duration::from_secs(10)),
        stderr: collect(stderr, Duration::from_secs(10)),
        peak_rss_kib,
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

fn collect(rx: mpsc::Receiver<Vec<u8>>, wait: Duration) -> Vec<u8> {
    rx.recv_timeout(wait).unwrap_or_default()
}

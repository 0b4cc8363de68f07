//! Running host commands to completion (`nft`, `ip`, `mkfs.ext4`, `debugfs`, ...). Everything
//! banger shells out to goes through the [`CommandRunner`] trait so that the logic above it can be
//! tested with [`FakeRunner`], which records every call and can fail the Nth matching one.
//! Long-lived processes (a VMM) are not run here but by [`crate::process`].

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::process::{Signal, signal_group};

/// How much of a failed command's stderr an error message keeps, in bytes.
const STDERR_HEAD: usize = 1536;
const STDERR_TAIL: usize = 512;

/// One command line to run: program, arguments, optional stdin and extra environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Option<Vec<u8>>,
    /// Added to (not replacing) the environment the runner inherits.
    pub env: Vec<(String, String)>,
    /// Hand the command `CAP_NET_ADMIN`, which a daemon that is not root may hold (see
    /// [`crate::network::Privilege::NetAdmin`]): raised into its ambient set between fork and
    /// exec, so that this command, and no other program banger starts, keeps it.
    pub net_admin: bool,
}

impl CommandSpec {
    pub fn new(program: impl Into<String>) -> Self {
        CommandSpec {
            program: program.into(),
            ..CommandSpec::default()
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the command with `CAP_NET_ADMIN` ([`CommandSpec::net_admin`]).
    pub fn with_net_admin(mut self) -> Self {
        self.net_admin = true;
        self
    }

    /// The command line as a user would type it, e.g. `nft -j -f -`; arguments that a shell
    /// would split or interpret are single-quoted.
    pub fn display(&self) -> String {
        let mut out = quote(&self.program);
        for arg in &self.args {
            out.push(' ');
            out.push_str(&quote(arg));
        }
        out
    }
}

impl fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` when the process was killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// A successful run that printed `stdout`.
    pub fn with_stdout(stdout: impl Into<Vec<u8>>) -> Self {
        CommandOutput {
            code: Some(0),
            stdout: stdout.into(),
            stderr: Vec::new(),
        }
    }

    /// A successful run that printed nothing.
    pub fn empty() -> Self {
        CommandOutput::with_stdout(Vec::new())
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout as text, invalid UTF-8 replaced.
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text, invalid UTF-8 replaced.
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A command that could not be run, or that ran and failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("`{program}` is not installed (not found in PATH)")]
    NotFound { program: String },

    /// Starting the process, feeding its stdin or collecting its output failed.
    #[error("cannot run `{program}`")]
    Spawn { program: String, source: io::Error },

    #[error("`{command}` {}{}", describe_exit(*.code), stderr_suffix(.stderr))]
    Failed {
        command: String,
        code: Option<i32>,
        /// Trimmed, and shortened in the middle when long.
        stderr: String,
    },

    /// The caller asked for the command to stop ([`CommandRunner::run_cancellable`]); it and
    /// every process it started were terminated.
    #[error("`{command}` was cancelled")]
    Cancelled { command: String },
}

fn describe_exit(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("failed with exit code {code}"),
        None => "was killed by a signal".to_owned(),
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl RunError {
    /// A failure of `cmd` as a real run would report it; used by [`FakeRunner`] and handy for
    /// callers' own fakes.
    pub fn failed(cmd: &CommandSpec, code: Option<i32>, stderr: &[u8]) -> Self {
        RunError::Failed {
            command: cmd.display(),
            code,
            stderr: summarize_stderr(stderr),
        }
    }
}

/// Trims `stderr` and, when it is long, keeps its head (where most tools say what went wrong)
/// and its tail (where the rest do).
fn summarize_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.len() <= STDERR_HEAD + STDERR_TAIL {
        return text.to_owned();
    }
    let head_end = floor_char_boundary(text, STDERR_HEAD);
    let tail_start = ceil_char_boundary(text, text.len() - STDERR_TAIL);
    format!(
        "{} [... {} bytes omitted ...] {}",
        text[..head_end].trim_end(),
        tail_start - head_end,
        text[tail_start..].trim_start()
    )
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Runs commands to completion. The daemon holds one as `Arc<dyn CommandRunner>`; tests hand it
/// a [`FakeRunner`].
pub trait CommandRunner: Send + Sync + fmt::Debug {
    /// Runs `cmd` to completion. A non-zero exit is `Err(RunError::Failed)` carrying stderr.
    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError>;

    /// Like [`run`](CommandRunner::run) for a long command (`debootstrap`, a download) that the
    /// user may cancel: `cancelled` is asked while it runs, and once it answers `true` the
    /// command and everything it started are terminated and the result is
    /// [`RunError::Cancelled`]. This default (for fakes) asks before and after the command.
    fn run_cancellable(
        &self,
        cmd: &CommandSpec,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<CommandOutput, RunError> {
        let cancel = || RunError::Cancelled {
            command: cmd.display(),
        };
        if cancelled() {
            return Err(cancel());
        }
        let output = self.run(cmd)?;
        if cancelled() {
            return Err(cancel());
        }
        Ok(output)
    }

    /// Whether this runner runs each command for real, as a child of the calling thread: in its
    /// network namespace, with its privileges. Only then may work be done in-process instead of
    /// through a command (netlink instead of `ip`) with the same effect; a fake must keep seeing
    /// the commands, and a wrapper may run them elsewhere (another namespace, through sudo).
    fn is_real(&self) -> bool {
        false
    }
}

/// How often [`RealRunner::run_cancellable`] asks whether to stop.
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// How long a cancelled command's process group has between SIGTERM and SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// The runner that really runs commands, with [`std::process::Command`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RealRunner;

impl RealRunner {
    fn spawn(cmd: &CommandSpec, own_group: bool) -> Result<Child, RunError> {
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if own_group {
            // Its own process group, so that cancelling reaches what it starts too (debootstrap
            // runs dpkg, sudo runs the real command).
            command.process_group(0);
        }
        if cmd.net_admin {
            let sets = crate::capabilities::with_net_admin_inheritable()
                .map_err(|source| spawn_error(cmd, source))?;
            // SAFETY: between fork and exec the closure only makes two system calls (capset
            // and prctl) on values prepared before the fork; it allocates nothing.
            unsafe {
                command.pre_exec(move || crate::capabilities::raise_net_admin_ambient(sets));
            }
        }
        command.spawn().map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                RunError::NotFound {
                    program: cmd.program.clone(),
                }
            } else {
                spawn_error(cmd, source)
            }
        })
    }

    /// stdin is written from its own thread: a child that fills its stdout pipe before reading
    /// all of its input would otherwise deadlock against us.
    fn feed_stdin(
        child: &mut Child,
        cmd: &CommandSpec,
    ) -> Option<std::thread::JoinHandle<io::Result<()>>> {
        match (child.stdin.take(), &cmd.stdin) {
            (Some(mut pipe), Some(bytes)) => {
                let bytes = bytes.clone();
                Some(std::thread::spawn(move || match pipe.write_all(&bytes) {
                    // A child that exits without reading all of its input is judged by its
                    // exit status, not by our broken pipe.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                    other => other,
                }))
            }
            _ => None,
        }
    }

    fn finish(
        cmd: &CommandSpec,
        writer: Option<std::thread::JoinHandle<io::Result<()>>>,
        output: std::process::Output,
    ) -> Result<CommandOutput, RunError> {
        if let Some(writer) = writer {
            match writer.join() {
                Ok(result) => result.map_err(|e| spawn_error(cmd, e))?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        let code = output.status.code();
        tracing::debug!(command = %cmd.display(), ?code, "finished");
        if !output.status.success() {
            return Err(RunError::failed(cmd, code, &output.stderr));
        }
        Ok(CommandOutput {
            code,
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}

fn spawn_error(cmd: &CommandSpec, source: io::Error) -> RunError {
    RunError::Spawn {
        program: cmd.program.clone(),
        source,
    }
}

/// Reads a pipe to its end on its own thread.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the output early; the exit status still tells the outcome.
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

impl CommandRunner for RealRunner {
    fn is_real(&self) -> bool {
        true
    }

    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError> {
        tracing::debug!(command = %cmd.display(), "running");
        let mut child = Self::spawn(cmd, false)?;
        let writer = Self::feed_stdin(&mut child, cmd);
        let output = child.wait_with_output().map_err(|e| spawn_error(cmd, e))?;
        Self::finish(cmd, writer, output)
    }

    fn run_cancellable(
        &self,
        cmd: &CommandSpec,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<CommandOutput, RunError> {
        let command = cmd.display();
        if cancelled() {
            return Err(RunError::Cancelled { command });
        }
        tracing::debug!(command = %command, "running (cancellable)");
        let mut child = Self::spawn(cmd, true)?;
        let writer = Self::feed_stdin(&mut child, cmd);
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| spawn_error(cmd, e))? {
                break status;
            }
            if cancelled() {
                tracing::info!(command = %command, "cancelling");
                terminate_group(&mut child);
                // The readers and the writer end by themselves once the pipes close; they are
                // not waited for, in case something outside the group still holds a pipe.
                drop((stdout, stderr, writer));
                return Err(RunError::Cancelled { command });
            }
            std::thread::sleep(CANCEL_POLL);
        };
        let join = |h: std::thread::JoinHandle<Vec<u8>>| {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        };
        let output = std::process::Output {
            status,
            stdout: join(stdout),
            stderr: join(stderr),
        };
        Self::finish(cmd, writer, output)
    }
}

/// SIGTERM to the child's whole group, SIGKILL to what is left after [`CANCEL_GRACE`], and the
/// child reaped. Returns once no process of the group is left (or, should one survive SIGKILL
/// in an uninterruptible sleep, after a further bounded wait).
fn terminate_group(child: &mut Child) {
    let group = child.id();
    let _ = signal_group(group, Signal::Term);
    if !wait_group_gone(child, CANCEL_GRACE) {
        tracing::warn!(
            pgid = group,
            "cancelled command ignored SIGTERM; killing it"
        );
        let _ = signal_group(group, Signal::Kill);
        let _ = child.wait();
        if !wait_group_gone(child, CANCEL_GRACE) {
            tracing::error!(
                pgid = group,
                "processes of a cancelled command survive SIGKILL"
            );
        }
    }
}

/// Waits up to `limit` for the leader to exit (it is reaped here) and for every other process of
/// its group to be gone (signal 0 to the group finds nobody; orphans are reaped by init).
fn wait_group_gone(child: &mut Child, limit: Duration) -> bool {
    let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) else {
        return true;
    };
    let deadline = Instant::now() + limit;
    loop {
        let leader_done = matches!(child.try_wait(), Ok(Some(_)));
        if leader_done && rustix::process::test_kill_process_group(group).is_err() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Which calls a [`FakeRunner`] rule applies to: a program, optionally with the first
/// arguments. A program matches by name, so `Matcher::program("nft")` also matches
/// `/usr/sbin/nft`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    program: Option<String>,
    prefix: Vec<String>,
}

impl Matcher {
    /// Every call.
    pub fn any() -> Self {
        Matcher {
            program: None,
            prefix: Vec::new(),
        }
    }

    /// Every call of `program`.
    pub fn program(program: impl Into<String>) -> Self {
        Matcher {
            program: Some(program.into()),
            prefix: Vec::new(),
        }
    }

    /// Calls of `program` whose arguments start with `prefix`, e.g.
    /// `Matcher::prefix("ip", ["link", "del"])`.
    pub fn prefix<I, S>(program: impl Into<String>, prefix: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Matcher {
            program: Some(program.into()),
            prefix: prefix.into_iter().map(Into::into).collect(),
        }
    }

    pub fn matches(&self, cmd: &CommandSpec) -> bool {
        let program_matches = match &self.program {
            None => true,
            Some(want) => {
                let name = cmd.program.rsplit('/').next().unwrap_or(&cmd.program);
                cmd.program == *want || name == want
            }
        };
        program_matches && cmd.args.starts_with(&self.prefix)
    }
}

impl From<&str> for Matcher {
    fn from(program: &str) -> Self {
        Matcher::program(program)
    }
}

#[derive(Debug)]
enum Action {
    Respond(CommandOutput),
    /// Fail the `nth` (1-based) matching call with this stderr.
    FailNth {
        nth: usize,
        stderr: String,
    },
    NotFound,
}

#[derive(Debug)]
struct Rule {
    matcher: Matcher,
    action: Action,
    /// How many calls this rule's matcher has matched so far.
    seen: usize,
}

/// A [`CommandRunner`] that runs nothing: it records every call in order and answers from a
/// script. Unscripted calls succeed with empty output.
///
/// ```
/// use banger_host::runner::{CommandOutput, CommandRunner, CommandSpec, FakeRunner, Matcher};
///
/// let fake = FakeRunner::new()
///     .respond("ip", CommandOutput::with_stdout("[]"))
///     .fail_nth(Matcher::program("nft"), 2, "Error: No such file or directory");
/// fake.run(&CommandSpec::new("nft").args(["-j", "-f", "-"])).unwrap();
/// assert!(fake.run(&CommandSpec::new("nft").args(["-j", "-f", "-"])).is_err());
/// assert_eq!(fake.calls(), ["nft -j -f -", "nft -j -f -"]);
/// ```
#[derive(Debug, Default)]
pub struct FakeRunner {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    rules: Vec<Rule>,
    calls: Vec<CommandSpec>,
}

impl FakeRunner {
    pub fn new() -> Self {
        FakeRunner::default()
    }

    /// Matching calls succeed with `output` (its `code` is honoured: a non-zero code makes the
    /// call fail like a real one would). The first `respond` rule that matches wins.
    pub fn respond(self, matcher: impl Into<Matcher>, output: CommandOutput) -> Self {
        self.push(matcher.into(), Action::Respond(output))
    }

    /// The `nth` call (1-based) that matches fails with exit code 1 and `stderr`; the others
    /// are answered as if this rule did not exist.
    pub fn fail_nth(
        self,
        matcher: impl Into<Matcher>,
        nth: usize,
        stderr: impl Into<String>,
    ) -> Self {
        self.push(
            matcher.into(),
            Action::FailNth {
                nth,
                stderr: stderr.into(),
            },
        )
    }

    /// Matching calls fail as if the program were not installed.
    pub fn not_found(self, matcher: impl Into<Matcher>) -> Self {
        self.push(matcher.into(), Action::NotFound)
    }

    fn push(self, matcher: Matcher, action: Action) -> Self {
        self.lock().rules.push(Rule {
            matcher,
            action,
            seen: 0,
        });
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock already failed; keep the record readable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order, as [`CommandSpec::display`] shows it.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.iter().map(CommandSpec::display).collect()
    }

    /// The calls so far that `matcher` matches, in order.
    pub fn calls_matching(&self, matcher: impl Into<Matcher>) -> Vec<String> {
        let matcher = matcher.into();
        self.lock()
            .calls
            .iter()
            .filter(|c| matcher.matches(c))
            .map(CommandSpec::display)
            .collect()
    }

    /// Every call so far, in full (stdin and environment included).
    pub fn specs(&self) -> Vec<CommandSpec> {
        self.lock().calls.clone()
    }
}

impl CommandRunner for FakeRunner {
    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError> {
        let mut state = self.lock();
        state.calls.push(cmd.clone());

        let mut outcome: Option<Result<CommandOutput, RunError>> = None;
        for rule in state.rules.iter_mut().filter(|r| r.matcher.matches(cmd)) {
            rule.seen += 1;
            if outcome.is_some() {
                continue;
            }
            outcome = match &rule.action {
                Action::FailNth { nth, stderr } if *nth == rule.seen => {
                    Some(Err(RunError::failed(cmd, Some(1), stderr.as_bytes())))
                }
                Action::FailNth { .. } => None,
                Action::NotFound => Some(Err(RunError::NotFound {
                    program: cmd.program.clone(),
                })),
                Action::Respond(output) if output.success() => Some(Ok(output.clone())),
                Action::Respond(output) => {
                    Some(Err(RunError::failed(cmd, output.code, &output.stderr)))
                }
            };
        }
        outcome.unwrap_or_else(|| Ok(CommandOutput::empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nft() -> CommandSpec {
        CommandSpec::new("nft").args(["-j", "-f", "-"]).stdin("{}")
    }

    #[test]
    fn display_quotes_only_what_a_shell_would_split() {
        assert_eq!(nft().display(), "nft -j -f -");
        let cmd = CommandSpec::new("sh").args(["-c", "echo hi; it's"]).arg("");
        assert_eq!(cmd.display(), r"sh -c 'echo hi; it'\''s' ''");
    }

    #[test]
    fn fake_records_calls_in_order() {
        let fake = FakeRunner::new();
        fake.run(&CommandSpec::new("ip").args(["link", "add", "tap0"]))
            .unwrap();
        fake.run(&nft()).unwrap();
        fake.run(&CommandSpec::new("ip").args(["link", "del", "tap0"]))
            .unwrap();
        assert_eq!(
            fake.calls(),
            ["ip link add tap0", "nft -j -f -", "ip link del tap0"]
        );
        assert_eq!(
            fake.calls_matching(Matcher::prefix("ip", ["link", "del"])),
            ["ip link del tap0"]
        );
        assert_eq!(fake.specs()[1].stdin.as_deref(), Some(&b"{}"[..]));
    }

    #[test]
    fn fake_fails_exactly_the_nth_matching_call() {
        let fake = FakeRunner::new().fail_nth("nft", 2, "  Error: boom\n");
        let ip = CommandSpec::new("ip").args(["link", "show"]);
        assert!(fake.run(&nft()).is_ok());
        assert!(fake.run(&ip).is_ok(), "other programs do not count");
        match fake.run(&nft()) {
            Err(RunError::Failed {
                command,
                code,
                stderr,
            }) => {
                assert_eq!(command, "nft -j -f -");
                assert_eq!(code, Some(1));
                assert_eq!(stderr, "Error: boom");
            }
            other => panic!("expected the 2nd nft call to fail, got {other:?}"),
        }
        assert!(fake.run(&nft()).is_ok(), "the 3rd call succeeds again");
        assert_eq!(fake.calls().len(), 4, "failed calls are recorded too");
    }

    #[test]
    fn fake_respond_and_prefix_matching() {
        let fake = FakeRunner::new()
            .respond(
                Matcher::prefix("ip", ["-j", "link"]),
                CommandOutput::with_stdout("[]"),
            )
            .not_found("debugfs");
        let out = fake
            .run(&CommandSpec::new("/usr/sbin/ip").args(["-j", "link", "show"]))
            .unwrap();
        assert_eq!(out.stdout, b"[]");
        let out = fake
            .run(&CommandSpec::new("ip").args(["-j", "addr"]))
            .unwrap();
        assert!(out.stdout.is_empty(), "prefix does not match");
        assert!(matches!(
            fake.run(&CommandSpec::new("debugfs")),
            Err(RunError::NotFound { .. })
        ));
    }

    #[test]
    fn fake_fail_nth_counts_even_when_another_rule_answers() {
        let fake = FakeRunner::new()
            .respond("nft", CommandOutput::with_stdout("ok"))
            .fail_nth("nft", 2, "no");
        assert!(fake.run(&nft()).is_ok());
        // The respond rule was registered first and wins; the failure rule still counts.
        assert!(fake.run(&nft()).is_ok());
        let fake = FakeRunner::new()
            .fail_nth("nft", 2, "no")
            .respond("nft", CommandOutput::with_stdout("ok"));
        assert_eq!(fake.run(&nft()).unwrap().stdout, b"ok");
        assert!(fake.run(&nft()).is_err());
        assert_eq!(fake.run(&nft()).unwrap().stdout, b"ok");
    }

    #[test]
    fn real_true_and_false() {
        let out = RealRunner.run(&CommandSpec::new("true")).unwrap();
        assert_eq!(out.code, Some(0));
        match RealRunner.run(&CommandSpec::new("false")) {
            Err(RunError::Failed { command, code, .. }) => {
                assert_eq!(command, "false");
                assert_eq!(code, Some(1));
            }
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[test]
    fn real_failure_carries_trimmed_stderr() {
        let cmd = CommandSpec::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]);
        let err = RealRunner.run(&cmd).unwrap_err();
        match &err {
            RunError::Failed { code, stderr, .. } => {
                assert_eq!(*code, Some(3));
                assert_eq!(stderr, "err");
            }
            other => panic!("expected failure, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "`sh -c 'echo hi; echo err >&2; exit 3'` failed with exit code 3: err"
        );
    }

    #[test]
    fn real_success_keeps_stdout_and_stderr() {
        let cmd = CommandSpec::new("sh").args(["-c", "echo hi; echo err >&2"]);
        let out = RealRunner.run(&cmd).unwrap();
        assert_eq!(out.stdout_lossy(), "hi\n");
        assert_eq!(out.stderr_lossy(), "err\n");
    }

    #[test]
    fn real_passes_stdin_and_env() {
        let out = RealRunner
            .run(&CommandSpec::new("cat").stdin("through cat"))
            .unwrap();
        assert_eq!(out.stdout, b"through cat");

        // Larger than a pipe buffer both ways: must not deadlock.
        let big = vec![b'x'; 1 << 20];
        let out = RealRunner
            .run(&CommandSpec::new("cat").stdin(big.clone()))
            .unwrap();
        assert_eq!(out.stdout, big);

        let out = RealRunner
            .run(
                &CommandSpec::new("sh")
                    .args(["-c", "echo $BANGER_T"])
                    .env("BANGER_T", "v"),
            )
            .unwrap();
        assert_eq!(out.stdout, b"v\n");
    }

    #[test]
    fn real_missing_program_is_not_found() {
        let err = RealRunner
            .run(&CommandSpec::new("banger-no-such-program"))
            .unwrap_err();
        assert!(
            matches!(&err, RunError::NotFound { program } if program == "banger-no-such-program"),
            "{err:?}"
        );
    }

    #[test]
    fn real_killed_by_signal() {
        let err = RealRunner
            .run(&CommandSpec::new("sh").args(["-c", "kill -9 $$"]))
            .unwrap_err();
        assert!(err.to_string().ends_with("was killed by a signal"), "{err}");
    }

    #[test]
    fn long_stderr_is_shortened_in_the_middle() {
        let long = format!(
            "{}{}{}",
            "a".repeat(2000),
            "b".repeat(5000),
            "c".repeat(2000)
        );
        let s = summarize_stderr(long.as_bytes());
        assert!(s.starts_with(&"a".repeat(1536)));
        assert!(s.ends_with(&"c".repeat(512)));
        assert!(s.contains("bytes omitted"));
        assert!(s.len() < 2200);
        // Multi-byte characters at the cut points must not panic.
        let wide = "é".repeat(3000);
        let s = summarize_stderr(wide.as_bytes());
        assert!(s.contains("bytes omitted"));
    }

    #[test]
    fn cancellable_run_completes_like_run() {
        let out = RealRunner
            .run_cancellable(
                &CommandSpec::new("sh")
                    .args(["-c", "cat; echo err >&2"])
                    .stdin("hello"),
                &|| false,
            )
            .unwrap();
        assert_eq!(out.stdout_lossy(), "hello");
        assert_eq!(out.stderr_lossy(), "err\n");
        let err = RealRunner
            .run_cancellable(&CommandSpec::new("sh").args(["-c", "exit 3"]), &|| false)
            .unwrap_err();
        assert!(
            matches!(err, RunError::Failed { code: Some(3), .. }),
            "{err}"
        );
    }

    #[test]
    fn cancelling_terminates_the_command_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // A parent that ignores nothing and a child that ignores SIGTERM: the escalation to
        // SIGKILL must reach the child too.
        let script = format!(
            "sh -c 'trap \"\" TERM; echo $$ >> {p}; while :; do sleep 0.05; done' & echo $$ >> {p}; wait",
            p = pids.display()
        );
        let started = std::time::Instant::now();
        let err = RealRunner
            .run_cancellable(&CommandSpec::new("sh").args(["-c", &script]), &|| {
                std::fs::read_to_string(&pids)
                    .map(|s| s.lines().count() == 2)
                    .unwrap_or(false)
                    && started.elapsed() > Duration::from_millis(200)
            })
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled { .. }), "{err}");
        assert!(err.to_string().ends_with("was cancelled"), "{err}");
        for pid in std::fs::read_to_string(&pids).unwrap().lines() {
            let pid: u32 = pid.parse().unwrap();
            assert!(
                !crate::process::pid_alive(pid),
                "process {pid} of the cancelled command is still running"
            );
        }
    }

    #[test]
    fn cancelled_before_starting_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let err = RealRunner
            .run_cancellable(
                &CommandSpec::new("touch").arg(marker.display().to_string()),
                &|| true,
            )
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled { .. }));
        assert!(!marker.exists());
        let fake = FakeRunner::new();
        assert!(matches!(
            fake.run_cancellable(&CommandSpec::new("debootstrap"), &|| true),
            Err(RunError::Cancelled { .. })
        ));
        assert!(fake.calls().is_empty(), "a fake is not asked either");
    }
}

//! The commands that reach inside a running VM: `vm ssh` (OpenSSH with banger's key and the
//! VM's exact host key), `vm exec` (its session lives in [`crate::exec`]), `vm cp` (with
//! [`crate::cp`]'s rules), `vm logs`, `vm health`, `vm ports`, `vm stats`.

use std::io::Write;
use std::time::Duration;

use banger_agent_protocol::archive::{Owners, TopName};
use banger_agent_protocol::protocol::{Health, ListeningPort, PathKind, Stats};
use banger_api::{ApiError, ErrorCode, SshAccess, VmState, validate};
use bytes::Bytes;

use crate::cli::{OutputFormat, VmCommand};
use crate::cp;
use crate::daemon::Daemon;
use crate::exit::Failure;
use crate::output;

/// Runs `vm ssh` or `vm exec`, whose exit code is the remote command's.
pub async fn run_remote(command: &VmCommand) -> Result<i32, Failure> {
    match command {
        VmCommand::Ssh { name, command } => ssh(name, command).await,
        VmCommand::Exec { .. } => crate::exec::run(command).await,
        _ => Err(Failure::internal("not a remote command")),
    }
}

async fn ssh(name: &str, command: &[String]) -> Result<i32, Failure> {
    let daemon = Daemon::locate()?;
    let session = SshSession::prepare(&daemon, name, command).await?;
    let code = session.run()?;
    if session.interactive
        && let Some(reminder) = session.reminder(&daemon).await
    {
        output::eprint(&format!("banger: {reminder}\n"));
    }
    Ok(code)
}

/// An OpenSSH session into a running VM as bangerd describes it: banger's key, and a
/// `known_hosts` holding exactly the VM's own host key (no trust on first use). `banger vm ssh`
/// and the TUI's ssh key both run one, the TUI around suspending its screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSession {
    name: String,
    args: Vec<String>,
    /// A shell rather than one command: the user may leave the VM running without noticing.
    interactive: bool,
}

impl SshSession {
    /// Asks bangerd how to reach VM `name`; a VM that does not run is refused with how to
    /// start it. An empty `command` is an interactive login.
    pub async fn prepare(
        daemon: &Daemon,
        name: &str,
        command: &[String],
    ) -> Result<SshSession, Failure> {
        let access = daemon
            .call(async |client| client.ssh_access(name).await)
            .await?;
        if !access.running {
            return Err(Failure::new(
                ApiError::new(
                    ErrorCode::InvalidState,
                    format!("VM {name:?} is not running"),
                )
                .with_hint(format!("start it with `banger vm start {name}`")),
            ));
        }
        Ok(SshSession::new(name, access, command))
    }

    pub(crate) fn new(name: &str, access: SshAccess, command: &[String]) -> SshSession {
        let mut args = vec![
            "-i".to_owned(),
            access.identity_file,
            "-o".into(),
            format!("UserKnownHostsFile={}", access.known_hosts_file),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-p".into(),
            access.port.to_string(),
            format!("{}@{}", access.user, access.host),
        ];
        let interactive = command.is_empty();
        if !interactive {
            args.push("--".into());
            args.extend(command.iter().cloned());
        }
        SshSession {
            name: name.to_owned(),
            args,
            interactive,
        }
    }

    /// The VM this session logs into.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands this process's terminal to OpenSSH until it exits (blocking) and returns its exit
    /// code: the remote command's, or 255 when ssh itself failed.
    pub fn run(&self) -> Result<i32, Failure> {
        banger_host::run_interactive("ssh", &self.args).map_err(|e| {
            Failure::new(
                ApiError::new(ErrorCode::Unavailable, format!("cannot run ssh: {e}"))
                    .with_hint("install the OpenSSH client (sudo apt-get install openssh-client)"),
            )
        })
    }

    /// Whether the VM still runs after the session, for the reminder after an interactive
    /// one; a VM bangerd cannot tell about counts as not running (no reminder).
    pub async fn still_running(&self, daemon: &Daemon) -> bool {
        daemon
            .client()
            .get_vm(&self.name)
            .await
            .is_ok_and(|vm| vm.state == VmState::Running)
    }
}

/// How long the reminder waits for the guest agent's health before saying it is silent.
const REMINDER_HEALTH_WAIT: Duration = Duration::from_secs(3);

impl SshSession {
    /// The reminder after an interactive session, when the VM still runs: what its guest
    /// agent says (a VM whose guest hung or is shutting down still counts as running for
    /// bangerd), and how to stop it. `None` when the VM no longer runs.
    pub async fn reminder(&self, daemon: &Daemon) -> Option<String> {
        if !self.still_running(daemon).await {
            return None;
        }
        let health = tokio::time::timeout(
            REMINDER_HEALTH_WAIT,
            daemon.client().guest_health(&self.name),
        )
        .await;
        let found = match health {
            Ok(Ok(h)) => Guest::Answered {
                ready: h.ready,
                uptime_ms: h.uptime_ms,
            },
            _ => Guest::Silent,
        };
        Some(still_running(&self.name, found))
    }
}

/// What the guest agent said after a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    Answered {
        ready: bool,
        uptime_ms: u64,
    },
    /// No answer in time, or an error.
    Silent,
}

/// The reminder after an interactive session into VM `name`, which still runs.
pub fn still_running(name: &str, guest: Guest) -> String {
    match guest {
        Guest::Answered { ready, uptime_ms } => format!(
            "VM {name} is still running (guest {}, up {}); stop it with `banger vm stop {name}`",
            if ready { "healthy" } else { "not ready" },
            crate::output::duration_ms(uptime_ms)
        ),
        Guest::Silent => format!(
            "VM {name} is still running, but its guest agent does not answer; \
             `banger vm logs {name}` shows its console, `banger vm stop {name}` stops it"
        ),
    }
}

/// `NAME:PATH` as (NAME, PATH); a local path (no `:` before the first `/`) is `None`.
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (name, path) = spec.split_once(':')?;
    (!name.is_empty() && !name.contains('/')).then_some((name, path))
}

fn cp_failure(e: cp::CpError) -> Failure {
    let code = if e.is_missing() {
        ErrorCode::NotFound
    } else {
        ErrorCode::InvalidInput
    };
    let hint = e.hint();
    let mut error = ApiError::new(code, e.to_string());
    error.hint = hint;
    Failure::new(error)
}

/// What a guest path is, through the agent.
async fn guest_kind(
    daemon: &Daemon,
    name: &str,
    path: &str,
    as_source: bool,
) -> Result<cp::Kind, Failure> {
    let stat = daemon
        .call(async |client| client.file_stat(name, cp::bare(path)).await)
        .await?;
    let kind = if as_source && !cp::insists_on_directory(path) {
        stat.kind
    } else {
        stat.followed()
    };
    Ok(match kind {
        PathKind::Missing => cp::Kind::Missing,
        PathKind::Directory => cp::Kind::Directory,
        PathKind::File | PathKind::Symlink | PathKind::Other => cp::Kind::File,
    })
}

/// How many chunks of an archive may wait between the side that makes it and the side that
/// sends or unpacks it: what bounds `vm cp`'s memory, whatever the size of what it copies.
const ARCHIVE_CHUNKS_AHEAD: usize = 8;

/// How much of an archive one chunk holds.
const ARCHIVE_CHUNK: usize = 256 * 1024;

/// A writer that hands what it is given to an async receiver in chunks, waiting for room:
/// the packing side of a streamed `vm cp`. Call `flush` at the end for the last chunk.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: tokio::sync::mpsc::Sender<Bytes>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(ARCHIVE_CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(ARCHIVE_CHUNK),
        ));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "bangerd stopped reading the archive",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= ARCHIVE_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A reader of chunks an async sender hands over: the unpacking side of a streamed `vm cp`.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The next data of a streamed answer; `None` at its end.
async fn next_chunk(body: &mut hyper::body::Incoming) -> Result<Option<Bytes>, Failure> {
    use http_body_util::BodyExt;
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
            Some(Err(e)) => {
                return Err(Failure::new(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("the archive from the guest broke off: {e}"),
                )));
            }
        }
    }
}

/// `vm cp` (see [`cp`] for where things land).
async fn copy(daemon: &Daemon, src: &str, dst: &str, keep_owners: bool) -> Result<String, Failure> {
    let usage = |what: &str| {
        Failure::new(ApiError::invalid(what.to_owned()).with_hint(
            "banger vm cp LOCAL NAME:PATH, or banger vm cp NAME:PATH LOCAL (`-` for a tar stream)",
        ))
    };
    let local_error = |what: String| Failure::new(ApiError::invalid(what));
    match (remote(src), remote(dst)) {
        (None, Some((name, path))) => {
            validate::name("VM", name)?;
            let path = cp::guest_path(path);
            let dst_kind = guest_kind(daemon, name, &path, false).await?;
            // What to pack under which name; none for a tar stream from standard input.
            let mut top: Option<TopName> = None;
            // The archive streams to bangerd as it is made (from a local path, or read from
            // standard input), in bounded memory.
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(ARCHIVE_CHUNKS_AHEAD);
            let dir = if src == "-" {
                if dst_kind != cp::Kind::Directory {
                    return Err(cp_failure(cp::CpError::StreamNeedsDirectory {
                        dst: dst.to_owned(),
                    }));
                }
                path.clone()
            } else {
                let source = cp::Side {
                    shown: src,
                    path: src,
                    kind: cp::local_kind(src, true),
                };
                let target = cp::Side {
                    shown: dst,
                    path: &path,
                    kind: dst_kind,
                };
                let parent = cp::parent(&path);
                let parent_kind = if dst_kind == cp::Kind::Missing {
                    Some(guest_kind(daemon, name, &parent, false).await?)
                } else {
                    None
                };
                let plan = cp::plan(&source, &target, |_| {
                    parent_kind == Some(cp::Kind::Directory)
                })
                .map_err(cp_failure)?;
                top = Some(plan.top);
                plan.dir
            };
            let source = src.to_owned();
            let producer = tokio::task::spawn_blocking(move || -> Result<(), String> {
                let mut out = ChannelWriter::new(tx);
                match top {
                    None => std::io::copy(&mut std::io::stdin().lock(), &mut out)
                        .map(drop)
                        .map_err(|e| format!("cannot read standard input: {e}"))?,
                    Some(top) => {
                        out = banger_agent_protocol::archive::pack_as(
                            std::path::Path::new(&source),
                            &top,
                            out,
                        )
                        .map_err(|e| format!("cannot read {source}: {e}"))?;
                    }
                }
                out.flush()
                    .map_err(|e| format!("cannot send the archive to bangerd: {e}"))
            });
            // The stat calls above went through `daemon.call`: bangerd is up and of this build.
            let answer = daemon.client().copy_in(name, &dir, keep_owners, rx).await;
            let produced = producer
                .await
                .unwrap_or_else(|e| Err(format!("packing the archive failed: {e}")));
            match (produced, answer) {
                // What banger could not read is the cause of whatever the guest made of the
                // archive cut short; bangerd's refusal, when it stopped reading, is the cause
                // of a send that failed.
                (Err(local), Ok(_)) => return Err(local_error(local)),
                (Err(local), Err(_)) if !local.starts_with("cannot send") => {
                    return Err(local_error(local));
                }
                (_, Err(e)) => return Err(Failure::from(e)),
                (Ok(()), Ok(_)) => {}
            }
            Ok(format!("Copied {src} to {dst}.\n"))
        }
        (Some((name, path)), None) => {
            validate::name("VM", name)?;
            let path = cp::guest_path(path);
            let source = cp::Side {
                shown: src,
                path: &path,
                kind: guest_kind(daemon, name, &path, true).await?,
            };
            if dst == "-" {
                // docker cp's tar stream: the source under its own name, or a directory's
                // contents for `SRC/.`.
                let target = cp::Side {
                    shown: "-",
                    path: "/",
                    kind: cp::Kind::Directory,
                };
                let plan = cp::plan(&source, &target, |_| true).map_err(cp_failure)?;
                let top = match &plan.top {
                    TopName::Named(n) => n.clone(),
                    TopName::Contents => ".".into(),
                };
                let answer = daemon
                    .call(async |client| client.copy_out(name, &path, Some(&top)).await)
                    .await?;
                let mut body = answer.into_body();
                let mut stdout = std::io::stdout();
                while let Some(chunk) = next_chunk(&mut body).await? {
                    stdout
                        .write_all(&chunk)
                        .map_err(|e| local_error(format!("cannot write standard output: {e}")))?;
                }
                stdout
                    .flush()
                    .map_err(|e| local_error(format!("cannot write standard output: {e}")))?;
                return Ok(String::new());
            }
            let target = cp::Side {
                shown: dst,
                path: dst,
                kind: cp::local_kind(dst, false),
            };
            let plan = cp::plan(&source, &target, |p| {
                cp::local_kind(p, false) == cp::Kind::Directory
            })
            .map_err(cp_failure)?;
            let top = match &plan.top {
                TopName::Named(n) => n.clone(),
                TopName::Contents => ".".into(),
            };
            let answer = daemon
                .call(async |client| client.copy_out(name, &path, Some(&top)).await)
                .await?;
            let owners = if keep_owners {
                Owners::Archive
            } else {
                Owners::Extractor
            };
            // Unpacked as it streams in, in bounded memory.
            let (tx, rx) = tokio::sync::mpsc::channel(ARCHIVE_CHUNKS_AHEAD);
            let into = plan.dir.clone();
            let unpacker = tokio::task::spawn_blocking(move || {
                banger_agent_protocol::archive::unpack_with(
                    ChannelReader::new(rx),
                    std::path::Path::new(&into),
                    owners,
                )
            });
            let mut body = answer.into_body();
            let streamed = loop {
                match next_chunk(&mut body).await {
                    Ok(Some(chunk)) => {
                        if tx.send(Ok(chunk)).await.is_err() {
                            // The unpacking stopped; its error says why.
                            break Ok(());
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => {
                        let _ = tx
                            .send(Err(std::io::Error::other(e.error.message.clone())))
                            .await;
                        break Err(e);
                    }
                }
            };
            drop(tx);
            let unpacked = unpacker
                .await
                .map_err(|e| local_error(format!("unpacking the archive failed: {e}")))?;
            streamed?;
            unpacked.map_err(|e| local_error(format!("cannot write {dst}: {e}")))?;
            Ok(format!("Copied {src} to {dst}.\n"))
        }
        (Some(_), Some(_)) => Err(usage("both sides name a VM; one must be local")),
        (None, None) => Err(usage("neither side names a VM (NAME:PATH)")),
    }
}

/// `vm cp`, `vm logs`, `vm health`, `vm ports`, `vm stats`.
pub async fn run(command: &VmCommand, format: OutputFormat) -> Result<(), Failure> {
    let daemon = Daemon::locate()?;
    match command {
        VmCommand::Cp { src, dst, archive } => {
            let text = copy(&daemon, src, dst, *archive).await?;
            // With `-` as DST, standard output is the archive.
            if format == OutputFormat::Text && dst != "-" {
                output::print(&text);
            }
            Ok(())
        }
        VmCommand::Logs { name, follow } => {
            let mut chunk = daemon
                .call(async |client| client.console(name, None).await)
                .await?;
            output::print(&chunk.text);
            if !*follow {
                return Ok(());
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                chunk = daemon
                    .client()
                    .console(name, Some(chunk.next_offset))
                    .await?;
                output::print(&chunk.text);
            }
            Ok(())
        }
        VmCommand::Health { name } => {
            let health = daemon
                .call(async |client| client.guest_health(name).await)
                .await?;
            print_agent_answer(format, &health, health_text);
            Ok(())
        }
        VmCommand::Ports { name } => {
            let ports = daemon
                .call(async |client| client.guest_ports(name).await)
                .await?;
            print_agent_answer(format, ports.as_slice(), ports_text);
            Ok(())
        }
        VmCommand::Stats { name } => {
            let stats = daemon
                .call(async |client| client.guest_stats(name).await)
                .await?;
            print_agent_answer(format, &stats, stats_text);
            Ok(())
        }
        _ => Err(Failure::internal("not a guest command")),
    }
}

/// Prints one of the agent's answers as `format` asks: JSON, or `text`'s lines.
fn print_agent_answer<T: serde::Serialize + ?Sized>(
    format: OutputFormat,
    answer: &T,
    text: fn(&T) -> String,
) {
    output::print(&match format {
        OutputFormat::Json => agent_json(answer),
        OutputFormat::Text => text(answer),
    });
}

/// `--json` of `vm health`, `vm ports` and `vm stats`: the agent's answer with every object's
/// keys in alphabetical order, as banger has always printed them (it printed the answer as a
/// generic JSON value, whose objects sort their keys).
fn agent_json<T: serde::Serialize + ?Sized>(answer: &T) -> String {
    match serde_json::to_value(answer) {
        Ok(value) => output::json(&value),
        Err(_) => output::json(answer),
    }
}

/// `vm health`: the guest's name, readiness and agent, then its boot milestones.
fn health_text(health: &Health) -> String {
    let mut text = format!(
        "{}: {} (agent {}, up {})\n",
        health.hostname,
        if health.ready { "ready" } else { "not ready" },
        health.version,
        crate::output::duration_ms(health.uptime_ms)
    );
    for stage in &health.boot {
        text.push_str(&format!(
            "  {:<24} {}\n",
            stage.name,
            crate::output::duration_ms(stage.at_ms)
        ));
    }
    text
}

/// `vm ports`: one line per listening socket.
fn ports_text(ports: &[ListeningPort]) -> String {
    let mut text = format!("{:<6} {:<40} {:>5}  PROCESS\n", "PROTO", "ADDRESS", "PORT");
    for p in ports {
        text.push_str(&format!(
            "{:<6} {:<40} {:>5}  {}\n",
            format!("{:?}", p.protocol).to_lowercase(),
            p.address,
            p.port,
            p.process.as_deref().unwrap_or("-")
        ));
    }
    text
}

/// `vm stats`: uptime, load, memory, then one line per disk.
fn stats_text(stats: &Stats) -> String {
    let m = &stats.memory;
    let mut text = format!(
        "uptime: {}\nload:   {:.2} {:.2} {:.2} ({} CPUs)\nmemory: {} used of {} ({} available)\n",
        crate::output::duration_ms(stats.uptime_ms),
        stats.load[0],
        stats.load[1],
        stats.load[2],
        stats.cpus,
        validate::format_size(m.total_bytes.saturating_sub(m.available_bytes)),
        validate::format_size(m.total_bytes),
        validate::format_size(m.available_bytes),
    );
    for disk in &stats.disks {
        text.push_str(&format!(
            "disk {}: {} used of {}\n",
            disk.path,
            validate::format_size(disk.used_bytes),
            validate::format_size(disk.total_bytes)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> SshAccess {
        SshAccess {
            user: "root".into(),
            host: "172.30.0.3".into(),
            port: 22,
            identity_file: "/state/ssh/id_ed25519".into(),
            known_hosts_file: "/state/vms/x/known_hosts".into(),
            running: true,
        }
    }

    #[test]
    fn a_session_trusts_exactly_the_vms_host_key_and_only_bangers_key() {
        let session = SshSession::new("web-1", access(), &[]);
        assert_eq!(session.name(), "web-1");
        assert!(session.interactive);
        assert_eq!(
            session.args,
            [
                "-i",
                "/state/ssh/id_ed25519",
                "-o",
                "UserKnownHostsFile=/state/vms/x/known_hosts",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
                "-p",
                "22",
                "root@172.30.0.3",
            ]
        );
    }

    #[test]
    fn a_command_follows_a_double_dash_and_is_not_interactive() {
        let command = ["uname".to_owned(), "-a".to_owned()];
        let session = SshSession::new("web-1", access(), &command);
        assert!(!session.interactive);
        assert_eq!(
            session.args[session.args.len() - 3..],
            ["--", "uname", "-a"]
        );
        assert_eq!(
            still_running(
                "web-1",
                Guest::Answered {
                    ready: true,
                    uptime_ms: 125_000
                }
            ),
            "VM web-1 is still running (guest healthy, up 2m 5s); stop it with `banger vm stop web-1`"
        );
        assert_eq!(
            still_running("web-1", Guest::Silent),
            "VM web-1 is still running, but its guest agent does not answer; \
             `banger vm logs web-1` shows its console, `banger vm stop web-1` stops it"
        );
    }

    fn health() -> Health {
        use banger_agent_protocol::protocol::BootStage;
        Health {
            ready: true,
            version: "0.1.0".into(),
            hostname: "web-1".into(),
            uptime_ms: 3_723_000,
            boot: vec![
                BootStage {
                    name: "init_started".into(),
                    at_ms: 412,
                },
                BootStage {
                    name: "agent_listening".into(),
                    at_ms: 12_500,
                },
            ],
            listeners: vec!["vsock:1024".into(), "tcp:172.30.0.2:1024".into()],
        }
    }

    fn ports() -> Vec<ListeningPort> {
        use banger_agent_protocol::protocol::Transport;
        vec![
            ListeningPort {
                protocol: Transport::Tcp,
                address: "0.0.0.0".parse().unwrap(),
                port: 22,
                inode: 7001,
                pid: Some(310),
                process: Some("sshd".into()),
            },
            ListeningPort {
                protocol: Transport::Udp,
                address: "::".parse().unwrap(),
                port: 5353,
                inode: 7002,
                pid: None,
                process: None,
            },
        ]
    }

    fn stats() -> Stats {
        use banger_agent_protocol::protocol::{DiskUsage, Memory};
        Stats {
            uptime_ms: 8_500,
            load: [0.5, 1.25, 0.0],
            cpus: 2,
            memory: Memory {
                total_bytes: 1 << 30,
                available_bytes: 768 << 20,
                free_bytes: 512 << 20,
                swap_total_bytes: 0,
                swap_free_bytes: 0,
            },
            disks: vec![DiskUsage {
                path: "/root".into(),
                total_bytes: 8 << 30,
                used_bytes: 3 << 30,
                available_bytes: 5 << 30,
            }],
        }
    }

    /// What `--json` printed when the answer was read as a generic JSON value: bangerd's
    /// JSON of the agent's answer, parsed and printed again.
    fn as_generic_value<T: serde::Serialize>(answer: &T) -> String {
        let wire = serde_json::to_vec(answer).unwrap();
        output::json(&serde_json::from_slice::<serde_json::Value>(&wire).unwrap())
    }

    #[test]
    fn agent_answers_print_as_json_exactly_as_the_generic_value_did() {
        assert_eq!(agent_json(&health()), as_generic_value(&health()));
        assert_eq!(agent_json(&ports()), as_generic_value(&ports()));
        assert_eq!(agent_json(&stats()), as_generic_value(&stats()));
        insta::assert_snapshot!("health_json", agent_json(&health()));
        insta::assert_snapshot!("ports_json", agent_json(&ports()));
        insta::assert_snapshot!("stats_json", agent_json(&stats()));
    }

    #[test]
    fn agent_answers_as_text() {
        insta::assert_snapshot!("health_text", health_text(&health()));
        insta::assert_snapshot!("ports_text", ports_text(&ports()));
        insta::assert_snapshot!("stats_text", stats_text(&stats()));
    }
}

//! The real `banger-agent` binary on loopback TCP with a token, driven through the real
//! client: what `banger vm exec`, `vm cp`, `vm ports`, `vm health`, `vm stats` and `vm stop`
//! will rely on. The agent runs on the host here, as the test's user.

use banger_test_support::wait_until_async;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_agent_protocol::client::{AgentClient, AgentError, ConnectWith, ExecEvent, Tcp};
use banger_agent_protocol::protocol::{ExecRequest, Transport, TtySize};

/// A running agent; killed when dropped.
struct Agent {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    token: String,
}

impl Agent {
    fn start() -> Agent {
        Agent::start_with(&["--no-vsock"])
    }

    fn start_with(extra: &[&str]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let token = "t0ken-0123456789abcdef".to_owned();
        let token_file = dir.path().join("agent-token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let script = dir.path().join("fake-poweroff");
        std::fs::write(
            &script,
            format!("#!/bin/sh\ntouch {}/powered-off\n", dir.path().display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

        let mut child = Command::new(env!("CARGO_BIN_EXE_banger-agent"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--shutdown-command")
            .arg(&script)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The agent says where it listens; port 0 lets the kernel pick a free one.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines
            .by_ref()
            .map(Result::unwrap)
            .find(|l| l.contains("listening on"))
            .expect("the agent exited before listening");
        let addr = line
            .split("tcp:")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::spawn(move || for _ in lines {});
        Agent {
            child,
            addr,
            dir,
            token,
        }
    }

    fn client(&self) -> AgentClient<Tcp> {
        AgentClient::new(Tcp(self.addr), self.token.clone())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

/// The process is gone (or a zombie waiting for its new parent).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn health_starts_with_the_stages_the_init_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("boot-stages");
    std::fs::write(
        &file,
        "init_started 180\ninit_switch_root 2400\nnot a stage\n",
    )
    .unwrap();
    let agent = Agent::start_with(&["--no-vsock", "--boot-stages-file", file.to_str().unwrap()]);
    let health = agent.client().health().await.unwrap();
    let stages: Vec<(&str, u64)> = health
        .boot
        .iter()
        .map(|s| (s.name.as_str(), s.at_ms))
        .take(2)
        .collect();
    assert_eq!(stages, [("init_started", 180), ("init_switch_root", 2400)]);
    let names: Vec<&str> = health.boot.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names[2..], ["agent_started", "agent_listening"]);
}

#[tokio::test]
async fn health_answers() {
    let agent = Agent::start();
    let health = agent.client().health().await.unwrap();
    assert!(health.ready);
    assert_eq!(health.listeners, [format!("tcp:{}", agent.addr)]);
    let names: Vec<&str> = health.boot.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["agent_started", "agent_listening"]);
    assert!(health.boot[0].at_ms <= health.boot[1].at_ms);
    assert!(health.uptime_ms >= health.boot[1].at_ms);
    assert!(!health.hostname.is_empty());
}

#[tokio::test]
async fn without_a_vsock_transport_tcp_still_serves() {
    // This host may or may not offer AF_VSOCK; either way the agent must come up on TCP and
    // say which listeners it has.
    let agent = Agent::start_with(&["--vsock-port", "41024"]);
    let health = agent.client().health().await.unwrap();
    assert_eq!(health.listeners[0], format!("tcp:{}", agent.addr));
    assert!(
        health.listeners.len() == 1 || health.listeners[1] == "vsock:41024",
        "{:?}",
        health.listeners
    );
}

#[tokio::test]
async fn refused_uploads_are_answered_even_when_large() {
    let agent = Agent::start();
    let work = tempfile::tempdir().unwrap();
    // A bad first entry followed by megabytes the agent will never extract.
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..7].copy_from_slice(b"/etc/xx");
    header.set_size(8 << 20);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.resize(512 + (8 << 20) + 1024, 0);
    let err = agent
        .client()
        .copy_in(
            work.path().join("d").to_str().unwrap(),
            std::io::Cursor::new(tar),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("unsafe_archive"), "{err}");
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_with_401() {
    let agent = Agent::start();
    let wrong = AgentClient::new(Tcp(agent.addr), "t0ken-0123456789abcdeX");
    let err = wrong.health().await.unwrap_err();
    match &err {
        AgentError::Api { status, body } => {
            assert_eq!(*status, 401);
            assert_eq!(body.code, "unauthorized");
            assert!(
                body.hint
                    .as_deref()
                    .unwrap()
                    .contains("/etc/banger/agent-token")
            );
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    // Exec is refused before anything runs.
    let marker = agent.dir.path().join("ran");
    let err = wrong
        .exec_output(&sh(&format!("touch {}", marker.display())), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("unauthorized"));
    assert!(!marker.exists());

    // No header at all.
    let mut raw = std::net::TcpStream::connect(agent.addr).unwrap();
    raw.write_all(b"GET /v1/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{answer}"
    );
}

#[tokio::test]
async fn exec_exit_codes_propagate() {
    let agent = Agent::start();
    let client = agent.client();
    let out = client.exec_output(&sh("exit 7"), None).await.unwrap();
    assert_eq!((out.status.code, out.status.signal), (Some(7), None));
    assert_eq!(out.status.shell_code(), 7);

    let out = client.exec_output(&sh("kill -9 $$"), None).await.unwrap();
    assert_eq!((out.status.code, out.status.signal), (None, Some(9)));
    assert_eq!(out.status.shell_code(), 137);

    let out = client
        .exec_output(&ExecRequest::new(["true"]), None)
        .await
        .unwrap();
    assert!(out.status.success());

    let err = client
        .exec_output(&ExecRequest::new(["no-such-program-banger"]), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("command_not_found"), "{err}");
    assert!(err.hint().unwrap().contains("PATH"));

    let mut request = ExecRequest::new(["pwd"]);
    request.cwd = Some("/no/such/dir".into());
    let err = client.exec_output(&request, None).await.unwrap_err();
    assert_eq!(err.code(), Some("no_such_directory"), "{err}");
}

/// A command that prints nothing for longer than the client's silence limit runs to its end:
/// the agent's alive frames say it is still there. An agent that stops answering mid-command
/// (stopped with SIGSTOP, as a hung guest would be) ends the stream with a timeout that says
/// so, instead of a client waiting for ever.
#[tokio::test]
async fn a_quiet_command_lives_on_and_a_silent_agent_is_noticed() {
    let agent = Agent::start_with(&["--no-vsock", "--heartbeat", "1"]);
    let client = agent.client().with_silence_limit(Duration::from_secs(3));
    let out = client
        .exec_output(&sh("sleep 5; echo done"), None)
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");

    let session = client.exec(&sh("sleep 60")).await.unwrap();
    let (_input, mut events) = session.split();
    let pid = rustix::process::Pid::from_raw(agent.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let started = Instant::now();
    let err = events.next().await.unwrap_err();
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    assert!(matches!(err, AgentError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("still there"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(3), "{err}");
}

#[tokio::test]
async fn stdout_and_stderr_stay_apart_and_env_and_cwd_apply() {
    let agent = Agent::start();
    let mut request = sh("echo out; echo err >&2; echo \"$GREETING\"; pwd");
    request.env.insert("GREETING".into(), "hello there".into());
    request.cwd = Some("/tmp".into());
    let out = agent.client().exec_output(&request, None).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out\nhello there\n/tmp\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

#[tokio::test]
async fn a_command_runs_as_the_user_asked_for() {
    let agent = Agent::start();
    let client = agent.client();
    let mut request = ExecRequest::new(["no-such-user-banger"]);
    request.user = Some("no-such-user-banger".into());
    let err = client.exec_output(&request, None).await.unwrap_err();
    assert_eq!(err.code(), Some("no_such_user"), "{err}");

    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("changing users needs root");
        return;
    }
    let mut request = sh("id -un; id -u; echo \"$HOME $USER\"; pwd");
    request.user = Some("nobody".into());
    let out = client.exec_output(&request, None).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "nobody", "{text}");
    assert_ne!(lines[1], "0");
    assert!(lines[2].ends_with(" nobody"), "{text}");
    // nobody's home does not exist: the command starts at the root.
    assert_eq!(lines[3], "/", "{text}");
}

#[tokio::test]
async fn stdin_reaches_the_command() {
    let agent = Agent::start();
    let client = agent.client();
    let out = client
        .exec_output(&ExecRequest::new(["cat"]), Some(b"hello agent\n".to_vec()))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"hello agent\n");

    // Larger than every buffer on the way, in and out at once.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = client
        .exec_output(&ExecRequest::new(["cat"]), Some(big.clone()))
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big);

    // Without stdin the command reads EOF at once instead of waiting.
    let out = client
        .exec_output(&ExecRequest::new(["wc", "-c"]), None)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

#[tokio::test]
async fn a_large_output_streams_in_many_frames() {
    let agent = Agent::start();
    let session = agent
        .client()
        .exec(&ExecRequest::new(["head", "-c", "40000000", "/dev/zero"]))
        .await
        .unwrap();
    let (_input, mut events) = session.split();
    let (mut bytes, mut frames) = (0usize, 0usize);
    loop {
        match events.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(b) => {
                bytes += b.len();
                frames += 1;
            }
            ExecEvent::Stderr(b) => panic!("stderr: {}", String::from_utf8_lossy(&b)),
            ExecEvent::Exit(status) => {
                assert!(status.success());
                break;
            }
        }
    }
    assert_eq!(bytes, 40_000_000);
    assert!(frames > 100, "{frames} frames");
    assert!(events.next().await.unwrap().is_none());
}

#[tokio::test]
async fn hanging_up_kills_the_process_group() {
    let agent = Agent::start();
    let mut session = agent
        .client()
        .exec(&sh("sleep 300 & echo $$ $!; wait"))
        .await
        .unwrap();
    let line = match session.next().await.unwrap().unwrap() {
        ExecEvent::Stdout(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("{other:?}"),
    };
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{line}");
    assert!(pids.iter().all(|p| !process_gone(*p)));
    drop(session);
    assert!(
        wait_until_async(Duration::from_secs(10), || pids
            .iter()
            .all(|p| process_gone(*p)))
        .await,
        "the shell {} and its background sleep {} survived the hang-up",
        pids[0],
        pids[1]
    );
}

#[tokio::test]
async fn a_tty_session_has_a_terminal_of_the_asked_size() {
    let agent = Agent::start();
    let mut request = sh("tty; stty size; read line; echo \"got $line\"; stty size");
    request.tty = Some(TtySize {
        rows: 30,
        cols: 100,
    });
    let mut session = agent.client().exec(&request).await.unwrap();
    let mut seen = String::new();
    // Wait for the first size before resizing and answering `read`.
    while !seen.contains("30 100") {
        match session.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(b) => seen.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("{other:?} after {seen:?}"),
        }
    }
    session.input().resize(40, 120).await.unwrap();
    session.input().write(b"typed\n").await.unwrap();
    let status = loop {
        match session.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(b) => seen.push_str(&String::from_utf8_lossy(&b)),
            ExecEvent::Stderr(b) => panic!("a TTY has no separate stderr: {b:?}"),
            ExecEvent::Exit(status) => break status,
        }
    };
    assert!(status.success(), "{seen}");
    assert!(seen.contains("/dev/pts/"), "{seen}");
    assert!(seen.contains("got typed"), "{seen}");
    assert!(seen.contains("40 120"), "{seen}");
}

/// A signal frame reaches a TTY session's foreground job, as the terminal's own ^C would: a
/// shell with job control runs the job in a group of its own, and only that group gets it.
#[tokio::test]
async fn a_signal_reaches_the_terminals_foreground_job() {
    let agent = Agent::start();
    let mut request = sh(
        "set -m; sh -c 'trap \"echo job got INT; kill \\$!; exit 5\" INT; sleep 100 & wait'; \
         echo \"job ended $?\"",
    );
    request.tty = Some(TtySize { rows: 24, cols: 80 });
    let mut session = agent.client().exec(&request).await.unwrap();
    // Give the shell a moment to start its job.
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.input().signal("INT").await.unwrap();
    let mut seen = String::new();
    let status = loop {
        match session.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(b) => seen.push_str(&String::from_utf8_lossy(&b)),
            ExecEvent::Stderr(b) => panic!("a TTY has no separate stderr: {b:?}"),
            ExecEvent::Exit(status) => break status,
        }
    };
    assert!(seen.contains("job got INT"), "{seen:?} {status:?}");
    assert!(seen.contains("job ended 5"), "{seen:?} {status:?}");
    assert!(
        status.success(),
        "the shell itself was not signalled: {status:?}"
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test]
async fn cp_round_trips_a_directory_with_modes() {
    let agent = Agent::start();
    let client = agent.client();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("project");
    std::fs::create_dir_all(src.join("scripts")).unwrap();
    std::fs::write(src.join("scripts/build.sh"), "#!/bin/sh\necho build\n").unwrap();
    std::fs::set_permissions(
        src.join("scripts/build.sh"),
        PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(src.join("private.key"), "secret").unwrap();
    std::fs::set_permissions(src.join("private.key"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(src.join("scripts"), PermissionsExt::from_mode(0o750)).unwrap();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(src.join("data.bin"), &big).unwrap();
    std::os::unix::fs::symlink("scripts/build.sh", src.join("build")).unwrap();

    let guest_dir = work.path().join("guest/root");
    let summary = client
        .copy_in_path(&src, guest_dir.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(summary.entries, 6);
    assert_eq!(summary.bytes, 2_000_000 + 6 + 21);
    let copied = guest_dir.join("project");
    assert_eq!(mode(&copied.join("scripts/build.sh")), 0o755);
    assert_eq!(mode(&copied.join("private.key")), 0o600);

    // And back out.
    let back = work.path().join("back");
    let unpacked = client
        .copy_out_to(copied.to_str().unwrap(), &back)
        .await
        .unwrap();
    assert_eq!(unpacked.entries, 6);
    let round = back.join("project");
    assert_eq!(mode(&round.join("scripts/build.sh")), 0o755);
    assert_eq!(mode(&round.join("private.key")), 0o600);
    assert_eq!(mode(&round.join("scripts")), 0o750);
    assert_eq!(std::fs::read(round.join("data.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_link(round.join("build")).unwrap(),
        PathBuf::from("scripts/build.sh")
    );

    // A single file keeps its name.
    let one = work.path().join("one");
    client
        .copy_out_to(copied.join("private.key").to_str().unwrap(), &one)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(one.join("private.key")).unwrap(),
        "secret"
    );

    let err = client.copy_out_to("/no/such/file", &one).await.unwrap_err();
    assert_eq!(err.code(), Some("not_found"), "{err}");
    let err = client.copy_out("relative/path").await.err().unwrap();
    assert_eq!(err.code(), Some("bad_path"), "{err}");
}

/// What `vm cp` asks before copying: what a guest path is, and an archive whose top entry has
/// the name the destination needs (or a directory's bare contents).
#[tokio::test]
async fn the_agent_stats_paths_and_renames_what_it_sends() {
    use banger_agent_protocol::archive::TopName;
    use banger_agent_protocol::protocol::PathKind;
    let agent = Agent::start();
    let client = agent.client();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("d");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("f"), "f").unwrap();
    std::os::unix::fs::symlink("sub", dir.join("link")).unwrap();
    let at = |p: &str| dir.join(p).to_str().unwrap().to_owned();

    let stat = client.stat(&at("f")).await.unwrap();
    assert_eq!(
        (stat.kind, stat.followed()),
        (PathKind::File, PathKind::File)
    );
    let stat = client.stat(&at("link")).await.unwrap();
    assert_eq!(
        (stat.kind, stat.followed()),
        (PathKind::Symlink, PathKind::Directory)
    );
    assert_eq!(
        client.stat(&at("nope")).await.unwrap().kind,
        PathKind::Missing
    );
    // A file on the way is "missing" too: nothing can be there.
    assert_eq!(
        client.stat(&at("f/x")).await.unwrap().kind,
        PathKind::Missing
    );

    let names = |tar: Vec<u8>| {
        let mut names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        names
    };
    let read_all = |mut out: banger_agent_protocol::client::CopyOut| async move {
        let mut tar = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut out, &mut tar)
            .await
            .unwrap();
        tar
    };
    let renamed = client
        .copy_out_as(&at("f"), Some(&TopName::Named("g".into())))
        .await
        .unwrap();
    assert_eq!(names(read_all(renamed).await), ["g"]);
    let contents = client
        .copy_out_as(dir.to_str().unwrap(), Some(&TopName::Contents))
        .await
        .unwrap();
    assert_eq!(names(read_all(contents).await), ["f", "link", "sub"]);
    let err = client
        .copy_out_as(&at("f"), Some(&TopName::Contents))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("not_a_directory"), "{err}");
}

#[tokio::test]
async fn the_agent_refuses_an_archive_that_climbs_out() {
    let agent = Agent::start();
    let work = tempfile::tempdir().unwrap();
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../escaped!!");
    header.set_size(1);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(b"x");
    tar.resize(1024 + 1024, 0);

    let dest = work.path().join("dest");
    let err = agent
        .client()
        .copy_in(dest.to_str().unwrap(), std::io::Cursor::new(tar))
        .await
        .unwrap_err();
    match &err {
        AgentError::Api { status, body } => {
            assert_eq!((*status, body.code.as_str()), (400, "unsafe_archive"));
            assert!(body.message.contains("../escaped!!"), "{}", body.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(!work.path().join("escaped!!").exists());
}

#[tokio::test]
async fn ports_lists_a_socket_the_test_opened() {
    let agent = Agent::start();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ports = agent.client().ports().await.unwrap();
    let find = |protocol, port| {
        ports
            .iter()
            .find(|p| p.protocol == protocol && p.port == port)
            .unwrap_or_else(|| panic!("{protocol:?} {port} missing from {ports:#?}"))
    };
    let listening = find(Transport::Tcp, tcp.local_addr().unwrap().port());
    assert_eq!(listening.address.to_string(), "127.0.0.1");
    assert_eq!(listening.pid, Some(std::process::id()));
    assert!(listening.process.is_some());
    let bound = find(Transport::Udp, udp.local_addr().unwrap().port());
    assert_eq!(bound.pid, Some(std::process::id()));
    // The agent's own listener is there too, owned by the agent.
    let own = find(Transport::Tcp, agent.addr.port());
    assert_eq!(own.process.as_deref(), Some("banger-agent"));
}

#[tokio::test]
async fn stats_report_memory_load_and_disks() {
    let agent = Agent::start();
    let stats = agent.client().stats().await.unwrap();
    assert!(stats.memory.total_bytes > 0);
    assert!(stats.memory.available_bytes <= stats.memory.total_bytes);
    assert!(stats.cpus >= 1);
    assert!(stats.uptime_ms > 0);
    let root = stats.disks.iter().find(|d| d.path == "/").unwrap();
    assert!(root.total_bytes > 0 && root.used_bytes <= root.total_bytes);
}

#[tokio::test]
async fn shutdown_answers_then_powers_off() {
    let agent = Agent::start();
    let accepted = agent.client().shutdown().await.unwrap();
    assert!(
        accepted.method.contains("fake-poweroff"),
        "{}",
        accepted.method
    );
    let marker = agent.dir.path().join("powered-off");
    assert!(wait_until_async(Duration::from_secs(10), || marker.exists()).await);
}

#[tokio::test]
async fn bad_requests_do_not_hurt_the_agent() {
    let agent = Agent::start();
    let client = agent.client();
    // Garbage, an oversized head, a connection that never finishes its head.
    let mut garbage = std::net::TcpStream::connect(agent.addr).unwrap();
    garbage.write_all(b"\x00\x01 NOT HTTP\r\n\r\n").unwrap();
    let mut huge = std::net::TcpStream::connect(agent.addr).unwrap();
    let head = format!(
        "GET /v1/healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = huge.write_all(head.as_bytes());
    let mut answer = Vec::new();
    let _ = huge.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    let _stalled = std::net::TcpStream::connect(agent.addr).unwrap();

    // The agent still serves, many requests at once, while a command runs.
    let running = client.exec(&sh("sleep 2")).await.unwrap();
    let many = (0..32).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.health().await })
    });
    for task in many {
        assert!(task.await.unwrap().unwrap().ready);
    }
    drop(running);
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let agent = Agent::start();
    let mut raw = std::net::TcpStream::connect(agent.addr).unwrap();
    write!(
        raw,
        "DELETE /v1/ports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n\
         GET /v2/nothing HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        agent.token, agent.token
    )
    .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("/v1/ports answers GET"), "{answer}");
    assert!(answer.contains("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("no endpoint /v2/nothing"), "{answer}");
}

/// One raw HTTP exchange with the agent, for requests the client would never send.
fn raw_exchange(agent: &Agent, method: &str, path: &str, body: &[u8]) -> String {
    let mut raw = std::net::TcpStream::connect(agent.addr).unwrap();
    write!(
        raw,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        agent.token,
        body.len()
    )
    .unwrap();
    raw.write_all(body).unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test]
async fn malformed_exec_requests_are_refused_before_anything_runs() {
    use banger_agent_protocol::frame::{Frame, FrameKind};
    let agent = Agent::start();

    let stdin_first = Frame::new(FrameKind::Stdin, &b"hello"[..]).encode();
    let answer = raw_exchange(&agent, "POST", "/v1/exec", &stdin_first);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("must start with a start frame"), "{answer}");

    let typo = Frame::new(FrameKind::Start, &br#"{"argv":["true"],"ttty":null}"#[..]).encode();
    let answer = raw_exchange(&agent, "POST", "/v1/exec", &typo);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("unknown field `ttty`"), "{answer}");

    let empty = Frame::new(FrameKind::Start, &br#"{"argv":[]}"#[..]).encode();
    let answer = raw_exchange(&agent, "POST", "/v1/exec", &empty);
    assert!(answer.contains("argv is empty"), "{answer}");

    let answer = raw_exchange(&agent, "PUT", "/v1/files", b"");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad_path"), "{answer}");
}

#[tokio::test]
async fn any_stream_will_do() {
    let agent = Agent::start();
    let addr = agent.addr;
    let connector = ConnectWith::new("a custom connector", move || {
        tokio::net::TcpStream::connect(addr)
    });
    let client = AgentClient::new(connector, agent.token.clone());
    assert!(client.health().await.unwrap().ready);

    let nowhere = ConnectWith::new("vsock /nonexistent/v.sock", || async {
        Err::<tokio::net::UnixStream, _>(std::io::Error::from(std::io::ErrorKind::NotFound))
    });
    let err = AgentClient::new(nowhere, "x").health().await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot reach the guest agent over vsock /nonexistent/v.sock"),
        "{err}"
    );
}

/// Firecracker's side of hybrid vsock, played by the test: accept on the VM's vsock Unix
/// socket, expect `CONNECT 1024`, answer `OK`, then carry bytes to the agent (here on TCP).
#[tokio::test]
async fn through_firecrackers_hybrid_vsock_connector() {
    use banger_agent_protocol::protocol::VSOCK_PORT;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("v.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let agent_addr = agent.addr;
    tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut conn = tokio::io::BufReader::new(conn);
                let mut line = String::new();
                conn.read_line(&mut line).await.unwrap();
                assert_eq!(line, format!("CONNECT {VSOCK_PORT}\n"));
                conn.get_mut().write_all(b"OK 1073741824\n").await.unwrap();
                let mut guest = tokio::net::TcpStream::connect(agent_addr).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut guest).await;
            });
        }
    });

    let connector = ConnectWith::new(format!("vsock {}", socket.display()), move || {
        let socket = socket.clone();
        async move { banger_vmm::firecracker::hybrid_vsock::connect(&socket, VSOCK_PORT).await }
    });
    let client = AgentClient::new(connector, agent.token.clone());
    assert!(client.health().await.unwrap().ready);
    let out = client
        .exec_output(&ExecRequest::new(["echo", "over vsock"]), None)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"over vsock\n");
}

//! The VM lifecycle of a real in-process bangerd whose host is fake: Firecracker is
//! banger-vmm's `FakeFirecracker` (processes, sockets and API answers in memory) and the
//! privileged network commands (`ip`, `nft`, `sysctl`) go to a recording, failure-injecting
//! fake runner, while the disk tools (`mkfs.ext4`, `debugfs`) run for real. This
//! is where every step of a start is failed in turn and the exact cleanup checked; the real
//! Firecracker and real taps are exercised by `firecracker_vm.rs`.
//!
//! It stays one file, one test binary: every test drives the same [`Harness`] (the daemon, the fake
//! Firecracker, the split runner, a fake agent), and each further file would link the whole daemon
//! again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_agent_protocol::frame::{Frame, FrameKind};
use banger_agent_protocol::protocol::{ExecRequest, ExitStatus, TtySize};
use banger_api::paths::Paths;
use banger_api::{
    Client, CreateVmRequest, ErrorCode, Operation, OperationState, StageState, Vm, VmAction,
    VmState, VmmKind,
};
use banger_daemon::host::HostFacts;
use banger_daemon::{HostDeps, RunningDaemon};
use banger_host::network::Privilege;
use banger_host::runner::{
    CommandOutput, CommandRunner, CommandSpec, FakeRunner, Matcher, RealRunner, RunError,
};
use banger_vmm::firecracker::fake::{FIRST_PID, FakeFirecracker};
use banger_vmm::qemu::fake::FakeQemu;
use banger_vmm::{Accel, InstanceState};

mod support;

/// Network commands go to the fake, everything else runs, except a disk command the test
/// chose to fail.
#[derive(Debug)]
struct SplitRunner {
    net: Arc<FakeRunner>,
    fail_disk: Arc<std::sync::Mutex<Option<&'static str>>>,
}

impl CommandRunner for SplitRunner {
    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError> {
        if ["ip", "nft", "sysctl", "sudo"].contains(&cmd.program.as_str()) {
            return self.net.run(cmd);
        }
        let mut fail = self.fail_disk.lock().unwrap();
        if fail.is_some_and(|needle| cmd.display().contains(needle)) {
            *fail = None;
            return Err(RunError::failed(cmd, Some(1), b"injected failure"));
        }
        drop(fail);
        RealRunner.run(cmd)
    }
}

struct Harness {
    /// Dropped first: the state directory's own small filesystem, when the test has one.
    small_disk: Option<support::SmallDisk>,
    dir: tempfile::TempDir,
    paths: Paths,
    fc: FakeFirecracker,
    qemu: FakeQemu,
    net: Arc<FakeRunner>,
    fail_disk: Arc<std::sync::Mutex<Option<&'static str>>>,
    daemon: Option<RunningDaemon>,
    client: Client,
    /// The host's CPUs and memory as the daemon sees them (`None`: this machine's).
    host: Option<HostFacts>,
}

fn fresh_net() -> FakeRunner {
    FakeRunner::new().respond(
        Matcher::prefix("sysctl", ["-n"]),
        CommandOutput::with_stdout("0\n"),
    )
}

impl Harness {
    async fn start(fc: FakeFirecracker, net: FakeRunner) -> Harness {
        Harness::with_vmm(fc, FakeQemu::new(), net, "firecracker").await
    }

    async fn with_vmm(fc: FakeFirecracker, qemu: FakeQemu, net: FakeRunner, vmm: &str) -> Harness {
        Harness::with_config(fc, qemu, net, &format!("vmm = \"{vmm}\"\n")).await
    }

    /// A daemon whose config.toml starts with `config` (top-level keys).
    async fn with_config(
        fc: FakeFirecracker,
        qemu: FakeQemu,
        net: FakeRunner,
        config: &str,
    ) -> Harness {
        Harness::on_host(fc, qemu, net, config, None).await
    }

    /// [`Harness::with_config`] on a host of `host`'s CPUs and memory (`None`: this one's).
    async fn on_host(
        fc: FakeFirecracker,
        qemu: FakeQemu,
        net: FakeRunner,
        config: &str,
        host: Option<HostFacts>,
    ) -> Harness {
        Harness::on_disk(fc, qemu, net, config, host, None).await
    }

    /// [`Harness::on_host`] whose state directory is a filesystem of its own of
    /// `small_disk` bytes (a tmpfs), when given.
    async fn on_disk(
        fc: FakeFirecracker,
        qemu: FakeQemu,
        net: FakeRunner,
        config: &str,
        host: Option<HostFacts>,
        small_disk: Option<support::SmallDisk>,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let small_disk = small_disk.map(|d| d.mount(&dir.path().join("state")));
        // The fake's journals are exact: a spare Firecracker only where a test asks for one.
        let spare = if config.contains("spare_vmm") {
            ""
        } else {
            "spare_vmm = false\n"
        };
        let paths = support::home(
            dir.path(),
            &format!(
                "{config}{spare}[defaults]\nstop_timeout = \"100ms\"\n\
                 disk = \"256M\"\nwork_disk = \"64M\"\n[web]\nenabled = false\n"
            ),
        );
        let mut h = Harness {
            small_disk,
            dir,
            paths,
            fc,
            qemu,
            net: Arc::new(net),
            fail_disk: Arc::default(),
            daemon: None,
            client: Client::new(PathBuf::new()),
            host,
        };
        h.restart().await;
        support::register(&h.client, &h.dir.path().join("files"), "base", false).await;
        h
    }

    /// Starts (again) a daemon on the same directories and fake host.
    async fn restart(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
        let deps = HostDeps {
            runner: Arc::new(SplitRunner {
                net: self.net.clone(),
                fail_disk: self.fail_disk.clone(),
            }),
            firecracker: Some(self.fc.backend()),
            qemu: Some(self.qemu.backend(Accel::Tcg)),
            preflight: false,
            privilege: Some(Privilege::Root),
            host: self.host,
        };
        let daemon = banger_daemon::start_with(self.paths.clone(), deps)
            .await
            .unwrap();
        self.client = Client::new(daemon.socket());
        self.daemon = Some(daemon);
    }

    async fn create(&self, name: &str) -> (Vm, Operation) {
        self.create_from(name, "base").await
    }

    async fn create_from(&self, name: &str, image: &str) -> (Vm, Operation) {
        let created = self
            .client
            .create_vm(&CreateVmRequest {
                name: Some(name.into()),
                image: Some(image.into()),
                vcpus: Some(1),
                memory_mib: Some(256),
                ..Default::default()
            })
            .await
            .unwrap();
        let op = self
            .watch(&created.operation.expect("a start operation"))
            .await;
        (self.vm(name).await, op)
    }

    async fn act(&self, name: &str, action: VmAction) -> Operation {
        let op = self.client.vm_action(name, action).await.unwrap();
        self.watch(&op).await
    }

    /// Operation `op` as it ended.
    async fn watch(&self, op: &Operation) -> Operation {
        self.client.watch_operation(&op.id, |_| {}).await.unwrap()
    }

    /// Creates VM `name` of image `base` without starting it.
    async fn create_stopped(&self, name: &str) -> Vm {
        self.client
            .create_vm(&CreateVmRequest {
                name: Some(name.into()),
                image: Some("base".into()),
                start: Some(false),
                ..Default::default()
            })
            .await
            .unwrap();
        self.vm(name).await
    }

    async fn vm(&self, name: &str) -> Vm {
        self.client.get_vm(name).await.unwrap()
    }

    fn tap_of(vm: &Vm) -> String {
        banger_host::network::tap_name(&vm.id)
    }

    fn net_calls(&self) -> Vec<String> {
        self.net.calls()
    }

    /// The fake Firecracker's state of VM `id`'s instance, which runs as `runtime` records.
    fn instance_state(&self, id: &str, runtime: &banger_api::VmRuntime) -> InstanceState {
        use banger_vmm::Vmm;
        let handle = banger_vmm::VmHandle {
            vm_id: id.into(),
            pid: runtime.pid,
            api_socket: runtime.api_socket.clone().into(),
            vsock_socket: None,
        };
        self.fc.backend().state(&handle).unwrap()
    }

    /// Fails the test, naming `case`, when a Firecracker process or API socket is left.
    #[track_caller]
    fn assert_no_vmm(&self, case: &str) {
        let (running, sockets) = (self.fc.running(), self.fc.sockets());
        assert!(running.is_empty(), "{case}: {running:?}");
        assert!(sockets.is_empty(), "{case}: {sockets:?}");
    }
}

/// Waits up to 10 s for `check`, failing the test with `what` when it never holds.
async fn wait_for(what: &str, check: impl AsyncFnMut() -> bool) {
    banger_test_support::wait_for_async(
        what,
        Duration::from_secs(10),
        Duration::from_millis(50),
        check,
    )
    .await;
}

/// Plays Firecracker's hybrid vsock for VM `vm`: accepts on its vsock socket, answers
/// `CONNECT 1024` with `OK`, and serves each connection with the guest agent, in-process (its
/// commands run on the host as the test's user). The agent answers with the VM's own token.
fn serve_agent(h: &Harness, vm: &Vm) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let socket = PathBuf::from(vm.runtime.as_ref().unwrap().vsock_socket.clone().unwrap());
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let token = std::fs::read_to_string(h.paths.vm_dir(&vm.id).join("agent-token")).unwrap();
    let config = banger_agent::guest::Config {
        token: banger_agent::guest::Token::new(token.trim()),
        tcp: Vec::new(),
        vsock_port: None,
        shutdown: banger_agent::guest::shutdown::Method::Kernel,
        proc_root: "/proc".into(),
        started_at: Duration::ZERO,
        boot_stages: Vec::new(),
        heartbeat: banger_agent_protocol::protocol::HEARTBEAT_EVERY,
    };
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let config = config.clone();
            tokio::spawn(async move {
                let mut conn = tokio::io::BufReader::new(conn);
                let mut line = String::new();
                conn.read_line(&mut line).await.unwrap();
                assert_eq!(line, "CONNECT 1024\n");
                conn.get_mut().write_all(b"OK 1073741824\n").await.unwrap();
                banger_agent::guest::serve_stream(conn, config).await;
            });
        }
    });
}

/// A framed exec session through bangerd's API: the sender of its request body and the
/// answer's frames.
struct Exec {
    input: tokio::sync::mpsc::Sender<bytes::Bytes>,
    body: hyper::body::Incoming,
    decoder: banger_agent_protocol::frame::FrameDecoder,
}

impl Exec {
    async fn start(client: &Client, vm: &str, request: &ExecRequest) -> Exec {
        let (input, rx) = tokio::sync::mpsc::channel(4);
        let start = serde_json::to_vec(request).unwrap();
        input
            .send(Frame::new(FrameKind::Start, start).encode())
            .await
            .unwrap();
        let response = client.exec_frames(vm, rx).await.unwrap();
        Exec {
            input,
            body: response.into_body(),
            decoder: banger_agent_protocol::frame::FrameDecoder::new(),
        }
    }

    async fn send(&self, frame: Frame) {
        self.input.send(frame.encode()).await.unwrap();
    }

    async fn next(&mut self) -> Frame {
        use http_body_util::BodyExt;
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return frame;
            }
            let chunk = self.body.frame().await.expect("the answer ended early");
            if let Ok(data) = chunk.unwrap().into_data() {
                self.decoder.push(&data);
            }
        }
    }

    /// Output frames until the exit: (stdout, stderr, exit status).
    async fn finish(&mut self) -> (Vec<u8>, Vec<u8>, ExitStatus) {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        loop {
            let frame = self.next().await;
            match frame.kind {
                FrameKind::Stdout => stdout.extend_from_slice(&frame.payload),
                FrameKind::Stderr => stderr.extend_from_slice(&frame.payload),
                FrameKind::Exit => {
                    return (
                        stdout,
                        stderr,
                        serde_json::from_slice(&frame.payload).unwrap(),
                    );
                }
                other => panic!(
                    "unexpected {other:?}: {}",
                    String::from_utf8_lossy(&frame.payload)
                ),
            }
        }
    }
}

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new(["sh", "-c", script]);
    request.stdin = true;
    request
}

/// The relay is full duplex: input written after output was read still reaches the command,
/// while the same request's answer is streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_relays_input_written_after_output_was_read() {
    let h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    let (vm, _) = h.create("dev").await;
    serve_agent(&h, &vm);

    let mut exec = Exec::start(
        &h.client,
        "dev",
        &sh("echo ready; read line; echo \"got $line\"; echo err >&2; exit 3"),
    )
    .await;
    let first = exec.next().await;
    assert_eq!(
        (first.kind, &first.payload[..]),
        (FrameKind::Stdout, &b"ready\n"[..])
    );
    exec.send(Frame::new(FrameKind::Stdin, &b"hello\n"[..]))
        .await;
    exec.send(Frame::new(FrameKind::StdinEof, bytes::Bytes::new()))
        .await;
    let (stdout, stderr, status) = exec.finish().await;
    assert_eq!(stdout, b"got hello\n");
    assert_eq!(stderr, b"err\n");
    assert_eq!(status.code, Some(3));

    // A signal frame reaches the command's process group.
    let mut exec = Exec::start(&h.client, "dev", &sh("echo started; exec sleep 100")).await;
    assert_eq!(exec.next().await.payload, &b"started\n"[..]);
    exec.send(Frame::signal("INT")).await;
    let (_, _, status) = exec.finish().await;
    assert_eq!(status.signal, Some(2));
    assert_eq!(status.shell_code(), 130);

    // A terminal of the asked size, resized on the way.
    let mut request = sh("stty size; read x; stty size");
    request.tty = Some(TtySize {
        rows: 30,
        cols: 100,
    });
    let mut exec = Exec::start(&h.client, "dev", &request).await;
    let mut seen = Vec::new();
    while !seen.ends_with(b"30 100\r\n") {
        seen.extend_from_slice(&exec.next().await.payload);
    }
    exec.send(Frame::resize(40, 120)).await;
    exec.send(Frame::new(FrameKind::Stdin, &b"\n"[..])).await;
    let (stdout, _, status) = exec.finish().await;
    assert!(
        String::from_utf8_lossy(&stdout).contains("40 120"),
        "{}",
        String::from_utf8_lossy(&stdout)
    );
    assert_eq!(status.code, Some(0));

    // The JSON form still serves simple clients, and says how to get input.
    let json = serde_json::to_vec(&ExecRequest::new(["echo", "plain"])).unwrap();
    let response = h.client.exec("dev", json).await.unwrap();
    use http_body_util::BodyExt;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let mut decoder = banger_agent_protocol::frame::FrameDecoder::new();
    decoder.push(&bytes);
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(frame.payload, &b"plain\n"[..]);
    let json = serde_json::to_vec(&sh("cat")).unwrap();
    let err = h.client.exec("dev", json).await.unwrap_err();
    assert!(err.is_code(ErrorCode::Unsupported), "{err}");

    // A framed request must start with a start frame.
    let (input, rx) = tokio::sync::mpsc::channel(1);
    input
        .send(Frame::new(FrameKind::Stdin, &b"x"[..]).encode())
        .await
        .unwrap();
    let err = h.client.exec_frames("dev", rx).await.unwrap_err();
    assert!(err.is_code(ErrorCode::InvalidInput), "{err}");
}

/// A client whose input comes after the command ended (a pipe that reaches EOF late) keeps
/// writing into the same request: bangerd must not close the connection under it, or the
/// client's write fails and its HTTP stack stops reading before the exit frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_keeps_the_connection_while_the_client_writes_after_the_exit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    let (vm, _) = h.create("dev").await;
    serve_agent(&h, &vm);

    let chunk = |data: &[u8]| {
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    };
    let socket = h.daemon.as_ref().unwrap().socket();
    let (mut read, mut write) = tokio::net::UnixStream::connect(&socket)
        .await
        .unwrap()
        .into_split();
    let start = Frame::new(FrameKind::Start, serde_json::to_vec(&sh("true")).unwrap()).encode();
    let mut head = format!(
        "POST /v1/vms/dev/exec HTTP/1.1\r\nHost: bangerd\r\n\
         Content-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        banger_api::client::EXEC_FRAMES
    )
    .into_bytes();
    head.extend_from_slice(&chunk(&start));
    write.write_all(&head).await.unwrap();

    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let exit = br#"{"code":0"#;
    tokio::time::timeout(Duration::from_secs(20), async {
        while !answer.windows(exit.len()).any(|w| w == exit) {
            let n = read.read(&mut buf).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no exit frame");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let eof = Frame::new(FrameKind::StdinEof, bytes::Bytes::new()).encode();
    write
        .write_all(&chunk(&eof))
        .await
        .expect("bangerd closed the connection while the client was still writing its input");
    tokio::time::sleep(Duration::from_millis(300)).await;
    write
        .write_all(b"0\r\n\r\n")
        .await
        .expect("bangerd closed the connection before the client ended its input");
}

/// 64 MiB through `cat` and back, through bangerd: the output streams while the input is
/// still being written, and what is in flight at any moment stays far below the whole (no
/// side buffers a stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_a_large_round_trip_in_bounded_memory() {
    const TOTAL: usize = 64 << 20;
    let h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    let (vm, _) = h.create("dev").await;
    serve_agent(&h, &vm);

    let exec = Exec::start(&h.client, "dev", &sh("cat")).await;
    let Exec {
        input,
        body,
        decoder,
    } = exec;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
            while sent.load(std::sync::atomic::Ordering::SeqCst) < TOTAL {
                let frame = Frame::new(FrameKind::Stdin, chunk.clone());
                input.send(frame.encode()).await.unwrap();
                sent.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
            }
            input
                .send(Frame::new(FrameKind::StdinEof, bytes::Bytes::new()).encode())
                .await
                .unwrap();
            input
        })
    };
    let mut exec = Exec {
        input: tokio::sync::mpsc::channel(1).0,
        body,
        decoder,
    };
    let (mut received, mut in_flight_max, mut first_output_at) = (0usize, 0usize, None);
    let status = loop {
        let frame = exec.next().await;
        match frame.kind {
            FrameKind::Stdout => {
                let sent_now = sent.load(std::sync::atomic::Ordering::SeqCst);
                first_output_at.get_or_insert(sent_now);
                // Spot checks: the bytes come back in order.
                for (i, b) in frame.payload.iter().enumerate().step_by(997) {
                    assert_eq!(*b, ((received + i) % (64 * 1024) % 251) as u8);
                }
                received += frame.payload.len();
                in_flight_max = in_flight_max.max(sent_now.saturating_sub(received));
            }
            FrameKind::Exit => break serde_json::from_slice::<ExitStatus>(&frame.payload).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    drop(writer.await.unwrap());
    assert_eq!(status.code, Some(0));
    assert_eq!(received, TOTAL);
    let first = first_output_at.unwrap();
    assert!(
        first < TOTAL / 4,
        "output began only after {first} bytes were sent"
    );
    assert!(
        in_flight_max < TOTAL / 4,
        "{in_flight_max} bytes were in flight at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_starts_the_vm_and_stop_releases_everything() {
    let h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    let (vm, op) = h.create("dev").await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let stages: Vec<_> = op
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect();
    assert_eq!(
        stages,
        [
            ("checks", StageState::Done),
            ("network", StageState::Done),
            ("vmm", StageState::Done),
            ("started", StageState::Done),
        ]
    );
    assert_eq!(vm.state, VmState::Running);
    let runtime = vm.runtime.clone().expect("a runtime");
    assert_eq!(runtime.pid, FIRST_PID);
    assert_eq!(runtime.vmm, VmmKind::Firecracker);
    let tap = Harness::tap_of(&vm);
    assert_eq!(runtime.tap, tap);
    assert!(h.fc.alive(FIRST_PID));
    let calls = h.net_calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("ip tuntap add") && c.contains(&tap)),
        "{calls:#?}"
    );
    // Firecracker got the VM's own disks, tap, MAC and vsock.
    let body = |path: &str| -> serde_json::Value {
        let sent = h.fc.requests();
        let request = sent
            .iter()
            .find(|r| r.request.path == path)
            .unwrap_or_else(|| panic!("no request to {path}"));
        serde_json::from_slice(request.request.body.as_deref().unwrap()).unwrap()
    };
    let dir = h.paths.vm_dir(&vm.id);
    let rootfs = body("/drives/rootfs");
    assert_eq!(rootfs["is_read_only"], true);
    assert!(
        rootfs["path_on_host"]
            .as_str()
            .unwrap()
            .ends_with("rootfs.ext4")
    );
    for (id, file) in [("overlay", "overlay.ext4"), ("work", "work.ext4")] {
        let drive = body(&format!("/drives/{id}"));
        assert_eq!(drive["is_read_only"], false);
        assert_eq!(drive["path_on_host"], dir.join(file).display().to_string());
    }
    let iface = body("/network-interfaces/eth0");
    assert_eq!(iface["host_dev_name"], tap.as_str());
    assert_eq!(iface["guest_mac"], vm.network.mac.as_str());
    assert_eq!(body("/vsock")["guest_cid"], vm.network.vsock_cid);
    assert!(
        !body("/boot-source")["boot_args"]
            .as_str()
            .unwrap()
            .contains("ip=")
    );
    for file in [
        "overlay.ext4",
        "work.ext4",
        "agent-token",
        "ssh_host_ed25519_key.pub",
    ] {
        assert!(dir.join(file).exists(), "{file} missing");
    }

    // Running VMs refuse a second start and resource changes.
    let err = h
        .client
        .vm_action("dev", VmAction::Start)
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::InvalidState), "{err}");
    let err = h
        .client
        .update_vm(
            "dev",
            &banger_api::UpdateVmRequest {
                vcpus: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::InvalidState), "{err}");

    // Pause and resume reach Firecracker.
    let paused = h.client.pause_vm("dev", true).await.unwrap();
    assert_eq!(paused.state, VmState::Paused);
    assert_eq!(h.instance_state(&vm.id, &runtime), InstanceState::Paused);
    let err = h.client.pause_vm("dev", true).await.unwrap_err();
    assert!(err.is_code(ErrorCode::InvalidState), "{err}");
    let resumed = h.client.pause_vm("dev", false).await.unwrap();
    assert_eq!(resumed.state, VmState::Running);
    assert_eq!(h.instance_state(&vm.id, &runtime), InstanceState::Running);

    let before = h.net_calls().len();
    let op = h.act("dev", VmAction::Stop).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let vm = h.vm("dev").await;
    assert_eq!(vm.state, VmState::Stopped);
    assert_eq!(vm.runtime, None);
    assert!(!h.fc.alive(FIRST_PID));
    assert!(h.fc.sockets().is_empty(), "{:?}", h.fc.sockets());
    assert_eq!(h.net_calls()[before..], [format!("ip link del {tap}")]);

    // Started again, then deleted while running: stopped first, then everything removed.
    let op = h.act("dev", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let pid = h.vm("dev").await.runtime.unwrap().pid;
    h.client.delete_vm("dev").await.unwrap();
    assert!(!h.fc.alive(pid));
    assert!(h.fc.sockets().is_empty());
    assert!(!dir.exists());
    assert_eq!(h.net_calls().last().unwrap(), &format!("ip link del {tap}"));
}

/// Fails each step of making a VM's files in turn, for an image whose init reads a config
/// drive (`fast`) and one whose init does not (`base`), with the pool off so the create makes
/// every disk itself: no record and no file remain, and the same VM can be created afterwards.
/// A full disk: the state directory on a 48 MiB filesystem of its own. Registering an image
/// whose root filesystem does not fit, and creating a VM when the filesystem is all but full,
/// fail with `no_space` and a message naming the path; nothing of them stays (no record, no
/// file, the space given back); the daemon goes on serving, and the same create passes once
/// there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_requests_cleanly_and_the_daemon_serves_on() {
    let Some(small) = support::SmallDisk::new(48 << 20) else {
        return;
    };
    let h = Harness::on_disk(
        FakeFirecracker::new(),
        FakeQemu::new(),
        fresh_net(),
        "vmm = \"firecracker\"\ndisk_pool = 0\n",
        None,
        Some(small),
    )
    .await;
    let disk = h.small_disk.as_ref().unwrap();
    let state = h.paths.state_dir.clone();

    // A root filesystem of 64 MiB of data (not zeros, which a copy may leave as holes).
    let big = h.dir.path().join("big");
    std::fs::create_dir_all(big.join("content")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let blob: Vec<u8> = (0..(64usize << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(big.join("content/blob"), blob).unwrap();
    let rootfs = big.join("rootfs.ext4");
    RealRunner
        .run(&CommandSpec::new("mkfs.ext4").args([
            "-q",
            "-F",
            "-d",
            big.join("content").to_str().unwrap(),
            rootfs.to_str().unwrap(),
            "100M",
        ]))
        .unwrap();
    let (kernel, _, _) = support::boot_files(&h.dir.path().join("files"));
    let files_before = support::files_under(&state);
    let free_before = disk.free();
    let op = h
        .client
        .register_image(&support::register_request("big", &kernel, None, &rootfs))
        .await
        .unwrap();
    let op = h.watch(&op).await;
    assert_eq!(op.state, OperationState::Failed, "{op:?}");
    let error = op.error.unwrap();
    assert_eq!(error.code, ErrorCode::NoSpace, "{error:?}");
    assert!(
        error.message.contains(&state.display().to_string()),
        "the message names the path: {error:?}"
    );
    println!("register on a full disk: {}", error.message);
    assert!(error.hint.unwrap().contains("df -h"));
    let images = h.client.list_images().await.unwrap();
    assert_eq!(
        images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["base"]
    );
    assert_eq!(
        support::files_under(&state),
        files_before,
        "nothing of the image stays"
    );
    // The space comes back when the last handle on the removed file closes. A process that
    // another test of this binary is starting holds a copy of every open handle until it
    // executes its program, so the space may come back a moment after the answer.
    let given_back = banger_test_support::wait_until_async(Duration::from_secs(10), || {
        disk.free() + (1 << 20) >= free_before
    })
    .await;
    assert!(
        given_back,
        "its space is given back: {} bytes free before the register, {} after",
        free_before,
        disk.free()
    );

    // All but full: a create fails and leaves nothing. (A first VM makes what every VM
    // shares: banger's SSH key, the VMs' directory.)
    h.create("first").await;
    h.client.delete_vm("first").await.unwrap();
    let filler = state.join("filler");
    let room = disk.free().saturating_sub(256 << 10);
    std::fs::write(&filler, vec![1u8; room as usize]).unwrap();
    let files_before = support::files_under(&state);
    let err = h
        .client
        .create_vm(&CreateVmRequest {
            name: Some("cramped".into()),
            image: Some("base".into()),
            vcpus: Some(1),
            memory_mib: Some(256),
            ..Default::default()
        })
        .await;
    let error = match err {
        Err(banger_api::ClientError::Api(e)) => e,
        Err(e) => panic!("{e}"),
        // The files may be made by the create's operation rather than before its answer.
        Ok(created) => {
            let op = h.watch(&created.operation.unwrap()).await;
            assert_eq!(op.state, OperationState::Failed, "{op:?}");
            op.error.unwrap()
        }
    };
    assert_eq!(error.code, ErrorCode::NoSpace, "{error:?}");
    assert!(
        error.message.contains(&state.display().to_string()),
        "the message names the path: {error:?}"
    );
    println!("create on a full disk: {}", error.message);
    assert!(
        error.hint.as_deref().unwrap_or_default().contains("df -h"),
        "what to do about a full disk, not a missing tool: {error:?}"
    );
    assert!(
        h.client
            .list_vms()
            .await
            .unwrap()
            .iter()
            .all(|vm| vm.name != "cramped"),
        "no record of the VM"
    );
    assert_eq!(
        support::files_under(&state),
        files_before,
        "no file of the VM"
    );

    // Room again: the daemon serves on, and the same create passes.
    std::fs::remove_file(&filler).unwrap();
    let given_back =
        banger_test_support::wait_until_async(Duration::from_secs(10), || disk.free() > room).await;
    assert!(given_back, "the filler's {room} bytes are free again");
    let (vm, op) = h.create("cramped").await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert_eq!(vm.state, VmState::Running);
    h.act("cramped", VmAction::Stop).await;
}

/// A stopped VM held for a change of its files (what `vm reset` does while it swaps the
/// overlay disk) does not start meanwhile: the start is refused with what is going on and
/// passes once the change is over; a second holder is refused too, and a VM that runs cannot
/// be held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_held_for_a_reset_does_not_start_meanwhile() {
    let h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    h.create_stopped("held").await;
    let d = h.daemon.as_ref().unwrap().daemon.clone();
    let action = "only a stopped VM's root can be reset";
    let (vm, claim) = d
        .machines
        .claim_stopped(&d, "held", "being reset", action)
        .unwrap();
    assert_eq!(vm.state, VmState::Stopped);

    let err = h
        .client
        .vm_action("held", VmAction::Start)
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::InvalidState), "{err}");
    assert!(err.to_string().contains("being reset"), "{err}");
    assert_eq!(h.vm("held").await.state, VmState::Stopped);
    let err = d
        .machines
        .claim_stopped(&d, "held", "being reset", action)
        .err()
        .expect("held twice");
    assert!(err.message.contains("being reset"), "{err:?}");

    drop(claim);
    let op = h.act("held", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let err = d
        .machines
        .claim_stopped(&d, "held", "being reset", action)
        .err()
        .expect("a running VM is not held");
    assert!(
        err.message.contains("is running; only a stopped VM's root"),
        "{err:?}"
    );
    h.act("held", VmAction::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_making_any_of_a_vms_files_leaves_no_record_and_no_file() {
    let h = Harness::with_config(
        FakeFirecracker::new(),
        FakeQemu::new(),
        fresh_net(),
        "vmm = \"firecracker\"\ndisk_pool = 0\n",
    )
    .await;
    support::register(&h.client, &h.dir.path().join("files"), "fast", true).await;
    let ssh_dir = h.paths.state_dir.join("ssh");
    for image in ["base", "fast"] {
        // banger's own key (made at a create when missing), the overlay disk and the work disk
        // (made alongside each other).
        for step in ["banger's key", "-L banger-overlay", "-L banger-work"] {
            let expected = if step == "banger's key" {
                // A file where banger's key directory goes.
                let _ = std::fs::remove_dir_all(&ssh_dir);
                std::fs::write(&ssh_dir, "").unwrap();
                "cannot make banger's SSH key"
            } else {
                *h.fail_disk.lock().unwrap() = Some(step);
                "injected failure"
            };
            let journal_before = h.fc.journal().len();
            let net_before = h.net_calls().len();
            let err = h
                .client
                .create_vm(&CreateVmRequest {
                    name: Some("dev".into()),
                    image: Some(image.into()),
                    vcpus: Some(1),
                    memory_mib: Some(256),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert!(err.to_string().contains(expected), "{image}, {step}: {err}");
            if step == "banger's key" {
                std::fs::remove_file(&ssh_dir).unwrap();
            }
            assert!(h.fail_disk.lock().unwrap().is_none(), "{step} ran");
            assert!(h.client.list_vms().await.unwrap().is_empty(), "{step}");
            let left: Vec<_> = std::fs::read_dir(h.paths.vms_dir())
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(
                left.is_empty(),
                "{image}, {step}: {left:?} left in the VMs directory"
            );
            // The start that ran its checks beside the files ended at them, before it acquired
            // anything.
            assert!(h.fc.running().is_empty(), "{step}: {:?}", h.fc.running());
            let journal = h.fc.journal();
            assert_eq!(
                journal.len(),
                journal_before,
                "{image}, {step}: {journal:?}"
            );
            let calls = h.net_calls();
            assert_eq!(calls.len(), net_before, "{image}, {step}: {calls:?}");
            let op = h.client.list_operations().await.unwrap();
            let op = op.last().unwrap();
            assert_eq!(op.state, OperationState::Failed, "{op:?}");
            assert!(
                op.error
                    .as_ref()
                    .unwrap()
                    .message
                    .contains("files were not made"),
                "{op:?}"
            );
        }
        // Nothing stands in the way of the same VM afterwards.
        let (vm, op) = h.create_from("dev", image).await;
        assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
        assert_eq!(vm.state, VmState::Running);
        let config_drive = h.paths.vm_dir(&vm.id).join("config.cpio");
        assert_eq!(config_drive.exists(), image == "fast", "{image}");
        h.client.delete_vm("dev").await.unwrap();
    }
    assert!(!h.paths.state_dir.join("pool").exists(), "no pool");
}

/// Waits until the pool holds a ready disk in each directory whose name starts with one of
/// `kinds`; returns those disks.
async fn pool_disks(h: &Harness, kinds: &[&str]) -> Vec<PathBuf> {
    let pool = h.paths.state_dir.join("pool");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut found = Vec::new();
        for kind in kinds {
            let disk = std::fs::read_dir(&pool)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|d| d.file_name().to_string_lossy().starts_with(kind))
                .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
                .map(|e| e.path())
                .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
            found.extend(disk);
        }
        if found.len() == kinds.len() {
            return found;
        }
        assert!(Instant::now() < deadline, "the pool never held {kinds:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

/// The pool through the daemon: a create takes ready disks (the very files), the pool refills,
/// a failed create takes its taken disk along, a restart keeps only the default kinds and
/// removes half-made disks, and a deleted image takes its work disks along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_take_ready_made_disks_and_the_pool_refills() {
    let mut h = Harness::with_config(
        FakeFirecracker::new(),
        FakeQemu::new(),
        fresh_net(),
        "vmm = \"firecracker\"\ndefault_image = \"fast\"\n",
    )
    .await;
    let image = support::register(&h.client, &h.dir.path().join("files"), "fast", true).await;
    let overlay_kind = "overlay-268435456";
    let work_kind = format!("work-{}-67108864-", image.id);
    // The daemon started before its default image existed: the first create makes its disks
    // and asks the pool for more.
    let (a, op) = h.create_from("a", "fast").await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let ready = pool_disks(&h, &[overlay_kind, &work_kind]).await;
    let ready: Vec<u64> = ready.iter().map(|p| inode(p)).collect();

    let (b, op) = h.create_from("b", "fast").await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let dir = h.paths.vm_dir(&b.id);
    assert_eq!(
        [
            inode(&dir.join("overlay.ext4")),
            inode(&dir.join("work.ext4"))
        ],
        [ready[0], ready[1]],
        "the pool's disks, moved"
    );
    let refilled = pool_disks(&h, &[overlay_kind, &work_kind]).await;
    assert!(refilled.iter().all(|p| !ready.contains(&inode(p))));

    // A failure after the overlay disk was taken (the work disk's size is not pooled yet, so
    // the create makes it, and that fails): the taken disk goes with the VM's directory.
    let vms_dir = h.paths.vms_dir().display().to_string();
    *h.fail_disk.lock().unwrap() = Some(Box::leak(
        format!("-L banger-work -E root_owner=0:0,lazy_journal_init=1 {vms_dir}").into_boxed_str(),
    ));
    let taken = refilled[0].clone();
    let err = h
        .client
        .create_vm(&CreateVmRequest {
            name: Some("c".into()),
            image: Some("fast".into()),
            work_disk_bytes: Some(128 << 20),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(h.fail_disk.lock().unwrap().is_none());
    let mut left: Vec<String> = std::fs::read_dir(h.paths.vms_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(left, expected, "only a's and b's directories");
    let after = pool_disks(
        &h,
        &[
            overlay_kind,
            &work_kind,
            &format!("work-{}-134217728-", image.id),
        ],
    )
    .await;
    assert!(!taken.exists(), "the overlay disk was taken");
    assert_ne!(after[0], taken, "and not put back");

    // A restart keeps the default kinds' disks and drops the rest and anything half-made.
    let pool = h.paths.state_dir.join("pool");
    std::fs::write(pool.join(".making-0123.ext4"), "").unwrap();
    let kept: Vec<u64> = after[..2].iter().map(|p| inode(p)).collect();
    h.restart().await;
    let again = pool_disks(&h, &[overlay_kind, &work_kind]).await;
    assert_eq!(again.iter().map(|p| inode(p)).collect::<Vec<_>>(), kept);
    let mut kinds: Vec<String> = std::fs::read_dir(&pool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kinds.sort();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(
        kinds
            .iter()
            .all(|k| k == overlay_kind || k.starts_with(&work_kind)),
        "{kinds:?}"
    );

    // The image's work disks go with it.
    for vm in ["a", "b"] {
        h.client.delete_vm(vm).await.unwrap();
    }
    h.client.delete_image("fast").await.unwrap();
    let kinds: Vec<String> = std::fs::read_dir(&pool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kinds, [overlay_kind], "blank overlays fit any image");
}

/// Fails each step of a start in turn: the VM ends stopped with the reason, and exactly what
/// the failed start acquired is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_each_step_of_a_start_is_rolled_back() {
    struct Case {
        name: &'static str,
        fc: FakeFirecracker,
        net: FakeRunner,
        /// What the error says.
        needle: &'static str,
        /// The last network call of the setup (the failing one, or the last before the VMM).
        last: &'static str,
        /// The network calls after it: exactly the cleanup.
        cleanup: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "tap",
            fc: FakeFirecracker::new(),
            net: fresh_net().fail_nth(Matcher::prefix("ip", ["tuntap", "add"]), 1, "no tun"),
            needle: "on the network",
            last: "ip tuntap add dev TAP mode tap user UID",
            cleanup: &[
                "ip addr del 172.30.0.1/24 dev banger0",
                "ip link del banger0",
            ],
        },
        Case {
            name: "attach",
            fc: FakeFirecracker::new(),
            net: fresh_net().fail_nth(
                Matcher::prefix("ip", ["link", "set", "dev"]),
                1,
                "no bridge",
            ),
            needle: "on the network",
            last: "ip link set dev TAP master banger0 up",
            cleanup: &[
                "ip link del TAP",
                "ip addr del 172.30.0.1/24 dev banger0",
                "ip link del banger0",
            ],
        },
        Case {
            name: "spawn",
            fc: FakeFirecracker::new().dying_at_start(),
            net: fresh_net(),
            needle: "cannot start VM",
            last: "ip link set dev TAP master banger0 up",
            cleanup: &["ip link del TAP"],
        },
        Case {
            name: "config",
            fc: FakeFirecracker::new().fail("PUT /boot-source"),
            net: fresh_net(),
            needle: "boot-source",
            last: "ip link set dev TAP master banger0 up",
            cleanup: &["ip link del TAP"],
        },
        Case {
            name: "instancestart",
            fc: FakeFirecracker::new().fail("PUT /actions"),
            net: fresh_net(),
            needle: "PUT /actions",
            last: "ip link set dev TAP master banger0 up",
            cleanup: &["ip link del TAP"],
        },
    ];
    for case in cases {
        let h = Harness::start(case.fc, case.net).await;
        let vm_name = format!("vm-{}", case.name);
        let created = h
            .client
            .create_vm(&CreateVmRequest {
                name: Some(vm_name.clone()),
                image: Some("base".into()),
                vcpus: Some(1),
                memory_mib: Some(256),
                ..Default::default()
            })
            .await
            .unwrap();
        let tap = Harness::tap_of(&created.vm);
        let op = h.watch(&created.operation.unwrap()).await;
        assert_eq!(op.state, OperationState::Failed, "{}: {op:?}", case.name);
        let error = op.error.clone().unwrap();
        assert!(
            error.message.contains(case.needle),
            "{}: {:?}",
            case.name,
            error.message
        );
        let vm = h.vm(&vm_name).await;
        assert_eq!(vm.state, VmState::Stopped, "{}", case.name);
        assert_eq!(vm.runtime, None, "{}", case.name);
        assert!(
            vm.last_error.as_deref().unwrap_or("").contains(case.needle),
            "{}: {:?}",
            case.name,
            vm.last_error
        );
        h.assert_no_vmm(case.name);
        // The calls after the failing one are exactly the cleanup.
        let calls = h.net_calls();
        let uid = rustix::process::getuid().as_raw().to_string();
        let last = case.last.replace("TAP", &tap).replace("UID", &uid);
        let failing = calls
            .iter()
            .rposition(|c| *c == last)
            .unwrap_or_else(|| panic!("{}: no {last:?} in {calls:#?}", case.name));
        let expected: Vec<String> = case
            .cleanup
            .iter()
            .map(|c| c.replace("TAP", &tap))
            .collect();
        assert_eq!(calls[failing + 1..], expected, "{}: {calls:#?}", case.name);
        // The VM can be started again once the host is fixed; here it is deleted cleanly.
        h.client.delete_vm(&vm_name).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_that_dies_on_its_own_is_noticed_and_cleaned_up() {
    let h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    let (vm, _) = h.create("dev").await;
    let pid = vm.runtime.as_ref().unwrap().pid;
    let tap = Harness::tap_of(&vm);
    h.fc.crash(pid);
    wait_for("the VM to be marked failed", async || {
        h.vm("dev").await.state == VmState::Failed
    })
    .await;
    let vm = h.vm("dev").await;
    assert_eq!(vm.runtime, None);
    assert!(
        vm.last_error
            .as_deref()
            .unwrap()
            .contains("killed or crashed"),
        "{:?}",
        vm.last_error
    );
    assert!(h.fc.sockets().is_empty(), "{:?}", h.fc.sockets());
    assert_eq!(h.net_calls().last().unwrap(), &format!("ip link del {tap}"));
    // A failed VM starts again.
    let op = h.act("dev", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert_eq!(h.vm("dev").await.last_error, None);
}

/// A daemon that went away without stopping its VMs: the next one adopts the VMs whose VMM
/// runs, records the others failed and takes them off the network, and removes what a crash
/// between files and records leaves: a VM whose create it died in (record and files), and
/// VMs' and images' directories that no record owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_adopts_running_vms_and_cleans_up_dead_ones() {
    let mut h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    let (alive, _) = h.create("alive").await;
    let (dead, _) = h.create("dead").await;
    let alive_pid = alive.runtime.as_ref().unwrap().pid;
    let dead_pid = dead.runtime.as_ref().unwrap().pid;
    h.client.pause_vm("alive", true).await.unwrap();
    // One whose create the daemon will have died in (its marker is put back below): the
    // record is there, its files are not all made.
    let unmade = h.create_stopped("unmade").await;
    // And one it died in before it made the VM's directory at all.
    let dirless = h.create_stopped("dirless").await;

    // The daemon goes away without stopping its VMs; one of them dies meanwhile.
    let daemon = h.daemon.take().unwrap();
    daemon.stop().await;
    assert!(h.fc.alive(alive_pid) && h.fc.alive(dead_pid));
    h.fc.crash(dead_pid);
    // What a daemon killed between files and record leaves: a VM's and an image's directory
    // that no record owns (an agent token, logs, a sparse work disk; a rootfs).
    let vms_dir = h.paths.state_dir.join("vms");
    let images_dir = h.paths.state_dir.join("images");
    let orphan_vm = vms_dir.join("0123456789abcdef");
    let orphan_image = images_dir.join("fedcba9876543210");
    for dir in [&orphan_vm, &orphan_image] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("agent-token"), "t").unwrap();
        std::fs::File::create(dir.join("work.ext4"))
            .unwrap()
            .set_len(8 << 30)
            .unwrap();
    }
    let owned = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let unmade_dir = vms_dir.join(&unmade.id);
    std::fs::write(unmade_dir.join(".making"), "").unwrap();
    std::fs::remove_dir_all(vms_dir.join(&dirless.id)).unwrap();
    let vms_before = owned(&vms_dir);
    let images_before = owned(&images_dir);
    h.restart().await;
    assert!(!orphan_vm.exists() && !orphan_image.exists());
    // What records own stays.
    let without = |names: Vec<String>, orphan: &str| {
        names
            .into_iter()
            .filter(|n| n != orphan)
            .collect::<Vec<_>>()
    };
    assert!(
        h.client.get_vm("unmade").await.is_err(),
        "the unmade VM's record goes"
    );
    assert!(!unmade_dir.exists(), "and its files");
    assert!(
        h.client.get_vm("dirless").await.is_err(),
        "a record without a directory goes"
    );
    assert_eq!(
        owned(&vms_dir),
        without(without(vms_before, "0123456789abcdef"), &unmade.id)
    );
    assert_eq!(
        owned(&images_dir),
        without(images_before, "fedcba9876543210")
    );
    assert_eq!(owned(&vms_dir).len(), 2);

    let alive = h.vm("alive").await;
    assert_eq!(
        alive.state,
        VmState::Paused,
        "adopted as the VMM reports it"
    );
    assert_eq!(alive.runtime.as_ref().unwrap().pid, alive_pid);
    assert!(h.fc.alive(alive_pid));
    let dead = h.vm("dead").await;
    assert_eq!(dead.state, VmState::Failed);
    assert_eq!(dead.runtime, None);
    assert!(
        h.net_calls()
            .contains(&format!("ip link del {}", Harness::tap_of(&dead))),
        "{:#?}",
        h.net_calls()
    );

    // The adopted VM is supervised and driven like any other.
    h.client.pause_vm("alive", false).await.unwrap();
    h.fc.crash(alive_pid);
    wait_for("the adopted VM's death to be noticed", async || {
        h.vm("alive").await.state == VmState::Failed
    })
    .await;
}

/// QEMU VMs go through the same lifecycle: started, noticed when they die, adopted by a new
/// daemon, stopped with nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qemu_vm_goes_through_the_same_lifecycle() {
    let mut h =
        Harness::with_vmm(FakeFirecracker::new(), FakeQemu::new(), fresh_net(), "qemu").await;
    let (vm, op) = h.create("q").await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert_eq!(vm.state, VmState::Running);
    let runtime = vm.runtime.clone().unwrap();
    assert_eq!(runtime.vmm, VmmKind::Qemu);
    assert!(h.qemu.alive(runtime.pid));
    assert!(h.fc.running().is_empty());
    // The checks stage says which accelerator QEMU uses and why.
    let checks = &op.stages[0];
    assert!(
        checks.message.as_deref().unwrap_or("").contains("QEMU"),
        "{checks:?}"
    );

    h.client.pause_vm("q", true).await.unwrap();
    h.client.pause_vm("q", false).await.unwrap();

    // A new daemon adopts it; the Firecracker scan does not take its socket for an orphan.
    h.restart().await;
    let adopted = h.vm("q").await;
    assert_eq!(adopted.state, VmState::Running);
    assert_eq!(adopted.runtime.as_ref().unwrap().pid, runtime.pid);
    assert!(h.qemu.alive(runtime.pid));
    assert!(!h.qemu.sockets().is_empty());

    h.qemu.crash(runtime.pid);
    wait_for("the QEMU crash to be noticed", async || {
        h.vm("q").await.state == VmState::Failed
    })
    .await;
    assert!(h.qemu.sockets().is_empty(), "{:?}", h.qemu.sockets());

    let op = h.act("q", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let pid = h.vm("q").await.runtime.unwrap().pid;
    let op = h.act("q", VmAction::Stop).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert!(!h.qemu.alive(pid));
    assert!(h.qemu.sockets().is_empty());
    assert_eq!(
        h.net_calls().last().unwrap(),
        &format!("ip link del {}", Harness::tap_of(&vm))
    );
}

/// The spare Firecracker: a create takes it over, its VM recorded under the spare's id (so the
/// process's `--id` and socket name the VM: the record holds the spare's socket, its console log
/// becomes the VM's), a new one follows, a failed create ends the spare it took with everything
/// else, a start of an existing VM starts its own Firecracker, and a stopping daemon ends the
/// one it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_take_over_the_spare_firecracker() {
    let mut h = Harness::with_config(
        FakeFirecracker::new(),
        FakeQemu::new(),
        fresh_net(),
        "vmm = \"firecracker\"\nspare_vmm = true\n",
    )
    .await;
    let spare_dir = h.paths.state_dir.join("spare");
    // A spare is known by its console log, which waits in spare_dir until a VM takes it.
    let spares = |h: &Harness| -> Vec<PathBuf> {
        let ids: Vec<String> =
            h.fc.files()
                .iter()
                .filter(|f| f.starts_with(&spare_dir))
                .filter_map(|f| {
                    let name = f.file_name()?.to_string_lossy().into_owned();
                    Some(name.strip_suffix(".console.log")?.to_owned())
                })
                .collect();
        h.fc.sockets()
            .into_iter()
            .filter(|s| ids.iter().any(|id| s.ends_with(format!("{id}.api"))))
            .collect()
    };
    let ready = |h: &Harness| {
        h.daemon
            .as_ref()
            .unwrap()
            .daemon
            .spare
            .wait_ready(Duration::from_secs(10))
    };
    let spawns = |h: &Harness| {
        h.fc.journal()
            .iter()
            .filter(|s| s.starts_with("spawn"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(ready(&h));
    let found = spares(&h);
    assert_eq!(found.len(), 1, "one spare: {:?}", h.fc.sockets());
    let spare_socket = found[0].clone();
    let spare_pid = h.fc.running()[0];

    let (vm, op) = h.create("dev").await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let rt = vm.runtime.clone().unwrap();
    assert_eq!(
        (rt.pid, PathBuf::from(&rt.api_socket)),
        (spare_pid, spare_socket.clone())
    );
    assert_eq!(
        spare_socket,
        h.paths.vm_api_socket(&vm.id),
        "the VM has the spare's id"
    );
    assert!(
        spawns(&h)[0].contains(&format!("--id {}", vm.id)),
        "the process names its VM: {:?}",
        spawns(&h)
    );
    let console = h.paths.vm_dir(&vm.id).join("console.log");
    assert!(h.fc.files().contains(&console), "{:?}", h.fc.files());
    assert!(
        !h.fc.files().iter().any(|f| f.starts_with(&spare_dir)),
        "only the next spare's log: {:?}",
        h.fc.files()
    );
    assert_eq!(spawns(&h).len(), 1, "the start spawned nothing");
    assert!(ready(&h), "a new spare");
    assert_eq!(h.fc.running().len(), 2);

    // Stopping the VM releases the spare's socket; starting it again starts a Firecracker of
    // its own, named for it, and leaves the spare waiting.
    let op = h.act("dev", VmAction::Stop).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert!(!h.fc.alive(spare_pid));
    assert!(!h.fc.sockets().contains(&spare_socket));
    let before = spawns(&h).len();
    let op = h.act("dev", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let after = spawns(&h);
    assert_eq!(after.len(), before + 1, "{after:?}");
    assert!(after.last().unwrap().contains(&format!("--id {}", vm.id)));
    assert_eq!(spares(&h).len(), 1, "the spare still waits");

    // A create whose start fails ends the spare it took, with its socket; the tap goes too.
    let dev_pid = h.vm("dev").await.runtime.unwrap().pid;
    let taken = *h.fc.running().iter().find(|p| **p != dev_pid).unwrap();
    let _ = h.fc.clone().fail("PUT /machine-config");
    let (vm2, op) = h.create("bad").await;
    assert_eq!(op.state, OperationState::Failed, "{op:?}");
    assert!(!h.fc.alive(taken));
    assert_eq!(vm2.runtime, None);
    assert_eq!(
        h.net_calls().last().unwrap(),
        &format!("ip link del {}", Harness::tap_of(&vm2))
    );
    assert!(ready(&h), "and another spare");
    assert_eq!(spares(&h).len(), 1, "the new spare: {:?}", h.fc.sockets());

    h.daemon.take().unwrap().stop().await;
    assert!(
        h.fc.running().len() == 1,
        "only the VM runs on: {:?}",
        h.fc.running()
    );
    assert!(spares(&h).is_empty(), "{:?}", h.fc.sockets());
    assert!(
        !h.fc.files().iter().any(|f| f.starts_with(&spare_dir)),
        "{:?}",
        h.fc.files()
    );
}

// ---- published ports ----------------------------------------------------------------------

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether bangerd (or anything) listens on loopback port `port`.
fn listening(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// Waits until nothing listens on any of `ports`: a closed forward's listener goes with its
/// aborted task, which a saturated machine runs a moment later (bangerd waits up to 2 s for
/// it before it answers; the test allows more, and fails if a port stays open).
async fn closed(ports: &[u16]) {
    wait_for(&format!("ports {ports:?} to close"), async || {
        ports.iter().all(|p| !listening(*p))
    })
    .await;
}

fn publish(host_port: u16, guest_port: u16) -> banger_api::PublishPortRequest {
    banger_api::PublishPortRequest {
        address: None,
        host_port: i64::from(host_port),
        guest_port: i64::from(guest_port),
    }
}

/// Published ports listen exactly while their VM runs: opened by the start, closed by the
/// stop, all of them closed again when one of them cannot be bound (the start fails, rolled
/// back), restored by a restarted daemon's adoption, opened and closed at once on a running
/// VM, and refused, with nothing stored, when another VM or another program holds the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_listen_while_the_vm_runs_and_a_taken_port_fails_the_start_cleanly() {
    let mut h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    let (a, b) = (free_port(), free_port());
    let created = h
        .client
        .create_vm(&CreateVmRequest {
            name: Some("web".into()),
            image: Some("base".into()),
            vcpus: Some(1),
            memory_mib: Some(256),
            publish: vec![publish(a, 80), publish(b, 4096)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(created.vm.published_ports.len(), 2);
    let op = h.watch(&created.operation.unwrap()).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert!(listening(a) && listening(b));
    std::net::TcpStream::connect(("127.0.0.1", a)).expect("the forward accepts");

    // Stopped: closed, still part of the VM.
    let op = h.act("web", VmAction::Stop).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    closed(&[a, b]).await;
    assert_eq!(h.vm("web").await.published_ports.len(), 2);

    // A program takes the second port: the start fails, and the first is closed again.
    let holder = std::net::TcpListener::bind(("127.0.0.1", b)).unwrap();
    let op = h.act("web", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Failed, "{op:?}");
    let error = op.error.unwrap();
    assert_eq!(error.code, ErrorCode::InUse);
    assert_eq!(
        error.message,
        format!(
            "cannot publish VM web's ports: host port {b} (127.0.0.1:{b}) is already in use on this host"
        )
    );
    let vm = h.vm("web").await;
    assert_eq!(vm.state, VmState::Stopped);
    assert!(vm.runtime.is_none());
    assert!(vm.last_error.unwrap().contains(&format!("host port {b}")));
    closed(&[a]).await;
    assert!(h.fc.running().is_empty(), "{:?}", h.fc.running());
    drop(holder);
    // A process another test is starting may hold the program's port a moment longer.
    closed(&[b]).await;

    let op = h.act("web", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert!(listening(a) && listening(b));

    // Added to the running VM: listening at once. A port a program holds is refused and not
    // stored; so is one another VM publishes, naming it.
    let c = free_port();
    let vm = h.client.publish_port("web", &publish(c, 22)).await.unwrap();
    assert_eq!(vm.published_ports.len(), 3);
    assert!(listening(c));
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let err = h
        .client
        .publish_port("web", &publish(taken, 23))
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::InUse), "{err:?}");
    assert_eq!(h.vm("web").await.published_ports.len(), 3);
    let err = h
        .client
        .create_vm(&CreateVmRequest {
            name: Some("api".into()),
            image: Some("base".into()),
            publish: vec![publish(free_port(), 80), publish(a, 80)],
            start: Some(false),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.code, ErrorCode::InUse);
    assert_eq!(
        api.message,
        format!("host port {a} is already published by VM \"web\"")
    );
    assert!(h.client.get_vm("api").await.is_err(), "nothing stored");

    // The daemon goes away; its listeners with it. The next one adopts the VM and its ports.
    let daemon = h.daemon.take().unwrap();
    daemon.stop().await;
    closed(&[a, b, c]).await;
    h.restart().await;
    assert_eq!(h.vm("web").await.state, VmState::Running);
    assert!(listening(a) && listening(b) && listening(c));

    // Removed: closed at once, the others stay. Deleted: all closed.
    let vm = h.client.unpublish_port("web", c).await.unwrap();
    assert_eq!(vm.published_ports.len(), 2);
    closed(&[c]).await;
    assert!(listening(a));
    let err = h.client.unpublish_port("web", c).await.unwrap_err();
    assert!(err.is_code(ErrorCode::NotFound), "{err:?}");
    h.client.delete_vm("web").await.unwrap();
    closed(&[a, b]).await;
}

// ---- admission control ---------------------------------------------------------------------

/// A host of 2 CPUs and 4 GiB: by default VMs may reserve 3072 MiB together (4 GiB less the
/// 1G reserve); each test sets the vCPU ratio.
fn small_host() -> HostFacts {
    HostFacts {
        cpus: 2,
        memory_bytes: 4 << 30,
    }
}

async fn admitting(admission: &str) -> Harness {
    Harness::on_host(
        FakeFirecracker::new(),
        FakeQemu::new(),
        fresh_net(),
        &format!("vmm = \"firecracker\"\nadmission = {{ {admission} }}\n"),
        Some(small_host()),
    )
    .await
}

fn sized(name: &str, vcpus: i64, memory_mib: i64, start: bool) -> CreateVmRequest {
    CreateVmRequest {
        name: Some(name.into()),
        image: Some("base".into()),
        vcpus: Some(vcpus),
        memory_mib: Some(memory_mib),
        start: Some(start),
        ..Default::default()
    }
}

/// Creates (and, when `start`, starts to the end) a VM of the given size.
async fn create_sized(h: &Harness, name: &str, vcpus: i64, memory_mib: i64, start: bool) -> Vm {
    let created = h
        .client
        .create_vm(&sized(name, vcpus, memory_mib, start))
        .await
        .unwrap();
    if let Some(op) = created.operation {
        let op = h.watch(&op).await;
        assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    }
    h.vm(name).await
}

/// Entries of the VMs directory.
/// Fails the test unless `err` refuses for want of room with a message starting `start`.
#[track_caller]
fn assert_over_capacity(err: &banger_api::ClientError, start: &str) {
    assert!(err.is_code(ErrorCode::OverCapacity), "{err}");
    assert!(err.api().unwrap().message.starts_with(start), "{err}");
}

fn vm_dirs(h: &Harness) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(h.paths.vms_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_beyond_the_limit_is_refused_with_the_figures_and_acquires_nothing() {
    let h = admitting("vcpu_ratio = 1.0").await;
    let cap = h.client.capacity().await.unwrap();
    assert_eq!(cap.cpu.vcpu_limit, Some(2));
    assert_eq!(cap.memory.limit_bytes, Some(3072 << 20));

    let a = create_sized(&h, "a", 1, 2048, true).await;
    assert_eq!(a.state, VmState::Running);
    let b = create_sized(&h, "b", 1, 1536, false).await;
    let journal = h.fc.journal();
    let net = h.net_calls();
    let ops = h.client.list_operations().await.unwrap().len();

    let err = h.client.vm_action("b", VmAction::Start).await.unwrap_err();
    let api = err.api().expect("an API error");
    assert_eq!(api.code, ErrorCode::OverCapacity);
    assert_eq!(
        api.message,
        "not enough room to start VM \"b\": it needs 1536 MiB of guest memory, 1 VM up holds \
         2048 MiB, and the limit is 3072 MiB (memory_ratio 1.0 × (4096 MiB host memory − 1024 \
         MiB memory_reserve))"
    );
    let hint = api.hint.as_deref().unwrap();
    assert!(hint.starts_with("stop a VM to make room; "), "{hint}");
    assert!(
        hint.contains("`banger vm set b --memory MIB --vcpus N`"),
        "{hint}"
    );
    assert!(
        hint.contains(&h.paths.config_file.display().to_string()),
        "{hint}"
    );
    // Nothing reserved, started or made for it.
    let b_now = h.vm("b").await;
    assert_eq!(b_now.state, VmState::Stopped);
    assert_eq!(b_now.runtime, None);
    assert_eq!(h.fc.journal(), journal, "no VMM was started");
    assert_eq!(h.net_calls(), net, "no tap was made");
    assert_eq!(h.client.list_operations().await.unwrap().len(), ops);
    let cap = h.client.capacity().await.unwrap();
    assert_eq!(cap.memory.reserved_bytes, 2048 << 20);
    assert_eq!(cap.cpu.reserved_vcpus, 1);

    // A VM that takes all the room restarts: what it held is its own again.
    let op = h.act("a", VmAction::Restart).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    // vCPUs are refused the same way: 2 + 1 held > 2.
    let c = create_sized(&h, "c", 2, 256, false).await;
    let err = h.client.vm_action("c", VmAction::Start).await.unwrap_err();
    assert!(
        err.api().unwrap().message.contains(
            "it needs 2 vCPUs, 1 VM up holds 1, and the limit is 2 (vcpu_ratio 1.0 × 2 host CPUs)"
        ),
        "{err}"
    );
    // Once a stops, b fits.
    let op = h.act("a", VmAction::Stop).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let op = h.act("b", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert_eq!(h.vm("b").await.state, VmState::Running);
    assert_eq!(b.id, h.vm("b").await.id);
    assert_eq!(h.vm("c").await.id, c.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_cannot_fit_is_refused_before_anything_is_made() {
    let h = admitting("vcpu_ratio = 4.0").await;
    // More than the limit even on an idle host: refused, started or not.
    for start in [true, false] {
        let err = h
            .client
            .create_vm(&sized("huge", 1, 3073, start))
            .await
            .unwrap_err();
        let api = err.api().unwrap();
        assert_eq!(api.code, ErrorCode::OverCapacity, "{api:?}");
        assert_eq!(
            api.message,
            "VM \"huge\" could never start on this host: its 3073 MiB of guest memory is more \
             than the 3072 MiB all running VMs may reserve together (memory_ratio 1.0 × (4096 \
             MiB host memory − 1024 MiB memory_reserve))"
        );
        assert!(
            api.hint
                .as_deref()
                .unwrap()
                .starts_with("pass a smaller --memory or --vcpus"),
            "{api:?}"
        );
    }
    assert!(vm_dirs(&h).is_empty(), "{:?}", vm_dirs(&h));

    let a = create_sized(&h, "a", 2, 2048, true).await;
    let journal = h.fc.journal();
    let net = h.net_calls();
    let ops = h.client.list_operations().await.unwrap().len();
    // Fits alone, not now: refused the same way before a record, a disk or a tap.
    let err = h
        .client
        .create_vm(&sized("b", 1, 1536, true))
        .await
        .unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.code, ErrorCode::OverCapacity);
    assert!(
        api.message.starts_with(
            "not enough room to create and start VM \"b\": it needs 1536 MiB of guest memory, \
             1 VM up holds 2048 MiB, and the limit is 3072 MiB"
        ),
        "{}",
        api.message
    );
    assert!(
        api.hint
            .as_deref()
            .unwrap()
            .contains("pass a smaller --memory or --vcpus"),
        "{api:?}"
    );
    let names: Vec<String> = h
        .client
        .list_vms()
        .await
        .unwrap()
        .into_iter()
        .map(|vm| vm.name)
        .collect();
    assert_eq!(names, ["a"]);
    assert_eq!(vm_dirs(&h), std::slice::from_ref(&a.id));
    assert_eq!(h.fc.journal(), journal, "no VMM was started");
    assert_eq!(h.net_calls(), net, "no tap was made");
    assert_eq!(h.client.list_operations().await.unwrap().len(), ops);
    // Not even an address was used up: the next VM gets the one after a's.
    let next = create_sized(&h, "b", 1, 1024, true).await;
    assert_eq!(next.state, VmState::Running);
    let octet = |vm: &Vm| {
        vm.network
            .ip
            .rsplit('.')
            .next()
            .unwrap()
            .parse::<u8>()
            .unwrap()
    };
    assert_eq!(octet(&next), octet(&a) + 1);

    // A clone that would not fit is refused before its source is paused for a snapshot.
    let err = h
        .client
        .clone_vm(
            "a",
            &banger_api::CloneVmRequest {
                name: "a2".into(),
                nat: None,
            },
        )
        .await
        .unwrap_err();
    assert_over_capacity(&err, "not enough room to create and start VM \"a2\"");
    assert_eq!(h.vm("a").await.state, VmState::Running);
    assert!(h.client.list_snapshots().await.unwrap().is_empty());
    assert!(h.client.get_vm("a2").await.is_err());

    // Sizes a stopped VM could never start with are refused by `vm set` too.
    let op = h.act("b", VmAction::Stop).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let err = h
        .client
        .update_vm(
            "b",
            &banger_api::UpdateVmRequest {
                memory_mib: Some(4000),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::OverCapacity), "{err}");
    assert_eq!(h.vm("b").await.memory_mib, 1024);
}

/// Starts racing for room for one: exactly one is admitted, whether they start stopped VMs or
/// create new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_starts_only_those_that_fit_pass() {
    let h = admitting("vcpu_ratio = 4.0").await;
    let names = ["r1", "r2", "r3", "r4"];
    for name in names {
        create_sized(&h, name, 1, 2048, false).await;
    }
    let starts = names.map(|name| {
        let client = h.client.clone();
        tokio::spawn(async move { client.vm_action(name, VmAction::Start).await })
    });
    let mut admitted = Vec::new();
    for (name, start) in names.into_iter().zip(starts) {
        match start.await.unwrap() {
            Ok(op) => admitted.push((name, op)),
            Err(e) => assert!(e.is_code(ErrorCode::OverCapacity), "{name}: {e}"),
        }
    }
    assert_eq!(admitted.len(), 1, "{admitted:?}");
    let (winner, op) = admitted.pop().unwrap();
    let op = h.watch(&op).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    for name in names {
        let vm = h.vm(name).await;
        let expected = if name == winner {
            VmState::Running
        } else {
            VmState::Stopped
        };
        assert_eq!(vm.state, expected, "{name}");
    }
    assert_eq!(h.fc.running().len(), 1);

    // Creates racing for the 1024 MiB left: one of three.
    let creates = ["n1", "n2", "n3"].map(|name| {
        let client = h.client.clone();
        tokio::spawn(async move { client.create_vm(&sized(name, 1, 1024, true)).await })
    });
    let mut created = Vec::new();
    for create in creates {
        match create.await.unwrap() {
            Ok(vm) => created.push(vm),
            Err(e) => assert!(e.is_code(ErrorCode::OverCapacity), "{e}"),
        }
    }
    assert_eq!(created.len(), 1);
    let op = created[0].operation.clone().unwrap();
    let op = h.watch(&op).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert_eq!(h.client.list_vms().await.unwrap().len(), names.len() + 1);
    assert_eq!(vm_dirs(&h).len(), names.len() + 1);
    let cap = h.client.capacity().await.unwrap();
    assert_eq!(cap.memory.reserved_bytes, 3072 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_admission_off_every_start_passes() {
    let h = admitting("enabled = false").await;
    let cap = h.client.capacity().await.unwrap();
    assert_eq!((cap.cpu.vcpu_limit, cap.memory.limit_bytes), (None, None));
    // 6 vCPUs and 6 GiB on a host of 2 CPUs and 4 GiB.
    for name in ["a", "b", "c"] {
        let vm = create_sized(&h, name, 2, 2048, true).await;
        assert_eq!(vm.state, VmState::Running);
    }
    let cap = h.client.capacity().await.unwrap();
    assert_eq!(cap.cpu.reserved_vcpus, 6);
    assert_eq!(cap.memory.reserved_bytes, 6 << 30);
}

/// Limits lowered under running VMs (a daemon restarted with a new config): they keep running,
/// a restart that could never start again is refused before it stops anything, and one whose
/// start no longer fits next to the others fails with the refusal, leaving the VM stopped
/// with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_admitted_again_and_refused_when_the_room_is_gone() {
    let mut h = admitting("vcpu_ratio = 4.0").await;
    let a = create_sized(&h, "a", 1, 2560, true).await;
    let b = create_sized(&h, "b", 1, 512, true).await;
    let config = std::fs::read_to_string(&h.paths.config_file).unwrap();
    // 4 GiB less 2G: room for 2048 MiB where 3072 MiB run.
    let lowered = config.replace(
        "vcpu_ratio = 4.0",
        "vcpu_ratio = 4.0, memory_reserve = \"2G\"",
    );
    assert_ne!(lowered, config);
    std::fs::write(&h.paths.config_file, lowered).unwrap();
    h.restart().await;
    for name in ["a", "b"] {
        assert_eq!(h.vm(name).await.state, VmState::Running, "{name}");
    }
    assert_eq!(
        h.client.capacity().await.unwrap().memory.limit_bytes,
        Some(2048 << 20)
    );

    // a could never start again: its restart is refused before it is stopped.
    let err = h
        .client
        .vm_action("a", VmAction::Restart)
        .await
        .unwrap_err();
    assert_over_capacity(
        &err,
        "VM \"a\" could never start on this host: its 2560 MiB",
    );
    let a_now = h.vm("a").await;
    assert_eq!(a_now.state, VmState::Running);
    assert_eq!(a_now.runtime, a.runtime);

    // b fits alone, but not next to a: its restart stops it, then is refused.
    let op = h.act("b", VmAction::Restart).await;
    assert_eq!(op.state, OperationState::Failed, "{op:?}");
    let error = op.error.unwrap();
    assert_eq!(error.code, ErrorCode::OverCapacity);
    assert!(
        error.message.starts_with(
            "not enough room to start VM \"b\": it needs 512 MiB of guest memory, 1 VM up \
             holds 2560 MiB, and the limit is 2048 MiB"
        ),
        "{}",
        error.message
    );
    let b_now = h.vm("b").await;
    assert_eq!(b_now.state, VmState::Stopped);
    assert_eq!(b_now.runtime, None);
    assert_eq!(b_now.last_error.as_deref(), Some(error.message.as_str()));
    assert!(!h.fc.alive(b.runtime.unwrap().pid));

    // With a stopped, b has room again.
    let op = h.act("a", VmAction::Stop).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let op = h.act("b", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
}

/// A build whose script fails, or that is cancelled while a script runs, leaves nothing: no
/// build VM (the fake Firecracker's process gone), no staging, no image; a failure shows the
/// script's own output. The build VM's agent is served in-process (the scripts run on the
/// host here: harmless commands only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_cancelled_build_leaves_nothing() {
    use banger_api::recipe::RecipeRun;
    use banger_api::{BuildImageRequest, OperationState, Recipe, StageState};
    let h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    for (command, cancel) in [
        ("echo about-to-fail; echo on-stderr >&2; exit 7", false),
        ("sleep 100", true),
    ] {
        let recipe = Recipe {
            name: Some("built".into()),
            base: Some("base".into()),
            run: vec![RecipeRun {
                script: None,
                command: Some(command.into()),
            }],
            memory_mib: Some(256),
            ..Recipe::default()
        };
        let op = h
            .client
            .build_image(&BuildImageRequest {
                recipe,
                no_cache: None,
                download_only: None,
                replace: None,
            })
            .await
            .unwrap();
        // The build VM starts as any VM; its agent is this test's.
        let mut vm = None;
        wait_for("the build VM to run", async || {
            let now = h.client.get_operation(&op.id).await.unwrap();
            assert!(!now.state.is_finished(), "{now:?}");
            vm = h
                .client
                .list_vms()
                .await
                .unwrap()
                .into_iter()
                .find(|v| v.name.starts_with("build-built-") && v.state == VmState::Running);
            vm.is_some()
        })
        .await;
        let vm = vm.unwrap();
        serve_agent(&h, &vm);
        if cancel {
            wait_for("the script to run", async || {
                let now = h.client.get_operation(&op.id).await.unwrap();
                now.stages
                    .iter()
                    .any(|s| s.name == "run scripts" && s.state == StageState::Running)
            })
            .await;
            h.client.cancel_operation(&op.id).await.unwrap();
        }
        let done = h.watch(&op).await;
        let error = done.error.clone().expect("the build failed");
        if cancel {
            assert_eq!(done.state, OperationState::Cancelled, "{error:?}");
        } else {
            assert_eq!(done.state, OperationState::Failed);
            assert!(error.message.contains("run scripts"), "{}", error.message);
            assert!(error.message.contains("exited with 7"), "{}", error.message);
            assert!(
                error.message.contains("about-to-fail") && error.message.contains("on-stderr"),
                "{}",
                error.message
            );
        }
        // Nothing is left of it.
        assert!(h.client.list_vms().await.unwrap().is_empty());
        assert!(!h.paths.vm_dir(&vm.id).exists());
        assert!(h.fc.running().is_empty(), "{:?}", h.fc.running());
        let staging = h.paths.state_dir.join("staging");
        let left: Vec<_> = std::fs::read_dir(&staging)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
        let images: Vec<String> = h
            .client
            .list_images()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(images, ["base"]);
    }
}

/// Plays the guest agent's identity endpoint, and nothing else, on the vsock socket of every
/// VM that runs (the fake Firecracker binds none): answers `CONNECT 1024`, then one HTTP
/// request. A restored or taken VM's guest is told its identity there.
#[derive(Clone, Default)]
struct IdentityAgent {
    /// The bearer token and the hostname of each identity request, in order.
    seen: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// Answer identity requests with an error.
    refuse: Arc<std::sync::atomic::AtomicBool>,
}

impl IdentityAgent {
    /// Serves each VM's vsock socket once the store has it (hidden VMs included).
    fn serve_all(&self, paths: &Paths) {
        let agent = self.clone();
        let store = banger_store::Store::open(&paths.database()).unwrap();
        tokio::spawn(async move {
            let mut served = std::collections::BTreeSet::new();
            loop {
                for vm in store.list_vms().unwrap_or_default() {
                    if let Some(socket) = vm.runtime.and_then(|r| r.vsock_socket)
                        && served.insert(socket.clone())
                        && let Ok(listener) = tokio::net::UnixListener::bind(&socket)
                    {
                        let agent = agent.clone();
                        tokio::spawn(async move {
                            while let Ok((conn, _)) = listener.accept().await {
                                let agent = agent.clone();
                                tokio::spawn(async move {
                                    let _ = agent.answer(conn).await;
                                });
                            }
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }

    async fn answer(&self, conn: tokio::net::UnixStream) -> std::io::Result<()> {
        use base64::Engine as _;
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::io::BufReader::new(conn);
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        conn.get_mut().write_all(b"OK 1073741824\n").await?;
        line.clear();
        conn.read_line(&mut line).await?;
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut token, mut length) = (String::new(), 0usize);
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let Some((key, value)) = line.trim_end().split_once(':') else {
                break;
            };
            match key.to_ascii_lowercase().as_str() {
                "authorization" => value
                    .trim()
                    .trim_start_matches("Bearer ")
                    .clone_into(&mut token),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await?;
        let (status, answer) = if path != "/v1/identity" {
            (
                404,
                r#"{"code":"not_found","message":"no such route"}"#.to_owned(),
            )
        } else if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            (
                500,
                r#"{"code":"internal","message":"refused by the test"}"#.to_owned(),
            )
        } else {
            let request: banger_agent_protocol::protocol::IdentityRequest =
                serde_json::from_slice(&body).unwrap();
            let hostname = request
                .files
                .iter()
                .find(|f| f.path == "etc/hostname")
                .and_then(|f| {
                    base64::engine::general_purpose::STANDARD
                        .decode(&f.data)
                        .ok()
                })
                .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                .unwrap_or_default();
            self.seen.lock().unwrap().push((token, hostname.clone()));
            let applied = banger_agent_protocol::protocol::IdentityApplied {
                files: Vec::new(),
                hostname: Some(hostname),
                network: None,
                host_key_changed: true,
                sshd_reloaded: None,
                token_changed: true,
                vmgenid: false,
            };
            (200, serde_json::to_string(&applied).unwrap())
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{answer}",
            answer.len()
        );
        conn.get_mut().write_all(response.as_bytes()).await?;
        conn.get_mut().shutdown().await
    }
}

/// Entries of the snapshots directory.
fn snapshot_dirs(h: &Harness) -> Vec<String> {
    std::fs::read_dir(h.paths.snapshots_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every VM in the store, the warm pool's hidden ones included.
fn stored_vms(h: &Harness) -> Vec<Vm> {
    banger_store::Store::open(&h.paths.database())
        .unwrap()
        .list_vms()
        .unwrap()
}

/// The taps made and not removed, from the network calls.
fn taps_left(h: &Harness) -> Vec<String> {
    let mut taps = Vec::new();
    for call in h.net_calls() {
        let words: Vec<&str> = call.split_whitespace().collect();
        match words.as_slice() {
            ["ip", "tuntap", "add", "dev", tap, ..] => taps.push((*tap).to_owned()),
            ["ip", "link", "del", tap] => taps.retain(|t| t != tap),
            _ => {}
        }
    }
    taps
}

/// A harness with an image whose init reads config drives (a restore needs one), agents
/// answering identity requests, and a warm pool of `size` for it.
async fn pooled(fc: FakeFirecracker, size: i64) -> (Harness, IdentityAgent) {
    let h = Harness::start(fc, fresh_net()).await;
    support::register(&h.client, &h.dir.path().join("files"), "pooled", true).await;
    let agent = IdentityAgent::default();
    agent.serve_all(&h.paths);
    let entry = h.client.set_pool("pooled", size).await.unwrap();
    assert_eq!((entry.image.as_str(), entry.size), ("pooled", size as u32));
    (h, agent)
}

/// Creates VM `name` of image `pooled` at the default size: it takes a ready VM of the pool
/// when there is one.
async fn take_from_pool(h: &Harness, name: &str) -> banger_api::CreatedVm {
    h.client
        .create_vm(&CreateVmRequest {
            name: Some(name.into()),
            image: Some("pooled".into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn pool_entry(h: &Harness) -> banger_api::PoolEntry {
    let entries = h.client.list_pool().await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_pool_hands_over_a_ready_vm_with_a_new_identity_and_refills() {
    let (h, agent) = pooled(FakeFirecracker::new(), 1).await;
    wait_for("a ready VM", async || pool_entry(&h).await.ready == 1).await;
    let entry = pool_entry(&h).await;
    assert!(entry.template_bytes.is_some(), "{entry:?}");
    assert_eq!(entry.last_error, None);
    // The template holds every drive its state file names but the image's root: the VM it
    // was taken of is gone, and a restore opens them all.
    let templates = snapshot_dirs(&h);
    assert_eq!(templates.len(), 1);
    for file in [
        "overlay.ext4",
        "work.ext4",
        "config.cpio",
        "vmstate",
        "memory",
    ] {
        let path = h.paths.snapshot_dir(&templates[0]).join(file);
        assert!(path.exists(), "{}", path.display());
    }
    // The pool's own VMs and template are nobody's to see.
    assert!(h.client.list_vms().await.unwrap().is_empty());
    assert!(h.client.list_snapshots().await.unwrap().is_empty());
    let hidden = stored_vms(&h);
    assert_eq!(hidden.len(), 1, "{hidden:?}");
    assert_eq!(hidden[0].state, VmState::Paused);
    assert!(h.client.get_vm(&hidden[0].name).await.is_err());
    let ready_token =
        std::fs::read_to_string(h.paths.vm_dir(&hidden[0].id).join("agent-token")).unwrap();

    let created = take_from_pool(&h, "fast").await;
    assert_eq!(
        created.vm.id, hidden[0].id,
        "the ready VM is the one handed over"
    );
    assert_eq!(created.vm.pool, Some(banger_api::PoolRole::Taken));
    let op = h.watch(&created.operation.unwrap()).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let stages: Vec<&str> = op.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["pool", "identity", "started"]);
    let vm = h.vm("fast").await;
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.pool, Some(banger_api::PoolRole::Taken));
    // The guest was told its name by the token it had, and has a new one now.
    let (token, hostname) = agent.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(hostname, "fast");
    assert_eq!(token, ready_token.trim());
    let token_now = std::fs::read_to_string(h.paths.vm_dir(&vm.id).join("agent-token")).unwrap();
    assert_ne!(token_now.trim(), ready_token.trim());
    assert!(!h.paths.vm_dir(&vm.id).join("restore.agent-token").exists());

    // The pool makes a new one, another VM with its own address.
    wait_for("the pool to refill", async || {
        pool_entry(&h).await.ready == 1
    })
    .await;
    let refilled: Vec<Vm> = stored_vms(&h)
        .into_iter()
        .filter(|v| v.id != vm.id)
        .collect();
    assert_eq!(refilled.len(), 1);
    assert_ne!(refilled[0].network.ip, vm.network.ip);

    // A restarted daemon adopts the paused ready VM: still ready, not remade.
    let mut h = h;
    h.restart().await;
    let entry = pool_entry(&h).await;
    assert_eq!(entry.ready, 1, "{entry:?}: {:?}", stored_vms(&h));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<Vm> = stored_vms(&h)
        .into_iter()
        .filter(|v| v.id != vm.id)
        .collect();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].id, refilled[0].id);
    assert_eq!(after[0].state, VmState::Paused);

    // A create that asks for another spec boots a VM as usual.
    let (cold, _) = h.create_from("cold", "pooled").await;
    assert_eq!(cold.pool, None);

    // Off: the ready VM and the template go; the user's VMs stay.
    h.client.set_pool("pooled", 0).await.unwrap();
    wait_for("the pool to empty", async || {
        stored_vms(&h).len() == 2 && snapshot_dirs(&h).is_empty()
    })
    .await;
    assert!(h.client.list_pool().await.unwrap().is_empty());
    for name in ["fast", "cold"] {
        h.client.delete_vm(name).await.unwrap();
    }
    assert!(h.fc.running().is_empty(), "{:?}", h.fc.running());
    assert!(vm_dirs(&h).is_empty(), "{:?}", vm_dirs(&h));
    assert!(taps_left(&h).is_empty(), "{:?}", taps_left(&h));
}

/// A paused ready VM of the warm pool holds its memory, but a user's VM comes first: a create
/// and a start that would not fit beside it make it give way (the pool stays empty while there
/// is no room), and one that would not fit anyway is still refused with the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_pool_vms_give_way_to_a_users_vm_that_would_not_fit() {
    let h = Harness::on_host(
        FakeFirecracker::new(),
        FakeQemu::new(),
        fresh_net(),
        "vmm = \"firecracker\"\n",
        Some(small_host()),
    )
    .await;
    support::register(&h.client, &h.dir.path().join("files"), "pooled", true).await;
    let agent = IdentityAgent::default();
    agent.serve_all(&h.paths);
    h.client.set_pool("pooled", 1).await.unwrap();
    wait_for("a ready VM", async || pool_entry(&h).await.ready == 1).await;
    let pooled = stored_vms(&h);
    assert_eq!(pooled.len(), 1);
    let limit_mib = (h
        .client
        .capacity()
        .await
        .unwrap()
        .memory
        .limit_bytes
        .unwrap()
        >> 20) as i64;
    let room = limit_mib - i64::from(pooled[0].memory_mib);

    // More than the room left beside the pool's VM, less than the limit: the pool gives way.
    let created = create_sized(&h, "big", 1, room + 256, true).await;
    assert_eq!(created.state, VmState::Running);
    assert!(
        stored_vms(&h).iter().all(|vm| vm.id != pooled[0].id),
        "the ready VM went"
    );
    // More than the limit: refused as before, with nothing of the pool left to give.
    let err = h
        .client
        .create_vm(&sized("huge", 1, limit_mib, true))
        .await
        .unwrap_err();
    assert_eq!(err.api().unwrap().code, ErrorCode::OverCapacity, "{err}");
    // The pool cannot refill beside "big" (its fill is refused, and retried later); stopped,
    // "big" makes room again.
    h.act("big", VmAction::Stop).await;
    wait_for("the pool to refill", async || {
        pool_entry(&h).await.ready == 1
    })
    .await;
    // A start that would not fit beside the ready VM makes it give way too.
    let op = h.act("big", VmAction::Start).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert_eq!(pool_entry(&h).await.ready, 0);
    h.act("big", VmAction::Stop).await;
    h.client.set_pool("pooled", 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_each_step_of_filling_the_pool_leaves_nothing() {
    struct Case {
        name: &'static str,
        fc: FakeFirecracker,
        refuse_identity: bool,
        /// Whether the template was made before the failure (and is kept for the next try).
        template: bool,
        needle: &'static str,
    }
    let cases = [
        Case {
            name: "template snapshot",
            fc: FakeFirecracker::new().fail("PUT /snapshot/create"),
            refuse_identity: false,
            template: false,
            needle: "snapshot",
        },
        Case {
            name: "restore",
            fc: FakeFirecracker::new().fail("PUT /snapshot/load"),
            refuse_identity: false,
            template: true,
            needle: "snapshot/load",
        },
        Case {
            name: "identity",
            fc: FakeFirecracker::new(),
            refuse_identity: true,
            template: true,
            needle: "refused its new identity",
        },
    ];
    for case in cases {
        let h = Harness::start(case.fc, fresh_net()).await;
        support::register(&h.client, &h.dir.path().join("files"), "pooled", true).await;
        let agent = IdentityAgent::default();
        agent
            .refuse
            .store(case.refuse_identity, std::sync::atomic::Ordering::SeqCst);
        agent.serve_all(&h.paths);
        h.client.set_pool("pooled", 1).await.unwrap();
        wait_for("the fill to fail", async || {
            pool_entry(&h).await.last_error.is_some()
        })
        .await;
        let entry = pool_entry(&h).await;
        let error = entry.last_error.clone().unwrap();
        assert!(error.contains(case.needle), "{}: {error}", case.name);
        assert_eq!(entry.ready, 0, "{}", case.name);
        // No VM, process, socket, tap or VM file is left; only a template made before.
        assert!(
            stored_vms(&h).is_empty(),
            "{}: {:?}",
            case.name,
            stored_vms(&h)
        );
        assert!(vm_dirs(&h).is_empty(), "{}: {:?}", case.name, vm_dirs(&h));
        h.assert_no_vmm(case.name);
        assert!(
            taps_left(&h).is_empty(),
            "{}: {:?}",
            case.name,
            taps_left(&h)
        );
        assert_eq!(
            entry.template_bytes.is_some(),
            case.template,
            "{}",
            case.name
        );
        assert_eq!(
            snapshot_dirs(&h).len(),
            usize::from(case.template),
            "{}: {:?}",
            case.name,
            snapshot_dirs(&h)
        );
        // Turned off, the template goes too.
        h.client.set_pool("pooled", 0).await.unwrap();
        wait_for("the template to go", async || snapshot_dirs(&h).is_empty()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_whose_guest_refuses_its_identity_leaves_the_vm_stopped_and_released() {
    let (h, agent) = pooled(FakeFirecracker::new(), 1).await;
    wait_for("a ready VM", async || pool_entry(&h).await.ready == 1).await;
    agent
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let created = take_from_pool(&h, "taken").await;
    let pid = created.vm.runtime.as_ref().unwrap().pid;
    let tap = Harness::tap_of(&created.vm);
    let op = h.watch(&created.operation.unwrap()).await;
    assert_eq!(op.state, OperationState::Failed, "{op:?}");
    let vm = h.vm("taken").await;
    assert_eq!(vm.state, VmState::Stopped);
    assert_eq!(vm.runtime, None);
    assert!(
        vm.last_error.as_deref().unwrap_or("").contains("refused"),
        "{:?}",
        vm.last_error
    );
    assert!(!h.fc.alive(pid));
    assert!(!taps_left(&h).contains(&tap), "{:?}", taps_left(&h));
    assert!(!h.paths.vm_dir(&vm.id).join("restore.agent-token").exists());
    // The refill fails the same way and leaves nothing either.
    wait_for("the refill to fail", async || {
        pool_entry(&h).await.last_error.is_some()
    })
    .await;
    h.client.delete_vm("taken").await.unwrap();
    h.client.set_pool("pooled", 0).await.unwrap();
    wait_for("the pool to empty", async || {
        stored_vms(&h).is_empty() && snapshot_dirs(&h).is_empty()
    })
    .await;
    assert!(h.fc.running().is_empty(), "{:?}", h.fc.running());
    assert!(taps_left(&h).is_empty(), "{:?}", taps_left(&h));
    assert!(vm_dirs(&h).is_empty(), "{:?}", vm_dirs(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_on_a_qemu_host_or_of_a_bad_size_is_refused_and_nothing_is_stored() {
    let h = Harness::with_vmm(FakeFirecracker::new(), FakeQemu::new(), fresh_net(), "qemu").await;
    let err = h.client.set_pool("base", 1).await.unwrap_err();
    let api = err.api().expect("an API error");
    assert_eq!(api.code, ErrorCode::Unsupported, "{api:?}");
    assert!(api.message.contains("Firecracker"), "{api:?}");
    let err = h.client.set_pool("base", 9).await.unwrap_err();
    assert_eq!(err.api().unwrap().code, ErrorCode::InvalidInput);
    assert!(h.client.list_pool().await.unwrap().is_empty());
    // Off is always allowed.
    h.client.set_pool("base", 0).await.unwrap();
    assert!(stored_vms(&h).is_empty());
}

/// A daemon killed during a snapshot or during a restore leaves each VM whole: the next one
/// points the snapshotted VM's drives back at its own disks and resumes it (its user had it
/// running), removes the unfinished snapshot, and does not keep a restored guest that had not
/// yet taken its own identity (it still had the snapshot's address and token): that VM is
/// stopped, off the network, and its next start boots it as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_a_snapshot_or_a_restore_leaves_each_vm_whole() {
    use banger_api::SnapshotVmRequest;
    use banger_vmm::firecracker::vm::VmState as FcState;
    let mut h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    support::register(&h.client, &h.dir.path().join("files"), "pooled", true).await;
    let agent = IdentityAgent::default();
    agent.serve_all(&h.paths);
    h.create_from("src", "pooled").await;
    h.client
        .snapshot_vm(
            "src",
            &SnapshotVmRequest {
                name: Some("s1".into()),
            },
        )
        .await
        .unwrap();
    let created = h
        .client
        .create_vm(&CreateVmRequest {
            name: Some("restored".into()),
            from_snapshot: Some("s1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let op = h.watch(&created.operation.unwrap()).await;
    assert_eq!(op.state, banger_api::OperationState::Succeeded, "{op:?}");
    // Two snapshots of `vm clone`s the daemon dies before deleting: one its clone was not yet
    // restored from, one no VM needs any more.
    for name in ["s-pending", "s-done"] {
        let taken = h
            .client
            .snapshot_vm(
                "src",
                &SnapshotVmRequest {
                    name: Some(name.into()),
                },
            )
            .await
            .unwrap();
        std::fs::write(h.paths.snapshot_dir(&taken.id).join(".clone"), "").unwrap();
    }
    h.client
        .create_vm(&CreateVmRequest {
            name: Some("pending".into()),
            from_snapshot: Some("s-pending".into()),
            start: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let src = h.vm("src").await;
    let restored = h.vm("restored").await;
    let src_run = src.runtime.clone().unwrap();
    let restored_run = restored.runtime.clone().unwrap();

    // The daemon goes away as if killed: during a snapshot of src (paused by it, its drives
    // on the snapshot's copies, the snapshot's directory half written), and while `restored`
    // was being restored (started, its guest not yet told who it is).
    h.daemon.take().unwrap().stop().await;
    let src_dir = h.paths.vm_dir(&src.id);
    let unfinished = h.paths.snapshot_dir("00000000deadbeef");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::write(unfinished.join("memory"), "half").unwrap();
    std::fs::write(
        src_dir.join(".snapshotting"),
        unfinished.display().to_string(),
    )
    .unwrap();
    let fc = h.fc.backend();
    let api = fc.client(std::path::Path::new(&src_run.api_socket));
    api.patch_vm(FcState::Paused).unwrap();
    for drive in ["overlay", "work"] {
        api.patch_drive(drive, &unfinished.join(format!("{drive}.ext4")))
            .unwrap();
    }
    let restored_dir = h.paths.vm_dir(&restored.id);
    std::fs::write(restored_dir.join("restore.agent-token"), "the snapshot's").unwrap();
    let store = banger_store::Store::open(&h.paths.database()).unwrap();
    store
        .set_vm_run_state(&restored.id, VmState::Starting, Some(&restored_run), None)
        .unwrap();
    drop(store);

    h.restart().await;
    // src runs on its own disks, as its user had it.
    let src = h.vm("src").await;
    assert_eq!(src.state, VmState::Running, "{src:?}");
    assert_eq!(src.runtime.as_ref().unwrap().pid, src_run.pid);
    for (drive, file) in [("overlay", "overlay.ext4"), ("work", "work.ext4")] {
        assert_eq!(
            h.fc.drive_path(src_run.pid, drive),
            Some(src_dir.join(file)),
            "{drive}"
        );
    }
    assert_eq!(h.instance_state(&src.id, &src_run), InstanceState::Running);
    assert!(!src_dir.join(".snapshotting").exists());
    assert!(!unfinished.exists(), "the unfinished snapshot goes");
    // The clones' snapshots go; the clone not yet restored boots from its disks.
    let left: Vec<String> = h
        .client
        .list_snapshots()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(left, ["s1"]);
    assert_eq!(snapshot_dirs(&h).len(), 1, "{:?}", snapshot_dirs(&h));
    let pending = h.vm("pending").await;
    assert!(
        support::files_under(&h.paths.vm_dir(&pending.id))
            .iter()
            .all(|f| !f.contains("restore.")),
        "{:?}",
        support::files_under(&h.paths.vm_dir(&pending.id))
    );
    let op = h.act("pending", VmAction::Start).await;
    assert_eq!(op.state, banger_api::OperationState::Succeeded, "{op:?}");
    let pending = h.vm("pending").await;
    assert!(
        !pending
            .runtime
            .as_ref()
            .unwrap()
            .boot
            .iter()
            .any(|s| s.stage == "identity"),
        "{pending:?}"
    );

    // The half-restored VM is not kept: stopped, its Firecracker ended, its tap gone, the
    // snapshot's token removed.
    let stopped = h.vm("restored").await;
    assert_eq!(stopped.state, VmState::Stopped, "{stopped:?}");
    assert_eq!(stopped.runtime, None);
    let why = stopped.last_error.clone().unwrap_or_default();
    assert!(why.contains("restored from a snapshot"), "{why}");
    assert!(!h.fc.alive(restored_run.pid));
    assert!(!taps_left(&h).contains(&Harness::tap_of(&restored)));
    assert!(!restored_dir.join("restore.agent-token").exists());
    // Its next start boots it as itself.
    let op = h.act("restored", VmAction::Start).await;
    assert_eq!(op.state, banger_api::OperationState::Succeeded, "{op:?}");
    let booted = h.vm("restored").await;
    assert_eq!(booted.state, VmState::Running);
    let stages: Vec<&str> = booted
        .runtime
        .as_ref()
        .unwrap()
        .boot
        .iter()
        .map(|s| s.stage.as_str())
        .collect();
    assert!(!stages.contains(&"identity"), "{stages:?}");

    for vm in ["src", "restored", "pending"] {
        h.client.delete_vm(vm).await.unwrap();
    }
    h.client.delete_snapshot("s1").await.unwrap();
    assert!(snapshot_dirs(&h).is_empty(), "{:?}", snapshot_dirs(&h));
    assert!(h.fc.running().is_empty(), "{:?}", h.fc.running());
    assert!(taps_left(&h).is_empty(), "{:?}", taps_left(&h));
}

/// `base` replaced, in the store as a build's or promotion's last stage does it, by a copy of
/// the image `next`'s record under `base`'s name: what the replaced image became.
fn replace_base(h: &Harness, next: &banger_api::Image) -> Option<banger_store::Replaced> {
    let mut new = next.clone();
    new.id = format!("{:016x}", rand::random::<u64>());
    new.name = "base".into();
    // The new image's files: the record's own directory, as a real one has.
    let from = h.paths.image_dir(&next.id);
    let to = h.paths.image_dir(&new.id);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    banger_store::Store::open(&h.paths.database())
        .unwrap()
        .insert_image_replacing(&new)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_image_goes_with_its_last_vm_and_at_a_restart() {
    let mut h = Harness::start(FakeFirecracker::new(), fresh_net()).await;
    let next = support::register(&h.client, &h.dir.path().join("next"), "next", false).await;
    let old = h.client.get_image("base").await.unwrap();
    h.create("dev").await;
    h.create("web").await;
    let Some(banger_store::Replaced::Retired { name, .. }) = replace_base(&h, &next) else {
        panic!("an image in use is retired");
    };
    // The VMs run on from it; `vm show` says what replaced it.
    let dev = h.vm("dev").await;
    assert_eq!(dev.image.name, name);
    let seed = dev.work_seed.expect("vm show tells the seed");
    assert_eq!(seed.replaced_by.unwrap().name, "base");
    assert!(h.paths.image_dir(&old.id).exists());

    // One VM left: kept.
    h.client.delete_vm("dev").await.unwrap();
    assert_eq!(h.client.get_image(&old.id).await.unwrap().name, name);
    // The last one gone: the image and its files go.
    h.client.delete_vm("web").await.unwrap();
    let err = h.client.get_image(&old.id).await.unwrap_err();
    assert!(err.to_string().contains("no image"), "{err}");
    assert!(!h.paths.image_dir(&old.id).exists());

    // A retired image whose last VM went while no daemon ran goes at the next start.
    h.create("late").await;
    let now = h.client.get_image("base").await.unwrap();
    assert!(matches!(
        replace_base(&h, &next),
        Some(banger_store::Replaced::Retired { .. })
    ));
    h.client.delete_vm("late").await.unwrap();
    assert!(!h.paths.image_dir(&now.id).exists(), "deleted with its VM");
    h.create("last").await;
    let current = h.client.get_image("base").await.unwrap();
    assert!(matches!(
        replace_base(&h, &next),
        Some(banger_store::Replaced::Retired { .. })
    ));
    h.act("last", VmAction::Stop).await;
    let last = h.vm("last").await;
    h.daemon.take().unwrap().stop().await;
    banger_store::Store::open(&h.paths.database())
        .unwrap()
        .delete_vm(&last.id)
        .unwrap();
    assert!(h.paths.image_dir(&current.id).exists());
    h.restart().await;
    assert!(h.client.get_image(&current.id).await.is_err());
    assert!(!h.paths.image_dir(&current.id).exists());
    // The image in service, and the one it was copied from, stay.
    let base = h.client.get_image("base").await.unwrap();
    assert!(base.retired.is_none());
    assert!(h.paths.image_dir(&base.id).exists());
    assert!(h.client.get_image("next").await.is_ok());
}

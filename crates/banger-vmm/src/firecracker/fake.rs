//! A stand-in for Firecracker and the host it runs on, for tests: [`FakeFirecracker`] is the
//! fake host of [`crate::fake`] (processes, signals, files, jails) with Firecracker on it. It
//! implements both [`ProcessHost`](crate::host::ProcessHost) and [`Transport`], answers the API
//! like a real Firecracker does (instance state, pause/resume, Ctrl-Alt-Del), starts Firecracker
//! under a jailer the way the jailer does, records every step in one journal, and can fail the
//! Nth step or every step that starts with a given text. The daemon's tests can run whole VM
//! lifecycles on it without a binary or `/dev/kvm`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::client::{ApiRequest, ApiResponse, Method, SentRequest, Transport, TransportError};
use super::launch::firecracker_api_socket;
use super::{Firecracker, FirecrackerBinary, Timeouts, Version};
use crate::InstanceState;
use crate::fake::{FakeHost, FakeProcess, FakeVmm, HostState};

pub use crate::fake::INJECTED;

/// The pid the first spawned process gets; the next ones count up.
pub const FIRST_PID: u32 = 4242;

/// A fake Firecracker host; clones share their state.
pub type FakeFirecracker = FakeHost<FirecrackerVmm>;

/// What the fake keeps for Firecracker beyond the host.
#[derive(Debug, Default)]
pub struct FirecrackerVmm {
    requests: Vec<SentRequest>,
    ignore_ctrl_alt_del: bool,
    /// What `GET /version` and `GET /` report; 1.16.1 unless a test says otherwise.
    version: Option<String>,
}

/// What the fake keeps about one Firecracker process.
#[derive(Debug)]
pub struct FirecrackerProcess {
    /// Its chroot, for a jailed one: the paths it is given are inside it.
    root: Option<PathBuf>,
    state: InstanceState,
    /// PUT bodies by path, for `GET /vm/config`.
    config: BTreeMap<String, serde_json::Value>,
}

impl FirecrackerProcess {
    fn new(root: Option<PathBuf>, state: InstanceState) -> Self {
        FirecrackerProcess {
            root,
            state,
            config: BTreeMap::new(),
        }
    }
}

impl FakeVmm for FirecrackerVmm {
    type Process = FirecrackerProcess;

    const FIRST_PID: u32 = FIRST_PID;

    // Firecracker leaves its API socket behind however it exits.
    const REMOVES_SOCKET_ON_EXIT: bool = false;

    fn api_socket(argv: &[OsString]) -> Option<PathBuf> {
        firecracker_api_socket(argv)
    }

    fn new_process(_argv: &[OsString]) -> FirecrackerProcess {
        FirecrackerProcess::new(None, InstanceState::NotStarted)
    }

    fn spawn(state: &mut HostState<Self>, pid: u32, argv: Vec<OsString>, alive: bool) {
        let program = Path::new(&argv[0]);
        let is_jailer = program
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("jailer"));
        if !is_jailer {
            state.start(pid, argv, alive);
            return;
        }
        // The jailer forks Firecracker into a new pid namespace, writes its pid in the chroot
        // and exits.
        let jailed = JailerArgs::parse(&argv[1..]);
        state.processes.insert(
            pid,
            FakeProcess {
                argv,
                socket: None,
                alive: false,
                stopped: false,
                vmm: FirecrackerProcess::new(None, InstanceState::NotStarted),
            },
        );
        let child = state.allocate_pid();
        let root = jailed.root();
        let mut child_argv: Vec<OsString> = vec![
            Path::new("/").join(&jailed.exec_name).into_os_string(),
            "--id".into(),
            jailed.id.clone().into(),
            "--start-time-us".into(),
            "1".into(),
            "--start-time-cpu-us".into(),
            "1".into(),
        ];
        child_argv.extend(jailed.rest.iter().cloned());
        let socket = jailed
            .api_socket
            .as_ref()
            .map(|inside| root.join(inside.strip_prefix("/").unwrap_or(inside)));
        if let Some(socket) = socket.clone().filter(|_| alive) {
            state.sockets.insert(socket.clone());
            state.listening.insert(socket);
        }
        let pid_file = root.join(format!("{}.pid", jailed.exec_name));
        state.files.insert(pid_file.clone());
        state
            .contents
            .insert(pid_file, child.to_string().into_bytes());
        state.processes.insert(
            child,
            FakeProcess {
                argv: child_argv,
                socket,
                alive,
                stopped: false,
                vmm: FirecrackerProcess::new(Some(root), InstanceState::NotStarted),
            },
        );
    }

    /// A Firecracker's vsock socket goes with it.
    fn closes_on_exit(process: &FakeProcess<FirecrackerProcess>) -> Vec<PathBuf> {
        process
            .vmm
            .config
            .get("/vsock")
            .and_then(|v| v.get("uds_path"))
            .and_then(|v| v.as_str())
            .map(|vsock| outside(process.vmm.root.as_deref(), Path::new(vsock)))
            .into_iter()
            .collect()
    }
}

impl FakeFirecracker {
    /// The guest does not shut down on Ctrl-Alt-Del (like a hung or crawling guest).
    pub fn ignoring_ctrl_alt_del(self) -> Self {
        self.lock().vmm.ignore_ctrl_alt_del = true;
        self
    }

    /// The fake reports Firecracker `version` (`1.17.0`, ...) instead of 1.16.1.
    pub fn with_version(self, version: &str) -> Self {
        self.lock().vmm.version = Some(version.to_owned());
        self
    }

    /// The host file drive `id` of process `pid` uses now (after every accepted `PUT` or
    /// `PATCH` of it).
    pub fn drive_path(&self, pid: u32, id: &str) -> Option<PathBuf> {
        let state = self.lock();
        let config = &state.processes.get(&pid)?.vmm.config;
        config.get(&format!("/drives/{id}"))?["path_on_host"]
            .as_str()
            .map(PathBuf::from)
    }

    /// A Firecracker that is already running with `argv` (started by a previous daemon), in
    /// `state`, serving its API socket. Returns its pid.
    pub fn add_running(&self, argv: &[&str], state: InstanceState) -> u32 {
        self.add_process(argv, FirecrackerProcess::new(None, state))
    }

    /// A process that is not Firecracker (e.g. one that reused a dead VMM's pid).
    pub fn add_other_process(&self, argv: &[&str]) -> u32 {
        self.add_running(argv, InstanceState::NotStarted)
    }

    /// Every API request so far, with its body.
    pub fn requests(&self) -> Vec<SentRequest> {
        self.lock().vmm.requests.clone()
    }

    /// The binary the fake pretends to run: `/usr/bin/firecracker`, version 1.16.1.
    pub fn binary() -> FirecrackerBinary {
        FirecrackerBinary {
            path: PathBuf::from("/usr/bin/firecracker"),
            version: Version::new(1, 16, 1),
        }
    }

    /// A [`Firecracker`] backend running on this fake, with short timeouts.
    pub fn backend(&self) -> Firecracker {
        Firecracker::with_host(
            FakeFirecracker::binary(),
            Arc::new(self.clone()),
            Arc::new(self.clone()),
        )
        .with_timeouts(Timeouts {
            api_socket: Duration::from_millis(100),
            term_grace: Duration::from_millis(100),
            kill_wait: Duration::from_millis(100),
        })
    }
}

fn answer(status: u16, body: serde_json::Value) -> ApiResponse {
    ApiResponse {
        status,
        body: if status == 204 {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        },
    }
}

fn fault(message: &str) -> ApiResponse {
    answer(400, serde_json::json!({ "fault_message": message }))
}

impl Transport for FakeFirecracker {
    fn send(&self, socket: &Path, request: &ApiRequest) -> Result<ApiResponse, TransportError> {
        let mut state = self.lock();
        let fail = state.step(request.resource());
        state.vmm.requests.push(SentRequest {
            socket: socket.to_owned(),
            request: request.clone(),
        });
        let Some(pid) = state.serving(socket) else {
            return Err(TransportError::Connect(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            )));
        };
        if state.processes.get(&pid).is_some_and(|p| p.stopped) {
            // The listening socket accepts; nobody reads the request.
            return Err(TransportError::TimedOut(Duration::from_secs(1)));
        }
        if fail {
            return Ok(fault(INJECTED));
        }
        let version = state
            .vmm
            .version
            .clone()
            .unwrap_or_else(|| "1.16.1".to_owned());
        let body: serde_json::Value = match &request.body {
            Some(bytes) => match serde_json::from_slice(bytes) {
                Ok(value) => value,
                Err(e) => return Ok(fault(&format!("invalid JSON: {e}"))),
            },
            None => serde_json::Value::Null,
        };
        let ignore_ctrl_alt_del = state.vmm.ignore_ctrl_alt_del;
        let Some(process) = state.processes.get_mut(&pid) else {
            return Err(TransportError::Connect(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            )));
        };
        let started = process.vmm.state != InstanceState::NotStarted;
        let mut exits = false;
        let mut written = Vec::new();
        let response = match (request.method, request.path.as_str()) {
            (Method::Get, "/") => {
                let id = process
                    .argv
                    .iter()
                    .skip_while(|a| *a != "--id")
                    .nth(1)
                    .map(|a| a.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "anonymous-instance".into());
                answer(
                    200,
                    serde_json::json!({
                        "id": id,
                        "state": process.vmm.state,
                        "vmm_version": version,
                        "app_name": "Firecracker",
                    }),
                )
            }
            (Method::Get, "/vm/config") => answer(
                200,
                serde_json::json!({
                    "vsock": process.vmm.config.get("/vsock"),
                    "drives": [],
                    "network-interfaces": [],
                }),
            ),
            (Method::Get, "/version") => {
                answer(200, serde_json::json!({ "firecracker_version": version }))
            }
            (Method::Put, "/actions") => match body["action_type"].as_str() {
                Some("InstanceStart") if started => {
                    fault("The requested operation is not supported after starting the microVM.")
                }
                Some("InstanceStart") => {
                    process.vmm.state = InstanceState::Running;
                    answer(204, serde_json::Value::Null)
                }
                Some("SendCtrlAltDel") if !started => {
                    fault("The requested operation is not supported before starting the microVM.")
                }
                Some("SendCtrlAltDel") => {
                    exits = !ignore_ctrl_alt_del;
                    answer(204, serde_json::Value::Null)
                }
                Some("FlushMetrics") => answer(204, serde_json::Value::Null),
                _ => fault("An error occurred when deserializing the json body of a request"),
            },
            (Method::Patch, "/vm") if !started => {
                fault("The requested operation is not supported before starting the microVM.")
            }
            (Method::Patch, "/vm") => {
                process.vmm.state = match body["state"].as_str() {
                    Some("Paused") => InstanceState::Paused,
                    _ => InstanceState::Running,
                };
                answer(204, serde_json::Value::Null)
            }
            (Method::Patch, path) if path.starts_with("/drives/") && !started => {
                fault("The requested operation is not supported before starting the microVM.")
            }
            (Method::Patch, path) if path.starts_with("/drives/") => {
                process.vmm.config.insert(path.to_owned(), body.clone());
                answer(204, serde_json::Value::Null)
            }
            (Method::Put, "/snapshot/create") if process.vmm.state != InstanceState::Paused => {
                fault("Cannot save the microVM state: the microVM is not paused.")
            }
            (Method::Put, "/snapshot/create") => {
                // Firecracker writes the state and memory files; where they land on the
                // real filesystem (a daemon test's snapshot directory) they are written there
                // too, so that a restore from them can be tried.
                for key in ["snapshot_path", "mem_file_path"] {
                    if let Some(path) = body[key].as_str() {
                        let _ = std::fs::write(path, key.as_bytes());
                        written.push(PathBuf::from(path));
                    }
                }
                answer(204, serde_json::Value::Null)
            }
            (Method::Put, "/snapshot/load")
                if started
                    || process
                        .vmm
                        .config
                        .keys()
                        .any(|k| k != "/logger" && k != "/metrics") =>
            {
                fault(
                    "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
                )
            }
            (Method::Put, "/snapshot/load") => {
                process.vmm.state = if body["resume_vm"].as_bool() == Some(true) {
                    InstanceState::Running
                } else {
                    InstanceState::Paused
                };
                process
                    .vmm
                    .config
                    .insert("/snapshot/load".to_owned(), body.clone());
                answer(204, serde_json::Value::Null)
            }
            (Method::Put, path) if started && !path.starts_with("/snapshot/create") => {
                fault("The requested operation is not supported after starting the microVM.")
            }
            (Method::Put, path) => {
                process.vmm.config.insert(path.to_owned(), body.clone());
                answer(204, serde_json::Value::Null)
            }
            (method, path) => fault(&format!(
                "Invalid request method and/or path: {method} {path}."
            )),
        };
        state.files.extend(written);
        let bound = match request.path.as_str() {
            "/vsock" => body["uds_path"].as_str(),
            "/snapshot/load" => body["vsock_override"]["uds_path"].as_str(),
            _ => None,
        };
        if let Some(uds) = bound
            && response.status == 204
        {
            let root = state.processes.get(&pid).and_then(|p| p.vmm.root.clone());
            let uds = outside(root.as_deref(), Path::new(uds));
            state.sockets.insert(uds.clone());
            state.listening.insert(uds);
        }
        if exits {
            state.exit(pid, true);
        }
        Ok(response)
    }
}

/// The host path of `path` as a process chrooted into `root` names it.
fn outside(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_owned(),
    }
}

/// What the fake reads from a jailer's command line.
struct JailerArgs {
    id: String,
    exec_name: String,
    chroot_base: PathBuf,
    api_socket: Option<PathBuf>,
    /// Firecracker's own arguments (after `--`).
    rest: Vec<OsString>,
}

impl JailerArgs {
    fn parse(args: &[OsString]) -> JailerArgs {
        let mut parsed = JailerArgs {
            id: String::new(),
            exec_name: "firecracker".into(),
            chroot_base: PathBuf::from("/srv/jailer"),
            api_socket: None,
            rest: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().cloned().unwrap_or_default();
            match arg.to_str() {
                Some("--id") => parsed.id = value().to_string_lossy().into_owned(),
                Some("--exec-file") => {
                    let exec = PathBuf::from(value());
                    parsed.exec_name = exec
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                }
                Some("--chroot-base-dir") => parsed.chroot_base = PathBuf::from(value()),
                Some("--") => {
                    parsed.rest = args.cloned().collect();
                    break;
                }
                _ => {}
            }
        }
        let mut rest = parsed.rest.iter();
        while let Some(arg) = rest.next() {
            if arg == "--api-sock" {
                parsed.api_socket = rest.next().map(PathBuf::from);
            }
        }
        parsed
    }

    fn root(&self) -> PathBuf {
        self.chroot_base
            .join(&self.exec_name)
            .join(&self.id)
            .join("root")
    }
}

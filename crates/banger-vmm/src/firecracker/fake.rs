//! A stand-in for Firecracker and the host it runs on, for tests: [`FakeFirecracker`]
//! implements both [`ProcessHost`] and [`Transport`], answers the API like a real Firecracker
//! does (instance state, pause/resume, Ctrl-Alt-Del), records every step in one journal, and can
//! fail the Nth step or every step that starts with a given text. The daemon's tests can run
//! whole VM lifecycles on it without a binary or `/dev/kvm`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use banger_host::{ProcessError, Signal};

use super::client::{ApiRequest, ApiResponse, Method, SentRequest, Transport, TransportError};
use super::launch::firecracker_api_socket;
use super::{Firecracker, FirecrackerBinary, Timeouts, Version};
use crate::InstanceState;
use crate::host::{ProcessHost, SocketWaitError};

/// The pid the first spawned process gets; the next ones count up.
pub const FIRST_PID: u32 = 4242;

/// What an injected failure says.
pub const INJECTED: &str = "injected failure";

/// A fake Firecracker host; clones share their state.
#[derive(Debug, Clone, Default)]
pub struct FakeFirecracker {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    journal: Vec<String>,
    requests: Vec<SentRequest>,
    fail_at: Option<usize>,
    fail_prefixes: Vec<String>,
    next_pid: u32,
    processes: BTreeMap<u32, FakeProcess>,
    files: BTreeSet<PathBuf>,
    /// Socket files, whether or not anything listens on them.
    sockets: BTreeSet<PathBuf>,
    listening: BTreeSet<PathBuf>,
    ignore_ctrl_alt_del: bool,
    ignore_term: bool,
    die_at_start: bool,
    /// What `GET /version` and `GET /` report; 1.16.1 unless a test says otherwise.
    version: Option<String>,
    /// What a jail builds: directories, file contents, owners, bind mounts.
    dirs: BTreeSet<PathBuf>,
    contents: BTreeMap<PathBuf, Vec<u8>>,
    owners: BTreeMap<PathBuf, (u32, u32, u32)>,
    mounts: BTreeSet<PathBuf>,
    /// Hard links fail with `EXDEV` (the files are on another filesystem than the jails).
    cross_device: bool,
}

#[derive(Debug)]
struct FakeProcess {
    argv: Vec<OsString>,
    /// Its chroot, for a jailed one: the paths it is given are inside it.
    root: Option<PathBuf>,
    /// The host path of the API socket it serves.
    socket: Option<PathBuf>,
    alive: bool,
    /// Stopped by SIGSTOP: its API does not answer until SIGCONT.
    stopped: bool,
    state: InstanceState,
    /// PUT bodies by path, for `GET /vm/config`.
    config: BTreeMap<String, serde_json::Value>,
}

impl FakeFirecracker {
    pub fn new() -> Self {
        FakeFirecracker::default()
    }

    /// The `nth` step (1-based, counted over the whole journal) fails.
    pub fn fail_step(self, nth: usize) -> Self {
        self.lock().fail_at = Some(nth);
        self
    }

    /// Every step whose journal line starts with `prefix` fails, e.g. `"remove /run/x.vsock"`.
    pub fn fail(self, prefix: impl Into<String>) -> Self {
        self.lock().fail_prefixes.push(prefix.into());
        self
    }

    /// The guest does not shut down on Ctrl-Alt-Del (like a hung or crawling guest).
    pub fn ignoring_ctrl_alt_del(self) -> Self {
        self.lock().ignore_ctrl_alt_del = true;
        self
    }

    /// The fake reports Firecracker `version` (`1.17.0`, ...) instead of 1.16.1.
    pub fn with_version(self, version: &str) -> Self {
        self.lock().version = Some(version.to_owned());
        self
    }

    /// Whether `pid` is stopped by SIGSTOP now.
    pub fn stopped(&self, pid: u32) -> bool {
        self.lock().processes.get(&pid).is_some_and(|p| p.stopped)
    }

    /// The host file drive `id` of process `pid` uses now (after every accepted `PUT` or
    /// `PATCH` of it).
    pub fn drive_path(&self, pid: u32, id: &str) -> Option<PathBuf> {
        let state = self.lock();
        let config = &state.processes.get(&pid)?.config;
        config.get(&format!("/drives/{id}"))?["path_on_host"]
            .as_str()
            .map(PathBuf::from)
    }

    /// Hard links fail as across filesystems: a jail binds its files instead.
    pub fn cross_device(self) -> Self {
        self.lock().cross_device = true;
        self
    }

    /// A file that exists on the fake host, owned by root with `mode`.
    pub fn with_file(self, path: impl Into<PathBuf>, mode: u32) -> Self {
        {
            let mut state = self.lock();
            let path = path.into();
            state.owners.insert(path.clone(), (0, 0, mode));
            state.files.insert(path);
        }
        self
    }

    /// The directories that exist now.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.lock().dirs.iter().cloned().collect()
    }

    /// The bind mounts in place now.
    pub fn mounts(&self) -> Vec<PathBuf> {
        self.lock().mounts.iter().cloned().collect()
    }

    /// The owner, group and mode of `path`.
    pub fn owner_of(&self, path: &Path) -> Option<(u32, u32, u32)> {
        self.lock().owners.get(path).copied()
    }

    /// What `path` holds, when something wrote it.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.lock().contents.get(path).cloned()
    }

    /// The command line of `pid` (alive or not).
    pub fn argv(&self, pid: u32) -> Option<Vec<OsString>> {
        self.lock().processes.get(&pid).map(|p| p.argv.clone())
    }

    /// Firecracker does not exit on SIGTERM (only SIGKILL ends it).
    pub fn ignoring_term(self) -> Self {
        self.lock().ignore_term = true;
        self
    }

    /// Spawned processes exit at once, before opening their API socket (like a Firecracker
    /// that cannot bind its socket).
    pub fn dying_at_start(self) -> Self {
        self.lock().die_at_start = true;
        self
    }

    /// A socket file nothing listens on any more (its VMM died).
    pub fn with_stale_socket(self, path: impl Into<PathBuf>) -> Self {
        self.lock().sockets.insert(path.into());
        self
    }

    /// A socket file some other live process accepts connections on.
    pub fn with_listener(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        {
            let mut state = self.lock();
            state.sockets.insert(path.clone());
            state.listening.insert(path);
        }
        self
    }

    /// A Firecracker that is already running with `argv` (started by a previous daemon), in
    /// `state`, serving its API socket. Returns its pid.
    pub fn add_running(&self, argv: &[&str], state: InstanceState) -> u32 {
        let mut fake = self.lock();
        let pid = fake.allocate_pid();
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        if let Some(socket) = firecracker_api_socket(&argv) {
            fake.sockets.insert(socket.clone());
            fake.listening.insert(socket);
        }
        fake.processes.insert(
            pid,
            FakeProcess {
                root: None,
                socket: firecracker_api_socket(&argv),
                argv,
                alive: true,
                stopped: false,
                state,
                config: BTreeMap::new(),
            },
        );
        pid
    }

    /// A process that is not Firecracker (e.g. one that reused a dead VMM's pid).
    pub fn add_other_process(&self, argv: &[&str]) -> u32 {
        self.add_running(argv, InstanceState::NotStarted)
    }

    /// Ends `pid` as `kill -9` from outside would: its socket files stay behind.
    pub fn crash(&self, pid: u32) {
        self.lock().exit(pid);
    }

    /// Every step so far, in order.
    pub fn journal(&self) -> Vec<String> {
        self.lock().journal.clone()
    }

    /// Every API request so far, with its body.
    pub fn requests(&self) -> Vec<SentRequest> {
        self.lock().requests.clone()
    }

    /// The regular files that exist now.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().files.iter().cloned().collect()
    }

    /// The socket files that exist now.
    pub fn sockets(&self) -> Vec<PathBuf> {
        self.lock().sockets.iter().cloned().collect()
    }

    /// Whether `pid` runs.
    pub fn alive(&self, pid: u32) -> bool {
        self.lock().alive(pid)
    }

    /// The pids that run.
    pub fn running(&self) -> Vec<u32> {
        let state = self.lock();
        state
            .processes
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(pid, _)| *pid)
            .collect()
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

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock already failed; keep the record readable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FakeState {
    /// Journals `step` and says whether it is to fail.
    fn step(&mut self, step: String) -> bool {
        self.journal.push(step);
        let n = self.journal.len();
        let step = &self.journal[n - 1];
        self.fail_at == Some(n) || self.fail_prefixes.iter().any(|p| step.starts_with(p))
    }

    fn allocate_pid(&mut self) -> u32 {
        if self.next_pid == 0 {
            self.next_pid = FIRST_PID;
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        pid
    }

    fn alive(&self, pid: u32) -> bool {
        self.processes.get(&pid).is_some_and(|p| p.alive)
    }

    fn exit(&mut self, pid: u32) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.alive = false;
            if let Some(socket) = &process.socket {
                self.listening.remove(socket);
            }
            if let Some(vsock) = process
                .config
                .get("/vsock")
                .and_then(|v| v.get("uds_path"))
                .and_then(|v| v.as_str())
            {
                let vsock = outside(process.root.as_deref(), Path::new(vsock));
                self.listening.remove(&vsock);
            }
        }
    }

    fn serving(&self, socket: &Path) -> Option<u32> {
        if !self.listening.contains(socket) {
            return None;
        }
        self.processes
            .iter()
            .find(|(_, p)| p.alive && p.socket.as_deref() == Some(socket))
            .map(|(pid, _)| *pid)
    }
}

fn injected_io() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, INJECTED)
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

impl ProcessHost for FakeFirecracker {
    fn spawn(
        &self,
        program: &Path,
        args: &[OsString],
        output_log: &Path,
    ) -> Result<u32, ProcessError> {
        let mut state = self.lock();
        let line = std::iter::once(program.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        if state.step(format!("spawn {line} >> {}", output_log.display())) {
            return Err(ProcessError::Spawn {
                program: program.to_owned(),
                source: injected_io(),
            });
        }
        state.files.insert(output_log.to_owned());
        let pid = state.allocate_pid();
        let argv: Vec<OsString> = std::iter::once(program.as_os_str().to_owned())
            .chain(args.iter().cloned())
            .collect();
        let alive = !state.die_at_start;
        let is_jailer = program
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("jailer"));
        if is_jailer {
            // The jailer forks Firecracker into a new pid namespace, writes its pid in the
            // chroot and exits.
            state.processes.insert(
                pid,
                FakeProcess {
                    argv,
                    root: None,
                    socket: None,
                    alive: false,
                    stopped: false,
                    state: InstanceState::NotStarted,
                    config: BTreeMap::new(),
                },
            );
            let jailed = JailerArgs::parse(args);
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
                    root: Some(root.clone()),
                    socket,
                    alive,
                    stopped: false,
                    state: InstanceState::NotStarted,
                    config: BTreeMap::new(),
                },
            );
            return Ok(pid);
        }
        let socket = firecracker_api_socket(&argv);
        if let Some(socket) = socket.clone().filter(|_| alive) {
            state.sockets.insert(socket.clone());
            state.listening.insert(socket);
        }
        state.processes.insert(
            pid,
            FakeProcess {
                argv,
                root: None,
                socket,
                alive,
                stopped: false,
                state: InstanceState::NotStarted,
                config: BTreeMap::new(),
            },
        );
        Ok(pid)
    }

    fn wait_for_socket(
        &self,
        socket: &Path,
        pid: u32,
        timeout: Duration,
    ) -> Result<(), SocketWaitError> {
        let mut state = self.lock();
        if state.step(format!("wait-socket {}", socket.display())) {
            return Err(SocketWaitError::TimedOut(timeout));
        }
        if !state.alive(pid) {
            return Err(SocketWaitError::Exited);
        }
        if state.listening.contains(socket) {
            Ok(())
        } else {
            Err(SocketWaitError::TimedOut(timeout))
        }
    }

    fn pid_alive(&self, pid: u32) -> bool {
        self.lock().alive(pid)
    }

    fn is_stopped(&self, pid: u32) -> bool {
        self.stopped(pid)
    }

    fn signal(&self, pid: u32, signal: Signal) -> Result<(), ProcessError> {
        let mut state = self.lock();
        if state.step(format!("signal {pid} {signal}")) {
            return Err(ProcessError::Signal {
                pid,
                signal,
                source: injected_io(),
            });
        }
        if !state.alive(pid) {
            return Err(ProcessError::Gone { pid });
        }
        let ignore_term = state.ignore_term;
        match signal {
            Signal::Stop | Signal::Cont => {
                if let Some(process) = state.processes.get_mut(&pid) {
                    process.stopped = signal == Signal::Stop;
                }
            }
            // A fatal signal ends a stopped process too.
            Signal::Term if ignore_term => {}
            Signal::Term | Signal::Kill => state.exit(pid),
        }
        Ok(())
    }

    fn wait_for_exit(&self, pid: u32, _timeout: Duration) -> bool {
        let mut state = self.lock();
        if state.step(format!("wait-exit {pid}")) {
            return false;
        }
        !state.alive(pid)
    }

    fn cmdline(&self, pid: u32) -> Option<Vec<OsString>> {
        let state = self.lock();
        state
            .processes
            .get(&pid)
            .filter(|p| p.alive)
            .map(|p| p.argv.clone())
    }

    fn processes(&self) -> Vec<(u32, Vec<OsString>)> {
        let state = self.lock();
        state
            .processes
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(pid, p)| (*pid, p.argv.clone()))
            .collect()
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("create {}", path.display())) {
            return Err(injected_io());
        }
        state.files.insert(path.to_owned());
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("remove {}", path.display())) {
            return Err(injected_io());
        }
        state.files.remove(path);
        state.sockets.remove(path);
        state.listening.remove(path);
        state.owners.remove(path);
        state.contents.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("rename {} {}", from.display(), to.display())) {
            return Err(injected_io());
        }
        if !state.files.remove(from) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        state.files.insert(to.to_owned());
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        state.files.contains(path) || state.sockets.contains(path) || state.dirs.contains(path)
    }

    fn socket_accepts(&self, path: &Path) -> bool {
        self.lock().listening.contains(path)
    }

    fn sockets_in(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.lock();
        Ok(state
            .sockets
            .iter()
            .filter(|f| f.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn create_dir(&self, dir: &Path, mode: u32) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("mkdir {} {mode:o}", dir.display())) {
            return Err(injected_io());
        }
        for ancestor in dir.ancestors() {
            state.dirs.insert(ancestor.to_owned());
        }
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("rm -r {}", dir.display())) {
            return Err(injected_io());
        }
        state.dirs.retain(|d| !d.starts_with(dir));
        state.files.retain(|f| !f.starts_with(dir));
        state.sockets.retain(|f| !f.starts_with(dir));
        state.contents.retain(|f, _| !f.starts_with(dir));
        state.owners.retain(|f, _| !f.starts_with(dir));
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("rmdir {}", dir.display())) {
            return Err(injected_io());
        }
        state.dirs.remove(dir);
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let mut entries: Vec<PathBuf> = state
            .dirs
            .iter()
            .chain(&state.files)
            .chain(&state.sockets)
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect();
        entries.sort();
        entries.dedup();
        Ok(entries)
    }

    fn hard_link(&self, target: &Path, link: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("link {} {}", target.display(), link.display())) {
            return Err(injected_io());
        }
        if state.cross_device {
            return Err(io::Error::from_raw_os_error(18));
        }
        if !state.files.contains(target) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        if state.files.contains(link) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let owner = state.owners.get(target).copied().unwrap_or((0, 0, 0o600));
        state.owners.insert(link.to_owned(), owner);
        state.files.insert(link.to_owned());
        Ok(())
    }

    fn bind_mount(&self, source: &Path, mount_point: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!(
            "bind {} {}",
            source.display(),
            mount_point.display()
        )) {
            return Err(injected_io());
        }
        let owner = state.owners.get(source).copied().unwrap_or((0, 0, 0o600));
        state.owners.insert(mount_point.to_owned(), owner);
        state.files.insert(mount_point.to_owned());
        state.mounts.insert(mount_point.to_owned());
        Ok(())
    }

    fn unmount(&self, mount_point: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("umount {}", mount_point.display())) {
            return Err(injected_io());
        }
        state.mounts.remove(mount_point);
        Ok(())
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let state = self.lock();
        state
            .mounts
            .iter()
            .filter(|m| m.starts_with(dir))
            .cloned()
            .collect()
    }

    fn owner(&self, path: &Path) -> io::Result<(u32, u32, u32)> {
        let state = self.lock();
        if !state.files.contains(path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(state.owners.get(path).copied().unwrap_or((0, 0, 0o600)))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("chown {uid}:{gid} {}", path.display())) {
            return Err(injected_io());
        }
        let entry = state.owners.entry(path.to_owned()).or_insert((0, 0, 0o600));
        entry.0 = uid;
        entry.1 = gid;
        Ok(())
    }

    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("chmod {mode:o} {}", path.display())) {
            return Err(injected_io());
        }
        let entry = state.owners.entry(path.to_owned()).or_insert((0, 0, 0o600));
        entry.2 = mode;
        Ok(())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        state
            .contents
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn give_tap(&self, name: &str, uid: u32) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("give-tap {name} {uid}")) {
            return Err(injected_io());
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("write {}", path.display())) {
            return Err(injected_io());
        }
        state.files.insert(path.to_owned());
        state.contents.insert(path.to_owned(), contents.to_vec());
        Ok(())
    }
}

impl Transport for FakeFirecracker {
    fn send(&self, socket: &Path, request: &ApiRequest) -> Result<ApiResponse, TransportError> {
        let mut state = self.lock();
        let fail = state.step(request.resource());
        state.requests.push(SentRequest {
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
        let version = state.version.clone().unwrap_or_else(|| "1.16.1".to_owned());
        let body: serde_json::Value = match &request.body {
            Some(bytes) => match serde_json::from_slice(bytes) {
                Ok(value) => value,
                Err(e) => return Ok(fault(&format!("invalid JSON: {e}"))),
            },
            None => serde_json::Value::Null,
        };
        let ignore_ctrl_alt_del = state.ignore_ctrl_alt_del;
        let Some(process) = state.processes.get_mut(&pid) else {
            return Err(TransportError::Connect(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            )));
        };
        let started = process.state != InstanceState::NotStarted;
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
                        "state": process.state,
                        "vmm_version": version,
                        "app_name": "Firecracker",
                    }),
                )
            }
            (Method::Get, "/vm/config") => answer(
                200,
                serde_json::json!({
                    "vsock": process.config.get("/vsock"),
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
                    process.state = InstanceState::Running;
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
                process.state = match body["state"].as_str() {
                    Some("Paused") => InstanceState::Paused,
                    _ => InstanceState::Running,
                };
                answer(204, serde_json::Value::Null)
            }
            (Method::Patch, path) if path.starts_with("/drives/") && !started => {
                fault("The requested operation is not supported before starting the microVM.")
            }
            (Method::Patch, path) if path.starts_with("/drives/") => {
                process.config.insert(path.to_owned(), body.clone());
                answer(204, serde_json::Value::Null)
            }
            (Method::Put, "/snapshot/create") if process.state != InstanceState::Paused => {
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
                        .config
                        .keys()
                        .any(|k| k != "/logger" && k != "/metrics") =>
            {
                fault(
                    "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
                )
            }
            (Method::Put, "/snapshot/load") => {
                process.state = if body["resume_vm"].as_bool() == Some(true) {
                    InstanceState::Running
                } else {
                    InstanceState::Paused
                };
                process
                    .config
                    .insert("/snapshot/load".to_owned(), body.clone());
                answer(204, serde_json::Value::Null)
            }
            (Method::Put, path) if started && !path.starts_with("/snapshot/create") => {
                fault("The requested operation is not supported after starting the microVM.")
            }
            (Method::Put, path) => {
                process.config.insert(path.to_owned(), body.clone());
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
            let root = state.processes.get(&pid).and_then(|p| p.root.clone());
            let uds = outside(root.as_deref(), Path::new(uds));
            state.sockets.insert(uds.clone());
            state.listening.insert(uds);
        }
        if exits {
            state.exit(pid);
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

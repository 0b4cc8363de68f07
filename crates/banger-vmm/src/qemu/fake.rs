//! A stand-in for QEMU and the host it runs on, for tests: [`FakeQemu`] implements both
//! [`ProcessHost`] and [`QmpTransport`], answers QMP like QEMU does (run states, `stop`, `cont`,
//! the power button), records every step in one journal, and can fail the Nth step or every
//! step that starts with a given text. The daemon's tests can run whole QEMU VM lifecycles on it
//! without the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use banger_host::{ProcessError, Signal};
use serde_json::{Value, json};

use super::command_line::{VHOST_VSOCK, qmp_socket};
use super::qmp::{QmpCommand, QmpError, QmpTransport};
use super::{Accel, Qemu, QemuBinary};
use crate::Timeouts;
use crate::firecracker::Version;
use crate::host::{ProcessHost, SocketWaitError};

/// The pid the first spawned process gets; the next ones count up.
pub const FIRST_PID: u32 = 5150;

/// What an injected failure says.
pub const INJECTED: &str = "injected failure";

/// A fake QEMU host; clones share their state.
#[derive(Debug, Clone, Default)]
pub struct FakeQemu {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    journal: Vec<String>,
    fail_at: Option<usize>,
    fail_prefixes: Vec<String>,
    next_pid: u32,
    processes: BTreeMap<u32, FakeProcess>,
    files: BTreeSet<PathBuf>,
    /// Socket files, whether or not anything listens on them.
    sockets: BTreeSet<PathBuf>,
    listening: BTreeSet<PathBuf>,
    ignore_powerdown: bool,
    ignore_term: bool,
    die_at_start: bool,
    exit_on_cont: bool,
    /// The run state `cont` leads to (a guest that crashes at once: `internal-error`).
    after_cont: Option<String>,
    /// Directories made (cgroups), and what was written to files in them.
    dirs: BTreeSet<PathBuf>,
    written: BTreeMap<PathBuf, Vec<u8>>,
}

#[derive(Debug)]
struct FakeProcess {
    argv: Vec<OsString>,
    alive: bool,
    /// QEMU's run state, as `query-status` names it.
    status: String,
}

impl FakeQemu {
    pub fn new() -> Self {
        FakeQemu::default()
    }

    /// The `nth` step (1-based, counted over the whole journal) fails.
    pub fn fail_step(self, nth: usize) -> Self {
        self.lock().fail_at = Some(nth);
        self
    }

    /// Every step whose journal line starts with `prefix` fails, e.g. `"qmp cont"`.
    pub fn fail(self, prefix: impl Into<String>) -> Self {
        self.lock().fail_prefixes.push(prefix.into());
        self
    }

    /// The guest ignores the ACPI power button (like a guest without ACPI, or a hung one).
    pub fn ignoring_powerdown(self) -> Self {
        self.lock().ignore_powerdown = true;
        self
    }

    /// QEMU does not exit on SIGTERM (only SIGKILL ends it).
    pub fn ignoring_term(self) -> Self {
        self.lock().ignore_term = true;
        self
    }

    /// Spawned processes exit at once, before opening their QMP socket (like a QEMU refusing
    /// an option).
    pub fn dying_at_start(self) -> Self {
        self.lock().die_at_start = true;
        self
    }

    /// QEMU exits while answering `cont`, dropping the QMP connection (like a QEMU that opened
    /// its QMP socket before finding an option it cannot honour).
    pub fn exiting_on_cont(self) -> Self {
        self.lock().exit_on_cont = true;
        self
    }

    /// The guest stops in `status` as soon as it runs (e.g. `internal-error`).
    pub fn crashing_guest(self, status: &str) -> Self {
        self.lock().after_cont = Some(status.to_owned());
        self
    }

    /// The host has `/dev/vhost-vsock`.
    pub fn with_vhost_vsock(self) -> Self {
        self.lock().files.insert(PathBuf::from(VHOST_VSOCK));
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

    /// A QEMU that is already running with `argv` (started by a previous daemon), in run state
    /// `status`, serving its QMP socket. Returns its pid.
    pub fn add_running(&self, argv: &[&str], status: &str) -> u32 {
        let mut fake = self.lock();
        let pid = fake.allocate_pid();
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        if let Some(socket) = qmp_socket(&argv) {
            fake.sockets.insert(socket.clone());
            fake.listening.insert(socket);
        }
        fake.processes.insert(
            pid,
            FakeProcess {
                argv,
                alive: true,
                status: status.to_owned(),
            },
        );
        pid
    }

    /// A process that is not QEMU (e.g. one that reused a dead VMM's pid).
    pub fn add_other_process(&self, argv: &[&str]) -> u32 {
        self.add_running(argv, "running")
    }

    /// Ends `pid` as `kill -9` from outside would: its socket file stays behind.
    pub fn crash(&self, pid: u32) {
        self.lock().exit(pid, false);
    }

    /// Every step so far, in order.
    pub fn journal(&self) -> Vec<String> {
        self.lock().journal.clone()
    }

    /// The command line `pid` was started with.
    pub fn argv(&self, pid: u32) -> Option<Vec<OsString>> {
        self.lock().processes.get(&pid).map(|p| p.argv.clone())
    }

    /// The regular files that exist now.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().files.iter().cloned().collect()
    }

    /// The socket files that exist now.
    /// The directories made and not removed (cgroups).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.lock().dirs.iter().cloned().collect()
    }

    /// What was last written to `path`.
    pub fn written(&self, path: &Path) -> Option<String> {
        self.lock()
            .written
            .get(path)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

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

    /// The binary the fake pretends to run: `/usr/bin/qemu-system-x86_64`, version 7.2.22.
    pub fn binary() -> QemuBinary {
        QemuBinary {
            path: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            version: Version::new(7, 2, 22),
        }
    }

    /// A [`Qemu`] backend with `accel` running on this fake, with short timeouts.
    pub fn backend(&self, accel: Accel) -> Qemu {
        Qemu::with_host(
            FakeQemu::binary(),
            accel,
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

    /// `pid` exits; QEMU removes its QMP socket when it exits by itself (`clean`), a killed
    /// one leaves it.
    fn exit(&mut self, pid: u32, clean: bool) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.alive = false;
            if let Some(socket) = qmp_socket(&process.argv) {
                self.listening.remove(&socket);
                if clean {
                    self.sockets.remove(&socket);
                }
            }
        }
    }

    fn serving(&self, socket: &Path) -> Option<u32> {
        if !self.listening.contains(socket) {
            return None;
        }
        self.processes
            .iter()
            .find(|(_, p)| p.alive && qmp_socket(&p.argv).is_some_and(|s| s == socket))
            .map(|(pid, _)| *pid)
    }
}

fn injected_io() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, INJECTED)
}

fn refused(desc: &str) -> QmpError {
    QmpError::Refused {
        class: "GenericError".into(),
        desc: desc.into(),
    }
}

impl ProcessHost for FakeQemu {
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
        if let Some(socket) = qmp_socket(&argv).filter(|_| alive) {
            state.sockets.insert(socket.clone());
            state.listening.insert(socket);
        }
        let status = if argv.iter().any(|a| a == "-S") {
            "prelaunch"
        } else {
            "running"
        };
        state.processes.insert(
            pid,
            FakeProcess {
                argv,
                alive,
                status: status.into(),
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

    fn is_stopped(&self, _pid: u32) -> bool {
        false
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
        match signal {
            // QEMU handles SIGTERM: it shuts down cleanly and removes its socket.
            Signal::Term if !state.ignore_term => state.exit(pid, true),
            Signal::Term => {}
            Signal::Kill => state.exit(pid, false),
            // banger pauses QEMU through QMP, never with signals.
            Signal::Stop | Signal::Cont => {}
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

    // A cgroup file system: directories, files written into them, and a directory that a
    // live process was moved into cannot be removed.
    fn create_dir(&self, dir: &Path, _mode: u32) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("mkdir {}", dir.display())) {
            return Err(injected_io());
        }
        state.dirs.insert(dir.to_owned());
        Ok(())
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("write {}", path.display())) {
            return Err(injected_io());
        }
        if !path.parent().is_some_and(|dir| state.dirs.contains(dir)) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        state.written.insert(path.to_owned(), contents.to_vec());
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self
            .lock()
            .dirs
            .iter()
            .filter(|d| d.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.lock()
            .written
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.step(format!("rmdir {}", dir.display())) {
            return Err(injected_io());
        }
        let member = state
            .written
            .get(&dir.join("cgroup.procs"))
            .and_then(|pid| String::from_utf8_lossy(pid).parse::<u32>().ok());
        if member.is_some_and(|pid| state.alive(pid)) {
            return Err(io::Error::from(io::ErrorKind::ResourceBusy));
        }
        state.dirs.remove(dir);
        state.written.retain(|path, _| !path.starts_with(dir));
        Ok(())
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
        Ok(())
    }

    /// QEMU launches never rename (only adopting a spare Firecracker does).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.lock()
            .step(format!("rename {} {}", from.display(), to.display()));
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the QEMU fake does not rename",
        ))
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        state.files.contains(path) || state.sockets.contains(path)
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
}

impl QmpTransport for FakeQemu {
    fn execute(
        &self,
        socket: &Path,
        command: &QmpCommand,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let mut state = self.lock();
        let fail = state.step(format!("qmp {}", command.execute));
        let Some(pid) = state.serving(socket) else {
            return Err(QmpError::Connect(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            )));
        };
        if fail {
            return Err(refused(INJECTED));
        }
        if command.execute == "cont" && state.exit_on_cont {
            state.exit(pid, true);
            return Err(QmpError::Closed);
        }
        let ignore_powerdown = state.ignore_powerdown;
        let after_cont = state.after_cont.clone();
        let Some(process) = state.processes.get_mut(&pid) else {
            return Err(QmpError::Timeout(timeout));
        };
        let mut exits = false;
        let answer = match command.execute.as_str() {
            "query-status" => Ok(json!({
                "status": process.status,
                "singlestep": false,
                "running": process.status == "running",
            })),
            "stop" => {
                if process.status == "running" {
                    process.status = "paused".into();
                }
                Ok(json!({}))
            }
            "cont" => match process.status.as_str() {
                "internal-error" | "guest-panicked" | "shutdown" => {
                    Err(refused("Resetting the Virtual Machine is required"))
                }
                _ => {
                    process.status = after_cont.unwrap_or_else(|| "running".into());
                    Ok(json!({}))
                }
            },
            "system_powerdown" => {
                exits = process.status == "running" && !ignore_powerdown;
                Ok(json!({}))
            }
            other => Err(QmpError::Refused {
                class: "CommandNotFound".into(),
                desc: format!("The command {other} has not been found"),
            }),
        };
        if exits {
            state.exit(pid, true);
        }
        answer
    }
}

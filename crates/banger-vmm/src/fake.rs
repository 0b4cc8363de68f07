//! A stand-in for the host a VMM runs on, for tests: [`FakeHost`] implements [`ProcessHost`] in
//! memory. It keeps a process table (pids counting up from the backend's first, liveness,
//! `SIGSTOP`/`SIGCONT`, a `SIGTERM` a test may have the VMM ignore, `SIGKILL`, the socket a
//! process serves and whether it still listens once the process exits), socket and regular
//! files, and the directories, contents, owners and mounts that jails and cgroups are made of.
//! Every step goes into one journal, and a test can fail the Nth step or every step that starts
//! with a given text.
//!
//! What a VMM adds on top is its [`FakeVmm`]: how its command line names its socket, what it
//! keeps per process, how it starts (Firecracker's jailer forks and exits), and, for QEMU, the
//! cgroup file system. [`crate::firecracker::fake::FakeFirecracker`] and
//! [`crate::qemu::fake::FakeQemu`] are this host with their VMM's API on it. Built for
//! banger-vmm's own tests, and for other crates' tests with the `fake` feature.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use banger_host::{ProcessError, Signal};

use crate::host::{ProcessHost, SocketWaitError};

/// What an injected failure says.
pub const INJECTED: &str = "injected failure";

/// What a VMM adds to the fake host.
pub trait FakeVmm: Default + fmt::Debug + Send + Sized + 'static {
    /// What the fake keeps about each process beyond its command line and liveness.
    type Process: fmt::Debug + Send;

    /// The pid the first process gets; the next ones count up.
    const FIRST_PID: u32;

    /// Whether the VMM removes its socket file when it exits by itself or on `SIGTERM` (a
    /// killed or crashed one leaves it behind either way).
    const REMOVES_SOCKET_ON_EXIT: bool;

    /// The socket a command line serves, `None` when `argv` is not this VMM's.
    fn api_socket(argv: &[OsString]) -> Option<PathBuf>;

    /// What the fake keeps about a process just started with `argv`.
    fn new_process(argv: &[OsString]) -> Self::Process;

    /// Starts `argv` as process `pid` (`alive` false when it is to die at once). A VMM that a
    /// wrapper starts (Firecracker under its jailer) overrides this.
    fn spawn(state: &mut HostState<Self>, pid: u32, argv: Vec<OsString>, alive: bool) {
        state.start(pid, argv, alive);
    }

    /// The sockets besides its API socket that `process` stops listening on when it exits.
    fn closes_on_exit(_process: &FakeProcess<Self::Process>) -> Vec<PathBuf> {
        Vec::new()
    }

    // The directories the VMM's host makes: a plain file system unless the VMM says otherwise
    // (QEMU's cgroups).

    /// Creates `dir` and its missing parents.
    fn create_dir(state: &mut HostState<Self>, dir: &Path, mode: u32) -> io::Result<()> {
        if state.step(format!("mkdir {} {mode:o}", dir.display())) {
            return Err(injected_io());
        }
        for ancestor in dir.ancestors() {
            state.dirs.insert(ancestor.to_owned());
        }
        Ok(())
    }

    /// Writes `path` whole.
    fn write_file(state: &mut HostState<Self>, path: &Path, contents: &[u8]) -> io::Result<()> {
        if state.step(format!("write {}", path.display())) {
            return Err(injected_io());
        }
        state.files.insert(path.to_owned());
        state.contents.insert(path.to_owned(), contents.to_vec());
        Ok(())
    }

    /// The entries directly inside `dir`, which must exist.
    fn list_dir(state: &HostState<Self>, dir: &Path) -> io::Result<Vec<PathBuf>> {
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

    /// Removes the directory `dir`.
    fn remove_dir(state: &mut HostState<Self>, dir: &Path) -> io::Result<()> {
        if state.step(format!("rmdir {}", dir.display())) {
            return Err(injected_io());
        }
        state.dirs.remove(dir);
        Ok(())
    }
}

/// A fake host running `V`; clones share their state.
#[derive(Debug)]
pub struct FakeHost<V: FakeVmm> {
    state: Arc<Mutex<HostState<V>>>,
}

impl<V: FakeVmm> Clone for FakeHost<V> {
    fn clone(&self) -> Self {
        FakeHost {
            state: Arc::clone(&self.state),
        }
    }
}

impl<V: FakeVmm> Default for FakeHost<V> {
    fn default() -> Self {
        FakeHost {
            state: Arc::new(Mutex::new(HostState::default())),
        }
    }
}

/// Everything the fake host knows; [`FakeVmm`] hooks read and change it.
#[derive(Debug)]
pub struct HostState<V: FakeVmm> {
    journal: Vec<String>,
    fail_at: Option<usize>,
    fail_prefixes: Vec<String>,
    next_pid: u32,
    pub(crate) processes: BTreeMap<u32, FakeProcess<V::Process>>,
    pub(crate) files: BTreeSet<PathBuf>,
    /// Socket files, whether or not anything listens on them.
    pub(crate) sockets: BTreeSet<PathBuf>,
    pub(crate) listening: BTreeSet<PathBuf>,
    ignore_term: bool,
    die_at_start: bool,
    /// What jails and cgroups are made of: directories, file contents, owners, bind mounts.
    pub(crate) dirs: BTreeSet<PathBuf>,
    pub(crate) contents: BTreeMap<PathBuf, Vec<u8>>,
    owners: BTreeMap<PathBuf, (u32, u32, u32)>,
    mounts: BTreeSet<PathBuf>,
    /// Hard links fail with `EXDEV` (the files are on another filesystem than the jails).
    cross_device: bool,
    /// The VMM's own state.
    pub(crate) vmm: V,
}

impl<V: FakeVmm> Default for HostState<V> {
    fn default() -> Self {
        HostState {
            journal: Vec::new(),
            fail_at: None,
            fail_prefixes: Vec::new(),
            next_pid: V::FIRST_PID,
            processes: BTreeMap::new(),
            files: BTreeSet::new(),
            sockets: BTreeSet::new(),
            listening: BTreeSet::new(),
            ignore_term: false,
            die_at_start: false,
            dirs: BTreeSet::new(),
            contents: BTreeMap::new(),
            owners: BTreeMap::new(),
            mounts: BTreeSet::new(),
            cross_device: false,
            vmm: V::default(),
        }
    }
}

/// One process of the fake host.
#[derive(Debug)]
pub struct FakeProcess<P> {
    pub(crate) argv: Vec<OsString>,
    /// The host path of the socket it serves.
    pub(crate) socket: Option<PathBuf>,
    pub(crate) alive: bool,
    /// Stopped by `SIGSTOP`: it does not answer until `SIGCONT`.
    pub(crate) stopped: bool,
    pub(crate) vmm: P,
}

impl<V: FakeVmm> FakeHost<V> {
    pub fn new() -> Self {
        FakeHost::default()
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

    /// The VMM does not exit on SIGTERM (only SIGKILL ends it).
    pub fn ignoring_term(self) -> Self {
        self.lock().ignore_term = true;
        self
    }

    /// Spawned processes exit at once, before opening their socket (like a VMM that cannot
    /// bind its socket, or refuses an option).
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

    /// Ends `pid` as `kill -9` from outside would: its socket files stay behind.
    pub fn crash(&self, pid: u32) {
        self.lock().exit(pid, false);
    }

    /// Every step so far, in order.
    pub fn journal(&self) -> Vec<String> {
        self.lock().journal.clone()
    }

    /// The command line of `pid` (alive or not).
    pub fn argv(&self, pid: u32) -> Option<Vec<OsString>> {
        self.lock().processes.get(&pid).map(|p| p.argv.clone())
    }

    /// The regular files that exist now.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().files.iter().cloned().collect()
    }

    /// The socket files that exist now.
    pub fn sockets(&self) -> Vec<PathBuf> {
        self.lock().sockets.iter().cloned().collect()
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

    /// Whether `pid` runs.
    pub fn alive(&self, pid: u32) -> bool {
        self.lock().alive(pid)
    }

    /// Whether `pid` is stopped by SIGSTOP now.
    pub fn stopped(&self, pid: u32) -> bool {
        self.lock().processes.get(&pid).is_some_and(|p| p.stopped)
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

    /// A process that is already running with `argv` (started by a previous daemon), serving
    /// the socket its command line names, with `vmm` as its VMM's state. Returns its pid.
    pub(crate) fn add_process(&self, argv: &[&str], vmm: V::Process) -> u32 {
        let mut state = self.lock();
        let pid = state.allocate_pid();
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let socket = V::api_socket(&argv);
        if let Some(socket) = &socket {
            state.sockets.insert(socket.clone());
            state.listening.insert(socket.clone());
        }
        state.processes.insert(
            pid,
            FakeProcess {
                argv,
                socket,
                alive: true,
                stopped: false,
                vmm,
            },
        );
        pid
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HostState<V>> {
        // A test that panicked while holding the lock already failed; keep the record readable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<V: FakeVmm> HostState<V> {
    /// Journals `step` and says whether it is to fail.
    pub(crate) fn step(&mut self, step: String) -> bool {
        self.journal.push(step);
        let n = self.journal.len();
        let step = &self.journal[n - 1];
        self.fail_at == Some(n) || self.fail_prefixes.iter().any(|p| step.starts_with(p))
    }

    pub(crate) fn allocate_pid(&mut self) -> u32 {
        let pid = self.next_pid;
        self.next_pid += 1;
        pid
    }

    pub(crate) fn alive(&self, pid: u32) -> bool {
        self.processes.get(&pid).is_some_and(|p| p.alive)
    }

    /// Starts `argv` as process `pid`, listening on its socket when `alive`.
    pub(crate) fn start(&mut self, pid: u32, argv: Vec<OsString>, alive: bool) {
        let socket = V::api_socket(&argv);
        if let Some(socket) = socket.clone().filter(|_| alive) {
            self.sockets.insert(socket.clone());
            self.listening.insert(socket);
        }
        let vmm = V::new_process(&argv);
        self.processes.insert(
            pid,
            FakeProcess {
                argv,
                socket,
                alive,
                stopped: false,
                vmm,
            },
        );
    }

    /// `pid` exits: it stops listening on its sockets, and one that exits by itself (`clean`)
    /// removes its socket file when its VMM does.
    pub(crate) fn exit(&mut self, pid: u32, clean: bool) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.alive = false;
            if let Some(socket) = &process.socket {
                self.listening.remove(socket);
                if clean && V::REMOVES_SOCKET_ON_EXIT {
                    self.sockets.remove(socket);
                }
            }
            for socket in V::closes_on_exit(process) {
                self.listening.remove(&socket);
            }
        }
    }

    /// The live process listening on `socket`.
    pub(crate) fn serving(&self, socket: &Path) -> Option<u32> {
        if !self.listening.contains(socket) {
            return None;
        }
        self.processes
            .iter()
            .find(|(_, p)| p.alive && p.socket.as_deref() == Some(socket))
            .map(|(pid, _)| *pid)
    }
}

pub(crate) fn injected_io() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, INJECTED)
}

impl<V: FakeVmm> ProcessHost for FakeHost<V> {
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
        V::spawn(&mut state, pid, argv, alive);
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
            // A fatal signal ends a stopped process too; a VMM shuts down on SIGTERM by
            // itself, SIGKILL gives it no chance to.
            Signal::Term if ignore_term => {}
            Signal::Term => state.exit(pid, true),
            Signal::Kill => state.exit(pid, false),
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
        V::create_dir(&mut self.lock(), dir, mode)
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
        V::remove_dir(&mut self.lock(), dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        V::list_dir(&self.lock(), dir)
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
        V::write_file(&mut self.lock(), path, contents)
    }
}

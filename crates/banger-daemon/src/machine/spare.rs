//! The spare Firecracker: one process started ahead of need, which the next `vm create` that
//! starts a Firecracker VM takes over instead of starting its own (see
//! [`banger_vmm::firecracker::spare`]). Starting Firecracker is a couple of milliseconds of
//! every start; with a spare they are spent before anyone asks.
//!
//! A spare is started as the VM it will become (`--id ID`, socket `ID.api`), ID being a fresh
//! VM id: so that `ps` and Firecracker's log lines name the VM a process serves, the id is
//! decided before the VM exists. A create [`SpareVmm::claim`]s the ready spare and records its
//! VM under the spare's id; the VM's start [`SpareVmm::take`]s it by that id, and whatever
//! ends a start or a create without a launch [`SpareVmm::forget`]s it (the process is ended).
//! Starting an existing VM (`vm start`, `vm restart`) starts its own Firecracker: a spare
//! cannot become a VM whose id is already on another command line.
//!
//! A keeper thread makes the spare when the daemon starts and a new one `REFILL_DELAY` after
//! each is claimed (so that the new process does not compete with the start that took the last
//! one). A spawn that fails is logged and not retried until a create asks again. At shutdown the
//! spares are released: processes killed, sockets and console logs removed. A daemon that died
//! leaves spares whose processes the next daemon's reconcile ends like any VMM no record owns
//! (their sockets are with the VMs'); [`SpareVmm::open`] removes the console logs they left.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use banger_vmm::Firecracker;
use banger_vmm::firecracker::Spare;

/// Where spares' console logs are, in the state dir (on the VMs' filesystem, so that a log
/// moves to its VM's directory with a rename).
pub const SPARE_DIR: &str = "spare";

/// How long after a spare was taken the next one is started.
pub const REFILL_DELAY: Duration = Duration::from_millis(300);

/// Makes the Firecracker backend a spare is started with (the binary checked now): `None` when
/// VMs start with another VMM here (no spare is wanted), an error when Firecracker cannot run.
pub type Backend = Box<dyn Fn() -> Result<Option<Firecracker>, String> + Send + Sync>;

/// The daemon's spare Firecracker, if it keeps one.
#[derive(Default)]
pub struct SpareVmm {
    shared: Option<Arc<Shared>>,
    keeper: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SpareVmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpareVmm")
            .field("enabled", &self.shared.is_some())
            .finish()
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    backend: Backend,
    socket_dir: PathBuf,
    log_dir: PathBuf,
    delay: Duration,
}

#[derive(Default)]
struct State {
    /// The spare, with the backend that started it (which releases it).
    ready: Option<(Firecracker, Spare)>,
    /// Spares claimed by creates and not yet taken by their starts, by VM id.
    claimed: BTreeMap<String, (Firecracker, Spare)>,
    /// When the keeper is to start one; `None` while one is ready or after a failed spawn.
    due: Option<Instant>,
    closed: bool,
}

impl SpareVmm {
    /// A daemon that keeps no spare.
    pub fn disabled() -> SpareVmm {
        SpareVmm::default()
    }

    /// A spare kept with `backend`, its socket in `socket_dir` (the VMs' socket directory) and
    /// its console log in `state_dir/spare`. Console logs left there by a daemon that died are
    /// removed. Nothing is started until [`SpareVmm::start`].
    pub fn open(backend: Backend, socket_dir: &Path, state_dir: &Path, delay: Duration) -> Self {
        let log_dir = state_dir.join(SPARE_DIR);
        if let Ok(entries) = fs::read_dir(&log_dir) {
            for entry in entries.flatten() {
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a spare Firecracker's old console log");
                }
            }
        }
        SpareVmm {
            shared: Some(Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                backend,
                socket_dir: socket_dir.to_owned(),
                log_dir,
                delay,
            })),
            keeper: Mutex::new(None),
        }
    }

    /// Starts the keeper, which starts the first spare at once. Called after reconcile, which
    /// would take a spare for a VMM no record owns.
    pub fn start(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        if let Err(e) = fs::create_dir_all(&shared.log_dir)
            .and_then(|()| fs::create_dir_all(&shared.socket_dir))
        {
            tracing::warn!(error = %e, "cannot create the spare Firecracker's directories; keeping none");
            return;
        }
        shared.lock().due = Some(Instant::now());
        let worker = shared.clone();
        match std::thread::Builder::new()
            .name("spare-vmm".into())
            .spawn(move || worker.keep())
        {
            Ok(handle) => *self.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle),
            Err(e) => tracing::warn!(error = %e, "cannot start the spare Firecracker's thread"),
        }
    }

    /// Claims the ready spare for a VM about to be created, and returns the id that VM is to
    /// have; the keeper starts the next spare. `None` when no spare is ready.
    pub fn claim(&self) -> Option<String> {
        let shared = self.shared.as_ref()?;
        let mut state = shared.lock();
        if state.closed {
            return None;
        }
        // The next spare is due, also when none was ready (the last spawn failed: a create
        // asking is when to try again).
        if state.due.is_none() {
            state.due = Some(Instant::now() + shared.delay);
            shared.wake.notify_all();
        }
        let (fc, spare) = state.ready.take()?;
        let id = spare.id.clone();
        state.claimed.insert(id.clone(), (fc, spare));
        Some(id)
    }

    /// The spare claimed for VM `vm_id`, for its launch to take over.
    pub fn take(&self, vm_id: &str) -> Option<Spare> {
        let shared = self.shared.as_ref()?;
        shared.lock().claimed.remove(vm_id).map(|(_, spare)| spare)
    }

    /// Ends the spare claimed for VM `vm_id`, if its start did not take it (a create or start
    /// that failed before its launch, a VM started on QEMU). Nothing when there is none.
    pub fn forget(&self, vm_id: &str) {
        let Some(shared) = &self.shared else {
            return;
        };
        let claimed = shared.lock().claimed.remove(vm_id);
        if let Some((fc, spare)) = claimed {
            release(&fc, spare);
        }
    }

    /// Whether a spare is ready now.
    pub fn is_ready(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|shared| shared.lock().ready.is_some())
    }

    /// Waits up to `timeout` for a spare to be ready (for tests and benchmarks).
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_ready() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Stops the keeper and releases the spares, ready and claimed. Later claims get nothing.
    pub fn stop(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let spares: Vec<(Firecracker, Spare)> = {
            let mut state = shared.lock();
            state.closed = true;
            shared.wake.notify_all();
            let claimed = std::mem::take(&mut state.claimed);
            state
                .ready
                .take()
                .into_iter()
                .chain(claimed.into_values())
                .collect()
        };
        if let Some(handle) = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
        for (fc, spare) in spares {
            release(&fc, spare);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The keeper: waits until a spare is due, starts it, and hands it over (or releases it
    /// when the daemon stopped meanwhile).
    fn keep(&self) {
        loop {
            {
                let mut state = self.lock();
                loop {
                    if state.closed {
                        return;
                    }
                    match state.due {
                        Some(due) if state.ready.is_none() => {
                            let now = Instant::now();
                            if now >= due {
                                break;
                            }
                            state = self
                                .wake
                                .wait_timeout(state, due - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        _ => {
                            state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                }
                state.due = None;
            }
            // A fresh VM id, in the store's format: the VM that claims it is recorded with it.
            let id = format!("{:016x}", rand::random::<u64>());
            let made = (self.backend)().and_then(|fc| {
                fc.map(|fc| {
                    fc.spawn_spare(&id, &self.socket_dir, &self.log_dir)
                        .map(|spare| (fc, spare))
                        .map_err(|e| banger_vmm::error_chain(&e))
                })
                .transpose()
            });
            match made {
                Ok(None) => {
                    tracing::debug!("VMs start with QEMU or jailed here: no spare Firecracker");
                }
                Ok(Some((fc, spare))) => {
                    let mut state = self.lock();
                    if state.closed || state.ready.is_some() {
                        drop(state);
                        release(&fc, spare);
                    } else {
                        state.ready = Some((fc, spare));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a spare Firecracker; starts start their own until one can be made");
                }
            }
        }
    }
}

fn release(fc: &Firecracker, spare: Spare) {
    let id = spare.id.clone();
    for failure in fc.release_spare(spare) {
        tracing::warn!(spare = %id, error = %failure, "cannot release a spare Firecracker");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_vmm::firecracker::fake::{FIRST_PID, FakeFirecracker};

    fn keeper(fake: &FakeFirecracker, dir: &Path) -> SpareVmm {
        let backend = fake.backend();
        SpareVmm::open(
            Box::new(move || Ok(Some(backend.clone()))),
            Path::new("/run/banger/vms"),
            dir,
            Duration::ZERO,
        )
    }

    #[test]
    fn a_claimed_spare_is_taken_by_its_vm_and_replaced_and_the_rest_released_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeFirecracker::new();
        let spares = keeper(&fake, dir.path());
        assert!(spares.claim().is_none(), "nothing before start");
        spares.start();
        assert!(spares.wait_ready(Duration::from_secs(5)));
        let id = spares.claim().unwrap();
        assert_eq!(id.len(), 16, "a VM id: {id}");
        assert!(spares.take("another-vm").is_none(), "only its VM takes it");
        let first = spares.take(&id).unwrap();
        assert!(spares.take(&id).is_none(), "taken once");
        assert_eq!(first.pid, FIRST_PID);
        assert_eq!(first.id, id);
        assert_eq!(
            first.api_socket,
            Path::new("/run/banger/vms").join(format!("{id}.api")),
            "where a launch of that VM puts its socket"
        );
        assert_eq!(
            first.console_log.parent(),
            Some(dir.path().join(SPARE_DIR).as_path())
        );
        assert!(spares.wait_ready(Duration::from_secs(5)), "replaced");
        // One claimed and never taken (its create failed), one ready: both end at stop.
        let _unused = spares.claim().unwrap();
        assert!(spares.wait_ready(Duration::from_secs(5)), "replaced again");
        assert_eq!(fake.running().len(), 3);
        spares.stop();
        assert_eq!(fake.running(), [FIRST_PID], "only the one taken runs");
        assert_eq!(fake.sockets(), std::slice::from_ref(&first.api_socket));
        assert!(spares.claim().is_none(), "nothing after stop");
    }

    #[test]
    fn a_forgotten_claim_ends_its_spare() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeFirecracker::new();
        let spares = keeper(&fake, dir.path());
        spares.start();
        assert!(spares.wait_ready(Duration::from_secs(5)));
        let id = spares.claim().unwrap();
        spares.forget(&id);
        assert!(!fake.alive(FIRST_PID));
        assert!(spares.take(&id).is_none());
        // Forgetting a VM that claimed nothing is harmless.
        spares.forget("no-such-vm");
        spares.stop();
        assert!(fake.running().is_empty());
        assert!(fake.sockets().is_empty());
    }

    #[test]
    fn a_failed_spawn_waits_for_the_next_claim() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeFirecracker::new().fail("spawn");
        let spares = keeper(&fake, dir.path());
        spares.start();
        assert!(!spares.wait_ready(Duration::from_millis(200)));
        let spawns = || {
            fake.journal()
                .iter()
                .filter(|s| s.starts_with("spawn"))
                .count()
        };
        assert_eq!(spawns(), 1, "not retried in a loop");
        assert!(spares.claim().is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        while spawns() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(spawns(), 2, "a claim asks again");
        spares.stop();
        assert!(fake.running().is_empty());
    }

    #[test]
    fn open_removes_console_logs_a_dead_daemon_left() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join(SPARE_DIR);
        fs::create_dir_all(&logs).unwrap();
        fs::write(logs.join("00000000000000aa.console.log"), "old").unwrap();
        let _spares = keeper(&FakeFirecracker::new(), dir.path());
        assert_eq!(fs::read_dir(&logs).unwrap().count(), 0);
    }

    #[test]
    fn a_disabled_keeper_has_nothing() {
        let spares = SpareVmm::disabled();
        spares.start();
        assert!(spares.claim().is_none());
        assert!(!spares.is_ready());
        spares.stop();
    }
}

//! Starting and stopping the daemon: private directories, the one-instance lock, logging,
//! the socket (mode 0600), the web console's listener next to it, and a graceful exit on
//! SIGTERM, SIGINT or `POST /v1/daemon/shutdown` that cancels running operations (which roll
//! back) before the process ends.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::paths::Paths;
use banger_api::{Timestamp, VmmKind};
use banger_store::{NetworkPool, Store};
use tokio::net::UnixListener;

use banger_host::network::NetConfig;

use crate::config::Config;
use crate::host::HostFacts;
use crate::machine::backend::Backend;
use crate::machine::pool::DiskPool;
use crate::machine::reconcile::reconcile;
use crate::machine::spare::{self, SpareVmm};
use crate::machine::{HostDeps, Machines, disks};
use crate::operation::Operations;
use crate::{Daemon, api, web};

/// How long running operations get to roll back when the daemon exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot find banger's directories: {0}")]
    Paths(#[from] banger_api::paths::PathsError),
    #[error("cannot prepare {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} belongs to another user (uid {owner}); refusing to use it", path.display())]
    NotOwner { path: PathBuf, owner: u32 },
    #[error("bangerd is already running (pid {pid}, lock {})", lock.display())]
    AlreadyRunning { pid: String, lock: PathBuf },
    #[error("cannot take the daemon lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Store(#[from] banger_store::StoreError),
    #[error("cannot read the host's CPU and memory figures: {0}")]
    Host(String),
    #[error("cannot listen on {}: {source}", path.display())]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot identify the daemon binary: {0}")]
    BuildId(std::io::Error),
}

/// A daemon serving in the current runtime.
#[derive(Debug)]
pub struct RunningDaemon {
    pub daemon: Arc<Daemon>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningDaemon {
    pub fn socket(&self) -> PathBuf {
        self.daemon.paths.socket()
    }

    /// Requests shutdown and waits until the server has finished.
    pub async fn stop(self) {
        self.daemon.request_shutdown();
        let _ = self.task.await;
    }

    /// Waits until the daemon exits by itself (signal or API request).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Prepares everything and starts serving on `paths.socket()`.
pub async fn start(paths: Paths) -> Result<RunningDaemon, DaemonError> {
    start_with(paths, HostDeps::real()).await
}

/// [`start`] with the host's side effects supplied by the caller (tests: fakes).
pub async fn start_with(paths: Paths, deps: HostDeps) -> Result<RunningDaemon, DaemonError> {
    private_dir(&paths.runtime_dir)?;
    private_dir(&paths.state_dir)?;
    let lock = take_lock(&paths.lock_file())?;
    let config = Config::load(&paths.config_file)?;
    let pool = NetworkPool::new(&config.subnet)?;
    let store = Store::open(&paths.database())?;
    let host = match deps.host {
        Some(host) => host,
        None => HostFacts::read().map_err(DaemonError::Host)?,
    };
    let admission = crate::admission::Admission::new(config.admission, host, &paths.config_file);
    match admission.limits() {
        Some(limits) => {
            tracing::info!(
                vcpus = limits.vcpus,
                memory_mib = limits.memory_bytes / banger_api::validate::MIB,
                "admission control: VMs holding resources may reserve up to these"
            );
            // Said once here rather than discovered at every create.
            if let Err(e) = admission.check_fits_idle(
                None,
                config.defaults.vcpus,
                config.defaults.memory_mib,
                crate::admission::Ask::Create,
            ) {
                tracing::warn!(
                    error = %e.message,
                    "a VM of the default size cannot start under [admission] in config.toml"
                );
            }
        }
        None => tracing::info!("admission control is off"),
    }
    let build_id = banger_api::build::own_build_id().map_err(DaemonError::BuildId)?;

    let socket = paths.socket();
    match std::fs::remove_file(&socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DaemonError::Listen {
                path: socket,
                source,
            });
        }
    }
    let listener = UnixListener::bind(&socket).map_err(|source| DaemonError::Listen {
        path: socket.clone(),
        source,
    })?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(
        |source| DaemonError::Listen {
            path: socket.clone(),
            source,
        },
    )?;

    // The console never stops the daemon from starting: its failure is logged and reported
    // in `GET /v1/daemon`.
    let (console, web_listener) = web::prepare(&config.web, &paths).await;

    let net = NetConfig::new(pool.gateway(), pool.prefix_len());
    let mut machines = Machines::new(
        deps,
        net,
        config.firecracker_bin.clone(),
        config.qemu_bin.clone(),
        tokio::runtime::Handle::current(),
    );
    machines.backends = machines
        .backends
        .clone()
        .with_jail(config.jail.clone(), paths.jail_dir())
        .with_qemu_settings(config.qemu);
    let default_image = store.find_image(&config.default_image).ok().flatten();
    let disks = DiskPool::open(
        &paths.state_dir,
        config.disk_pool,
        machines.runner.clone(),
        disks::default_disk_kinds(
            default_image.as_ref(),
            &default_image
                .as_ref()
                .map(|i| paths.image_dir(&i.id))
                .unwrap_or_default(),
            config.defaults.disk_bytes,
            config.defaults.work_disk_bytes,
        ),
    );
    let spare = if config.spare_vmm && config.vmm != VmmKind::Qemu {
        let backends = machines.backends.clone();
        let vmm = config.vmm;
        SpareVmm::open(
            // A jailed VM starts its own Firecracker in its jail, with its uid and cgroup limits:
            // none of that can be given to a process started before the VM is known.
            Box::new(move || match backends.for_start(vmm) {
                Ok((Backend::Firecracker(fc), _)) if fc.jail().is_none() => Ok(Some(fc)),
                Ok(_) => Ok(None),
                Err(e) => Err(e.message),
            }),
            &paths.vm_sockets_dir(),
            &paths.state_dir,
            spare::REFILL_DELAY,
        )
    } else {
        SpareVmm::disabled()
    };
    let dns = crate::dns::Dns::new(&config.dns, tokio::runtime::Handle::current());
    let (shutdown, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let ops = Operations::with_journal(paths.operations_dir());
    let daemon = Arc::new(Daemon {
        paths,
        config,
        store,
        pool,
        ops,
        host,
        admission,
        machines,
        disks,
        spare,
        warm: crate::warm::WarmPool::default(),
        build_id,
        web: console,
        dns,
        started_at: Timestamp::now(),
        started: Instant::now(),
        shutdown,
    });
    tracing::info!(
        socket = %socket.display(),
        pid = std::process::id(),
        build = %daemon.build_id,
        "bangerd serving"
    );

    // VMs the previous daemon left: adopted or cleaned up before any request can touch them.
    let d = daemon.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || reconcile(&d)).await {
        tracing::error!(error = %e, "reconcile panicked");
    }
    // What the previous daemon was doing when it died, now that what it made is gone.
    daemon.ops.recover();
    // Retired images whose last user went while no daemon ran (a VM forgotten by reconcile).
    let d = daemon.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || crate::image::collect_retired(&d)).await {
        tracing::error!(error = %e, "collecting retired images panicked");
    }
    // After reconcile, which ends a previous daemon's spare like any VMM no record owns.
    daemon.spare.start();
    // After reconcile too: the hidden VMs a previous daemon left are adopted or ended first.
    daemon.warm.start(&daemon);
    // A bridge a previous daemon brought up gets its names at once, not at the next start.
    let d = daemon.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || crate::dns::serve_if_bridge_up(&d)).await {
        tracing::error!(error = %e, "starting the DNS server panicked");
    }

    let web_task = web_listener.map(|listener| web::serve(daemon.clone(), listener));
    let router = api::router(daemon.clone());
    let d = daemon.clone();
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
        };
        let server = axum::serve(listener, router).with_graceful_shutdown(signal);
        let served = server.into_future();
        tokio::pin!(served);
        let mut stop_rx = d.shutdown.subscribe();
        // Biased towards the stop request: operations must be cancelled before the server
        // waits for its connections, because a client following an operation's stream keeps
        // its connection open until that operation ends.
        tokio::select! {
            biased;
            () = async { let _ = stop_rx.wait_for(|stop| *stop).await; } => {
                finish_operations(&d).await;
                if tokio::time::timeout(SHUTDOWN_GRACE, &mut served).await.is_err() {
                    tracing::warn!("connections still open at shutdown; closing them");
                }
            }
            result = &mut served => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "server failed");
                }
                finish_operations(&d).await;
            }
        }
        if let Some(task) = web_task {
            // It saw the same shutdown signal; browsers' open connections get a bounded wait.
            d.request_shutdown();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("web console connections still open at shutdown; closing them");
            }
        }
        // No mkfs.ext4 of the pool's outlives the daemon.
        let pool = d.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || {
            pool.warm.stop();
            pool.disks.stop();
            pool.spare.stop();
            // The VMs keep running; their published ports wait for the next daemon.
            pool.machines.forwards.close_all();
            pool.dns.stop(&*pool.machines.runner, &pool.machines.net);
        })
        .await
        {
            tracing::error!(error = %e, "stopping the disk pool or the spare Firecracker panicked");
        }
        let socket = d.paths.socket();
        if let Err(e) = std::fs::remove_file(&socket)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %socket.display(), error = %e, "cannot remove the socket");
        }
        drop(lock);
        tracing::info!("bangerd stopped");
    });
    Ok(RunningDaemon { daemon, task })
}

/// Cancels running operations and waits for them to roll back.
async fn finish_operations(d: &Daemon) {
    let cancelled = d.ops.cancel_all();
    if cancelled.is_empty() {
        return;
    }
    tracing::info!(count = cancelled.len(), "cancelling running operations");
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while d.ops.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `path` as a directory only the current user can enter, or checks an existing one
/// belongs to the current user.
fn private_dir(path: &Path) -> Result<(), DaemonError> {
    let dir_error = |source| DaemonError::Dir {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(dir_error)?;
    let meta = std::fs::metadata(path).map_err(dir_error)?;
    let me = rustix::process::getuid().as_raw();
    if meta.uid() != me {
        return Err(DaemonError::NotOwner {
            path: path.to_owned(),
            owner: meta.uid(),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(dir_error)?;
    }
    Ok(())
}

/// The one-instance lock: an exclusive `flock` held for the daemon's life, with the pid
/// written inside for the message a second daemon prints.
/// How long a start waits for a lock that may only be held by a child between fork and exec.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn take_lock(path: &Path) -> Result<File, DaemonError> {
    let lock_error = |source| DaemonError::Lock {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(lock_error)?;
    // A process forked (by this process, or by the daemon that just stopped) keeps a copy of
    // the lock until it execs, which closes it: a lock that frees within moments is not
    // another daemon's. But a lock whose file names a live daemon is that daemon's: waiting
    // for it would let this one take over the moment it stops (two first commands at once
    // each start a daemon; the loser, still waiting, outlived a `daemon stop` of the winner).
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    let locked = loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Err(rustix::io::Errno::WOULDBLOCK)
                if std::time::Instant::now() < deadline && !held_by_live_daemon(&mut file) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other,
        }
    };
    if let Err(e) = locked {
        if e == rustix::io::Errno::WOULDBLOCK {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(DaemonError::AlreadyRunning {
                pid: pid.trim().to_owned(),
                lock: path.to_owned(),
            });
        }
        return Err(lock_error(e.into()));
    }
    file.set_len(0).map_err(lock_error)?;
    file.rewind().map_err(lock_error)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_error)?;
    Ok(file)
}

/// Whether the lock file names a live process other than this one: the daemon that holds the
/// lock writes its pid there once it has it.
fn held_by_live_daemon(file: &mut File) -> bool {
    let mut text = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
        return false;
    }
    text.trim()
        .parse::<u32>()
        .is_ok_and(|pid| pid != std::process::id() && banger_host::pid_alive(pid))
}

fn init_logging(paths: &Paths) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let path = paths.log_file();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let filter = EnvFilter::try_from_env("BANGER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .map_err(|e| e.to_string())
}

const USAGE: &str = "\
bangerd: banger's daemon

Usage: bangerd [--version | --help]

The banger CLI starts bangerd when needed; run it by hand only to supervise it yourself
(it stays in the foreground). It serves the API on $XDG_RUNTIME_DIR/banger/bangerd.sock and
logs to $XDG_STATE_HOME/banger/bangerd.log (BANGER_LOG sets the level, e.g. debug).
";

/// The `bangerd` binary.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {}
        ["--version"] | ["-V"] => {
            println!("bangerd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        ["--help"] | ["-h"] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("bangerd: unexpected arguments {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    // Everything bangerd creates (database, images, sockets) is private to its user.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if let Some(path) = with_sbin(std::env::var_os("PATH")) {
        // SAFETY: no other thread exists yet (the runtime is built below), so nothing can read
        // the environment while it changes.
        unsafe { std::env::set_var("PATH", path) };
    }
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bangerd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = init_logging(&paths) {
        eprintln!("bangerd: cannot open the log: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bangerd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let running = match start(paths).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "bangerd cannot start");
                eprintln!("bangerd: {e}");
                return ExitCode::FAILURE;
            }
        };
        let daemon = running.daemon.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, shutting down");
            daemon.request_shutdown();
        });
        running.wait().await;
        ExitCode::SUCCESS
    })
}

/// Debian keeps the tools banger runs (`mkfs.ext4`, `debugfs`, `sysctl`, `nft`, `ip`) in
/// `/usr/sbin` and `/sbin`, which an ordinary user's PATH lacks. Returns the PATH with them
/// appended, or `None` when nothing is missing.
fn with_sbin(path: Option<std::ffi::OsString>) -> Option<std::ffi::OsString> {
    let current = path.unwrap_or_default();
    // An empty PATH splits into one empty entry, which would mean the current directory.
    let mut dirs: Vec<PathBuf> = if current.is_empty() {
        Vec::new()
    } else {
        std::env::split_paths(&current).collect()
    };
    let before = dirs.len();
    for sbin in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|d| d == Path::new(sbin)) {
            dirs.push(PathBuf::from(sbin));
        }
    }
    (dirs.len() != before).then(|| std::env::join_paths(dirs).unwrap_or(current))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop bangerd through its API");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbin_directories_are_appended_once() {
        let path = with_sbin(Some("/usr/bin:/bin".into())).unwrap();
        assert_eq!(path, "/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin");
        assert_eq!(
            with_sbin(Some(path)),
            None,
            "nothing to add the second time"
        );
        let root = with_sbin(Some("/usr/sbin:/usr/bin:/sbin".into())).unwrap();
        assert_eq!(root, "/usr/sbin:/usr/bin:/sbin:/usr/local/sbin");
        assert_eq!(
            with_sbin(None).unwrap(),
            "/usr/local/sbin:/usr/sbin:/sbin",
            "an unset PATH still finds the tools"
        );
    }
}

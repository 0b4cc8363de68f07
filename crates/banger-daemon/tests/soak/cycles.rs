//! banger's soak: a real bangerd (in-process, inside a throw-away network namespace) with the
//! real Firecracker binary and real taps, driven through create, start, stop and delete over
//! and over, read before and after: the daemon's memory, file descriptors and threads, the
//! state database's size, and what is left on the host (VM directories, sockets, Firecracker
//! processes, taps). Shared by `tests/soak.rs`, which asserts that nothing leaks, and
//! `benches/soak.rs`, which prints the figures of a long run. The guest is banger-vmm's tiny
//! test kernel: what is soaked is banger, not a guest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_api::paths::Paths;
use banger_api::{Client, CreateVmRequest, OperationState, RegisterImageRequest, VmAction};
use banger_daemon::RunningDaemon;
use banger_host::network::netns::Netns;

/// Runs `soak`, given the Firecracker binary, on a runtime whose every thread lives in a
/// throw-away network namespace (its name starting with `prefix`); prints `SKIP:` and returns
/// without root or Firecracker.
pub fn in_a_namespace<F: std::future::Future<Output = ()>>(
    prefix: &str,
    soak: impl FnOnce(PathBuf) -> F,
) {
    let Some(binary) = crate::fixture::firecracker_or_skip() else {
        return;
    };
    if !rustix::process::geteuid().is_root() {
        println!("SKIP: taps, bridges and nftables rules need root");
        return;
    }
    let netns = match Netns::create(prefix) {
        Ok(netns) => netns,
        Err(error) => {
            println!("SKIP: cannot create a network namespace: {error}");
            return;
        }
    };
    netns.enter().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(soak(binary.path));
    drop(runtime);
    drop(netns);
}

/// One reading of the daemon's process and the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: usize,
    pub db_bytes: u64,
    /// The database's write-ahead log: it grows to SQLite's checkpoint size and is reused.
    pub wal_bytes: u64,
    pub vm_dirs: usize,
    pub sockets: usize,
    pub firecrackers: usize,
    pub taps: usize,
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB, {} fds, {} threads, database {:.0} KiB (+ log {:.0} KiB); left: {} VM dirs, {} sockets, \
             {} Firecrackers, {} taps",
            self.rss_kib as f64 / 1024.0,
            self.fds,
            self.threads,
            self.db_bytes as f64 / 1024.0,
            self.wal_bytes as f64 / 1024.0,
            self.vm_dirs,
            self.sockets,
            self.firecrackers,
            self.taps
        )
    }
}

fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Reads the process (the daemon runs in it) and the host, once the daemon's idle blocking
/// threads have had `settle` to exit.
pub async fn read(paths: &Paths, firecracker: &Path, settle: Duration) -> Reading {
    tokio::time::sleep(settle).await;
    let db = |suffix: &str| {
        std::fs::metadata(format!("{}{suffix}", paths.database().display())).map_or(0, |m| m.len())
    };
    let fc = banger_vmm::Firecracker::new(banger_vmm::FirecrackerBinary {
        path: firecracker.to_owned(),
        version: banger_vmm::MIN_VERSION,
    });
    let links = std::process::Command::new("ip")
        .args(["-br", "link"])
        .output()
        .unwrap();
    Reading {
        rss_kib: status_field("VmRSS:"),
        fds: count(Path::new("/proc/self/fd")),
        threads: status_field("Threads:") as usize,
        db_bytes: db(""),
        wal_bytes: db("-wal"),
        vm_dirs: count(&paths.vms_dir()),
        sockets: count(&paths.vm_sockets_dir()),
        firecrackers: fc.scan(&paths.vm_sockets_dir()).processes.len(),
        taps: String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter(|l| l.starts_with("bt-"))
            .count(),
    }
}

/// A daemon on the real Firecracker in `dir`, with the tiny image registered as `tiny`, and
/// the guard that kills its Firecrackers when dropped (the soak failing half way included).
pub async fn daemon(
    dir: &Path,
    firecracker: &Path,
    kernel: &[u8],
    make_rootfs: impl FnOnce(&Path),
) -> (RunningDaemon, Client, Paths, crate::support::KillVmms) {
    let paths = Paths {
        config_file: dir.join("config/banger/config.toml"),
        state_dir: dir.join("state/banger"),
        runtime_dir: dir.join("run/banger"),
    };
    let vmms = crate::support::KillVmms {
        firecracker: firecracker.to_owned(),
        paths: paths.clone(),
    };
    std::fs::create_dir_all(paths.config_file.parent().unwrap()).unwrap();
    std::fs::write(
        &paths.config_file,
        format!(
            "vmm = \"firecracker\"\nfirecracker_bin = \"{}\"\njailer = false\n[defaults]\n\
             stop_timeout = \"200ms\"\ndisk = \"256M\"\nwork_disk = \"64M\"\n\
             [web]\nenabled = false\n",
            firecracker.display()
        ),
    )
    .unwrap();
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let kernel_path = files.join("vmlinux");
    std::fs::write(&kernel_path, kernel).unwrap();
    let rootfs: PathBuf = files.join("rootfs.ext4");
    make_rootfs(&rootfs);
    let daemon = banger_daemon::start_with(paths.clone(), banger_daemon::HostDeps::real())
        .await
        .unwrap();
    let client = Client::new(daemon.socket());
    let op = client
        .register_image(&RegisterImageRequest {
            publish: Vec::new(),
            name: "tiny".into(),
            kernel: kernel_path.display().to_string(),
            initrd: None,
            rootfs: rootfs.display().to_string(),
        })
        .await
        .unwrap();
    let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    (daemon, client, paths, vmms)
}

/// `n` cycles of create (which starts), stop, start, delete, each step checked; returns how
/// long they took.
pub async fn cycles(client: &Client, n: usize) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        let name = format!("soak-{}", i % 7);
        let created = client
            .create_vm(&CreateVmRequest {
                name: Some(name.clone()),
                image: Some("tiny".into()),
                vcpus: Some(1),
                memory_mib: Some(128),
                nat: Some(i % 2 == 0),
                ..Default::default()
            })
            .await
            .unwrap();
        let op = client
            .watch_operation(&created.operation.unwrap().id, |_| {})
            .await
            .unwrap();
        assert_eq!(op.state, OperationState::Succeeded, "cycle {i}: {op:?}");
        for action in [VmAction::Stop, VmAction::Start] {
            let op = client.vm_action(&name, action).await.unwrap();
            let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
            assert_eq!(op.state, OperationState::Succeeded, "cycle {i}: {op:?}");
        }
        client.delete_vm(&name).await.unwrap();
    }
    started.elapsed()
}

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
use banger_api::{Client, OperationState, VmAction};
use banger_daemon::RunningDaemon;
use banger_vmm::testing;

/// Runs `soak` in a throw-away network namespace (its name starting with `prefix`), given the
/// Firecracker binary; prints `SKIP:` and returns without root, nftables or Firecracker.
pub fn in_a_namespace<F: std::future::Future<Output = ()>>(
    prefix: &str,
    soak: impl FnOnce(PathBuf) -> F,
) {
    let binary = testing::firecracker_or_skip().map(|b| b.path);
    crate::support::in_a_namespace(binary, prefix, soak);
}

/// One reading of the daemon's process and the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub rss_kib: u64,
    /// What the allocator has handed out and not had back: the live heap, apart from what it
    /// keeps for reuse (which RSS counts).
    pub heap_kib: u64,
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
            "RSS {:.1} MiB (heap in use {:.1} MiB), {} fds, {} threads, database {:.0} KiB (+ log {:.0} KiB); left: {} VM dirs, {} sockets, \
             {} Firecrackers, {} taps",
            self.rss_kib as f64 / 1024.0,
            self.heap_kib as f64 / 1024.0,
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

/// glibc's count of the bytes in use across its arenas.
fn heap_in_use_kib() -> u64 {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks as u64 / 1024
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
        heap_kib: heap_in_use_kib(),
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
) -> (RunningDaemon, Client, Paths, crate::support::KillVmms) {
    crate::support::tiny_daemon(
        dir,
        firecracker,
        "jailer = false\n",
        "200ms",
        &testing::tiny_kernel(),
        |p| testing::ext4(p, 16),
    )
    .await
}

/// `n` cycles of create (which starts), stop, start, delete, each step checked; returns how
/// long they took.
pub async fn cycles(client: &Client, n: usize) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        let name = format!("soak-{}", i % 7);
        crate::support::create_tiny(client, &name, i % 2 == 0).await;
        for action in [VmAction::Stop, VmAction::Start] {
            let op = client.vm_action(&name, action).await.unwrap();
            let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
            assert_eq!(op.state, OperationState::Succeeded, "cycle {i}: {op:?}");
        }
        client.delete_vm(&name).await.unwrap();
    }
    started.elapsed()
}

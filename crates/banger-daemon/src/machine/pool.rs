//! Ready-made VM disks. Making an ext4 disk takes `mkfs.ext4` tens of milliseconds, more than
//! the rest of a `vm create` together; a disk that does not depend on the VM (a blank overlay
//! disk of a size, a work disk of an image's seed and a size) can be made before anyone asks.
//! The pool keeps `disk_pool` of each kind that creates have asked for (and of the defaults'
//! kinds from the start), under `pool/` in the state dir; a create takes one with a rename and
//! a background thread makes its replacement.
//!
//! Nothing half-made is ever taken: a disk is made under a `.making-` name and renamed into its
//! kind's directory when finished. At start the pool removes what a previous daemon left
//! half-made and every kind nobody is going to ask for; an image's disks go with the image;
//! `disk_pool = 0` removes the pool entirely. At shutdown the thread finishes the disk it is
//! making, so no `mkfs.ext4` outlives the daemon.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use banger_host::CommandRunner;
use banger_image::vmdisk;

/// Where the pool lives, in the state dir.
pub const POOL_DIR: &str = "pool";
const MAKING_PREFIX: &str = ".making-";
const DISK_SUFFIX: &str = ".ext4";

/// A kind of disk: everything it depends on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskKind {
    /// A blank overlay disk ([`vmdisk::build_blank_overlay_disk`]).
    Overlay { bytes: u64 },
    /// A work disk holding a copy of an image's work seed ([`vmdisk::build_work_disk`]).
    Work {
        image_id: String,
        /// The seed directory, `None` when the image has none.
        seed: Option<PathBuf>,
        /// The seed's fingerprint when it was looked at: a changed seed is another kind.
        fingerprint: String,
        bytes: u64,
    },
}

impl DiskKind {
    /// The kind's directory name in the pool.
    fn dir_name(&self) -> String {
        match self {
            DiskKind::Overlay { bytes } => format!("overlay-{bytes}"),
            DiskKind::Work {
                image_id,
                fingerprint,
                bytes,
                ..
            } => {
                let digest = fingerprint.trim_start_matches("sha256:");
                format!(
                    "work-{image_id}-{bytes}-{}",
                    &digest[..digest.len().min(16)]
                )
            }
        }
    }

    /// Makes a disk of this kind at `path` (which must not exist); nothing is left on failure.
    pub fn make(&self, runner: &dyn CommandRunner, path: &Path) -> Result<(), vmdisk::VmDiskError> {
        match self {
            DiskKind::Overlay { bytes } => vmdisk::build_blank_overlay_disk(runner, path, *bytes),
            DiskKind::Work { seed, bytes, .. } => {
                vmdisk::build_work_disk(runner, seed.as_deref(), path, *bytes).map(drop)
            }
        }
    }

    fn same_image_and_size(&self, other: &DiskKind) -> bool {
        match (self, other) {
            (
                DiskKind::Work {
                    image_id: a,
                    bytes: x,
                    ..
                },
                DiskKind::Work {
                    image_id: b,
                    bytes: y,
                    ..
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

/// The pool of ready-made disks.
pub struct DiskPool {
    inner: Arc<Inner>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    dir: PathBuf,
    depth: usize,
    runner: Arc<dyn CommandRunner>,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// The kinds kept filled.
    wanted: BTreeSet<DiskKind>,
    stopping: bool,
    /// The last take or want: refills wait [`REFILL_DELAY`] after it.
    last_demand: Option<Instant>,
}

/// How long after the last create the pool starts making disks again, so its `mkfs.ext4`
/// does not compete with the VM that create is starting. The worker also runs at a lower
/// priority (nice 10) than the daemon.
pub const REFILL_DELAY: Duration = Duration::from_millis(300);

impl std::fmt::Debug for DiskPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskPool")
            .field("dir", &self.inner.dir)
            .field("depth", &self.inner.depth)
            .finish_non_exhaustive()
    }
}

impl DiskPool {
    /// Opens the pool in `state_dir`, keeping `depth` disks of each kind asked for, starting
    /// with `defaults`. Cleans what an earlier daemon left (see the module's description).
    pub fn open(
        state_dir: &Path,
        depth: u32,
        runner: Arc<dyn CommandRunner>,
        defaults: Vec<DiskKind>,
    ) -> DiskPool {
        let dir = state_dir.join(POOL_DIR);
        let depth = depth as usize;
        let wanted: BTreeSet<DiskKind> = if depth == 0 {
            BTreeSet::new()
        } else {
            defaults.into_iter().collect()
        };
        clean(&dir, &wanted);
        let inner = Arc::new(Inner {
            dir,
            depth,
            runner,
            state: Mutex::new(State {
                wanted,
                ..State::default()
            }),
            wake: Condvar::new(),
        });
        let worker = (depth > 0).then(|| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("disk-pool".into())
                .spawn(move || inner.run())
                .expect("cannot start the disk pool's thread")
        });
        DiskPool {
            inner,
            worker: Mutex::new(worker),
        }
    }

    /// Moves a ready disk of `kind` to `dest` (which must not exist, on the same filesystem);
    /// false when there is none (the caller makes one). The caller then asks for a replacement
    /// with [`want`](Self::want), once its own disks are made: the pool's `mkfs.ext4` must not
    /// compete with a create's.
    pub fn take(&self, kind: &DiskKind, dest: &Path) -> bool {
        if self.inner.depth == 0 {
            return false;
        }
        // Under the lock: the worker never renames into a directory being taken from.
        let mut state = self.inner.lock();
        state.last_demand = Some(Instant::now());
        self.inner.ready(kind).into_iter().any(|disk| {
            match fs::rename(&disk, dest) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(disk = %disk.display(), error = %e, "cannot take a disk from the pool");
                    false
                }
            }
        })
    }

    /// Keeps disks of `kind` ready from now on, starting [`REFILL_DELAY`] after the last
    /// demand. A work disk of the same image and size with another seed fingerprint is
    /// forgotten: the seed changed.
    pub fn want(&self, kind: &DiskKind) {
        if self.inner.depth == 0 {
            return;
        }
        let mut state = self.inner.lock();
        state.last_demand = Some(Instant::now());
        if state.wanted.contains(kind) {
            self.inner.wake.notify_all();
            return;
        }
        let stale: Vec<DiskKind> = state
            .wanted
            .iter()
            .filter(|k| k.same_image_and_size(kind))
            .cloned()
            .collect();
        for old in stale {
            state.wanted.remove(&old);
            remove_tree(&self.inner.dir.join(old.dir_name()));
        }
        state.wanted.insert(kind.clone());
        self.inner.wake.notify_all();
    }

    /// Removes the ready disks made from image `image_id` and stops making them.
    pub fn forget_image(&self, image_id: &str) {
        let mut state = self.inner.lock();
        let gone: Vec<DiskKind> = state
            .wanted
            .iter()
            .filter(|k| matches!(k, DiskKind::Work { image_id: id, .. } if id == image_id))
            .cloned()
            .collect();
        for kind in gone {
            state.wanted.remove(&kind);
        }
        drop(state);
        let prefix = format!("work-{image_id}-");
        for entry in fs::read_dir(&self.inner.dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_tree(&entry.path());
            }
        }
    }

    /// How many disks of `kind` are ready.
    pub fn ready(&self, kind: &DiskKind) -> usize {
        self.inner.ready(kind).len()
    }

    /// Waits until every kind asked for has its disks, or `timeout` passes; true when filled.
    /// For tests and benchmarks.
    pub fn wait_filled(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let filled = {
                let state = self.inner.lock();
                state
                    .wanted
                    .iter()
                    .all(|k| self.inner.ready(k).len() >= self.inner.depth)
            };
            if filled {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Stops the worker after the disk it is making, and waits for it.
    pub fn stop(&self) {
        self.inner.lock().stopping = true;
        self.inner.wake.notify_all();
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(worker) = worker
            && worker.join().is_err()
        {
            tracing::error!("the disk pool's thread panicked");
        }
    }
}

impl Drop for DiskPool {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ready disks of `kind`.
    fn ready(&self, kind: &DiskKind) -> Vec<PathBuf> {
        let dir = self.dir.join(kind.dir_name());
        let mut disks: Vec<PathBuf> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(DISK_SUFFIX) && !n.starts_with('.'))
            })
            .collect();
        disks.sort();
        disks
    }

    /// The worker: makes a disk for the first kind short of disks, until stopped.
    fn run(&self) {
        // Children (mkfs.ext4) inherit the thread's priority.
        if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
            tracing::debug!(error = %e, "cannot lower the disk pool's priority");
        }
        loop {
            let kind = {
                let mut state = self.lock();
                loop {
                    if state.stopping {
                        return;
                    }
                    let short = state
                        .wanted
                        .iter()
                        .find(|k| self.ready(k).len() < self.depth)
                        .cloned();
                    let wait = state
                        .last_demand
                        .map(|t| REFILL_DELAY.saturating_sub(t.elapsed()))
                        .unwrap_or_default();
                    match short {
                        Some(kind) if wait.is_zero() => break kind,
                        Some(_) => {
                            state = self
                                .wake
                                .wait_timeout(state, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        None => state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            };
            self.make(&kind);
        }
    }

    fn make(&self, kind: &DiskKind) {
        let name = format!("{:016x}{DISK_SUFFIX}", rand::random::<u64>());
        let making = self.dir.join(format!("{MAKING_PREFIX}{name}"));
        let made = fs::create_dir_all(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                kind.make(&*self.runner, &making)
                    .map_err(|e| banger_vmm::error_chain(&e))
            });
        let mut state = self.lock();
        match made {
            Ok(()) if !state.stopping && state.wanted.contains(kind) => {
                let dir = self.dir.join(kind.dir_name());
                let placed =
                    fs::create_dir_all(&dir).and_then(|()| fs::rename(&making, dir.join(&name)));
                match placed {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(kind = ?kind, error = %e, "cannot place a ready disk in the pool");
                        remove_file(&making);
                        state.wanted.remove(kind);
                    }
                }
            }
            // Stopping, or the kind was forgotten (its image deleted) meanwhile.
            Ok(()) => remove_file(&making),
            Err(e) => {
                // Not retried until a create asks again: a broken mkfs must not spin.
                tracing::warn!(kind = ?kind, error = %e, "cannot make a disk for the pool");
                remove_file(&making);
                state.wanted.remove(kind);
            }
        }
        self.wake.notify_all();
    }
}

/// Removes half-made disks and the kinds not in `keep`; the whole pool when `keep` is empty.
fn clean(dir: &Path, keep: &BTreeSet<DiskKind>) {
    if keep.is_empty() {
        remove_tree(dir);
        return;
    }
    let keep: BTreeSet<String> = keep.iter().map(DiskKind::dir_name).collect();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !keep.contains(&name) {
            if path.is_dir() {
                remove_tree(&path);
            } else {
                remove_file(&path);
            }
            continue;
        }
        for disk in fs::read_dir(&path).into_iter().flatten().flatten() {
            if disk.file_name().to_string_lossy().starts_with('.') {
                remove_file(&disk.path());
            }
        }
    }
}

fn remove_tree(path: &Path) {
    match fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove pooled disks"),
    }
}

fn remove_file(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove a pooled disk"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::{FakeRunner, Matcher};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(20);

    fn overlay() -> DiskKind {
        DiskKind::Overlay { bytes: 1 << 20 }
    }

    fn work(image: &str, fingerprint: &str) -> DiskKind {
        DiskKind::Work {
            image_id: image.into(),
            seed: None,
            fingerprint: format!("sha256:{fingerprint}"),
            bytes: 2 << 20,
        }
    }

    /// Every file under `dir`, relative, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() {
                out.extend(
                    files(&entry.path())
                        .into_iter()
                        .map(|f| format!("{name}/{f}")),
                );
                if out.iter().all(|f| !f.starts_with(&format!("{name}/"))) {
                    out.push(format!("{name}/"));
                }
            } else {
                out.push(name);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_take_moves_a_ready_disk_and_the_pool_refills() {
        let state = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRunner::new());
        let pool = DiskPool::open(state.path(), 1, fake.clone(), vec![overlay()]);
        assert!(pool.wait_filled(WAIT));
        assert_eq!(pool.ready(&overlay()), 1);
        let ready = pool.inner.ready(&overlay()).remove(0);

        let dest = state.path().join("overlay.ext4");
        assert!(pool.take(&overlay(), &dest));
        assert!(dest.exists() && !ready.exists(), "moved, not copied");
        pool.want(&overlay());
        assert!(pool.wait_filled(WAIT));
        assert_eq!(pool.ready(&overlay()), 1, "refilled");
        assert_eq!(
            fake.calls_matching(Matcher::program("mkfs.ext4")).len(),
            2,
            "one disk made at the start, one after the take"
        );

        // A kind nobody asked for yet: not there, then kept.
        let other = work("img1", "aaaa");
        assert!(!pool.take(&other, &state.path().join("work.ext4")));
        assert!(!state.path().join("work.ext4").exists());
        pool.want(&other);
        assert!(pool.wait_filled(WAIT));
        assert_eq!(pool.ready(&other), 1);
        pool.stop();
        assert_eq!(
            files(&state.path().join(POOL_DIR)),
            [
                format!(
                    "overlay-1048576/{}",
                    pool.inner.ready(&overlay())[0]
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                ),
                format!(
                    "work-img1-2097152-aaaa/{}",
                    pool.inner.ready(&other)[0]
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                ),
            ]
        );
    }

    #[test]
    fn a_failing_mkfs_leaves_nothing_and_is_not_retried_until_asked_again() {
        let state = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRunner::new().fail_nth("mkfs.ext4", 1, "no space"));
        let pool = DiskPool::open(state.path(), 1, fake.clone(), vec![overlay()]);
        // The failed kind is dropped: the pool counts as filled with nothing in it.
        assert!(pool.wait_filled(WAIT));
        assert_eq!(pool.ready(&overlay()), 0);
        assert_eq!(files(&state.path().join(POOL_DIR)), Vec::<String>::new());
        assert_eq!(fake.calls_matching(Matcher::program("mkfs.ext4")).len(), 1);

        assert!(!pool.take(&overlay(), &state.path().join("o.ext4")));
        pool.want(&overlay());
        assert!(pool.wait_filled(WAIT));
        assert_eq!(pool.ready(&overlay()), 1, "asked again, made");
    }

    #[test]
    fn a_changed_seed_and_a_deleted_image_take_their_disks_along() {
        let state = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRunner::new());
        let pool = DiskPool::open(
            state.path(),
            2,
            fake,
            vec![work("img1", "aaaa"), work("img2", "cccc")],
        );
        assert!(pool.wait_filled(WAIT));
        assert_eq!(pool.ready(&work("img1", "aaaa")), 2);

        pool.want(&work("img1", "bbbb"));
        assert!(pool.wait_filled(WAIT));
        assert_eq!(
            pool.ready(&work("img1", "aaaa")),
            0,
            "the old seed's disks are gone"
        );
        assert_eq!(pool.ready(&work("img1", "bbbb")), 2);

        pool.forget_image("img1");
        assert_eq!(pool.ready(&work("img1", "bbbb")), 0);
        assert!(pool.wait_filled(WAIT));
        assert_eq!(pool.ready(&work("img1", "bbbb")), 0, "not made again");
        assert_eq!(
            pool.ready(&work("img2", "cccc")),
            2,
            "other images keep theirs"
        );
    }

    #[test]
    fn opening_removes_half_made_disks_and_unwanted_kinds() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join(POOL_DIR);
        let kept = dir.join(overlay().dir_name());
        fs::create_dir_all(&kept).unwrap();
        fs::create_dir_all(dir.join("work-gone-1-ff")).unwrap();
        fs::write(dir.join("work-gone-1-ff/1.ext4"), "").unwrap();
        fs::write(dir.join(".making-1.ext4"), "").unwrap();
        fs::write(kept.join(".making-2.ext4"), "").unwrap();
        fs::write(kept.join("3.ext4"), "").unwrap();
        let fake = Arc::new(FakeRunner::new());
        let pool = DiskPool::open(state.path(), 1, fake.clone(), vec![overlay()]);
        assert!(pool.wait_filled(WAIT));
        pool.stop();
        assert_eq!(files(&dir), ["overlay-1048576/3.ext4"]);
        assert!(fake.calls().is_empty(), "the kept disk was enough");

        // No pool: nothing of it stays.
        let off = DiskPool::open(state.path(), 0, fake.clone(), vec![overlay()]);
        assert!(!dir.exists());
        assert!(!off.take(&overlay(), &state.path().join("o.ext4")));
        off.want(&overlay());
        assert!(!dir.exists());
        assert!(fake.calls().is_empty());
    }
}

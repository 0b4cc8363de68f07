//! Snapshots of running Firecracker VMs, and the files a VM restored from one starts with.
//!
//! A snapshot is a directory under the state dir's `snapshots/`: Firecracker's VM state and
//! guest memory files, copies of the VM's overlay and work disks (reflinks where the filesystem
//! can, sparse copies otherwise), and the VM's agent token (a restored guest still has it until
//! it is told its new identity). The directory is written in place (Firecracker records the
//! copies' paths in the state file) and recorded once complete: a daemon killed half-way leaves
//! a directory no record owns, which the next daemon removes ([`sweep`]), and a VM that the
//! snapshot had paused with its drives pointed at the copies, which the next daemon points back
//! ([`recover_interrupted`]).
//!
//! A VM restored from a snapshot gets copies of the snapshot's disks and hard links to its
//! state and memory files in its own directory ([`restore_files`]); its next start restores
//! from them instead of booting, and removes them: Firecracker maps the memory file, so the
//! snapshot can be deleted while the VM runs, and the VM's later starts boot normally. Clones
//! share nothing with their snapshot or with each other once made.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::{
    ApiError, CloneVmRequest, CreateVmRequest, CreatedVm, ErrorCode, ImageRef, Snapshot,
    SnapshotOrigin, SnapshotVmRequest, Timestamp, Vm, VmState, VmmKind, validate,
};
use banger_vmm::firecracker::restore::{DriveCopy, SnapshotTarget};

use crate::Daemon;
use crate::machine::backend::Backend;
use crate::machine::{self, disks};

/// Firecracker's VM state file in a snapshot.
pub const STATE_FILE: &str = "vmstate";
/// The guest memory file in a snapshot.
pub const MEMORY_FILE: &str = "memory";
/// The source VM's agent token in a snapshot.
pub const TOKEN_FILE: &str = "agent-token";

/// In a VM's directory: the state its next start restores (then removed).
pub const RESTORE_STATE: &str = "restore.vmstate";
/// In a VM's directory: the memory its next start restores (then removed).
pub const RESTORE_MEMORY: &str = "restore.memory";
/// In a VM's directory: the token the restored guest answers to until it has its identity.
pub const RESTORE_TOKEN: &str = "restore.agent-token";
/// In a VM's directory while a snapshot of it is being written: its drives may point at the
/// snapshot's copies.
pub const SNAPSHOTTING: &str = ".snapshotting";
/// In a snapshot's directory: the snapshot is `vm clone`'s own, deleted once the clone's start
/// is over (or, after a daemon died before that, by the next daemon).
pub const CLONE_MARKER: &str = ".clone";

/// The drives a snapshot copies (the base root is read-only and shared, and kept while a
/// snapshot needs it). The config drive is copied too, though a restored VM gets its own: the
/// state file names every drive's file, and Firecracker opens them all when it loads the
/// snapshot, before a restore points them at the new VM's files; the source VM's own config
/// drive is gone once that VM is deleted (a warm pool's template VM is deleted at once). A VM
/// of an image whose init reads no config drive has none.
const COPIED_DRIVES: &[(&str, &str)] = &[
    ("overlay", disks::OVERLAY_DISK),
    ("work", disks::WORK_DISK),
    ("config", disks::CONFIG_DRIVE),
];

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no snapshot named {name:?}"))
        .with_hint("list snapshots with `banger snapshot list`")
}

/// `GET /v1/snapshots`.
pub fn list(d: &Daemon) -> Result<Vec<Snapshot>, ApiError> {
    Ok(d.store.list_snapshots()?)
}

/// `GET /v1/snapshots/{name}`.
pub fn show(d: &Daemon, name: &str) -> Result<Snapshot, ApiError> {
    d.store.find_snapshot(name)?.ok_or_else(|| not_found(name))
}

/// `DELETE /v1/snapshots/{name}`: the record, then the files. VMs restored from it keep what
/// they took (their own disk copies; a running one keeps its memory mapped until it stops).
pub fn delete(d: &Daemon, name: &str) -> Result<Snapshot, ApiError> {
    let snapshot = show(d, name)?;
    if let Some(vm) = restoring_from(d, &snapshot)? {
        return Err(ApiError::new(
            ErrorCode::InUse,
            format!(
                "VM {vm:?} starts from snapshot {:?}: its first start restores it",
                snapshot.name
            ),
        )
        .with_hint(format!(
            "delete the snapshot once {vm}'s start is over (`banger vm start {vm}` if it has not \
             started), or delete {vm}"
        )));
    }
    d.store.delete_snapshot(&snapshot.id)?;
    disks::remove_tree(&d.paths.snapshot_dir(&snapshot.id));
    crate::image::collect_retired(d);
    tracing::info!(snapshot = %snapshot.name, "snapshot deleted");
    Ok(snapshot)
}

/// The VM whose next (or current) start restores `snapshot`, if any: its restore files are
/// links to the snapshot's, and a restore reads the snapshot's disk copies.
fn restoring_from(d: &Daemon, snapshot: &Snapshot) -> Result<Option<String>, ApiError> {
    Ok(vm_restoring_from(d, snapshot)?.map(|vm| vm.name))
}

fn vm_restoring_from(d: &Daemon, snapshot: &Snapshot) -> Result<Option<Vm>, ApiError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(state) = fs::metadata(d.paths.snapshot_dir(&snapshot.id).join(STATE_FILE)) else {
        return Ok(None);
    };
    for vm in d.store.list_vms()? {
        if let Ok(link) = fs::metadata(d.paths.vm_dir(&vm.id).join(RESTORE_STATE))
            && (link.dev(), link.ino()) == (state.dev(), state.ino())
        {
            return Ok(Some(vm));
        }
    }
    Ok(None)
}

/// The default name of a snapshot of `vm` taken at `now`.
fn default_name(vm: &str, now: Timestamp) -> String {
    let secs = now.as_millis() / 1000;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let name = format!(
        "{vm}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    // A DNS label has at most 63 characters: keep the date, shorten the VM's name.
    if name.len() > 63 {
        let keep = 63 - (name.len() - vm.len());
        return format!("{}{}", &vm[..keep], &name[vm.len()..]);
    }
    name
}

/// The proleptic Gregorian date of `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The host CPU, as a snapshot records it: the vendor and model name the kernel reports.
pub fn cpu_model() -> String {
    let text = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    format!("{} {}", field("vendor_id"), field("model name"))
        .trim()
        .to_owned()
}

/// `POST /v1/vms/{name}/snapshot`: pauses the VM, writes its memory and state and copies of
/// its disks, resumes it (a VM the user paused stays paused), and records the snapshot.
pub fn create(d: &Daemon, vm_name: &str, req: SnapshotVmRequest) -> Result<Snapshot, ApiError> {
    create_as(d, vm_name, req, None)
}

/// The template of the warm pool of image `image`: a snapshot of the VM with `vm_id`, hidden
/// from `snapshot list`.
pub fn create_for_pool(d: &Daemon, vm_id: &str, image: &str) -> Result<Snapshot, ApiError> {
    let name = format!("pool-{:016x}", rand::random::<u64>());
    create_as(
        d,
        vm_id,
        SnapshotVmRequest { name: Some(name) },
        Some(image),
    )
}

fn create_as(
    d: &Daemon,
    vm_name: &str,
    req: SnapshotVmRequest,
    pool_image: Option<&str>,
) -> Result<Snapshot, ApiError> {
    let vm = crate::vm::find(d, vm_name)?;
    let name = match req.name {
        Some(name) => validate::name("snapshot", &name).map(|()| name)?,
        None => default_name(&vm.name, Timestamp::now()),
    };
    if d.store.find_snapshot(&name)?.is_some() {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("a snapshot named {name:?} already exists"),
        )
        .with_hint("pick another --name, or delete the old one with `banger snapshot delete`"));
    }
    let (fc, handle) = running_firecracker(d, &vm)?;
    let id = format!("{:016x}", rand::random::<u64>());
    // Written in place (Firecracker records the disk copies' paths in the state file); a
    // directory is a snapshot once it is recorded.
    let dir = d.paths.snapshot_dir(&id);
    fs::create_dir_all(d.paths.snapshots_dir())
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot create {}: {e}",
                d.paths.snapshots_dir().display()
            ))
        })
        .and_then(|()| disks::make_vm_dir(&dir))?;
    let vm_dir = d.paths.vm_dir(&vm.id);
    let marker = vm_dir.join(SNAPSHOTTING);
    let written = write(d, &vm, &fc, &handle, &dir, &marker);
    let _ = fs::remove_file(&marker);
    let (firecracker_version, size_bytes) = match written {
        Ok(done) => done,
        Err(e) => {
            disks::remove_tree(&dir);
            return Err(e);
        }
    };
    let snapshot = Snapshot {
        id,
        name,
        vm: SnapshotOrigin {
            id: vm.id.clone(),
            name: vm.name.clone(),
        },
        image: ImageRef {
            id: vm.image.id.clone(),
            name: vm.image.name.clone(),
        },
        vcpus: vm.vcpus,
        memory_mib: vm.memory_mib,
        disk_bytes: vm.disk_bytes,
        work_disk_bytes: vm.work_disk_bytes,
        firecracker_version,
        cpu: cpu_model(),
        size_bytes,
        created_at: Timestamp::now(),
    };
    if let Err(e) = d.store.insert_snapshot_for(&snapshot, pool_image) {
        disks::remove_tree(&dir);
        return Err(e.into());
    }
    tracing::info!(vm = %vm.name, snapshot = %snapshot.name, bytes = snapshot.size_bytes, "snapshot taken");
    Ok(snapshot)
}

/// The Firecracker running `vm`, which must be running or paused.
fn running_firecracker(
    d: &Daemon,
    vm: &Vm,
) -> Result<(banger_vmm::Firecracker, banger_vmm::VmHandle), ApiError> {
    let runtime = match (&vm.runtime, vm.state) {
        (Some(runtime), VmState::Running | VmState::Paused) => runtime,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "VM {:?} is {}; only a running or paused VM can be snapshotted",
                    vm.name, vm.state
                ),
            )
            .with_hint(format!("start it with `banger vm start {}`", vm.name)));
        }
    };
    if runtime.vmm != VmmKind::Firecracker {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "VM {:?} runs on {}; snapshots are Firecracker only",
                vm.name, runtime.vmm
            ),
        )
        .with_hint("create the VM with `--vmm firecracker` on a host whose KVM can run it"));
    }
    match d.machines.backends.for_running(runtime.vmm)? {
        Backend::Firecracker(fc) => Ok((fc, machine::handle_of(vm, runtime))),
        Backend::Qemu(_) => Err(ApiError::internal("the Firecracker backend is QEMU")),
    }
}

/// Writes the snapshot of `vm` into `dir`; returns the Firecracker version that wrote it and
/// the bytes the directory takes.
fn write(
    d: &Daemon,
    vm: &Vm,
    fc: &banger_vmm::Firecracker,
    handle: &banger_vmm::VmHandle,
    dir: &Path,
    marker: &Path,
) -> Result<(String, u64), ApiError> {
    let vm_dir = d.paths.vm_dir(&vm.id);
    let version = fc
        .client(&handle.api_socket)
        .version()
        .map_err(|e| machine::vmm_error("snapshot", vm, &e))?
        .firecracker_version;
    let token = vm_dir.join(disks::AGENT_TOKEN);
    fs::copy(&token, dir.join(TOKEN_FILE))
        .map_err(|e| ApiError::internal(format!("cannot copy {}: {e}", token.display())))?;
    let target = SnapshotTarget {
        state: dir.join(STATE_FILE),
        memory: dir.join(MEMORY_FILE),
        drives: COPIED_DRIVES
            .iter()
            .filter(|(_, file)| vm_dir.join(file).exists())
            .map(|(id, file)| DriveCopy {
                id: (*id).to_owned(),
                live: vm_dir.join(file),
                copy: dir.join(file),
            })
            .collect(),
    };
    fs::write(marker, dir.display().to_string())
        .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", marker.display())))?;
    let mut copy_disks = || {
        for drive in &target.drives {
            banger_host::disk::copy_file(&drive.live, &drive.copy, &mut |_, _| {
                std::ops::ControlFlow::Continue(())
            })
            .map_err(|e| banger_vmm::error_chain(&e))?;
        }
        Ok(())
    };
    fc.snapshot_vm(handle, &target, &mut copy_disks)
        .map_err(|e| machine::vmm_error("snapshot", vm, &e))?;
    let size = banger_host::disk::allocated_bytes(dir)
        .map_err(|e| ApiError::internal(format!("cannot measure {}: {e}", dir.display())))?;
    Ok((version, size))
}

/// Refuses a restore of `snapshot` on this host when it was written by another Firecracker or
/// on another CPU: Firecracker's state format and the guest's CPU features must match.
pub fn check_restorable(d: &Daemon, snapshot: &Snapshot) -> Result<(), ApiError> {
    let fc = d.machines.backends.firecracker()?;
    let here = fc.binary().version.to_string();
    if here != snapshot.firecracker_version {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "snapshot {:?} was written by Firecracker {}; this host runs {here}",
                snapshot.name, snapshot.firecracker_version
            ),
        )
        .with_hint("restore it on a host with that Firecracker, or take a new snapshot here"));
    }
    let cpu = cpu_model();
    if cpu != snapshot.cpu {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "snapshot {:?} was taken on a {}; this host has a {cpu}",
                snapshot.name, snapshot.cpu
            ),
        )
        .with_hint("a guest's memory holds the CPU features it saw; restore it on that CPU"));
    }
    Ok(())
}

/// Puts into `vm_dir` (whose disks are already copies of the snapshot's) what a VM restored
/// from `snapshot` starts from: links to the state and memory files and the source's token,
/// which its start uses once and removes.
pub fn restore_files(d: &Daemon, snapshot: &Snapshot, vm_dir: &Path) -> Result<(), ApiError> {
    let dir = d.paths.snapshot_dir(&snapshot.id);
    for (from, to) in [
        (STATE_FILE, RESTORE_STATE),
        (MEMORY_FILE, RESTORE_MEMORY),
        (TOKEN_FILE, RESTORE_TOKEN),
    ] {
        let (from, to) = (dir.join(from), vm_dir.join(to));
        // A link costs nothing; another filesystem gets a copy.
        fs::hard_link(&from, &to)
            .or_else(|_| fs::copy(&from, &to).map(drop))
            .map_err(|e| {
                ApiError::internal(format!(
                    "cannot link {} to {}: {e}",
                    from.display(),
                    to.display()
                ))
            })?;
    }
    Ok(())
}

/// The restore files in `vm_dir`, when its next start is a restore.
pub fn pending_restore(vm_dir: &Path) -> Option<RestoreFiles> {
    let files = RestoreFiles::in_dir(vm_dir);
    (files.state.exists() && files.memory.exists()).then_some(files)
}

/// What a restoring start reads.
#[derive(Debug, Clone)]
pub struct RestoreFiles {
    pub state: PathBuf,
    pub memory: PathBuf,
    pub token: PathBuf,
}

impl RestoreFiles {
    /// Where they are in the VM directory `vm_dir`, whether they exist or not.
    pub fn in_dir(vm_dir: &Path) -> RestoreFiles {
        RestoreFiles {
            state: vm_dir.join(RESTORE_STATE),
            memory: vm_dir.join(RESTORE_MEMORY),
            token: vm_dir.join(RESTORE_TOKEN),
        }
    }

    /// Removes the state and memory links (a running restored VM keeps its memory mapped).
    pub fn consume(&self) {
        for file in [&self.state, &self.memory] {
            if let Err(e) = fs::remove_file(file)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %file.display(), error = %e, "cannot remove a restore file");
            }
        }
    }

    /// Removes the source's token too, once the guest has its own.
    pub fn finish(&self) {
        self.consume();
        let _ = fs::remove_file(&self.token);
    }
}

/// `POST /v1/vms` with `from_snapshot`: the request's resources must be the snapshot's (or
/// absent); returns the request to record, on Firecracker with the snapshot's image and sizes.
pub fn restore_request(
    d: &Daemon,
    snapshot: &Snapshot,
    mut req: CreateVmRequest,
) -> Result<CreateVmRequest, ApiError> {
    let mismatch = |what: &str, given: String, theirs: String| {
        ApiError::invalid(format!(
            "a VM restored from snapshot {:?} has its {what} ({theirs}); {given} was asked",
            snapshot.name
        ))
        .with_hint(
            "leave out --image, --vcpus, --memory, --disk and --work-disk with --from-snapshot",
        )
    };
    if let Some(image) = &req.image
        && image != &snapshot.image.name
        && image != &snapshot.image.id
    {
        return Err(mismatch(
            "image",
            image.clone(),
            snapshot.image.name.clone(),
        ));
    }
    let same = |given: Option<i64>, theirs: u64| given.is_none_or(|g| g == theirs as i64);
    if !same(req.vcpus, u64::from(snapshot.vcpus)) {
        return Err(mismatch(
            "vCPUs",
            format!("{:?}", req.vcpus.unwrap_or_default()),
            snapshot.vcpus.to_string(),
        ));
    }
    if !same(req.memory_mib, u64::from(snapshot.memory_mib)) {
        return Err(mismatch(
            "memory",
            format!("{} MiB", req.memory_mib.unwrap_or_default()),
            format!("{} MiB", snapshot.memory_mib),
        ));
    }
    if !same(req.disk_bytes, snapshot.disk_bytes)
        || !same(req.work_disk_bytes, snapshot.work_disk_bytes)
    {
        return Err(mismatch(
            "disk sizes",
            "other sizes".into(),
            format!(
                "{} and {} bytes",
                snapshot.disk_bytes, snapshot.work_disk_bytes
            ),
        ));
    }
    if req.vmm == Some(VmmKind::Qemu) {
        return Err(ApiError::invalid(
            "a VM restored from a snapshot runs on Firecracker; --vmm qemu cannot restore one",
        ));
    }
    check_restorable(d, snapshot)?;
    req.image = Some(snapshot.image.id.clone());
    req.vcpus = Some(i64::from(snapshot.vcpus));
    req.memory_mib = Some(i64::from(snapshot.memory_mib));
    req.disk_bytes = Some(snapshot.disk_bytes as i64);
    req.work_disk_bytes = Some(snapshot.work_disk_bytes as i64);
    req.vmm = Some(VmmKind::Firecracker);
    Ok(req)
}

/// `POST /v1/vms/{name}/clone`: a snapshot of the VM, a new VM restored from it, and the
/// snapshot deleted again once the clone's start is over (its restore reads the snapshot's
/// files; afterwards the clone has its own).
pub fn clone(d: &Arc<Daemon>, source: &str, req: CloneVmRequest) -> Result<CreatedVm, ApiError> {
    validate::name("VM", &req.name)?;
    if d.store.find_vm(&req.name)?.is_some() {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("a VM named {:?} already exists", req.name),
        )
        .with_hint("pick another name, or delete the old VM with `banger vm delete`"));
    }
    // A clone that could not start is not worth pausing the source for its snapshot: refused
    // first. The create decides again, in the transaction that records the clone.
    let from = crate::vm::find(d, source)?;
    d.admission.check_fits_idle(
        Some(&req.name),
        from.vcpus,
        from.memory_mib,
        crate::admission::Ask::Create,
    )?;
    d.admission.check(
        crate::admission::Ask::Create,
        &banger_store::Demand {
            vm: &req.name,
            vcpus: from.vcpus,
            memory_mib: from.memory_mib,
        },
        d.store.reserved()?,
    )?;
    let snapshot = create(
        d,
        source,
        SnapshotVmRequest {
            name: Some(format!("clone-{:08x}", rand::random::<u32>())),
        },
    )?;
    let marker = d.paths.snapshot_dir(&snapshot.id).join(CLONE_MARKER);
    if let Err(e) = fs::write(&marker, "") {
        tracing::warn!(file = %marker.display(), error = %e, "cannot mark a clone's snapshot");
    }
    let created = crate::vm::create(
        d,
        CreateVmRequest {
            name: Some(req.name),
            nat: req.nat,
            from_snapshot: Some(snapshot.id.clone()),
            ..CreateVmRequest::default()
        },
    );
    // The restore opens the snapshot's disk copies (their paths are in its state file): the
    // snapshot goes once the clone's start is over.
    let start = created
        .as_ref()
        .ok()
        .and_then(|c| c.operation.as_ref())
        .map(|op| op.id.clone());
    let d2 = d.clone();
    let forget = move || {
        if let Some(op) = start {
            let deadline = std::time::Instant::now()
                + d2.config.defaults.ready_timeout
                + std::time::Duration::from_secs(60);
            while d2.ops.get(&op).is_some_and(|op| !op.state.is_finished())
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        if let Err(e) = delete(&d2, &snapshot.id) {
            tracing::warn!(snapshot = %snapshot.name, error = %e.message, "cannot delete a clone's snapshot");
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("clone-snapshot".into())
        .spawn(forget)
    {
        tracing::warn!(error = %e, "cannot wait for a clone's start to delete its snapshot");
    }
    created
}

/// Removes what a daemon killed during a snapshot or a clone left: snapshot directories no
/// record owns (a snapshot is recorded once its files are complete), and the snapshots of
/// clones whose daemon died before it deleted them. A clone not yet restored from its
/// snapshot (the daemon died before its start restored it) boots from its disk copies instead:
/// its restore files go with the snapshot.
pub fn sweep(d: &Daemon) {
    sweep_clones(d);
    let Ok(entries) = fs::read_dir(d.paths.snapshots_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let known = d
            .store
            .find_snapshot(&name)
            .ok()
            .flatten()
            .is_some_and(|s| s.id == name);
        if !known {
            tracing::info!(dir = %entry.path().display(), "removing an unfinished snapshot");
            disks::remove_tree(&entry.path());
        }
    }
}

fn sweep_clones(d: &Daemon) {
    let Ok(snapshots) = d.store.list_snapshots() else {
        return;
    };
    for snapshot in snapshots {
        let dir = d.paths.snapshot_dir(&snapshot.id);
        if !dir.join(CLONE_MARKER).exists() {
            continue;
        }
        if let Ok(Some(vm)) = vm_restoring_from(d, &snapshot) {
            tracing::info!(vm = %vm.name, "a clone whose restore a killed daemon did not start boots from its disks");
            RestoreFiles::in_dir(&d.paths.vm_dir(&vm.id)).finish();
        }
        tracing::info!(snapshot = %snapshot.name, "removing a clone's snapshot a killed daemon left");
        if let Err(e) = delete(d, &snapshot.id) {
            tracing::warn!(snapshot = %snapshot.name, error = %e.message, "cannot delete a clone's snapshot");
        }
    }
}

/// After a daemon was killed during a snapshot of the running VM `vm` (as its record was
/// before the adoption): its drives may still point at the (now removed) snapshot copies, so
/// they are pointed back at its own disks, and a jailed VM's chroot loses the links to the
/// snapshot's files (they would keep its memory and disk copies allocated). A VM the snapshot
/// paused runs again, as the user had it; one the user had paused stays paused. A drive that
/// cannot be pointed back keeps the VM paused, with the reason recorded: it must not run on a
/// removed copy.
pub fn recover_interrupted(d: &Daemon, vm: &Vm) {
    let marker = d.paths.vm_dir(&vm.id).join(SNAPSHOTTING);
    if !marker.exists() {
        return;
    }
    let Some(runtime) = &vm.runtime else {
        let _ = fs::remove_file(&marker);
        return;
    };
    if let Ok(Backend::Firecracker(fc)) = d.machines.backends.for_running(runtime.vmm) {
        let api_socket = Path::new(&runtime.api_socket);
        let api = fc.client(api_socket);
        let mut stuck = Vec::new();
        for (id, file) in COPIED_DRIVES {
            let own = d.paths.vm_dir(&vm.id).join(file);
            if !own.exists() {
                continue;
            }
            let path = fc.drive_path(api_socket, id, &own);
            match api.patch_drive(id, &path) {
                Ok(()) => {
                    tracing::info!(vm = %vm.name, drive = id, "drive pointed back after an interrupted snapshot")
                }
                Err(e) => stuck.push(format!(
                    "drive {id} may still use a removed snapshot copy: {}",
                    banger_vmm::error_chain(&e)
                )),
            }
        }
        if let Err(e) = fc.forget_snapshot_links(api_socket) {
            tracing::warn!(vm = %vm.name, error = %banger_vmm::error_chain(&e), "cannot take an interrupted snapshot's links out of the jail");
        }
        let handle = machine::handle_of(vm, runtime);
        if !stuck.is_empty() {
            let reason = format!(
                "a snapshot was interrupted: {}; stop the VM and start it again",
                stuck.join("; ")
            );
            tracing::error!(vm = %vm.name, error = %reason, "VM kept paused");
            if let Err(e) =
                d.store
                    .set_vm_run_state(&vm.id, VmState::Paused, Some(runtime), Some(&reason))
            {
                tracing::error!(vm = %vm.name, error = %e, "cannot record a VM kept paused");
            }
        } else if vm.state == VmState::Running
            && matches!(
                banger_vmm::Vmm::state(&fc, &handle),
                Ok(banger_vmm::InstanceState::Paused)
            )
        {
            match banger_vmm::Vmm::resume(&fc, &handle) {
                Ok(()) => {
                    tracing::info!(vm = %vm.name, "VM resumed after an interrupted snapshot");
                    if let Err(e) =
                        d.store
                            .set_vm_run_state(&vm.id, VmState::Running, Some(runtime), None)
                    {
                        tracing::error!(vm = %vm.name, error = %e, "cannot record a resumed VM");
                    }
                }
                Err(e) => {
                    tracing::warn!(vm = %vm.name, error = %banger_vmm::error_chain(&e), "cannot resume a VM after an interrupted snapshot")
                }
            }
        }
    }
    let _ = fs::remove_file(&marker);
}

/// Tells the guest of a VM just restored from a snapshot who it is now: the files of its own
/// config drive (hostname, network, SSH host key, agent token), the host's clock and fresh
/// entropy for its kernel's random generator, through its agent on `vsock` (which still
/// answers to the snapshot's token). Retries until the agent answers or `deadline`; an answer
/// that refuses is final. Returns what the guest says it did.
pub fn apply_identity(
    d: &Daemon,
    vm: &Vm,
    vsock: &Path,
    files: &RestoreFiles,
    deadline: std::time::Instant,
) -> Result<String, ApiError> {
    use banger_agent_protocol::client::{AgentClient, AgentError};
    use banger_agent_protocol::protocol::{IdentityFile, IdentityRequest};
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let token = fs::read_to_string(&files.token)
        .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", files.token.display())))?;
    let drive = d.paths.vm_dir(&vm.id).join(disks::CONFIG_DRIVE);
    let bytes = fs::read(&drive)
        .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", drive.display())))?;
    let entries = banger_init::config_drive::parse(&bytes)
        .map_err(|e| ApiError::internal(format!("VM {}'s config drive: {e}", vm.name)))?;
    let request = IdentityRequest {
        files: entries
            .into_iter()
            .skip(1)
            .filter_map(|entry| match entry {
                banger_init::config_drive::Entry::File { path, mode, data } => {
                    Some(IdentityFile::new(path, mode, &data))
                }
                banger_init::config_drive::Entry::Dir { .. } => None,
            })
            .collect(),
        time_unix_ms: Timestamp::now().as_millis() as u64,
        entropy: b64.encode(rand::random::<[u8; 32]>()),
    };
    let agent = AgentClient::new(
        machine::guest::GuestLink::HybridVsock(vsock.to_owned()),
        token.trim().to_owned(),
    );
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let attempt = d.machines.block_on(async {
            tokio::time::timeout(
                left.min(std::time::Duration::from_secs(5)),
                agent.apply_identity(&request),
            )
            .await
        });
        let seen = match attempt {
            Ok(Ok(applied)) => return Ok(identity_summary(&applied)),
            Ok(Err(e @ AgentError::Api { .. })) => {
                return Err(ApiError::internal(format!(
                    "VM {}'s guest refused its new identity: {e}",
                    vm.name
                )));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        if std::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "VM {}'s restored guest did not take its new identity in time; last: {seen}",
                    vm.name
                ),
            )
            .with_hint("the snapshot's guest agent must answer over vsock; its console log may say why it does not"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What a guest did with its identity, for the `identity` stage.
fn identity_summary(applied: &banger_agent_protocol::protocol::IdentityApplied) -> String {
    let mut parts = Vec::new();
    if let Some(hostname) = &applied.hostname {
        parts.push(format!("hostname {hostname}"));
    }
    if let Some(net) = &applied.network {
        parts.push(format!(
            "{} {}/{}",
            net.interface, net.address, net.prefix_len
        ));
    }
    if applied.host_key_changed {
        parts.push("new SSH host key".into());
    }
    if applied.token_changed {
        parts.push("new agent token".into());
    }
    parts.push(if applied.vmgenid {
        "random state reseeded (and VM generation ID)".into()
    } else {
        "random state reseeded (no VM generation ID device)".into()
    });
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_dns_labels_with_the_date() {
        // 2026-12-06 02:34:05 UTC
        let now = Timestamp::from_millis(1_796_524_445_000);
        assert_eq!(default_name("dev", now), "dev-20261206-023405");
        let long = "a".repeat(63);
        let name = default_name(&long, now);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-20261206-023405"));
        validate::name("snapshot", &name).unwrap();
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}

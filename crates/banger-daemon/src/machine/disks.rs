//! A VM's own files, made when it is created: the overlay disk (the writable layer of its root,
//! carrying its hostname, network configuration, banger's SSH key, its own SSH host key and its
//! agent token), the work disk mounted at `/root`, and the host-side copies banger needs later
//! (the host key's public half for an exact `known_hosts` entry, the agent token).

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use banger_api::{ApiError, Vm};
use banger_host::{CommandRunner, CommandSpec};
use banger_image::vmdisk::{self, GuestNetwork, SshHostKey, VmFiles};

/// Files in a VM's state directory.
pub const OVERLAY_DISK: &str = "overlay.ext4";
pub const WORK_DISK: &str = "work.ext4";
pub const CONSOLE_LOG: &str = "console.log";
pub const VMM_LOG: &str = "vmm.log";
pub const METRICS: &str = "metrics.json";
pub const HOST_KEY_PUB: &str = "ssh_host_ed25519_key.pub";
pub const AGENT_TOKEN: &str = "agent-token";

/// Where an image keeps the initial content of its VMs' work disks, when it has one.
pub const WORK_SEED_DIR: &str = "work-seed";

/// banger's own SSH key pair: the configured one, or `ssh/id_ed25519` in the state dir,
/// generated the first time a VM needs it. Returns the public key line.
pub fn banger_public_key(
    runner: &dyn CommandRunner,
    configured: Option<&Path>,
    state_dir: &Path,
) -> Result<String, ApiError> {
    // Concurrent creates must not both generate the key.
    static KEYGEN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = KEYGEN.lock().unwrap_or_else(|e| e.into_inner());
    let private = match configured {
        Some(path) => path.to_owned(),
        None => {
            let dir = state_dir.join("ssh");
            let path = dir.join("id_ed25519");
            if !path.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| {
                        ApiError::internal(format!("cannot create {}: {e}", dir.display()))
                    })?;
                keygen(runner, &path, "banger")?;
            }
            path
        }
    };
    let public = PathBuf::from(format!("{}.pub", private.display()));
    let line = fs::read_to_string(&public).map_err(|e| {
        ApiError::invalid(format!(
            "cannot read banger's SSH public key {}: {e}",
            public.display()
        ))
        .with_hint(match configured {
            Some(_) => "`ssh_key` in config.toml names a private key; its public half must be \
                        next to it with `.pub` appended (ssh-keygen -y -f KEY > KEY.pub)"
                .to_owned(),
            None => format!(
                "remove {} to have banger make a new key pair",
                private.display()
            ),
        })
    })?;
    Ok(line.trim().to_owned())
}

fn keygen(runner: &dyn CommandRunner, path: &Path, comment: &str) -> Result<(), ApiError> {
    runner
        .run(
            &CommandSpec::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(path.to_string_lossy()),
        )
        .map(drop)
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot make an SSH key: {}",
                banger_vmm::error_chain(&e)
            ))
            .with_hint("install the OpenSSH client (sudo apt-get install openssh-client)")
        })
}

/// A fresh ed25519 host key pair for one VM, made in `scratch` and removed from it.
fn host_key(runner: &dyn CommandRunner, scratch: &Path, vm: &Vm) -> Result<SshHostKey, ApiError> {
    let dir = tempfile::Builder::new()
        .prefix(".hostkey-")
        .tempdir_in(scratch)
        .map_err(|e| ApiError::internal(format!("cannot make a scratch directory: {e}")))?;
    let path = dir.path().join("key");
    keygen(runner, &path, &format!("root@{}", vm.name))?;
    let read = |p: &Path| {
        fs::read_to_string(p)
            .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", p.display())))
    };
    Ok(SshHostKey {
        algorithm: "ed25519".into(),
        private_key: read(&path)?,
        public_key: read(&dir.path().join("key.pub"))?,
    })
}

/// The host's DNS servers a guest can reach: `/etc/resolv.conf`'s nameservers, without
/// loopback ones (a local resolver on the host is not the guest's).
fn host_dns() -> Vec<Ipv4Addr> {
    fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .take(3)
        .collect()
}

/// Writes `contents` to `path` with mode 0600.
fn private_file(path: &Path, contents: &str) -> Result<(), ApiError> {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", path.display())))
}

/// Makes everything in `dir` (which exists and is empty) that VM `vm` of the image in
/// `image_dir` needs: both disks, the host key's public half and the agent token. Returns the
/// work seed's fingerprint. On failure the caller removes `dir`.
pub fn make_vm_files(
    runner: &dyn CommandRunner,
    vm: &Vm,
    image_dir: &Path,
    dir: &Path,
    authorized_key: &str,
) -> Result<String, ApiError> {
    let address: Ipv4Addr =
        vm.network.ip.parse().map_err(|_| {
            ApiError::internal(format!("VM {} has IP {:?}", vm.name, vm.network.ip))
        })?;
    let gateway: Ipv4Addr = vm.network.gateway.parse().map_err(|_| {
        ApiError::internal(format!(
            "VM {} has gateway {:?}",
            vm.name, vm.network.gateway
        ))
    })?;
    let disk_error = |what: &str, e: vmdisk::VmDiskError| {
        ApiError::internal(format!(
            "cannot make the VM's {what}: {}",
            banger_vmm::error_chain(&e)
        ))
        .with_hint("`banger doctor` checks that e2fsprogs (mkfs.ext4, debugfs) is installed")
    };
    let seed = image_dir.join(WORK_SEED_DIR);
    let seed = seed.is_dir().then_some(seed.as_path());
    // The work disk needs nothing of the rest: it is made alongside the host key and the
    // overlay disk (each is a process or two), which about halves what a create waits for. Both
    // finish before this returns, whatever fails, so the caller's cleanup finds no writer left.
    let (work, rest) = std::thread::scope(|scope| {
        let work = scope.spawn(|| {
            vmdisk::build_work_disk(runner, seed, &dir.join(WORK_DISK), vm.work_disk_bytes)
                .map_err(|e| disk_error("work disk", e))
        });
        let rest = (|| {
            let host_key = host_key(runner, dir, vm)?;
            let token = format!(
                "{:016x}{:016x}{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>(),
                rand::random::<u64>(),
                rand::random::<u64>()
            );
            let files = VmFiles {
                hostname: vm.name.clone(),
                network: GuestNetwork {
                    address,
                    prefix_len: vm.network.prefix_len,
                    gateway: Some(gateway),
                    dns: host_dns(),
                    mac: Some(vm.network.mac.clone()),
                },
                authorized_keys: authorized_key.to_owned(),
                ssh_host_key: host_key.clone(),
                agent_token: token.clone(),
                extra: Vec::new(),
            };
            vmdisk::build_overlay_disk(runner, dir, &files, &dir.join(OVERLAY_DISK), vm.disk_bytes)
                .map_err(|e| disk_error("overlay disk", e))?;
            Ok::<_, ApiError>((host_key, token))
        })();
        let work = work
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (work, rest)
    });
    let (host_key, token) = rest?;
    let fingerprint = work?;
    private_file(&dir.join(HOST_KEY_PUB), &host_key.public_key)?;
    private_file(&dir.join(AGENT_TOKEN), &token)?;
    Ok(fingerprint)
}

/// Creates a VM's state directory (mode 0700, must not exist).
pub fn make_vm_dir(dir: &Path) -> Result<(), ApiError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))
}

/// Removes a directory tree, logging (not failing) when that is impossible.
pub fn remove_tree(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!(dir = %dir.display(), error = %e, "cannot remove a VM's files"),
    }
}

/// Grows the work disk at `path` to `bytes`: checks the filesystem (`e2fsck -f -p`; exit 1
/// means it fixed something, which is fine), extends the file (sparse) and grows the filesystem
/// with `resize2fs`. Growing never moves data: when `resize2fs` fails the file is merely larger
/// than its filesystem, which the next attempt fixes, so nothing is rolled back.
pub fn grow_work_disk(runner: &dyn CommandRunner, path: &Path, bytes: u64) -> Result<(), ApiError> {
    let tool_error = |what: &str, e: &banger_host::RunError| {
        ApiError::internal(format!(
            "cannot {what} the work disk {}: {}",
            path.display(),
            banger_vmm::error_chain(e)
        ))
        .with_hint("`banger doctor` checks that e2fsprogs (e2fsck, resize2fs) is installed")
    };
    let fsck = CommandSpec::new("e2fsck")
        .args(["-f", "-p"])
        .arg(path.to_string_lossy());
    match runner.run(&fsck) {
        Ok(_) => {}
        Err(banger_host::RunError::Failed { code: Some(1), .. }) => {}
        Err(e) => return Err(tool_error("check", &e)),
    }
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(bytes))
        .map_err(|e| ApiError::internal(format!("cannot extend {}: {e}", path.display())))?;
    runner
        .run(&CommandSpec::new("resize2fs").arg(path.to_string_lossy()))
        .map_err(|e| tool_error("grow", &e))?;
    Ok(())
}

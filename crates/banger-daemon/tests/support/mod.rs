//! What the daemon tests share: boot files that pass registration's checks (a fake ELF vmlinux
//! with a version banner, a real ext4 made by mkfs.ext4, an initrd shaped like banger's, listing its init's features) and registering
//! an image through the real client. Each test file uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use banger_api::{Client, CreateVmRequest, Image, OperationState, RegisterImageRequest};
use banger_host::runner::{CommandRunner, CommandSpec, RealRunner};

/// Where a daemon whose home is `root` keeps its config, state and runtime files (laid out as
/// banger lays them out under the XDG directories), with `config` written as its config.toml.
pub fn home(root: &Path, config: &str) -> banger_api::paths::Paths {
    let paths = banger_api::paths::Paths {
        config_file: root.join("config/banger/config.toml"),
        state_dir: root.join("state/banger"),
        runtime_dir: root.join("run/banger"),
    };
    std::fs::create_dir_all(paths.config_file.parent().unwrap()).unwrap();
    std::fs::write(&paths.config_file, config).unwrap();
    paths
}

/// Writes (once) a kernel, a 16 MiB ext4 rootfs and an initrd into `dir`; returns their paths.
pub fn boot_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (kernel, rootfs, initrd) = (
        dir.join("vmlinux"),
        dir.join("rootfs.ext4"),
        dir.join("initrd"),
    );
    if !kernel.exists() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            &kernel,
            banger_test_support::fake_vmlinux("6.1.0-banger-test"),
        )
        .unwrap();
        std::fs::File::create(&rootfs)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        RealRunner
            .run(&CommandSpec::new("mkfs.ext4").args(["-q", "-F", rootfs.to_str().unwrap()]))
            .expect("mkfs.ext4 (e2fsprogs) is needed");
        // Shaped like banger's own: an image with it reads config drives.
        let mut cpio = banger_image::initramfs::Initramfs::new();
        cpio.file("init", 0o755, b"\x7fELF".to_vec()).unwrap();
        cpio.init_features().unwrap();
        std::fs::write(&initrd, cpio.to_bytes()).unwrap();
    }
    (kernel, rootfs, initrd)
}

/// The request to register image `name` from these files, publishing no ports.
pub fn register_request(
    name: &str,
    kernel: &Path,
    initrd: Option<&Path>,
    rootfs: &Path,
) -> RegisterImageRequest {
    RegisterImageRequest {
        publish: Vec::new(),
        name: name.into(),
        kernel: kernel.display().to_string(),
        initrd: initrd.map(|i| i.display().to_string()),
        rootfs: rootfs.display().to_string(),
    }
}

/// Registers an image named `name` from the boot files in `dir` and waits for it.
pub async fn register(client: &Client, dir: &Path, name: &str, with_initrd: bool) -> Image {
    let (kernel, rootfs, initrd) = boot_files(dir);
    let request = register_request(name, &kernel, with_initrd.then_some(&*initrd), &rootfs);
    let op = client.register_image(&request).await.unwrap();
    let done = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(done.state, OperationState::Succeeded, "{done:?}");
    serde_json::from_value(done.result.unwrap()).unwrap()
}

/// A tmpfs of a given size, mounted over a directory by [`SmallDisk::mount`] and unmounted
/// when dropped (lazily: the daemon may still hold files in it).
pub struct SmallDisk {
    bytes: u64,
    at: Option<PathBuf>,
}

impl SmallDisk {
    /// A filesystem of `bytes`, or `None` after a `SKIP:` line when this host cannot mount
    /// one (mounting needs root).
    pub fn new(bytes: u64) -> Option<SmallDisk> {
        if !rustix::process::geteuid().is_root() {
            banger_test_support::skip!("mounting a small filesystem for the state needs root");
            return None;
        }
        Some(SmallDisk { bytes, at: None })
    }

    pub fn mount(mut self, at: &std::path::Path) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = RealRunner
            .run(&CommandSpec::new("mount").args([
                "-t".to_owned(),
                "tmpfs".to_owned(),
                "-o".to_owned(),
                format!("size={}", self.bytes),
                "tmpfs".to_owned(),
                at.display().to_string(),
            ]))
            .expect("mount a tmpfs");
        assert!(out.success());
        self.at = Some(at.to_owned());
        self
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        SmallDisk::free_at(self.at.as_ref().unwrap())
    }

    /// Bytes free on the filesystem of `path`.
    pub fn free_at(path: &Path) -> u64 {
        let st = rustix::fs::statvfs(path).unwrap();
        st.f_bavail * st.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some(at) = &self.at {
            let _ =
                RealRunner.run(&CommandSpec::new("umount").args(["-l", &at.display().to_string()]));
        }
    }
}

/// Every file under `dir` but the state database's and the log's (which a full disk does not
/// roll back: they only grow by what the failure itself records).
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            if rel.contains(".db") || rel.ends_with(".log") {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// Kills, when dropped (a failing test included), every Firecracker serving a socket of this
/// test's daemon: in its runtime directory or, jailed, in its jails. VMMs outlive their daemon by
/// design, so a test that stops half way would otherwise leave them running.
pub struct KillVmms {
    pub firecracker: PathBuf,
    pub paths: banger_api::paths::Paths,
}

impl Drop for KillVmms {
    fn drop(&mut self) {
        let fc = banger_vmm::Firecracker::new(banger_vmm::FirecrackerBinary {
            path: self.firecracker.clone(),
            version: banger_vmm::MIN_VERSION,
        })
        .with_chroot_base(self.paths.jail_dir());
        for found in fc.scan(&self.paths.vm_sockets_dir()).processes {
            let _ = banger_host::signal(found.pid, banger_host::Signal::Kill);
        }
    }
}

/// Runs `test`, given the Firecracker binary `firecracker` found (else `SKIP:`), on a runtime
/// whose every thread lives in a throw-away network namespace (its name starting with
/// `prefix`): every command the daemon runs and every Firecracker it starts live there too.
/// Prints `SKIP:` and returns without root, nftables or a namespace.
pub fn in_a_namespace<F: std::future::Future<Output = ()>>(
    firecracker: Option<PathBuf>,
    prefix: &str,
    test: impl FnOnce(PathBuf) -> F,
) {
    let Some(firecracker) = firecracker else {
        return;
    };
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("taps, bridges and nftables rules need root");
        return;
    }
    if RealRunner
        .run(&CommandSpec::new("nft").arg("--version"))
        .is_err()
    {
        banger_test_support::skip!("nft (nftables) not found");
        return;
    }
    let netns = match banger_host::network::netns::Netns::create(prefix) {
        Ok(netns) => netns,
        Err(error) => {
            banger_test_support::skip!("cannot create a network namespace: {error}");
            return;
        }
    };
    // This thread, and every thread and process it starts from now on, lives in the namespace.
    netns.enter().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(test(firecracker));
    drop(runtime);
    drop(netns);
}

/// A real daemon in `dir` on the real Firecracker `firecracker` (VMs stop after
/// `stop_timeout`; `config` adds top-level keys), with the image `tiny` registered from
/// `kernel` and the root filesystem `make_rootfs` makes, and the guard that kills its
/// Firecrackers when dropped (a test failing half way included).
pub async fn tiny_daemon(
    dir: &Path,
    firecracker: &Path,
    config: &str,
    stop_timeout: &str,
    kernel: &[u8],
    make_rootfs: impl FnOnce(&Path),
) -> (
    banger_daemon::RunningDaemon,
    Client,
    banger_api::paths::Paths,
    KillVmms,
) {
    let paths = home(
        dir,
        &format!(
            "vmm = \"firecracker\"\nfirecracker_bin = \"{}\"\n{config}[defaults]\n\
             stop_timeout = \"{stop_timeout}\"\ndisk = \"256M\"\nwork_disk = \"64M\"\n\
             [web]\nenabled = false\n",
            firecracker.display()
        ),
    );
    let vmms = KillVmms {
        firecracker: firecracker.to_owned(),
        paths: paths.clone(),
    };
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let kernel_path = files.join("vmlinux");
    std::fs::write(&kernel_path, kernel).unwrap();
    let rootfs = files.join("rootfs.ext4");
    make_rootfs(&rootfs);
    let daemon = banger_daemon::start_with(paths.clone(), banger_daemon::HostDeps::real())
        .await
        .unwrap();
    let client = Client::new(daemon.socket());
    let op = client
        .register_image(&register_request("tiny", &kernel_path, None, &rootfs))
        .await
        .unwrap();
    let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    (daemon, client, paths, vmms)
}

/// Creates VM `name` of the image `tiny` (1 vCPU, 128 MiB; `nat` as given), which starts it,
/// and waits for the start to succeed.
pub async fn create_tiny(client: &Client, name: &str, nat: bool) {
    let created = client
        .create_vm(&CreateVmRequest {
            name: Some(name.into()),
            image: Some("tiny".into()),
            vcpus: Some(1),
            memory_mib: Some(128),
            nat: Some(nat),
            ..Default::default()
        })
        .await
        .unwrap();
    let op = client
        .watch_operation(&created.operation.unwrap().id, |_| {})
        .await
        .unwrap();
    assert_eq!(
        op.state,
        OperationState::Succeeded,
        "creating {name}: {op:?}"
    );
}

//! Boot proof: the Debian cloud kernel, extracted by `kernel`, with the initramfs `initramfs`
//! generates around `banger-init`, a minimal base root filesystem, and the per-VM overlay and
//! work disks `vmdisk` makes, boots under QEMU microvm (TCG) to the image's init, which
//! reports the hostname and IP it sees on the serial console.
//!
//! Prerequisites, each skipped with a visible `SKIP:` line when missing:
//! - `qemu-system-x86_64` (Debian: `qemu-system-x86`);
//! - the Debian kernel package: resolved with `apt-cache depends linux-image-cloud-amd64`,
//!   fetched with `apt-get download` and unpacked with `dpkg-deb -x` into a cache outside the
//!   repository (`$BANGER_TEST_CACHE`, default `/var/cache/banger-test`), reused by later runs.
//!
//! The guest's binaries (`banger-init` and the `guest_ready` example standing in for the
//! image's init) are built static with cargo into `<target>/boot-test`, or taken from
//! `$BANGER_INIT_BIN` / `$BANGER_GUEST_READY_BIN` when set.
//!
//! The guest's NIC is attached to a QEMU hub port with nothing else on the hub: it gets
//! configured, but no packet can leave the VM.

#[path = "qemu_guest/mod.rs"]
mod qemu_guest;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_host::{CommandRunner, CommandSpec, RealRunner, RunError};
use banger_image::initramfs::{self, InitramfsCompression};
use banger_image::kernel;
use banger_image::vmdisk::{self, GuestNetwork, SshHostKey, VmFiles};

const BOOT_DEADLINE: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

fn run(cmd: CommandSpec) -> Result<String, RunError> {
    RealRunner.run(&cmd).map(|o| o.stdout_lossy())
}

/// The concrete kernel package behind the `linux-image-cloud-amd64` metapackage, downloaded
/// and unpacked into the cache; returns the unpacked root.
fn debian_kernel(cache: &Path) -> Result<PathBuf, String> {
    let depends = run(CommandSpec::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))
        .map_err(|e| format!("cannot resolve the kernel package: {e}"))?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .ok_or_else(|| {
            format!("apt-cache names no linux-image-*-cloud-amd64 (run apt-get update?): {depends}")
        })?
        .to_owned();
    let dir = cache.join(&package);
    let root = dir.join("root");
    if root.join("boot").is_dir() {
        return Ok(root);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // apt-get download writes into the current directory.
    run(CommandSpec::new("sh").args([
        "-c",
        "cd \"$1\" && apt-get download -q \"$2\"",
        "sh",
        &dir.to_string_lossy(),
        &package,
    ]))
    .map_err(|e| format!("cannot download {package}: {e}"))?;
    let deb = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download left no .deb in {}", dir.display()))?;
    let partial = dir.join("root.partial");
    let _ = std::fs::remove_dir_all(&partial);
    run(CommandSpec::new("dpkg-deb")
        .arg("-x")
        .arg(deb.to_string_lossy())
        .arg(partial.to_string_lossy()))
    .map_err(|e| format!("cannot unpack {}: {e}", deb.display()))?;
    std::fs::rename(&partial, &root).map_err(|e| e.to_string())?;
    Ok(root)
}

/// The cargo target directory this test binary was built in (`<target>/debug/deps/<me>`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

/// Static `banger-init` and `guest_ready`, built with the documented command into a target
/// directory of their own (the outer cargo may still hold the main one).
fn guest_binaries() -> (PathBuf, PathBuf) {
    if let (Some(init), Some(ready)) = (
        std::env::var_os("BANGER_INIT_BIN"),
        std::env::var_os("BANGER_GUEST_READY_BIN"),
    ) {
        return (init.into(), ready.into());
    }
    let target = target_dir().join("boot-test");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let started = Instant::now();
    run(CommandSpec::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(workspace.join("Cargo.toml").to_string_lossy())
        .args([
            "-p",
            "banger-init",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--bin",
            "banger-init",
            "--example",
            "guest_ready",
        ])
        .env("CARGO_TARGET_DIR", target.to_string_lossy())
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=symbols",
        ))
    .unwrap_or_else(|e| panic!("building the static guest binaries failed: {e}"));
    println!(
        "built the static guest binaries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let release = target.join("x86_64-unknown-linux-gnu/release");
    (
        release.join("banger-init"),
        release.join("examples/guest_ready"),
    )
}

/// A minimal base image: the stand-in init as `/sbin/init` and the usual mount points.
fn base_rootfs(ready: &Path, stage: &Path, out: &Path) {
    for dir in [
        "sbin", "proc", "sys", "dev", "run", "root", "etc", "tmp", "var/tmp",
    ] {
        std::fs::create_dir_all(stage.join(dir)).unwrap();
    }
    std::fs::copy(ready, stage.join("sbin/init")).unwrap();
    std::fs::write(stage.join("etc/hostname"), "base-image\n").unwrap();
    std::fs::File::create(out)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    run(CommandSpec::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "banger-base", "-d"])
        .arg(stage.to_string_lossy())
        .args(["-E", "root_owner=0:0"])
        .arg(out.to_string_lossy()))
    .unwrap();
}

#[test]
fn debian_cloud_kernel_boots_to_the_image_init_under_qemu_tcg() {
    match run(CommandSpec::new("qemu-system-x86_64").arg("--version")) {
        Ok(_) => {}
        Err(RunError::NotFound { .. }) => {
            banger_test_support::skip!(
                "qemu-system-x86_64 not found (Debian package qemu-system-x86)"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    }
    let cache = std::env::var_os("BANGER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger-test"));
    let kernel_root = match debian_kernel(&cache) {
        Ok(root) => root,
        Err(why) => {
            banger_test_support::skip!("Debian cloud kernel unavailable: {why}");
            return;
        }
    };
    let vmlinuz = std::fs::read_dir(kernel_root.join("boot"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .expect("the kernel package has /boot/vmlinuz-*");
    let release = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();

    let (init_bin, ready_bin) = guest_binaries();
    // BANGER_BOOT_TEST_DIR keeps the boot files for a look after the test.
    let work = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("BANGER_BOOT_TEST_DIR").map(PathBuf::from);
    if let Some(kept) = &kept {
        let _ = std::fs::remove_dir_all(kept);
        std::fs::create_dir_all(kept).unwrap();
    }
    let dir = kept.as_deref().unwrap_or(work.path());

    let started = Instant::now();
    let vmlinux = dir.join("vmlinux");
    let extracted = kernel::extract_vmlinux(&vmlinuz, &vmlinux).unwrap();
    println!(
        "kernel: {} payload, {} bytes, version {:?}, extracted in {:.2} s",
        extracted
            .compression
            .map(|c| c.to_string())
            .unwrap_or("none".into()),
        extracted.bytes,
        extracted.info.version,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(extracted.info.version.as_deref(), Some(release.as_str()));

    let started = Instant::now();
    let initrd = dir.join("initrd");
    let report = initramfs::build_initramfs(
        &init_bin,
        &kernel_root.join("lib/modules").join(&release),
        initramfs::GUEST_MODULES,
        InitramfsCompression::Gzip,
        &initrd,
    )
    .unwrap();
    println!(
        "initramfs: {} bytes in {:.2} s; modules {:?}; built in {:?}",
        report.bytes,
        started.elapsed().as_secs_f64(),
        report.modules,
        report.builtin
    );

    let rootfs = dir.join("rootfs.ext4");
    base_rootfs(&ready_bin, &dir.join("base-stage"), &rootfs);

    let files = VmFiles {
        hostname: "bootproof".to_owned(),
        network: GuestNetwork {
            address: "172.30.99.7".parse().unwrap(),
            prefix_len: 24,
            gateway: Some("172.30.99.1".parse().unwrap()),
            dns: vec!["172.30.99.1".parse().unwrap()],
            search: Vec::new(),
            mac: Some("52:54:00:99:00:07".to_owned()),
        },
        authorized_keys: "ssh-ed25519 AAAAtest test@host".to_owned(),
        ssh_host_key: SshHostKey {
            algorithm: "ed25519".to_owned(),
            private_key: "not a real key".to_owned(),
            public_key: "ssh-ed25519 AAAAhost".to_owned(),
        },
        agent_token: "token".to_owned(),
        extra: Vec::new(),
    };
    let overlay = dir.join("overlay.ext4");
    vmdisk::build_overlay_disk(&RealRunner, dir, &files, &overlay, 64 * MIB).unwrap();
    let seed = dir.join("seed");
    std::fs::create_dir(&seed).unwrap();
    std::fs::write(seed.join("README"), "work disk\n").unwrap();
    let work_disk = dir.join("work.ext4");
    vmdisk::build_work_disk(&RealRunner, Some(&seed), &work_disk, 64 * MIB).unwrap();

    let mut machine = qemu_guest::Machine::new(&vmlinux, Some(&initrd))
        .banger_disks(&rootfs, &overlay, &work_disk);
    machine.mac = "52:54:00:99:00:07".to_owned();
    let mut guest = machine.boot();
    let started = guest.started;
    let ready = guest
        .wait_until(
            |line| line.contains("BANGER-READY") || line.contains("banger-init: FAILED"),
            started + BOOT_DEADLINE,
        )
        .filter(|(_, line)| line.contains("BANGER-READY"))
        .map(|(at, line)| (at - started, line));
    let switching = guest
        .seen("banger-init: switching root")
        .map(|(at, line)| (*at - started, line.clone()));
    // The guest powers itself off after the ready line; give it a moment, then make sure.
    let status = guest.wait_exit(Duration::from_secs(20));
    let log = guest.log();

    let (ready_at, ready_line) = ready.unwrap_or_else(|| {
        panic!(
            "no BANGER-READY line within {} s; console:\n{log}",
            BOOT_DEADLINE.as_secs()
        )
    });
    let (switch_at, switch_line) = switching.expect("banger-init printed its ready line");
    println!("{switch_line}  [wall {:.1} s]", switch_at.as_secs_f64());
    println!("{ready_line}  [wall {:.1} s]", ready_at.as_secs_f64());
    println!(
        "qemu {} after the ready line",
        match status {
            Some(status) => format!("exited by itself ({status})"),
            None => "was killed".to_owned(),
        }
    );
    assert!(
        ready_line.contains("hostname=bootproof"),
        "hostname from the overlay: {ready_line}\n{log}"
    );
    assert!(
        ready_line.contains("ip=172.30.99.7"),
        "IP from the overlay: {ready_line}\n{log}"
    );
    assert!(ready_line.contains("root=overlay"), "{ready_line}");
    assert!(ready_line.contains("work=/dev/vd"), "{ready_line}");
    assert!(ready_line.contains("rw=yes"), "{ready_line}");
    assert!(
        !log.contains("banger-init: FAILED"),
        "banger-init failed:\n{log}"
    );
}

//! banger's boot path against the alternatives issue #4 asked to measure, under QEMU microvm
//! with TCG, on the bootstrapped Debian image's own kernel:
//!
//! **A. Kernel start → the real root's init executed**, banger's initramfs against Debian's
//! initramfs-tools. Every variant boots the same kernel, the same `rootfs.ext4` (the image's,
//! plus one marker file) and the same devices (base, overlay and work disks, a NIC), with
//! bangerd's kernel command line. The real root's init is the marker `/banger-boot-mark`, a
//! short `sh` script that prints `/proc/uptime` (the guest's clock since kernel start) on
//! the console and powers the VM off.
//! - `banger`: the image's `initrd` (banger-init plus its modules, gzip), the normal banger
//!   layout: overlayfs of the read-only base and the VM's overlay disk, the work disk on
//!   `/root`, hostname and network applied; `banger.init=/banger-boot-mark`.
//! - `initramfs-tools`: Debian's own, as `apt-get install` of the kernel package makes it
//!   (`MODULES=most`, `COMPRESS=zstd`, BusyBox and udev inside), built with `mkinitramfs` in a
//!   throw-away chroot of the image's debootstrapped root; `root=/dev/vda ro
//!   init=/banger-boot-mark` (it knows nothing of banger's overlay).
//! - `initramfs-tools, MODULES=list`: the same, told to include only banger's module list:
//!   how much of the difference a trimmed initramfs-tools recovers.
//!
//! **B. QEMU start → sshd's banner on the guest's port**, the image's BusyBox init against
//! systemd. Both boot the image's kernel and initrd with a fresh overlay and work disk; the
//! `systemd` root is the same debootstrapped root with banger's guest files and agent, plus
//! `systemd-sysv` installed without recommends (systemd as `/sbin/init`, the agent as a
//! systemd unit so both inits start the same two services). sshd is detected by its banner,
//! read through a QEMU user-network forward from a loopback port.
//!
//! Runs of the variants alternate, `BENCH_RUNS` each (default 3); medians are printed, with
//! the machine's load average, since the two cores are shared. Needs root (debootstrap, chroot,
//! `mkfs.ext4 -d` of root-owned trees), `qemu-system-x86_64`, `debootstrap`, apt and the
//! Debian mirror for what is not cached; each missing one prints `SKIP:`. Downloads and the
//! chroot products are cached under `$BANGER_TEST_CACHE` (default `/var/cache/banger-test`):
//! the image's bootstrap cache in `bootstrap/`, the Debian initrds and the systemd root in
//! `boot-compare/`, keyed by every input.

#[path = "../tests/qemu_guest/mod.rs"]
mod qemu_guest;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_host::{CommandRunner, CommandSpec, Privilege, RealRunner, RunError};
use banger_image::bootstrap::{self, BootstrapSpec, Host, guest};
use banger_image::initramfs;
use banger_image::vmdisk::{self, GuestNetwork, SshHostKey, VmFiles};
use sha2::{Digest, Sha256};

use qemu_guest::{BANGERD_APPEND, Guest, Machine, Nic, USER_NET_GUEST_IP};

const MIB: u64 = 1 << 20;
const BOOT_DEADLINE: Duration = Duration::from_secs(240);
const MARK: &str = "banger-boot-mark";
const MARK_LINE: &str = "BANGER-BOOT-MARK";
/// The marker: the guest's clock at the moment the real root's init runs, then power off.
const MARK_SCRIPT: &str = "#!/bin/sh\nread up idle </proc/uptime\necho \"BANGER-BOOT-MARK uptime=$up\"\nexec /bin/busybox poweroff -f\n";
/// Bumped when what `boot-compare/` caches under a key changes shape.
const CACHE_FORMAT: &str = "1";
const CHROOT_PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

type BenchResult<T> = Result<T, String>;

fn run(cmd: CommandSpec) -> BenchResult<String> {
    RealRunner
        .run(&cmd)
        .map(|o| o.stdout_lossy())
        .map_err(|e| e.to_string())
}

fn missing(program: &str, probe: &[&str]) -> bool {
    match RealRunner.run(&CommandSpec::new(program).args(probe.iter().copied())) {
        Err(RunError::NotFound { .. }) => {
            banger_test_support::skip!("{program} not found");
            true
        }
        _ => false,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn load1() -> f64 {
    load()
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn span(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.2} .. {max:.2}")
}

fn sha_key(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A shell script run as root inside `root` (a throw-away copy of a debootstrapped root).
fn in_chroot(root: &Path, script: &str) -> BenchResult<String> {
    run(CommandSpec::new("chroot")
        .arg(root.display().to_string())
        .args([
            "/usr/bin/env",
            "-i",
            CHROOT_PATH,
            "DEBIAN_FRONTEND=noninteractive",
            "LC_ALL=C",
            "/bin/sh",
            "-ec",
            script,
        ]))
}

fn untar(tar: &Path, into: &Path) -> BenchResult<()> {
    std::fs::create_dir_all(into).map_err(|e| format!("create {}: {e}", into.display()))?;
    run(CommandSpec::new("tar")
        .args(["--numeric-owner", "--xattrs", "-xpf"])
        .arg(tar.display().to_string())
        .arg("-C")
        .arg(into.display().to_string()))
    .map(drop)
}

fn remove_tree(dir: &Path) {
    if dir.exists()
        && let Err(e) = run(CommandSpec::new("rm")
            .args(["-rf", "--one-file-system", "--"])
            .arg(dir.display().to_string()))
    {
        println!("warning: cannot remove {}: {e}", dir.display());
    }
}

/// Keeps apt's maintainer scripts from starting services inside a chroot.
const NO_SERVICES: &str =
    "printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d";

/// Debian's initramfs-tools images for `release`, cached: (`MODULES=most`, `MODULES=list`)
/// and a note of the versions used.
struct DebianInitrds {
    most: PathBuf,
    list: PathBuf,
    versions: String,
}

fn debian_initrds(
    cache: &Path,
    root_tar: &Path,
    root_key: &str,
    kernel_deb: &Path,
    release: &str,
    scratch: &Path,
) -> BenchResult<DebianInitrds> {
    let deb_name = kernel_deb
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let modules = initramfs::GUEST_MODULES.join(",");
    let key = sha_key(&[
        CACHE_FORMAT,
        "initramfs-tools",
        root_key,
        &deb_name,
        &modules,
    ]);
    let dir = cache.join(format!("initramfs-tools-{key}"));
    let result = DebianInitrds {
        most: dir.join("most.img"),
        list: dir.join("list.img"),
        versions: String::new(),
    };
    if dir.join("versions").is_file() {
        let versions = std::fs::read_to_string(dir.join("versions")).unwrap_or_default();
        println!("Debian initramfs-tools images: cached in {}", dir.display());
        return Ok(DebianInitrds { versions, ..result });
    }
    println!(
        "Debian initramfs-tools images: installing the kernel package with initramfs-tools in a \
         throw-away chroot (once; cached in {})",
        dir.display()
    );
    let started = Instant::now();
    let chroot = scratch.join("initramfs-tools-root");
    untar(root_tar, &chroot)?;
    let made = (|| {
        std::fs::copy(kernel_deb, chroot.join("tmp").join(&deb_name))
            .map_err(|e| format!("copy the kernel package into the chroot: {e}"))?;
        let list = initramfs::GUEST_MODULES.join("\\n");
        let versions = in_chroot(
            &chroot,
            &format!(
                "{NO_SERVICES}\n\
                 apt-get -q update >/dev/null\n\
                 apt-get -y -q install --no-install-recommends zstd /tmp/{deb_name} >/dev/null\n\
                 mkinitramfs -o /tmp/most.img {release}\n\
                 sed -i 's/^MODULES=.*/MODULES=list/' /etc/initramfs-tools/initramfs.conf\n\
                 printf '{list}\\n' >>/etc/initramfs-tools/modules\n\
                 mkinitramfs -o /tmp/list.img {release}\n\
                 dpkg-query -W initramfs-tools udev busybox klibc-utils zstd\n"
            ),
        )?;
        let partial = cache.join(format!(".initramfs-tools-{key}.partial"));
        remove_tree(&partial);
        std::fs::create_dir_all(&partial).map_err(|e| e.to_string())?;
        for name in ["most.img", "list.img"] {
            std::fs::copy(chroot.join("tmp").join(name), partial.join(name))
                .map_err(|e| format!("copy {name} out of the chroot: {e}"))?;
        }
        std::fs::write(partial.join("versions"), &versions).map_err(|e| e.to_string())?;
        std::fs::rename(&partial, &dir).map_err(|e| e.to_string())?;
        Ok::<String, String>(versions)
    })();
    remove_tree(&chroot);
    let versions = made?;
    println!("  made in {:.1} s", started.elapsed().as_secs_f64());
    Ok(DebianInitrds { versions, ..result })
}

/// The debootstrapped root with `systemd-sysv` installed (no recommends), as a cached tar:
/// returns its path and the versions installed.
fn systemd_root_tar(
    cache: &Path,
    root_tar: &Path,
    root_key: &str,
    scratch: &Path,
) -> BenchResult<(PathBuf, String)> {
    let key = sha_key(&[CACHE_FORMAT, "systemd-sysv", root_key]);
    let tar = cache.join(format!("systemd-root-{key}.tar"));
    let versions_file = cache.join(format!("systemd-root-{key}.versions"));
    if tar.is_file() && versions_file.is_file() {
        println!("systemd root: cached in {}", tar.display());
        let versions = std::fs::read_to_string(&versions_file).unwrap_or_default();
        return Ok((tar, versions));
    }
    println!(
        "systemd root: installing systemd-sysv in a throw-away chroot (once; cached as {})",
        tar.display()
    );
    let started = Instant::now();
    let chroot = scratch.join("systemd-root");
    untar(root_tar, &chroot)?;
    let made = (|| {
        let versions = in_chroot(
            &chroot,
            &format!(
                "{NO_SERVICES}\n\
                 apt-get -q update >/dev/null\n\
                 apt-get -y -q install --no-install-recommends systemd-sysv >/dev/null\n\
                 rm -f /usr/sbin/policy-rc.d\n\
                 rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb\n\
                 dpkg-query -W systemd systemd-sysv\n"
            ),
        )?;
        let partial = cache.join(format!(".systemd-root-{key}.partial.tar"));
        run(CommandSpec::new("tar")
            .args(["--numeric-owner", "--xattrs", "--one-file-system", "-C"])
            .arg(chroot.display().to_string())
            .arg("-cpf")
            .arg(partial.display().to_string())
            .arg("."))?;
        std::fs::rename(&partial, &tar).map_err(|e| e.to_string())?;
        std::fs::write(&versions_file, &versions).map_err(|e| e.to_string())?;
        Ok::<String, String>(versions)
    })();
    remove_tree(&chroot);
    let versions = made?;
    println!("  made in {:.1} s", started.elapsed().as_secs_f64());
    Ok((tar, versions))
}

/// `rootfs.ext4` of the systemd variant: the cached systemd root, banger's guest files (its
/// `/sbin/init` stays systemd's), the agent started by a unit, the marker; made the way the
/// bootstrap makes the image's.
fn systemd_rootfs(systemd_tar: &Path, agent: &Path, scratch: &Path, out: &Path) -> BenchResult<()> {
    let root = scratch.join("systemd-stage");
    untar(systemd_tar, &root)?;
    let made = (|| {
        let staged = scratch.join("systemd-guest-files");
        guest::stage(&staged, true).map_err(|e| format!("stage the guest files: {e}"))?;
        // systemd-sysv's init, poweroff, reboot and halt stay.
        for link in ["init", "poweroff", "reboot", "halt"] {
            std::fs::remove_file(staged.join("usr/sbin").join(link)).map_err(|e| e.to_string())?;
        }
        let units = staged.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&units).map_err(|e| e.to_string())?;
        std::fs::write(
            staged.join("etc/systemd/system/banger-agent.service"),
            format!(
                "[Unit]\nDescription=banger guest agent\n\n[Service]\n\
                 ExecStart=/{} --listen-vm-ip\nRestart=always\n\n[Install]\n\
                 WantedBy=multi-user.target\n",
                guest::AGENT_PATH
            ),
        )
        .map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(
            "/etc/systemd/system/banger-agent.service",
            units.join("banger-agent.service"),
        )
        .map_err(|e| e.to_string())?;
        write_mark(&staged.join(MARK))?;
        run(CommandSpec::new("cp")
            .args(["-R", "--preserve=mode", "--remove-destination", "--"])
            .arg(format!("{}/.", staged.display()))
            .arg(format!("{}/", root.display())))?;
        guest::install_agent(&RealRunner, Privilege::Root, &root, Some(agent))
            .map_err(|e| format!("install the agent: {e}"))?;
        run(CommandSpec::new("sh").args([
            "-c",
            "rm -f \"$1\"/etc/ssh/ssh_host_*",
            "sh",
            &root.display().to_string(),
        ]))?;
        let du = run(CommandSpec::new("du")
            .args(["-s", "-x", "-B1"])
            .arg(root.display().to_string()))?;
        let used = bootstrap::debian::du_total(&du).ok_or(format!("du printed {du:?}"))?;
        let file = std::fs::File::create(out).map_err(|e| e.to_string())?;
        file.set_len(bootstrap::rootfs_size(used))
            .map_err(|e| e.to_string())?;
        run(CommandSpec::new("mkfs.ext4")
            .args(["-q", "-F", "-L", bootstrap::ROOTFS_LABEL])
            .args(["-m", "0", "-i", "8192", "-d"])
            .arg(root.display().to_string())
            .args(["-E", "root_owner=0:0"])
            .arg(out.display().to_string()))?;
        Ok(())
    })();
    remove_tree(&root);
    made
}

fn write_mark(path: &Path) -> BenchResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, MARK_SCRIPT).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())
}

/// Puts the marker into an ext4 image's root directory with debugfs (no mount).
fn add_mark(scratch: &Path, rootfs: &Path) -> BenchResult<()> {
    let local = scratch.join(MARK);
    write_mark(&local)?;
    run(CommandSpec::new("debugfs")
        .args(["-w", "-R"])
        .arg(format!("write {} {MARK}", local.display()))
        .arg(rootfs.display().to_string()))?;
    let stat = run(CommandSpec::new("debugfs")
        .args(["-R", &format!("stat /{MARK}")])
        .arg(rootfs.display().to_string()))?;
    if !stat.contains("Mode:  0755") && !stat.contains("Mode:  00755") {
        return Err(format!(
            "the marker in {} is not 0755:\n{stat}",
            rootfs.display()
        ));
    }
    Ok(())
}

/// A fresh overlay and work disk for one boot.
fn vm_disks(
    image_dir: &Path,
    dir: &Path,
    host_key: &SshHostKey,
) -> BenchResult<(PathBuf, PathBuf)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let files = VmFiles {
        hostname: "bench".to_owned(),
        network: GuestNetwork {
            address: USER_NET_GUEST_IP,
            prefix_len: 24,
            gateway: Some("10.0.2.2".parse().unwrap()),
            dns: vec!["10.0.2.3".parse().unwrap()],
            search: Vec::new(),
            mac: Some("52:54:00:12:34:56".to_owned()),
        },
        authorized_keys: host_key.public_key.clone(),
        ssh_host_key: host_key.clone(),
        agent_token: "bench-token".to_owned(),
        extra: Vec::new(),
    };
    let overlay = dir.join("overlay.ext4");
    let work = dir.join("work.ext4");
    vmdisk::build_overlay_disk(&RealRunner, dir, &files, &overlay, 256 * MIB)
        .map_err(|e| format!("overlay disk: {e}"))?;
    vmdisk::build_work_disk(
        &RealRunner,
        Some(&image_dir.join(bootstrap::WORK_SEED_DIR)),
        &work,
        256 * MIB,
    )
    .map_err(|e| format!("work disk: {e}"))?;
    Ok((overlay, work))
}

/// The number in a kernel console line's `[   1.234567]` timestamp.
fn printk_seconds(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    rest[..rest.find(']')?].trim().parse().ok()
}

/// One boot of part A.
struct SwitchRun {
    /// The marker's `/proc/uptime`: kernel start → the real root's init, by the guest's clock.
    guest_s: f64,
    /// QEMU spawned → the marker's line arrived, by the host's clock.
    wall_s: f64,
    /// The kernel's timestamp of "Run /init as init process": the initramfs's init starts.
    run_init_s: f64,
    /// banger-init's own "switching root (N ms since kernel start)", for the banger variant.
    banger_init_s: Option<f64>,
    load1: f64,
}

fn boot_to_mark(name: &str, machine: &Machine) -> BenchResult<SwitchRun> {
    let load1 = load1();
    let mut guest = machine.boot();
    let deadline = guest.started + BOOT_DEADLINE;
    let found = guest.wait_until(
        |l| {
            l.contains(MARK_LINE)
                || l.contains("banger-init: FAILED")
                || l.contains("Kernel panic")
                || l.contains("Gave up waiting")
        },
        deadline,
    );
    let _ = guest.wait_exit(Duration::from_secs(10));
    let log = guest.log();
    let Some((at, line)) = found.filter(|(_, l)| l.contains(MARK_LINE)) else {
        return Err(format!("no {MARK_LINE} line; console:\n{log}"));
    };
    let guest_s: f64 = line
        .split("uptime=")
        .nth(1)
        .and_then(|u| u.trim().parse().ok())
        .ok_or_else(|| format!("cannot read the uptime in {line:?}"))?;
    let run_init_s = guest
        .seen("Run /init as init process")
        .and_then(|(_, l)| printk_seconds(l))
        .ok_or_else(|| format!("no \"Run /init\" line; console:\n{log}"))?;
    keep_console(name, &log);
    let banger_init_s = guest
        .seen("banger-init: switching root (")
        .and_then(|(_, l)| {
            let ms = l.split("switching root (").nth(1)?.split(' ').next()?;
            ms.parse::<f64>().ok().map(|ms| ms / 1000.0)
        });
    Ok(SwitchRun {
        guest_s,
        wall_s: (at - guest.started).as_secs_f64(),
        run_init_s,
        banger_init_s,
        load1,
    })
}

/// Appends a boot's console to `$BANGER_BENCH_CONSOLES/<variant>.log` when that is set.
fn keep_console(name: &str, log: &str) {
    use std::io::Write;
    let Some(dir) = std::env::var_os("BANGER_BENCH_CONSOLES") else {
        return;
    };
    let file: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = Path::new(&dir).join(format!("{file}.log"));
    let appended = std::fs::create_dir_all(&dir).and_then(|()| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(f, "{log}\n----- end of boot -----")
    });
    if let Err(e) = appended {
        println!(
            "warning: cannot keep the console in {}: {e}",
            path.display()
        );
    }
}

/// One boot of part B.
struct SshRun {
    banner_s: f64,
    switch_s: Option<f64>,
    load1: f64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn boot_to_ssh(name: &str, machine: &Machine, port: u16) -> BenchResult<SshRun> {
    let load1 = load1();
    let mut guest: Guest = machine.boot();
    let started = guest.started;
    let deadline = started + BOOT_DEADLINE;
    // The console is read on this thread while a second one polls the forwarded port.
    let poller = std::thread::spawn(move || {
        qemu_guest::ssh_banner(port, deadline, Duration::from_millis(50))
    });
    let switched = guest.wait_for("banger-init: switching root", deadline);
    let banner = poller.join().unwrap();
    let log = guest.log();
    drop(guest);
    keep_console(name, &log);
    let Some((at, banner)) = banner else {
        return Err(format!("sshd did not answer; console:\n{log}"));
    };
    if !banner.starts_with("SSH-2.0-") {
        return Err(format!("not an SSH banner: {banner:?}"));
    }
    Ok(SshRun {
        banner_s: (at - started).as_secs_f64(),
        switch_s: switched.map(|(t, _)| (t - started).as_secs_f64()),
        load1,
    })
}

fn main() {
    if Privilege::detect() != Privilege::Root {
        banger_test_support::skip!(
            "root not available (debootstrap, chroot and mkfs.ext4 -d need it)"
        );
        return;
    }
    if missing("qemu-system-x86_64", &["--version"])
        || missing("debootstrap", &["--version"])
        || missing("apt-cache", &["--version"])
        || missing("chroot", &["--version"])
        || missing("debugfs", &["-V"])
        || missing("ssh-keygen", &["-?"])
    {
        return;
    }
    let runs = banger_test_support::bench_runs(3);
    let cache = std::env::var_os("BANGER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger-test"));
    let compare_cache = cache.join("boot-compare");
    std::fs::create_dir_all(&compare_cache).unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    println!("load average at the start: {}", load());

    // The image, exactly as `banger image bootstrap debian` makes it (from the cache).
    let init = dir.join("banger-init");
    banger_guest::INIT.write_to(&init).unwrap();
    let agent = dir.join("banger-agent");
    banger_guest::AGENT.write_to(&agent).unwrap();
    let mut spec = BootstrapSpec::new("debian", bootstrap::DEFAULT_SUITE, init);
    spec.agent_binary = Some(agent.clone());
    let host = Host {
        runner: &RealRunner,
        privilege: Privilege::Root,
        cache_dir: cache.join("bootstrap"),
        staging_parent: dir.join("staging"),
        mounts_file: PathBuf::from("/proc/self/mounts"),
    };
    let image_dir = dir.join("image");
    println!("bootstrapping the image:");
    let started = Instant::now();
    if let Err(e) = bootstrap::bootstrap(
        "bench",
        &spec,
        &host,
        &image_dir,
        &qemu_guest::StagePrinter { started },
    ) {
        match e {
            bootstrap::BootstrapError::NoKernelPackage { .. } => {
                banger_test_support::skip!("{e} (apt-get update?)");
                return;
            }
            e => panic!("bootstrap failed: {e:?}\nhint: {:?}", e.hint()),
        }
    }
    let manifest = bootstrap::read_manifest(&image_dir).unwrap();
    let release = manifest.image.kernel_version.clone().unwrap();
    let root_key = spec.cache_key();
    let root_tar = cache.join("bootstrap/rootfs").join(format!(
        "{}-{}-{root_key}.tar",
        spec.suite,
        bootstrap::ARCH
    ));
    let kernel_deb = cache
        .join("bootstrap/kernel")
        .join(bootstrap::debian::deb_file_name(
            &manifest.inputs.kernel_package,
            &manifest.inputs.kernel_package_version,
            bootstrap::ARCH,
        ));
    for file in [&root_tar, &kernel_deb] {
        assert!(
            file.is_file(),
            "the bootstrap left no {} in its cache",
            file.display()
        );
    }
    let vmlinux = image_dir.join("vmlinux");
    let banger_initrd = image_dir.join("initrd");
    let rootfs = image_dir.join("rootfs.ext4");
    add_mark(dir, &rootfs).unwrap();

    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let debian = debian_initrds(
        &compare_cache,
        &root_tar,
        &root_key,
        &kernel_deb,
        &release,
        &scratch,
    )
    .unwrap_or_else(|e| panic!("building Debian's initramfs-tools images failed: {e}"));
    let (systemd_tar, systemd_versions) =
        systemd_root_tar(&compare_cache, &root_tar, &root_key, &scratch)
            .unwrap_or_else(|e| panic!("installing systemd-sysv failed: {e}"));
    let systemd_ext4 = dir.join("rootfs-systemd.ext4");
    systemd_rootfs(&systemd_tar, &agent, &scratch, &systemd_ext4)
        .unwrap_or_else(|e| panic!("making the systemd rootfs failed: {e}"));

    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    run(CommandSpec::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(keys.join("host").display().to_string()))
    .unwrap();
    let host_key = SshHostKey {
        algorithm: "ed25519".to_owned(),
        private_key: std::fs::read_to_string(keys.join("host")).unwrap(),
        public_key: std::fs::read_to_string(keys.join("host.pub"))
            .unwrap()
            .trim()
            .to_owned(),
    };
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!();
    println!(
        "kernel {release} ({} {}), 1 vCPU, 1024 MiB, QEMU microvm TCG, {runs} runs a variant",
        manifest.inputs.kernel_package, manifest.inputs.kernel_package_version
    );
    println!(
        "initrds: banger {} B ({} modules + banger-init, gzip); initramfs-tools MODULES=most {} B; \
         MODULES=list {} B",
        size(&banger_initrd),
        manifest.initramfs_modules.len(),
        size(&debian.most),
        size(&debian.list)
    );
    println!(
        "versions: {}; {}",
        debian
            .versions
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        systemd_versions
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );

    // A. Kernel start → the real root's init.
    let machine = |initrd: &Path, append: String, disks: &(PathBuf, PathBuf)| {
        let mut m = Machine::new(&vmlinux, Some(initrd)).banger_disks(&rootfs, &disks.0, &disks.1);
        m.append = append;
        m.memory_mib = 1024;
        m
    };
    let variants: [(&str, &Path, String); 3] = [
        (
            "banger",
            &banger_initrd,
            format!("{BANGERD_APPEND} banger.init=/{MARK}"),
        ),
        (
            "initramfs-tools (MODULES=most, Debian's default)",
            &debian.most,
            format!("{BANGERD_APPEND} root=/dev/vda ro init=/{MARK}"),
        ),
        (
            "initramfs-tools (MODULES=list, banger's modules)",
            &debian.list,
            format!("{BANGERD_APPEND} root=/dev/vda ro init=/{MARK}"),
        ),
    ];
    println!();
    println!(
        "A. kernel start -> the real root's init executed (load before: {})",
        load()
    );
    let mut switch_results: Vec<Vec<SwitchRun>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..runs {
        for (i, (name, initrd, append)) in variants.iter().enumerate() {
            let disks = vm_disks(&image_dir, &dir.join("vm"), &host_key).unwrap();
            let r = boot_to_mark(name, &machine(initrd, append.clone(), &disks))
                .unwrap_or_else(|e| panic!("{name}, run {}: {e}", round + 1));
            println!(
                "  run {} {name}: initramfs /init at {:.2} s, real init at {:.2} s (guest clock), \
                 QEMU start -> marker {:.2} s{}, load {:.2}",
                round + 1,
                r.run_init_s,
                r.guest_s,
                r.wall_s,
                r.banger_init_s
                    .map(|s| format!(", banger-init's own switch_root line {s:.3} s"))
                    .unwrap_or_default(),
                r.load1
            );
            switch_results[i].push(r);
        }
    }
    println!("load after: {}", load());
    println!();
    println!(
        "| variant | kernel start -> initramfs /init | kernel start -> real init | QEMU start -> real init | load (1 min) |"
    );
    println!("|---|---|---|---|---|");
    let mut guest_medians = Vec::new();
    let mut wall_medians = Vec::new();
    for ((name, _, _), results) in variants.iter().zip(&switch_results) {
        let run_init: Vec<f64> = results.iter().map(|r| r.run_init_s).collect();
        let guest: Vec<f64> = results.iter().map(|r| r.guest_s).collect();
        let wall: Vec<f64> = results.iter().map(|r| r.wall_s).collect();
        let loads: Vec<f64> = results.iter().map(|r| r.load1).collect();
        println!(
            "| {name} | {:.2} s ({}) | {:.2} s ({}) | {:.2} s ({}) | {:.2} ({}) |",
            median(&run_init),
            span(&run_init),
            median(&guest),
            span(&guest),
            median(&wall),
            span(&wall),
            median(&loads),
            span(&loads)
        );
        guest_medians.push(median(&guest));
        wall_medians.push(median(&wall));
    }
    println!(
        "banger / initramfs-tools, kernel start -> real init (guest clock medians): {:.2} \
         (MODULES=most), {:.2} (MODULES=list); target <= 0.5",
        guest_medians[0] / guest_medians[1],
        guest_medians[0] / guest_medians[2]
    );
    println!(
        "banger / initramfs-tools, QEMU start -> real init (host clock medians): {:.2} \
         (MODULES=most), {:.2} (MODULES=list)",
        wall_medians[0] / wall_medians[1],
        wall_medians[0] / wall_medians[2]
    );

    // B. QEMU start → sshd's banner.
    let inits: [(&str, &Path); 2] = [
        ("BusyBox init (the image)", &rootfs),
        ("systemd", &systemd_ext4),
    ];
    println!();
    println!("B. QEMU start -> sshd's banner (load before: {})", load());
    let mut ssh_results: Vec<Vec<SshRun>> = inits.iter().map(|_| Vec::new()).collect();
    for round in 0..runs {
        for (i, (name, base)) in inits.iter().enumerate() {
            let disks = vm_disks(&image_dir, &dir.join("vm"), &host_key).unwrap();
            let port = free_port();
            let mut m =
                Machine::new(&vmlinux, Some(&banger_initrd)).banger_disks(base, &disks.0, &disks.1);
            m.append = BANGERD_APPEND.to_owned();
            m.memory_mib = 1024;
            m.nic = Nic::User {
                forwards: vec![(port, 22)],
            };
            let r = boot_to_ssh(name, &m, port)
                .unwrap_or_else(|e| panic!("{name}, run {}: {e}", round + 1));
            println!(
                "  run {} {name}: banner {:.2} s, switch_root line {}, load {:.2}",
                round + 1,
                r.banner_s,
                r.switch_s
                    .map(|s| format!("{s:.2} s"))
                    .unwrap_or("-".into()),
                r.load1
            );
            ssh_results[i].push(r);
        }
    }
    println!("load after: {}", load());
    println!();
    println!(
        "| image init | QEMU start -> switch_root line | QEMU start -> sshd banner | load (1 min) |"
    );
    println!("|---|---|---|---|");
    let mut banner_medians = Vec::new();
    for ((name, _), results) in inits.iter().zip(&ssh_results) {
        let switch: Vec<f64> = results.iter().filter_map(|r| r.switch_s).collect();
        let banner: Vec<f64> = results.iter().map(|r| r.banner_s).collect();
        let loads: Vec<f64> = results.iter().map(|r| r.load1).collect();
        println!(
            "| {name} | {:.2} s ({}) | {:.2} s ({}) | {:.2} ({}) |",
            median(&switch),
            span(&switch),
            median(&banner),
            span(&banner),
            median(&loads),
            span(&loads)
        );
        banner_medians.push(median(&banner));
    }
    println!(
        "systemd / BusyBox init (banner medians): {:.2}",
        banner_medians[1] / banner_medians[0]
    );
}

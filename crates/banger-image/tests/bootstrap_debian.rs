//! The real `banger image bootstrap debian`: debootstrap from the Debian mirror, the cloud
//! kernel package, banger's shipped static `/init` ([`banger_guest::INIT`]), then a boot of
//! the result under QEMU microvm (TCG) with a per-VM overlay and work disk, until root can log
//! in over SSH with the VM's own host key pinned (no trust on first use) and the VM powers
//! itself off on `poweroff`.
//!
//! Prerequisites, each skipped with a visible `SKIP:` line when missing: root (debootstrap and
//! `mkfs.ext4 -d` of a root-owned tree), `debootstrap`, `apt-cache` knowing the cloud kernel,
//! `qemu-system-x86_64`, `ssh` and `ssh-keygen`, and the Debian mirror for a cold cache.
//!
//! Downloads go to `$BANGER_TEST_CACHE/bootstrap` (default `/var/cache/banger-test`), the
//! same cache layout banger uses under its state directory, keyed by the inputs: the first
//! run downloads about 100 MB, later runs unpack from the cache.
//!
//! The guest's NIC is QEMU user networking with `restrict=on` (no packet leaves for the host
//! or the outside) and one forward from a loopback port to the guest's sshd.

#[path = "qemu_guest/mod.rs"]
mod qemu_guest;

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_host::{CommandRunner, CommandSpec, Privilege, RealRunner, RunError};
use banger_image::bootstrap::{self, BootstrapSpec, Host, guest};
use banger_image::vmdisk::{self, GuestNetwork, SshHostKey, VmFiles};

const BOOT_DEADLINE: Duration = Duration::from_secs(180);
const MIB: u64 = 1 << 20;
const GUEST_IP: Ipv4Addr = qemu_guest::USER_NET_GUEST_IP;

fn run(cmd: CommandSpec) -> Result<String, RunError> {
    RealRunner.run(&cmd).map(|o| o.stdout_lossy())
}

fn missing(program: &str, probe: &[&str]) -> bool {
    match run(CommandSpec::new(program).args(probe.iter().copied())) {
        Err(RunError::NotFound { .. }) => {
            banger_test_support::skip!("{program} not found");
            true
        }
        _ => false,
    }
}

/// An ed25519 key pair made by ssh-keygen: (private, public).
fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    run(CommandSpec::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(path.to_string_lossy()))
    .unwrap();
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_owned())
}

/// Two distinct free loopback ports (both held until both are known).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

#[test]
fn bootstrap_debian_then_boot_it_to_an_ssh_login_under_qemu_tcg() {
    if Privilege::detect() != Privilege::Root {
        banger_test_support::skip!("root not available (debootstrap needs it)");
        return;
    }
    if missing("debootstrap", &["--version"])
        || missing("apt-cache", &["--version"])
        || missing("qemu-system-x86_64", &["--version"])
        || missing("ssh-keygen", &["-?"])
        || missing("ssh", &["-V"])
    {
        return;
    }
    let cache = std::env::var_os("BANGER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger-test"));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let init = dir.join("banger-init");
    banger_guest::INIT.write_to(&init).unwrap();
    let agent = dir.join("banger-agent");
    banger_guest::AGENT.write_to(&agent).unwrap();

    let mut spec = BootstrapSpec::new("debian", bootstrap::DEFAULT_SUITE, init);
    spec.agent_binary = Some(agent);
    let host = Host {
        runner: &RealRunner,
        privilege: Privilege::Root,
        cache_dir: cache.join("bootstrap"),
        staging_parent: dir.join("staging"),
        mounts_file: PathBuf::from("/proc/self/mounts"),
    };
    let image_dir = dir.join("images/test");
    let started = Instant::now();
    let image = match bootstrap::bootstrap(
        "test",
        &spec,
        &host,
        &image_dir,
        &qemu_guest::StagePrinter { started },
    ) {
        Ok(image) => image,
        Err(e @ bootstrap::BootstrapError::NoKernelPackage { .. }) => {
            banger_test_support::skip!("{e} (apt-get update?)");
            return;
        }
        Err(e) => panic!("bootstrap failed: {:?}\nhint: {:?}", e, e.hint()),
    };
    let manifest = bootstrap::read_manifest(&image_dir).unwrap();
    println!(
        "bootstrapped in {:.1} s (kernel {}, packages {}, installed root {}): vmlinux {} B, initrd {} B, \
         rootfs {} B apparent / {} B allocated, root {} B, {} packages",
        started.elapsed().as_secs_f64(),
        if manifest.inputs.kernel_cached {
            "cached"
        } else {
            "downloaded"
        },
        if manifest.inputs.packages_cached {
            "cached"
        } else {
            "downloaded"
        },
        if manifest.inputs.root_cached {
            "cached"
        } else {
            "installed"
        },
        manifest.sizes.vmlinux_bytes,
        manifest.sizes.initrd_bytes,
        manifest.sizes.rootfs_bytes,
        manifest.sizes.rootfs_allocated_bytes,
        manifest.sizes.root_used_bytes,
        image.manifest.packages.len(),
    );
    let installed: Vec<&str> = image
        .manifest
        .packages
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    for wanted in bootstrap::PACKAGES {
        assert!(installed.contains(wanted), "{wanted} not installed");
    }
    assert!(
        !std::fs::read_dir(dir.join("staging"))
            .unwrap()
            .any(|_| true),
        "the staging directory was left"
    );

    // The image has no host key, no apt lists, an empty machine id.
    let listing = run(CommandSpec::new("debugfs")
        .args(["-R", "ls -l /etc/ssh"])
        .arg(image_dir.join("rootfs.ext4").to_string_lossy()))
    .unwrap();
    assert!(
        !listing.contains("ssh_host_"),
        "host keys baked in:\n{listing}"
    );
    let machine_id = run(CommandSpec::new("debugfs")
        .args(["-R", "cat /etc/machine-id"])
        .arg(image_dir.join("rootfs.ext4").to_string_lossy()))
    .unwrap();
    assert_eq!(machine_id.trim(), "");

    // One VM: its own host key, root's authorized key, a static address in QEMU's user net.
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (client_key, client_pub) = keypair(&keys, "client");
    let (host_key, host_pub) = keypair(&keys, "ssh_host_ed25519_key");
    let files = VmFiles {
        hostname: "bootstrapped".to_owned(),
        network: GuestNetwork {
            address: GUEST_IP,
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            search: Vec::new(),
            mac: Some("52:54:00:12:34:56".to_owned()),
        },
        authorized_keys: client_pub,
        ssh_host_key: SshHostKey {
            algorithm: "ed25519".to_owned(),
            private_key: std::fs::read_to_string(&host_key).unwrap(),
            public_key: host_pub.clone(),
        },
        agent_token: "token".to_owned(),
        extra: Vec::new(),
    };
    let disks = dir.join("vm");
    std::fs::create_dir(&disks).unwrap();
    vmdisk::build_overlay_disk(
        &RealRunner,
        &disks,
        &files,
        &disks.join("overlay.ext4"),
        256 * MIB,
    )
    .unwrap();
    let fingerprint = vmdisk::build_work_disk(
        &RealRunner,
        Some(&image_dir.join(bootstrap::WORK_SEED_DIR)),
        &disks.join("work.ext4"),
        256 * MIB,
    )
    .unwrap();
    assert_eq!(fingerprint, manifest.work_seed.fingerprint);

    let (port, agent_port) = free_ports();
    let mut machine =
        qemu_guest::Machine::new(&image_dir.join("vmlinux"), Some(&image_dir.join("initrd")))
            .banger_disks(
                &image_dir.join("rootfs.ext4"),
                &disks.join("overlay.ext4"),
                &disks.join("work.ext4"),
            );
    machine.nic = qemu_guest::Nic::User {
        forwards: vec![(port, 22), (agent_port, 1024)],
    };
    let mut vm = machine.boot();
    let powered_on = vm.started;
    let deadline = powered_on + BOOT_DEADLINE;
    let switched = vm
        .wait_for("banger-init: switching root", deadline)
        .map(|(at, _)| at);
    let sshd_started = switched.and_then(|_| {
        vm.wait_for(guest::SSHD_STARTED_LINE, deadline)
            .map(|(at, _)| at)
    });
    let banner = sshd_started
        .and_then(|_| qemu_guest::ssh_banner(port, deadline, Duration::from_millis(300)));
    let answered = Instant::now();
    let Some((_, banner)) = banner else {
        panic!(
            "sshd did not answer within {} s; console:\n{}",
            BOOT_DEADLINE.as_secs(),
            vm.log()
        );
    };
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
    let secs = |t: Option<Instant>| t.map(|t| (t - powered_on).as_secs_f64()).unwrap_or(-1.0);
    println!(
        "boot under TCG: switch_root at {:.1} s, sshd started at {:.1} s, banner at {:.1} s",
        secs(switched),
        secs(sshd_started),
        (answered - powered_on).as_secs_f64()
    );

    // Log in as root, with the VM's host key pinned.
    let known_hosts = keys.join("known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}\n")).unwrap();
    let ssh = |command: &str| {
        run(CommandSpec::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(client_key.to_string_lossy())
            .args(["-p", &port.to_string(), "root@127.0.0.1", command]))
    };
    let out = ssh("cat /etc/hostname; id -un; ls -A /root; cat /proc/1/comm; cat /etc/machine-id")
        .unwrap_or_else(|e| panic!("ssh login failed: {e}\nconsole:\n{}", vm.log()));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "bootstrapped", "{out}");
    assert_eq!(lines[1], "root", "{out}");
    assert!(lines.contains(&".bashrc"), "work seed on /root: {out}");
    assert!(lines.contains(&"init"), "busybox init is PID 1: {out}");
    assert_eq!(
        lines.last().unwrap().len(),
        32,
        "a machine id per VM: {out}"
    );

    // The agent BusyBox init started answers on the VM's IP, with the VM's token only.
    let mut agent = TcpStream::connect(("127.0.0.1", agent_port)).unwrap();
    agent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut agent,
        b"GET /v1/healthz HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer token\r\n\
          Connection: close\r\n\r\n",
    )
    .unwrap();
    let mut reply = String::new();
    let _ = agent.read_to_string(&mut reply);
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "the agent did not answer: {reply:?}\nconsole:\n{}",
        vm.log()
    );
    println!("agent: {}", reply.lines().next().unwrap_or(""));

    // `poweroff` stops the VM by itself.
    let _ = ssh("poweroff");
    let exited = vm.wait_exit(Duration::from_secs(60)).is_some();
    assert!(exited, "the VM did not power off; console:\n{}", vm.log());
}

//! The identity steps against a recorder of their effects: each step's order, what a request
//! without a file or field leaves alone, and that a failing step stops the rest and is named;
//! plus the pieces that touch the real system (atomic file writes, the NIC and vmgenid lookups
//! in sysfs, sshd's pid file, netlink in a private network namespace where one can be made).

use super::*;
use banger_agent_protocol::protocol::IdentityFile;
use banger_host::network::netns::Netns;
use hyper::header::HeaderValue;

const NETWORK: &str = "# Written by banger\naddress=172.30.0.7/24\ngateway=172.30.0.1\n\
                           dns=172.30.0.1\nmac=52:54:00:00:00:07\n";

fn request() -> IdentityRequest {
    IdentityRequest {
        files: vec![
            IdentityFile::new("etc/hostname", 0o644, b"clone-1\n"),
            IdentityFile::new("etc/hosts", 0o644, b"172.30.0.7\tclone-1\n"),
            IdentityFile::new("etc/banger/network", 0o644, NETWORK.as_bytes()),
            IdentityFile::new("etc/banger/agent-token", 0o600, b"new-token\n"),
            IdentityFile::new("etc/ssh/ssh_host_ed25519_key", 0o600, b"PRIVATE\n"),
            IdentityFile::new("etc/ssh/ssh_host_ed25519_key.pub", 0o644, b"PUBLIC\n"),
        ],
        time_unix_ms: 1_790_000_000_123,
        entropy: base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    }
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

#[test]
fn the_steps_run_in_order() {
    let effects = Recorder::new().with_sshd(321).with_vmgenid();
    let token = Token::new("old-token");
    let applied = apply(&effects, &request(), &token).unwrap();
    assert_eq!(
        effects.log(),
        [
            "entropy 32 bytes",
            "clock 1790000000123",
            "write etc/hostname 644",
            "write etc/hosts 644",
            "write etc/banger/network 644",
            "write etc/banger/agent-token 600",
            "write etc/ssh/ssh_host_ed25519_key 600",
            "write etc/ssh/ssh_host_ed25519_key.pub 644",
            "hostname clone-1",
            "find nic",
            "mac eth0 52:54:00:00:00:07",
            "flush eth0",
            "address eth0 172.30.0.7/24 broadcast 172.30.0.255",
            "route eth0 via 172.30.0.1",
            "announce eth0 172.30.0.7 at 52:54:00:00:00:07",
            "sshd reload",
        ]
    );
    assert_eq!(applied.files.len(), 6);
    assert_eq!(applied.hostname.as_deref(), Some("clone-1"));
    assert_eq!(
        applied.network,
        Some(NetworkApplied {
            interface: "eth0".into(),
            mac: Some("52:54:00:00:00:07".into()),
            removed_addresses: 1,
            address: Ipv4Addr::new(172, 30, 0, 7),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(172, 30, 0, 1)),
            announced: true,
        })
    );
    assert!(applied.host_key_changed && applied.token_changed && applied.vmgenid);
    assert_eq!(applied.sshd_reloaded, Some(321));
    assert_eq!(
        effects.files()["etc/banger/agent-token"],
        (0o600, b"new-token\n".to_vec())
    );
    assert!(token.accepts(Some(&bearer("new-token"))));
    assert!(!token.accepts(Some(&bearer("old-token"))));
}

#[test]
fn only_what_the_request_carries_is_acted_on() {
    let effects = Recorder::new();
    let token = Token::new("old-token");
    let mut request = request();
    request.files = vec![IdentityFile::new("etc/motd", 0o644, b"hi\n")];
    let applied = apply(&effects, &request, &token).unwrap();
    assert_eq!(
        effects.log(),
        [
            "entropy 32 bytes",
            "clock 1790000000123",
            "write etc/motd 644"
        ]
    );
    assert_eq!(applied.hostname, None);
    assert_eq!(applied.network, None);
    assert!(!applied.host_key_changed && !applied.token_changed && !applied.vmgenid);
    assert!(token.accepts(Some(&bearer("old-token"))));

    // A network file without mac= leaves the MAC alone.
    let effects = Recorder::new();
    request.files = vec![IdentityFile::new(
        "etc/banger/network",
        0o644,
        b"address=10.0.0.9/16\n",
    )];
    let applied = apply(&effects, &request, &token).unwrap();
    assert_eq!(
        effects.log()[3..],
        [
            "find nic",
            "flush eth0",
            "address eth0 10.0.0.9/16 broadcast 10.0.255.255"
        ]
    );
    assert_eq!(applied.network.unwrap().gateway, None);

    // A host key without a running sshd is fine, and said.
    let effects = Recorder::new();
    request.files = vec![IdentityFile::new("etc/ssh/ssh_host_rsa_key", 0o600, b"K")];
    let applied = apply(&effects, &request, &token).unwrap();
    assert!(applied.host_key_changed);
    assert_eq!(applied.sshd_reloaded, None);
}

#[test]
fn bad_requests_change_nothing() {
    type Change = Box<dyn Fn(&mut IdentityRequest)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|r| {
                r.files
                    .push(IdentityFile::new("../etc/passwd", 0o644, b"x"))
            }),
            "\"../etc/passwd\" must be relative",
        ),
        (
            Box::new(|r| r.files.push(IdentityFile::new("/etc/passwd", 0o644, b"x"))),
            "\"/etc/passwd\" must be relative",
        ),
        (
            Box::new(|r| r.files.push(IdentityFile::new("etc/./x", 0o644, b"x"))),
            "\"etc/./x\"",
        ),
        (
            Box::new(|r| r.files.push(IdentityFile::new("etc//x", 0o644, b"x"))),
            "\"etc//x\"",
        ),
        (
            Box::new(|r| r.files.push(IdentityFile::new("etc/", 0o644, b"x"))),
            "\"etc/\"",
        ),
        (
            Box::new(|r| r.files.push(IdentityFile::new("", 0o644, b"x"))),
            "\"\"",
        ),
        (
            Box::new(|r| r.files.push(IdentityFile::new("etc/x", 0o100644, b"x"))),
            "mode 100644",
        ),
        (
            Box::new(|r| r.files.push(IdentityFile::new("etc/hosts", 0o644, b"x"))),
            "listed twice",
        ),
        (
            Box::new(|r| r.files[0].data = "not base64!".into()),
            "\"etc/hostname\": data is not base64",
        ),
        (
            Box::new(|r| r.files[0] = IdentityFile::new("etc/hostname", 0o644, b"a b\n")),
            "not a hostname",
        ),
        (
            Box::new(|r| r.files[2] = IdentityFile::new("etc/banger/network", 0o644, b"x=1")),
            "etc/banger/network line 1",
        ),
        (
            Box::new(|r| r.files[3] = IdentityFile::new("etc/banger/agent-token", 0o644, b"t")),
            "must be private",
        ),
        (
            Box::new(|r| r.files[3] = IdentityFile::new("etc/banger/agent-token", 0o600, b" \n")),
            "non-empty token",
        ),
        (
            Box::new(|r| r.entropy = base64::engine::general_purpose::STANDARD.encode([1u8; 31])),
            "entropy has 31 bytes",
        ),
        (
            Box::new(|r| r.entropy = "%%".into()),
            "entropy is not base64",
        ),
        (Box::new(|r| r.time_unix_ms = 0), "time_unix_ms is 0"),
    ];
    for (change, needle) in cases {
        let mut request = request();
        change(&mut request);
        let effects = Recorder::new();
        let token = Token::new("old-token");
        let err = apply(&effects, &request, &token).unwrap_err();
        assert!(matches!(err, IdentityError::Invalid(_)), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert!(effects.log().is_empty(), "{needle}: {:?}", effects.log());
        assert!(token.accepts(Some(&bearer("old-token"))));
    }
}

#[test]
fn a_failing_step_stops_the_rest_and_is_named() {
    for (prefix, step, last) in [
        ("entropy", "step 1 (entropy)", "entropy 32 bytes"),
        ("clock", "step 2 (wall clock)", "clock 1790000000123"),
        (
            "write etc/banger/network",
            "step 3 (files): writing /etc/banger/network",
            "write etc/banger/network 644",
        ),
        ("hostname", "step 4 (hostname)", "hostname clone-1"),
        (
            "find nic",
            "step 5 (network): finding the VM's NIC",
            "find nic",
        ),
        (
            "mac",
            "step 5 (network): setting the MAC of eth0",
            "mac eth0 52:54:00:00:00:07",
        ),
        (
            "address",
            "step 5 (network): adding 172.30.0.7/24 to eth0",
            "address eth0 172.30.0.7/24 broadcast 172.30.0.255",
        ),
        (
            "route",
            "step 5 (network): adding the default route via 172.30.0.1",
            "route eth0 via 172.30.0.1",
        ),
        ("sshd", "step 6 (ssh host key)", "sshd reload"),
    ] {
        let effects = Recorder::new().fail_at(prefix);
        let token = Token::new("old-token");
        let err = apply(&effects, &request(), &token).unwrap_err();
        assert!(
            matches!(err, IdentityError::Failed { .. }),
            "{prefix}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("applying the identity failed at {step}")),
            "{prefix}: {err}"
        );
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(effects.log().last().map(String::as_str), Some(last));
        // The token is the last step: any failure before it keeps the old one.
        assert!(token.accepts(Some(&bearer("old-token"))), "{prefix}");
        assert!(!token.accepts(Some(&bearer("new-token"))), "{prefix}");
    }
}

#[test]
fn a_failed_announcement_is_not_a_failure() {
    let effects = Recorder::new().fail_at("announce");
    let token = Token::new("old-token");
    let applied = apply(&effects, &request(), &token).unwrap();
    assert!(!applied.network.unwrap().announced);
    assert_eq!(
        effects.log().last().map(String::as_str),
        Some("sshd reload")
    );
    assert!(token.accepts(Some(&bearer("new-token"))));
}

#[test]
fn arp_announcement_bytes() {
    let p = arp_announcement([0x52, 0x54, 0, 0, 0, 7], Ipv4Addr::new(172, 30, 0, 7));
    assert_eq!(&p[0..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
    assert_eq!(&p[8..14], &[0x52, 0x54, 0, 0, 0, 7]);
    assert_eq!(&p[14..18], &[172, 30, 0, 7]);
    assert_eq!(&p[18..24], &[0; 6]);
    assert_eq!(&p[24..28], &[172, 30, 0, 7]);
}

#[test]
fn files_are_written_atomically_with_their_modes() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let effects = RealEffects::with_root(root.path());
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/hostname"), "source\n").unwrap();
    effects
        .write_file("etc/hostname", b"clone-1\n", 0o644)
        .unwrap();
    effects
        .write_file("etc/banger/agent-token", b"tok", 0o600)
        .unwrap();
    let read = |p: &str| std::fs::read(root.path().join(p)).unwrap();
    let mode = |p: &str| {
        std::fs::metadata(root.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(read("etc/hostname"), b"clone-1\n");
    assert_eq!(read("etc/banger/agent-token"), b"tok");
    assert_eq!(
        (mode("etc/hostname"), mode("etc/banger/agent-token")),
        (0o644, 0o600)
    );
    assert_eq!(mode("etc/banger"), 0o755);
    // No temporary file is left behind.
    let mut names: Vec<String> = std::fs::read_dir(root.path().join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["banger", "hostname"]);
    // A path that climbs out is refused even here.
    assert!(effects.write_file("../x", b"", 0o644).is_err());
}

#[test]
fn the_nic_is_the_first_device_backed_ethernet_link() {
    let sys = tempfile::tempdir().unwrap();
    let link = |name: &str, kind: &str, index: u32, device: bool| {
        let dir = sys.path().join("class/net").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(dir.join("ifindex"), format!("{index}\n")).unwrap();
        if device {
            std::fs::create_dir(dir.join("device")).unwrap();
        }
    };
    link("lo", "772", 1, false);
    link("br0", "1", 4, false);
    link("eth0", "1", 2, true);
    let effects = RealEffects::with_root("/nonexistent").with_kernel_dirs(sys.path(), "/proc");
    assert_eq!(
        effects.find_nic().unwrap(),
        Nic {
            name: "eth0".into(),
            index: 2
        }
    );
    std::fs::remove_dir(sys.path().join("class/net/eth0/device")).unwrap();
    assert_eq!(effects.find_nic().unwrap().name, "br0");
    std::fs::remove_dir_all(sys.path().join("class/net/br0")).unwrap();
    std::fs::remove_dir_all(sys.path().join("class/net/eth0")).unwrap();
    let err = effects.find_nic().unwrap_err();
    assert!(err.to_string().contains("no Ethernet NIC"), "{err}");
}

#[test]
fn vmgenid_is_a_device_bound_to_the_driver() {
    let sys = tempfile::tempdir().unwrap();
    let effects = RealEffects::with_root("/").with_kernel_dirs(sys.path(), "/proc");
    assert!(!effects.vmgenid(), "no driver");
    let driver = sys.path().join("bus/acpi/drivers/vmgenid");
    std::fs::create_dir_all(&driver).unwrap();
    std::fs::write(driver.join("bind"), "").unwrap();
    std::os::unix::fs::symlink("/sys/module/vmgenid", driver.join("module")).unwrap();
    assert!(!effects.vmgenid(), "a driver without a device");
    std::os::unix::fs::symlink(
        "../../../../devices/LNXSYSTM:00",
        driver.join("VMGENCTR:00"),
    )
    .unwrap();
    assert!(effects.vmgenid());
}

#[test]
fn sshd_is_signalled_only_when_its_pid_file_names_an_sshd() {
    let root = tempfile::tempdir().unwrap();
    let proc_dir = tempfile::tempdir().unwrap();
    let effects = RealEffects::with_root(root.path()).with_kernel_dirs("/sys", proc_dir.path());
    assert_eq!(effects.reload_sshd().unwrap(), None, "no pid file");
    std::fs::create_dir_all(root.path().join("run")).unwrap();
    std::fs::write(root.path().join(SSHD_PID_FILE), "nonsense\n").unwrap();
    assert!(effects.reload_sshd().is_err());
    // A stale pid file naming some other process: nothing is signalled.
    let pid = std::process::id();
    std::fs::write(root.path().join(SSHD_PID_FILE), format!("{pid}\n")).unwrap();
    std::fs::create_dir_all(proc_dir.path().join(pid.to_string())).unwrap();
    std::fs::write(proc_dir.path().join(format!("{pid}/comm")), "cargo-test\n").unwrap();
    assert_eq!(effects.reload_sshd().unwrap(), None);
}

/// A real process whose name starts with `sshd` gets the SIGHUP.
#[test]
fn a_running_sshd_gets_sighup() {
    use std::os::unix::process::ExitStatusExt;
    let root = tempfile::tempdir().unwrap();
    let sshd = root.path().join("sshd-stand-in");
    std::fs::copy("/bin/sleep", &sshd).unwrap();
    let mut child = std::process::Command::new(&sshd).arg("60").spawn().unwrap();
    std::fs::create_dir_all(root.path().join("run")).unwrap();
    std::fs::write(root.path().join(SSHD_PID_FILE), format!("{}\n", child.id())).unwrap();
    let reloaded = RealEffects::with_root(root.path()).reload_sshd();
    if !matches!(reloaded, Ok(Some(_))) {
        let _ = child.kill();
    }
    assert_eq!(reloaded.unwrap(), Some(child.id()));
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{status:?}");
}

/// sethostname for real, in a UTS namespace of a thread of its own.
#[test]
fn the_hostname_is_set() {
    let name = std::thread::spawn(|| {
        // SAFETY: unshare(2) with a flag; it moves only this thread to a new UTS namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWUTS) } != 0 {
            return None;
        }
        RealEffects::guest().set_hostname("clone-1").unwrap();
        Some(
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        )
    })
    .join()
    .unwrap();
    match name {
        Some(name) => assert_eq!(name, "clone-1"),
        None => banger_test_support::skip!("cannot make a UTS namespace (needs root)"),
    }
}

/// `ip -n NS ARGS` inside the test's namespace; its output, asserting success.
fn ip(ns: &Netns, args: &str) -> String {
    use banger_host::{CommandRunner, CommandSpec, RealRunner};
    let cmd = CommandSpec::new("ip")
        .args(["-n", ns.name()])
        .args(args.split_whitespace());
    match RealRunner.run(&cmd) {
        Ok(out) => out.stdout_lossy(),
        Err(e) => panic!("ip {args}: {e}"),
    }
}

/// An AF_PACKET socket receiving the ARP packets that arrive on one link.
struct Capture(std::os::fd::OwnedFd);

impl Capture {
    fn arp_on(ifindex: i32) -> Capture {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let arp = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: socket(2) with constant arguments; owned right below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(arp)) };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data, valid when zeroed.
        let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        at.sll_family = libc::AF_PACKET as u16;
        at.sll_protocol = arp;
        at.sll_ifindex = ifindex;
        // SAFETY: bind reads one sockaddr_ll alive for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const at).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        let wait = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: setsockopt reads one timeval alive for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const wait).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        Capture(fd)
    }

    /// Whether `packet` arrives before a receive waits 5 s for nothing.
    fn saw(&self, packet: &[u8]) -> bool {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 1500];
        loop {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return false;
            }
            if buf[..n as usize].starts_with(packet) {
                return true;
            }
        }
    }
}

/// The network step against the real kernel, on a veth in a throw-away namespace: the old
/// addresses go, the MAC, address and route are the new ones, and the announcement reaches
/// the other end.
#[test]
fn the_network_is_replaced_over_netlink() {
    let Ok(ns) = Netns::create("banger-test-identity-") else {
        banger_test_support::skip!("cannot create a network namespace (needs root and iproute2)");
        return;
    };
    ip(&ns, "link add d0 type veth peer name d1");
    ip(&ns, "link set d1 up");
    ip(&ns, "addr add 10.9.9.2/24 dev d0");
    ip(&ns, "addr add 10.9.8.2/24 dev d0");
    ip(&ns, "link set d0 up");
    let index: u32 = ip(&ns, "-o link show d0")
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let nic = Nic {
        name: "d0".into(),
        index,
    };
    let peer: i32 = ip(&ns, "-o link show d1")
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let name = ns.name().to_owned();
    // Netlink sockets belong to the namespace of the thread that opens them: do it all in
    // a thread that has entered the test's namespace.
    let removed = std::thread::spawn(move || {
        banger_host::network::netns::enter(&name).unwrap();
        let effects = RealEffects::guest();
        effects
            .set_mac(&nic, [0x52, 0x54, 0x00, 0x00, 0x00, 0x07])
            .unwrap();
        let removed = effects.remove_ipv4_addresses(&nic).unwrap();
        effects
            .add_address(
                &nic,
                Ipv4Addr::new(172, 30, 0, 7),
                24,
                Ipv4Addr::new(172, 30, 0, 255),
            )
            .unwrap();
        effects
            .add_default_route(&nic, Ipv4Addr::new(172, 30, 0, 1))
            .unwrap();
        assert_eq!(effects.remove_ipv4_addresses(&nic).unwrap(), 1);
        effects
            .add_address(
                &nic,
                Ipv4Addr::new(172, 30, 0, 7),
                24,
                Ipv4Addr::new(172, 30, 0, 255),
            )
            .unwrap();
        effects
            .add_default_route(&nic, Ipv4Addr::new(172, 30, 0, 1))
            .unwrap();
        let capture = Capture::arp_on(peer);
        effects
            .announce(
                &nic,
                [0x52, 0x54, 0x00, 0x00, 0x00, 0x07],
                Ipv4Addr::new(172, 30, 0, 7),
            )
            .unwrap();
        let expected = arp_announcement(
            [0x52, 0x54, 0x00, 0x00, 0x00, 0x07],
            Ipv4Addr::new(172, 30, 0, 7),
        );
        assert!(
            capture.saw(&expected),
            "the announcement did not reach the other end of the veth"
        );
        removed
    })
    .join()
    .unwrap();
    assert!(removed >= 1, "the old addresses were there to remove");
    let link = ip(&ns, "-o link show d0");
    assert!(link.contains("link/ether 52:54:00:00:00:07"), "{link}");
    let addrs = ip(&ns, "-o -4 addr show dev d0");
    assert!(
        addrs.contains("inet 172.30.0.7/24 brd 172.30.0.255"),
        "{addrs}"
    );
    assert!(!addrs.contains("10.9."), "old addresses remain: {addrs}");
    let routes = ip(&ns, "-4 route show default");
    assert!(routes.contains("default via 172.30.0.1 dev d0"), "{routes}");
}

/// The ioctl numbers are right: the kernel takes the entropy and reseeds. The bytes come
/// from the kernel's own RNG, so crediting them changes nothing about the host's.
#[test]
fn entropy_reaches_the_kernel() {
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("adding entropy needs root");
        return;
    }
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut seed).unwrap();
    RealEffects::guest().add_entropy(&seed).unwrap();
}

#[test]
fn paths_and_macs() {
    for ok in [
        "etc/hostname",
        "a",
        "etc/ssh/ssh_host_ed25519_key",
        "x/.hidden",
    ] {
        assert!(check_path(ok).is_ok(), "{ok}");
    }
    for bad in [
        "", "/etc", "..", "a/../b", "./a", "a/.", "a//b", "a/", "a\0b",
    ] {
        assert!(check_path(bad).is_err(), "{bad:?}");
    }
    assert!(is_host_key("etc/ssh/ssh_host_rsa_key"));
    assert!(!is_host_key("etc/ssh/ssh_host_rsa_key.pub"));
    assert!(!is_host_key("etc/ssh/ssh_host__key"));
    assert!(!is_host_key("etc/ssh/sshd_config"));
    assert_eq!(
        parse_mac("52:54:00:ab:cd:ef"),
        Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
    );
    assert_eq!(parse_mac("52:54:00:ab:cd"), None);
    assert_eq!(parse_mac("52:54:00:ab:cd:ef:01"), None);
}

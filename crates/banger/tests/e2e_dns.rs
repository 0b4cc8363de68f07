//! VM names end to end, with real QEMU guests from the bootstrapped Debian image: bangerd
//! answers `NAME.vm` and PTR on the bridge address, port 53, UDP and TCP; a guest resolves
//! another by name through its resolv.conf (nameserver and search domain from the config
//! drive); names outside the domain are forwarded to the host's resolvers; a deleted VM's name
//! is gone at once; `banger doctor` says where names are served.
//!
//! Everything runs inside a network namespace the test creates and removes. The namespace gets
//! its own `/etc/resolv.conf` (`/etc/netns/<ns>/resolv.conf`, which `ip netns exec` mounts for
//! the daemon it starts) naming the bridge address (which bangerd must skip) and a fake
//! upstream on the namespace's loopback: forwarding never reaches the real internet. Needs
//! root, QEMU and debootstrap; prints `SKIP:` and passes without them.

mod support;

use std::net::SocketAddr;
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{FakeUpstream, NetnsResolvConf, UPSTREAM_ANSWER, ask, rdata};
use support::netns::E2e;

#[test]
fn guests_have_names_that_the_host_and_other_guests_resolve() {
    let Some(t) = E2e::with_debian_image(&[
        ("qemu-system-x86_64", "--version"),
        ("debootstrap", "--version"),
    ]) else {
        return;
    };
    let ns = t.netns.0.clone();
    // Both go before `t` (dropped in reverse order of declaration); nothing needs them then.
    let _resolv = NetnsResolvConf::write(&ns, "nameserver 172.30.0.1\nnameserver 127.0.0.1\n");
    let upstream = FakeUpstream::start(&ns);
    let started = Instant::now();

    // Two guests; each create waits until its guest is ready.
    t.ok(&["vm", "create", "--name", "a"]);
    t.ok(&["vm", "create", "--name", "b"]);
    let ip = |name: &str| t.vm(name)["network"]["ip"].as_str().unwrap().to_owned();
    let (ip_a, ip_b) = (ip("a"), ip("b"));
    println!("two guests ready: {:.1}s", started.elapsed().as_secs_f64());

    // The host side asks bangerd directly, over UDP and TCP.
    let server: SocketAddr = "172.30.0.1:53".parse().unwrap();
    for tcp in [false, true] {
        let a = ask(&ns, server, "a.vm.", RecordType::A, tcp);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError, "tcp={tcp}");
        assert!(a.metadata.authoritative);
        assert_eq!(rdata(&a), [ip_a.as_str()], "tcp={tcp}");
    }
    let reverse = {
        let o: Vec<&str> = ip_b.split('.').collect();
        format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
    };
    let ptr = ask(&ns, server, &reverse, RecordType::PTR, false);
    assert_eq!(rdata(&ptr), ["b.vm."]);
    let aaaa = ask(&ns, server, "a.vm.", RecordType::AAAA, false);
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());
    let nope = ask(&ns, server, "nope.vm.", RecordType::A, false);
    assert_eq!(nope.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        upstream.asked(),
        0,
        "names in the domain are never forwarded"
    );

    // Other names go to the namespace's resolver (the fake), not to bangerd itself.
    let out = ask(&ns, server, "outside.example.", RecordType::A, false);
    assert_eq!(rdata(&out), [UPSTREAM_ANSWER.to_string()]);
    let missing = ask(&ns, server, "missing.example.", RecordType::A, false);
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.asked(), 2);

    // The guest's resolver is bangerd, with the search domain.
    let resolv = t.ok(&["vm", "exec", "a", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 172.30.0.1\n"), "{resolv}");
    assert!(resolv.contains("search vm\n"), "{resolv}");

    // A guest resolves another by full name, by short name (search domain), by address (PTR),
    // and a name outside the domain through bangerd's forwarding.
    let by_name = t.ok(&["vm", "exec", "a", "--", "getent", "hosts", "b.vm"]);
    assert_eq!(
        by_name.split_whitespace().collect::<Vec<_>>(),
        [ip_b.as_str(), "b.vm"]
    );
    let short = t.ok(&["vm", "exec", "a", "--", "getent", "ahostsv4", "b"]);
    assert!(short.starts_with(&format!("{ip_b} ")), "{short}");
    let by_address = t.ok(&["vm", "exec", "a", "--", "getent", "hosts", &ip_b]);
    assert!(by_address.contains("b.vm"), "{by_address}");
    let outside = t.ok(&[
        "vm",
        "exec",
        "b",
        "--",
        "getent",
        "hosts",
        "outside.example",
    ]);
    assert!(
        outside.starts_with(&UPSTREAM_ANSWER.to_string()),
        "{outside}"
    );

    // The doctor says where names are served.
    let report = t.json(&["doctor"]);
    let check = |name: &str| support::doctor_check(&report, name);
    let dns = check("dns");
    assert_eq!(dns["status"], "ok", "{dns}");
    assert!(
        dns["detail"]
            .as_str()
            .unwrap()
            .contains("listening on 172.30.0.1:53"),
        "{dns}"
    );
    // This namespace has no systemd-resolved (the host's /run is shared, so whether the host
    // runs one decides the line).
    let host = check("host-dns");
    if std::path::Path::new("/run/systemd/resolve/io.systemd.Resolve").exists() {
        println!("host runs systemd-resolved: {host}");
    } else {
        assert_eq!(host["status"], "warn", "{host}");
        assert!(
            host["fix"]
                .as_str()
                .unwrap()
                .contains("nameserver 172.30.0.1"),
            "{host}"
        );
    }

    // A deleted VM's name is gone at once, for the host and for the other guest.
    t.ok(&["vm", "delete", "b"]);
    let gone = ask(&ns, server, "b.vm.", RecordType::A, false);
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    let gone_ptr = ask(&ns, server, &reverse, RecordType::PTR, false);
    assert_eq!(gone_ptr.metadata.response_code, ResponseCode::NXDomain);
    let (code, out, _) = t.banger(&["vm", "exec", "a", "--", "getent", "hosts", "b.vm"]);
    assert_eq!(code, 2, "getent finds no b.vm: {out}");
    println!("whole test: {:.1}s", started.elapsed().as_secs_f64());
}

/// `ip -n NS ARGS`, which must succeed.
fn ip_in(ns: &str, args: &[&str]) {
    let ok = std::process::Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip -n {ns} {args:?}");
}

/// Another program holds port 53 on the bridge address: bangerd serves the same answers on the
/// fallback port, the doctor says so and how to ask it, and a VM created then is given the
/// host's resolvers instead of a bangerd that would not answer it. No guest boots here.
#[test]
fn a_taken_port_53_falls_back_and_guests_keep_the_hosts_resolvers() {
    use std::net::UdpSocket;
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!(
            "root not available (the test makes a network namespace and a bridge)"
        );
        return;
    }
    let Some(netns) = support::netns::Netns::create() else {
        banger_test_support::skip!("cannot create a network namespace");
        return;
    };
    let ns = netns.0.clone();
    // The bridge a first VM start would make, made by hand, and port 53 on it taken (UDP is
    // enough: bangerd needs both protocols on the port).
    ip_in(&ns, &["link", "add", "banger0", "type", "bridge"]);
    ip_in(&ns, &["addr", "add", "172.30.0.1/24", "dev", "banger0"]);
    ip_in(&ns, &["link", "set", "banger0", "up"]);
    let squatter = support::dns::in_netns(&ns, || {
        UdpSocket::bind("172.30.0.1:53").expect("take port 53")
    });
    let _resolv = NetnsResolvConf::write(&ns, "nameserver 10.0.0.53\nnameserver 127.0.0.1\n");
    let t = E2e {
        sandbox: support::Sandbox::new(),
        netns,
        cgroup_mounts: String::new(),
    };
    let (kernel, rootfs) = t.sandbox.boot_files();
    t.ok(&[
        "image",
        "register",
        "--name",
        "plain",
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ]);
    t.ok(&[
        "vm",
        "create",
        "--name",
        "dev",
        "--image",
        "plain",
        "--no-start",
    ]);
    let vm = t.vm("dev");
    let ip = vm["network"]["ip"].as_str().unwrap().to_owned();

    let report = t.json(&["doctor"]);
    let dns = support::doctor_check(&report, "dns");
    assert_eq!(dns["status"], "warn", "{dns}");
    let detail = dns["detail"].as_str().unwrap();
    assert!(detail.contains("listening on 172.30.0.1:5053"), "{detail}");
    assert!(
        detail.contains("172.30.0.1:53 is in use by another program"),
        "{detail}"
    );
    assert!(
        detail.contains("dig -p 5053 @172.30.0.1 NAME.vm"),
        "{detail}"
    );

    // The fallback answers.
    let fallback: SocketAddr = "172.30.0.1:5053".parse().unwrap();
    for tcp in [false, true] {
        let a = ask(&ns, fallback, "dev.vm.", RecordType::A, tcp);
        assert_eq!(rdata(&a), [ip.as_str()], "tcp={tcp}");
    }
    drop(squatter);

    // The VM's resolv.conf names the host's resolvers (less loopback), no search domain.
    let overlay = t
        .sandbox
        .root()
        .join("state/banger/vms")
        .join(vm["id"].as_str().unwrap())
        .join("overlay.ext4");
    let out = std::process::Command::new("debugfs")
        .args(["-R", "cat /upper/etc/resolv.conf"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nameserver 10.0.0.53\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A daemon that is not root cannot have port 53: it serves on the fallback port and the
/// doctor says why and how to ask it. Runs banger as `nobody` (with `setpriv`) in a namespace
/// whose bridge is made by hand; no guest boots here.
#[test]
fn a_daemon_that_is_not_root_serves_on_the_fallback_port() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    const NOBODY: u32 = 65534;
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!(
            "root not available (the test makes a network namespace and a bridge)"
        );
        return;
    }
    if !support::netns::have("setpriv", "--version") {
        banger_test_support::skip!("setpriv not found");
        return;
    }
    let Some(netns) = support::netns::Netns::create() else {
        banger_test_support::skip!("cannot create a network namespace");
        return;
    };
    let ns = netns.0.clone();
    ip_in(&ns, &["link", "add", "banger0", "type", "bridge"]);
    ip_in(&ns, &["addr", "add", "172.30.0.1/24", "dev", "banger0"]);
    ip_in(&ns, &["link", "set", "banger0", "up"]);

    // A home `nobody` owns, with copies of the binaries it can run wherever the build is.
    let home = tempfile::tempdir().unwrap();
    let root = home.path();
    for dir in ["home", "config/banger", "state", "run"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(
        root.join("config/banger/config.toml"),
        "[web]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    for bin in [env!("CARGO_BIN_EXE_banger"), env!("CARGO_BIN_EXE_bangerd")] {
        let to = root.join(std::path::Path::new(bin).file_name().unwrap());
        std::fs::copy(bin, &to).unwrap();
    }
    let chown = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(root)
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let banger = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "setpriv"])
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
            ])
            .arg(root.join("banger"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", root.join("home"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_STATE_HOME", root.join("state"))
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .env("BANGER_DAEMON_BIN", root.join("bangerd"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Stops the daemon whatever happens below, before the namespace goes.
    struct Stop<'a>(&'a dyn Fn(&[&str]) -> String);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            (self.0)(&["daemon", "stop"]);
        }
    }
    let _stop = Stop(&banger);

    let report: serde_json::Value =
        serde_json::from_str(&banger(&["doctor", "-o", "json"])).expect("a doctor report");
    let dns = support::doctor_check(&report, "dns");
    assert_eq!(dns["status"], "warn", "{dns}");
    let detail = dns["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(
            "listening on 172.30.0.1:5053, not port 53: port 53 needs root or \
             CAP_NET_BIND_SERVICE, which bangerd does not have"
        ),
        "{detail}"
    );
    assert!(
        dns["fix"]
            .as_str()
            .unwrap()
            .contains("setcap cap_net_bind_service=+ep"),
        "{dns}"
    );
    let fallback: SocketAddr = "172.30.0.1:5053".parse().unwrap();
    let nope = ask(&ns, fallback, "nope.vm.", RecordType::A, false);
    assert_eq!(nope.metadata.response_code, ResponseCode::NXDomain);
    assert!(nope.metadata.authoritative);
}

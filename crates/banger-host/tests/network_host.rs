//! Host tests of banger's network code against the real `ip` and `nft`, each inside a
//! throw-away network namespace of its own (deleted at the end, also when the test fails), so the
//! host's own links, rules and sysctls are never touched and no packet leaves the namespace.
//! They need root, `/dev/net/tun`, iproute2 and nftables; without them they print a visible
//! `SKIP:` line and pass.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use banger_host::network::netns::{self, Netns, NetnsRunner};
use banger_host::network::{
    self, IP_FORWARD, IpLinks, NetConfig, NetworkError, Privilege, Resource, VmNet, host_links,
};
use banger_host::runner::{CommandOutput, CommandRunner, CommandSpec, RealRunner, RunError};
use serde_json::Value;

/// Why these tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if RealRunner
            .run(&CommandSpec::new(program).arg("-V"))
            .is_err()
            && RealRunner
                .run(&CommandSpec::new(program).arg("--version"))
                .is_err()
        {
            return Some(format!("`{program}` not found (Debian package {package})"));
        }
    }
    None
}

macro_rules! require_host {
    () => {
        if let Some(why) = missing_prerequisite() {
            banger_test_support::skip!("{why}");
            return;
        }
    };
}

fn cfg() -> NetConfig {
    NetConfig {
        bridge: "banger0".into(),
        host_address: Ipv4Addr::new(172, 30, 0, 1),
        prefix_len: 24,
        privilege: Privilege::Root,
        tap_owner: 0,
    }
}

fn vm(id: &str, last_octet: u8, nat: bool) -> VmNet {
    VmNet::new(id, Ipv4Addr::new(172, 30, 0, last_octet), nat)
}

fn run_json(runner: &dyn CommandRunner, args: &[&str]) -> Value {
    let out = runner
        .run(&CommandSpec::new(args[0]).args(args[1..].iter().copied()))
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Comments of the rules in `inet banger`, from `nft -j list ruleset`.
fn banger_rule_comments(runner: &dyn CommandRunner) -> Vec<String> {
    let ruleset = run_json(runner, &["nft", "-j", "list", "ruleset"]);
    ruleset["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["rule"]["table"] == "banger" && o["rule"]["family"] == "inet")
        .map(|o| o["rule"]["comment"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn banger_table_exists(runner: &dyn CommandRunner) -> bool {
    let tables = run_json(runner, &["nft", "-j", "list", "tables"]);
    tables["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["table"]["name"] == "banger" && o["table"]["family"] == "inet")
}

fn ip_forward(runner: &dyn CommandRunner) -> String {
    runner
        .run(&CommandSpec::new("sysctl").args(["-n", IP_FORWARD]))
        .unwrap()
        .stdout_lossy()
        .trim()
        .to_owned()
}

fn link_names(runner: &dyn CommandRunner) -> Vec<String> {
    host_links(runner)
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect()
}

/// A namespace for a test, with IPv4 forwarding already on when `forwarding` (as on a host
/// that runs Docker, where new namespaces may inherit it): each test runs both ways, and
/// compares with what it found rather than with one machine's defaults.
fn namespace(forwarding: bool) -> Netns {
    let ns = Netns::create("banger-test-").unwrap();
    if forwarding {
        ns.runner()
            .run(&CommandSpec::new("sysctl").args(["-q", "-w", &format!("{IP_FORWARD}=1")]))
            .unwrap();
    }
    ns
}

/// What forwarding a namespace made by [`namespace`] started with.
fn found(forwarding: bool) -> &'static str {
    if forwarding { "1" } else { "0" }
}

/// The namespace is as fresh as when it was created: only loopback, no banger table, the
/// forwarding it started with (`forward`).
fn assert_pristine(runner: &dyn CommandRunner, forward: &str, context: &str) {
    assert_eq!(link_names(runner), ["lo"], "{context}: links left behind");
    assert!(!banger_table_exists(runner), "{context}: table left behind");
    assert_eq!(
        ip_forward(runner),
        forward,
        "{context}: ip_forward not as it was"
    );
}

/// Each test of a namespace's network, with forwarding off and on at the start.
macro_rules! both_ways {
    ($($name:ident),* $(,)?) => {
        mod forwarding_off {
            $(#[test] fn $name() { super::$name(false) })*
        }
        mod forwarding_on {
            $(#[test] fn $name() { super::$name(true) })*
        }
    };
}

both_ways!(
    two_vms_are_set_up_and_torn_down_without_leftovers,
    a_failure_at_any_step_of_a_real_setup_leaves_nothing_behind,
    a_tap_name_the_kernel_refuses_leaves_nothing_behind,
    orphans_are_found_and_the_table_is_rebuilt_from_a_list,
);

fn two_vms_are_set_up_and_torn_down_without_leftovers(forwarding: bool) {
    require_host!();
    let ns = namespace(forwarding);
    let runner = ns.runner();
    let cfg = cfg();
    let was = found(forwarding);
    assert_pristine(&runner, was, "fresh namespace");

    let nat = vm("aaaaaaaaaaaa0001", 2, true);
    let plain = vm("bbbbbbbbbbbb0002", 3, false);
    let nat_acquired = network::setup_vm_network(&runner, &IpLinks, &cfg, &nat).unwrap();
    let plain_acquired = network::setup_vm_network(&runner, &IpLinks, &cfg, &plain).unwrap();
    // Forwarding already on is not banger's to turn off: it is not acquired.
    let expected = if forwarding { 5 } else { 6 };
    assert_eq!(nat_acquired.len(), expected, "{nat_acquired:?}");
    assert_eq!(
        plain_acquired.resources(),
        [Resource::Tap {
            name: plain.tap.clone()
        }],
        "the second VM finds the bridge in place"
    );

    let links = host_links(&runner).unwrap();
    let bridge = links.iter().find(|l| l.name == "banger0").unwrap();
    assert_eq!(bridge.kind.as_deref(), Some("bridge"));
    assert!(bridge.up);
    assert_eq!(bridge.ipv4, [(Ipv4Addr::new(172, 30, 0, 1), 24)]);
    assert_eq!(bridge.mac.as_deref(), Some("06:00:ac:1e:00:01"));
    for tap in [&nat.tap, &plain.tap] {
        let link = links.iter().find(|l| &l.name == tap).unwrap();
        assert_eq!(link.kind.as_deref(), Some("tun"), "{tap}");
        assert_eq!(link.master.as_deref(), Some("banger0"), "{tap}");
        assert!(link.up, "{tap}");
    }
    let nat_comment = network::vm_comment(&nat.id);
    let comments = banger_rule_comments(&runner);
    assert_eq!(
        comments.iter().filter(|c| **c == nat_comment).count(),
        3,
        "{comments:?}"
    );
    assert!(
        !comments.iter().any(|c| c.contains(&plain.id)),
        "{comments:?}"
    );
    assert_eq!(ip_forward(&runner), "1");

    // Setting the NAT VM up again (a restart after a crash) replaces, not duplicates.
    let again = network::setup_vm_network(&runner, &IpLinks, &cfg, &nat).unwrap();
    assert_eq!(
        again.resources(),
        [
            Resource::Tap {
                name: nat.tap.clone()
            },
            Resource::NftVmRules { vm: nat.id.clone() }
        ]
    );
    let comments = banger_rule_comments(&runner);
    assert_eq!(
        comments.iter().filter(|c| **c == nat_comment).count(),
        3,
        "{comments:?}"
    );

    // The NAT VM goes first and, being the last NAT VM, takes ip_forward back with it (to
    // what it was).
    let (shared, _): (Vec<Resource>, Vec<Resource>) =
        nat_acquired.into_iter().partition(Resource::is_shared);
    let (sysctl, network_wide): (Vec<Resource>, Vec<Resource>) = shared
        .into_iter()
        .partition(|r| matches!(r, Resource::Sysctl { .. }));
    network::teardown_vm_network(&runner, &IpLinks, &cfg, &nat, &sysctl).unwrap();
    assert_eq!(ip_forward(&runner), was);
    // Regression: a bridge takes the lowest address of its ports unless it has one of its own,
    // so removing a tap used to change it under the other guests' ARP caches.
    let bridge_mac = host_links(&runner)
        .unwrap()
        .into_iter()
        .find(|l| l.name == "banger0")
        .and_then(|l| l.mac);
    assert_eq!(bridge_mac.as_deref(), Some("06:00:ac:1e:00:01"));
    assert!(!link_names(&runner).contains(&nat.tap));
    assert!(
        !banger_rule_comments(&runner).contains(&nat_comment),
        "the NAT VM's rules are gone"
    );

    // The last VM goes with the bridge and the table, as a caller removing the network asks.
    network::teardown_vm_network(&runner, &IpLinks, &cfg, &plain, &network_wide).unwrap();
    assert_pristine(&runner, was, "after teardown");

    // Tearing down again finds nothing and is still fine.
    network::teardown_vm_network(&runner, &IpLinks, &cfg, &nat, &network_wide).unwrap();
}

/// Fails the `n`th command it is given (1-based) without running it; runs the others.
#[derive(Debug)]
struct FailNth<R> {
    inner: R,
    n: usize,
    seen: AtomicUsize,
}

impl<R: CommandRunner> CommandRunner for FailNth<R> {
    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            return Err(RunError::failed(cmd, Some(1), b"injected failure"));
        }
        self.inner.run(cmd)
    }
}

fn a_failure_at_any_step_of_a_real_setup_leaves_nothing_behind(forwarding: bool) {
    require_host!();
    let ns = namespace(forwarding);
    let was = found(forwarding);
    let cfg = cfg();
    let nat = vm("cccccccccccc0003", 4, true);

    // Count the steps of a clean setup, then undo it.
    let counting = FailNth {
        inner: ns.runner(),
        n: 0,
        seen: AtomicUsize::new(0),
    };
    let acquired = network::setup_vm_network(&counting, &IpLinks, &cfg, &nat).unwrap();
    let steps = counting.seen.load(Ordering::SeqCst);
    // Forwarding found on is read, not written.
    assert_eq!(steps, if forwarding { 10 } else { 11 });
    acquired.release_all(&ns.runner(), &IpLinks, &cfg).unwrap();
    assert_pristine(&ns.runner(), was, "after a clean setup and release");

    for n in 1..=steps {
        let failing = FailNth {
            inner: ns.runner(),
            n,
            seen: AtomicUsize::new(0),
        };
        let err = network::setup_vm_network(&failing, &IpLinks, &cfg, &nat).unwrap_err();
        assert!(
            matches!(err, NetworkError::Command { .. }),
            "step {n}: {err:?}"
        );
        assert_pristine(&ns.runner(), was, &format!("failure at step {n}"));
    }
}

fn a_tap_name_the_kernel_refuses_leaves_nothing_behind(forwarding: bool) {
    require_host!();
    let ns = namespace(forwarding);
    let was = found(forwarding);
    let runner = ns.runner();
    let cfg = cfg();

    // Refused before anything runs.
    let bad = VmNet {
        tap: "bt-far-too-long-name".into(),
        ..vm("dddddddddddd0004", 5, true)
    };
    let err = network::setup_vm_network(&runner, &IpLinks, &cfg, &bad).unwrap_err();
    assert!(
        matches!(err, NetworkError::InvalidTapName { .. }),
        "{err:?}"
    );
    assert_pristine(&runner, was, "after an invalid name");

    // Slipped past validation (as a raw spec would be), the kernel refuses it mid-setup, after
    // the bridge exists: the rollback must remove the bridge again.
    let sneaky = SneakyTap {
        inner: ns.runner(),
        from: "bt-dddddddddddd".into(),
        to: "bt-with/slash".into(),
    };
    let err = network::setup_vm_network(&sneaky, &IpLinks, &cfg, &vm("dddddddddddd0004", 5, true))
        .unwrap_err();
    let text = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(text.contains("create tap"), "{text}");
    assert_pristine(&runner, was, "after the kernel refused the tap");
}

/// Rewrites the tap name in `ip tuntap add` only, to inject a name the kernel refuses.
#[derive(Debug)]
struct SneakyTap {
    inner: NetnsRunner<RealRunner>,
    from: String,
    to: String,
}

impl CommandRunner for SneakyTap {
    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError> {
        let mut cmd = cmd.clone();
        if cmd.args.first().map(String::as_str) == Some("tuntap") {
            for arg in &mut cmd.args {
                if *arg == self.from {
                    arg.clone_from(&self.to);
                }
            }
        }
        self.inner.run(&cmd)
    }
}

fn orphans_are_found_and_the_table_is_rebuilt_from_a_list(forwarding: bool) {
    require_host!();
    let ns = namespace(forwarding);
    let was = found(forwarding);
    let runner = ns.runner();
    let cfg = cfg();
    let a = vm("eeeeeeeeeeee0005", 6, true);
    let b = vm("ffffffffffff0006", 7, true);
    let mut shared = Vec::new();
    for v in [&a, &b] {
        let acquired = network::setup_vm_network(&runner, &IpLinks, &cfg, v).unwrap();
        shared.extend(acquired.into_iter().filter(Resource::is_shared));
    }

    // After a "crash", the store only knows `a`: `b`'s tap is an orphan and its rules go with
    // the rebuild.
    let orphans =
        network::list_orphan_taps(&runner, &IpLinks, std::slice::from_ref(&a.tap)).unwrap();
    assert_eq!(orphans, std::slice::from_ref(&b.tap));
    for tap in orphans {
        network::release(&runner, &IpLinks, &cfg, &Resource::Tap { name: tap }).unwrap();
    }
    network::rebuild_nat_table(&runner, &cfg, std::slice::from_ref(&a)).unwrap();
    let comments = banger_rule_comments(&runner);
    assert_eq!(
        comments
            .iter()
            .filter(|c| **c == network::vm_comment(&a.id))
            .count(),
        3
    );
    assert!(!comments.iter().any(|c| c.contains(&b.id)), "{comments:?}");

    // With no NAT VM left the table goes.
    network::rebuild_nat_table(&runner, &cfg, &[]).unwrap();
    assert!(!banger_table_exists(&runner));
    network::teardown_vm_network(&runner, &IpLinks, &cfg, &a, &shared).unwrap();
    assert_pristine(&runner, was, "after rebuild and teardown");
}

/// Runs `f` on a thread that has entered network namespace `netns`.
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let name = netns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&name).unwrap();
        f()
    })
}

/// From inside `netns`, one TCP connection attempt to `target`, given `secs` to succeed.
fn connect_from(netns: &str, target: std::net::SocketAddr, secs: u64) -> Result<(), String> {
    in_netns(netns, move || {
        std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(secs))
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .join()
    .unwrap()
}

/// A connection that must get through: a few patient attempts, so that a loaded machine (a
/// lost first SYN costs a full retransmission timeout) does not fail the test.
fn must_connect(netns: &str, target: std::net::SocketAddr) {
    let mut last = String::new();
    for _ in 0..3 {
        match connect_from(netns, target, 5) {
            Ok(()) => return,
            Err(error) => last = error,
        }
    }
    panic!("no connection from {netns} to {target}: {last}");
}

/// A connection that must not get through. Two seconds cover the first SYN and its first
/// retransmission; a packet that is dropped is dropped every time.
fn must_not_connect(netns: &str, target: std::net::SocketAddr) -> bool {
    connect_from(netns, target, 2).is_err()
}

/// The rules do what networking.md says: a NAT VM reaches the outside masqueraded as the host,
/// a plain VM does not get past the bridge. "VMs" are namespaces wired to the bridge with veth
/// pairs (a tap needs a VMM behind it); "outside" is one more namespace, which even has a route
/// back to the VMs' subnet so that only banger's rules can be what stops a plain VM. Every
/// packet stays inside namespaces this test created.
#[test]
fn nat_vms_reach_the_outside_masqueraded_and_plain_vms_do_not() {
    require_host!();
    let host = Netns::create("banger-test-").unwrap();
    let nat_guest = Netns::create("banger-test-").unwrap();
    let plain_guest = Netns::create("banger-test-").unwrap();
    let outside = Netns::create("banger-test-").unwrap();
    let sh = |ns: &Netns, line: &str| {
        let args: Vec<&str> = line.split_whitespace().collect();
        ns.runner()
            .run(&CommandSpec::new(args[0]).args(args[1..].iter().copied()))
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    };
    let cfg = cfg();
    let nat = vm("aaaaaaaaaaaa0007", 2, true);
    let plain = vm("bbbbbbbbbbbb0008", 3, false);
    network::setup_vm_network(&host.runner(), &IpLinks, &cfg, &nat).unwrap();
    network::setup_vm_network(&host.runner(), &IpLinks, &cfg, &plain).unwrap();

    for (guest, ip, port) in [
        (&nat_guest, "172.30.0.2", "g1"),
        (&plain_guest, "172.30.0.3", "g2"),
    ] {
        sh(
            &host,
            &format!(
                "ip link add {port} type veth peer name eth0 netns {}",
                guest.name()
            ),
        );
        sh(&host, &format!("ip link set {port} master banger0"));
        sh(&host, &format!("ip link set {port} up"));
        sh(guest, &format!("ip addr add {ip}/24 dev eth0"));
        sh(guest, "ip link set eth0 up");
        sh(guest, "ip route add default via 172.30.0.1");
    }
    sh(
        &host,
        &format!(
            "ip link add up0 type veth peer name eth0 netns {}",
            outside.name()
        ),
    );
    sh(&host, "ip addr add 10.99.0.1/24 dev up0");
    sh(&host, "ip link set up0 up");
    sh(&outside, "ip addr add 10.99.0.2/24 dev eth0");
    sh(&outside, "ip link set eth0 up");
    sh(&outside, "ip route add 172.30.0.0/24 via 10.99.0.1");

    let listener = in_netns(outside.name(), || {
        std::net::TcpListener::bind("10.99.0.2:4096").unwrap()
    })
    .join()
    .unwrap();
    let target: std::net::SocketAddr = "10.99.0.2:4096".parse().unwrap();

    must_connect(nat_guest.name(), target);
    let (_, seen) = listener.accept().unwrap();
    assert_eq!(
        seen.ip().to_string(),
        "10.99.0.1",
        "the NAT VM is masqueraded as the host"
    );
    assert!(
        must_not_connect(plain_guest.name(), target),
        "a plain VM does not get past the bridge"
    );

    // Without its rules (forwarding still on) the NAT VM is cut off too.
    network::teardown_vm_network(&host.runner(), &IpLinks, &cfg, &nat, &[]).unwrap();
    assert_eq!(ip_forward(&host.runner()), "1");
    assert!(must_not_connect(nat_guest.name(), target));

    // Proof that the table was what stopped them: without it, forwarding lets a plain VM
    // through, unmasqueraded.
    network::rebuild_nat_table(&host.runner(), &cfg, &[]).unwrap();
    must_connect(plain_guest.name(), target);
    let (_, seen) = listener.accept().unwrap();
    assert_eq!(seen.ip().to_string(), "172.30.0.3");
}

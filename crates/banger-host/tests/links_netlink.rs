//! Host tests of the in-process link code (netlink and `/dev/net/tun`) against the kernel, each
//! inside a throw-away network namespace of its own. The code under test runs on a thread that
//! entered the namespace with setns(2), as the daemon's threads do when the daemon runs in one;
//! what it did is checked with `ip` run inside the same namespace. Needs root, `/dev/net/tun`
//! and iproute2; without them each test prints a visible `SKIP:` line and passes.

use std::net::Ipv4Addr;

use banger_host::network::netns::{self, Netns};
use banger_host::network::{
    self, HostLink, IpLinks, Links, NetConfig, NetlinkLinks, NetworkError, Privilege, Resource,
    VmNet,
};
use banger_host::runner::{CommandRunner, CommandSpec, RealRunner};
use serde_json::Value;

fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    if RealRunner.run(&CommandSpec::new("ip").arg("-V")).is_err() {
        return Some("`ip` not found (Debian package iproute2)".into());
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

/// Runs `f` on a thread that entered `ns`, and returns what it returned (or its panic).
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = ns.name().to_owned();
    std::thread::spawn(move || {
        netns::enter(&name).unwrap();
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `ip ARGS` inside `ns`.
fn ip(ns: &Netns, args: &str) -> Result<String, String> {
    ns.runner()
        .run(&CommandSpec::new("ip").args(args.split_whitespace()))
        .map(|out| out.stdout_lossy())
        .map_err(|e| e.to_string())
}

fn cfg(owner: u32) -> NetConfig {
    NetConfig {
        bridge: "banger0".into(),
        host_address: Ipv4Addr::new(172, 30, 0, 1),
        prefix_len: 24,
        privilege: Privilege::Root,
        tap_owner: owner,
    }
}

fn by_name(mut links: Vec<HostLink>) -> Vec<HostLink> {
    links.sort_by(|a, b| a.name.cmp(&b.name));
    links
}

fn link_names(ns: &Netns) -> Vec<String> {
    by_name(IpLinks.list(&ns.runner()).unwrap())
        .into_iter()
        .map(|l| l.name)
        .collect()
}

#[test]
fn netlink_lists_what_ip_lists() {
    require_host!();
    let ns = Netns::create("banger-test-").unwrap();
    for line in [
        "link add br9 address 06:00:0a:05:00:01 type bridge",
        "addr add 10.5.0.1/24 dev br9",
        "addr add 10.6.0.1/16 dev br9",
        "addr add fd00::1/64 dev br9",
        "link set br9 up",
        "tuntap add dev bt-aaaaaaaaaaaa mode tap",
        "link set dev bt-aaaaaaaaaaaa master br9 up",
        "link add v0 type veth peer name v1",
        "addr add 10.7.0.2 peer 10.7.0.1/32 dev v0",
        "link set lo up",
    ] {
        ip(&ns, line).unwrap();
    }
    let via_ip = by_name(IpLinks.list(&ns.runner()).unwrap());
    let via_netlink = by_name(in_netns(&ns, || NetlinkLinks.list(&RealRunner).unwrap()));
    assert_eq!(via_netlink, via_ip);
    let names: Vec<&str> = via_netlink.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["br9", "bt-aaaaaaaaaaaa", "lo", "v0", "v1"]);
    let tap = &via_netlink[1];
    assert_eq!(tap.kind.as_deref(), Some("tun"));
    assert_eq!(tap.master.as_deref(), Some("br9"));
    assert!(tap.up);
}

/// The tap as `ip -d -j link show` sees it from inside the namespace.
fn tap_details(ns: &Netns, tap: &str) -> Value {
    let text = ip(ns, &format!("-d -j link show dev {tap}")).unwrap();
    let links: Value = serde_json::from_str(&text).unwrap();
    links[0].clone()
}

#[test]
fn a_netlink_tap_is_owned_attached_and_up_and_leaves_nothing_when_deleted() {
    require_host!();
    let ns = Netns::create("banger-test-").unwrap();
    let cfg = cfg(4321);
    let vm = VmNet::new("aaaaaaaaaaaa0001", Ipv4Addr::new(172, 30, 0, 2), false);
    let (c, v) = (cfg.clone(), vm.clone());
    // The bridge is made with `ip`, run from the namespace's thread like the daemon runs it.
    let acquired = in_netns(&ns, move || {
        network::setup_vm_network(&RealRunner, &NetlinkLinks, &c, &v)
    })
    .unwrap();
    assert_eq!(
        acquired
            .resources()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "bridge banger0",
            "address 172.30.0.1/24 on banger0",
            "tap bt-aaaaaaaaaaaa"
        ]
    );

    let tap = tap_details(&ns, &vm.tap);
    assert_eq!(tap["master"], "banger0", "{tap}");
    let flags: Vec<&str> = tap["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(flags.contains(&"UP"), "{tap}");
    let info = &tap["linkinfo"];
    assert_eq!(info["info_kind"], "tun", "{tap}");
    assert_eq!(info["info_data"]["type"], "tap", "{tap}");
    assert_eq!(
        info["info_data"]["pi"], false,
        "no packet information header: {tap}"
    );
    assert_eq!(info["info_data"]["persist"], true, "{tap}");
    // iproute2 prints the owner's name when it has one, its uid otherwise.
    let owner = &info["info_data"]["user"];
    assert!(owner == 4321 || owner == "4321", "{tap}");

    // Listing again, a start finds its own tap as `ip` does.
    let listed = in_netns(&ns, || NetlinkLinks.list(&RealRunner).unwrap());
    assert_eq!(
        by_name(listed),
        by_name(IpLinks.list(&ns.runner()).unwrap())
    );

    // Teardown of the VM and of the network it created, then again: nothing left, no error.
    let (c, v) = (cfg.clone(), vm.clone());
    in_netns(&ns, move || {
        let shared: Vec<Resource> = acquired.into_iter().filter(Resource::is_shared).collect();
        network::teardown_vm_network(&RealRunner, &NetlinkLinks, &c, &v, &shared).unwrap();
        network::teardown_vm_network(&RealRunner, &NetlinkLinks, &c, &v, &shared).unwrap();
        NetlinkLinks
            .delete(&RealRunner, &c, "bt-nonexistent")
            .unwrap();
    });
    assert_eq!(link_names(&ns), ["lo"]);
}

/// [`NetlinkLinks`], failing its attach without doing it.
#[derive(Debug)]
struct FailingAttach;

impl Links for FailingAttach {
    fn list(&self, runner: &dyn CommandRunner) -> Result<Vec<HostLink>, NetworkError> {
        NetlinkLinks.list(runner)
    }
    fn create_tap(
        &self,
        runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        NetlinkLinks.create_tap(runner, cfg, name)
    }
    fn attach_up(
        &self,
        _runner: &dyn CommandRunner,
        _cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        Err(NetworkError::System {
            action: format!("attach tap {name}"),
            source: std::io::Error::other("injected failure"),
        })
    }
    fn delete(
        &self,
        runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        NetlinkLinks.delete(runner, cfg, name)
    }
}

#[test]
fn a_failed_attach_releases_the_tap_and_the_bridge() {
    require_host!();
    let ns = Netns::create("banger-test-").unwrap();
    let vm = VmNet::new("bbbbbbbbbbbb0002", Ipv4Addr::new(172, 30, 0, 3), false);
    let err = in_netns(&ns, move || {
        network::setup_vm_network(&RealRunner, &FailingAttach, &cfg(0), &vm).unwrap_err()
    });
    assert!(
        matches!(&err, NetworkError::System { action, .. } if action.starts_with("attach tap")),
        "the attach's own error, since the cleanup succeeded: {err:?}"
    );
    assert_eq!(link_names(&ns), ["lo"]);
}

#[test]
fn taps_the_kernel_refuses_or_that_exist_are_errors_that_leave_nothing_new() {
    require_host!();
    let ns = Netns::create("banger-test-").unwrap();
    let names = in_netns(&ns, || {
        let cfg = cfg(0);
        // A name `validate_tap` would refuse, handed straight to the kernel.
        let refused = NetlinkLinks.create_tap(&RealRunner, &cfg, "bt-with/slash");
        assert!(refused.is_err(), "{refused:?}");
        NetlinkLinks
            .create_tap(&RealRunner, &cfg, "bt-cccccccccccc")
            .unwrap();
        let twice = NetlinkLinks.create_tap(&RealRunner, &cfg, "bt-cccccccccccc");
        assert!(
            matches!(&twice, Err(NetworkError::System { source, .. })
                if source.raw_os_error() == Some(16)),
            "an existing tap is never taken over (EBUSY): {twice:?}"
        );
        // Attaching to a bridge that does not exist fails and says which.
        let err = NetlinkLinks
            .attach_up(&RealRunner, &cfg, "bt-cccccccccccc")
            .unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("banger0"), "{text}");
        by_name(NetlinkLinks.list(&RealRunner).unwrap())
    });
    let names: Vec<&str> = names.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["bt-cccccccccccc", "lo"]);
}

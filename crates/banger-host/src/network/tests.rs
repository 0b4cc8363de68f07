//! Unit tests of the network module against the recording, failure-injecting fake runner: the
//! exact commands of a setup, and the exact rollback after a failure at each step.

use super::*;
use crate::runner::{CommandOutput, FakeRunner, Matcher};

const VM_ID: &str = "0123456789abcdef";
const TAP: &str = "bt-0123456789ab";

fn cfg() -> NetConfig {
    NetConfig {
        bridge: DEFAULT_BRIDGE.into(),
        host_address: Ipv4Addr::new(172, 30, 0, 1),
        prefix_len: 24,
        privilege: Privilege::Root,
        tap_owner: 1000,
    }
}

fn nat_vm() -> VmNet {
    VmNet::new(VM_ID, Ipv4Addr::new(172, 30, 0, 2), true)
}

fn plain_vm() -> VmNet {
    VmNet::new(VM_ID, Ipv4Addr::new(172, 30, 0, 2), false)
}

/// `nft -j list table inet banger` as nft prints it when VM `VM_ID` has its three rules.
fn table_listing() -> String {
    let comment = vm_comment(VM_ID);
    serde_json::json!({"nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "banger", "handle": 1}},
        {"chain": {"family": "inet", "table": "banger", "name": "forward", "handle": 2}},
        {"rule": {"family": "inet", "table": "banger", "chain": "postrouting", "handle": 7, "comment": comment, "expr": []}},
        {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 6, "comment": comment, "expr": []}},
        {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 5, "comment": comment, "expr": []}},
        {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 4, "comment": "banger-vm:ffffffffffffffff", "expr": []}},
        {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 3, "comment": "banger: isolate", "expr": []}},
    ]})
    .to_string()
}

/// Answers the reads a fresh host gives: no links, no tables, `ip_forward` off; a table listing
/// with the VM's rules for the cleanup path.
fn fresh_host(fake: FakeRunner) -> FakeRunner {
    fake.respond(
        Matcher::prefix("sysctl", ["-n"]),
        CommandOutput::with_stdout("0\n"),
    )
    .respond(
        Matcher::prefix("nft", ["-j", "list", "table"]),
        CommandOutput::with_stdout(table_listing()),
    )
}

/// One setup step: its command, and the commands that release what it acquired (if anything).
struct Step {
    command: &'static str,
    release: &'static [&'static str],
}

/// Every step of a NAT VM's setup on a fresh host, in order.
const NAT_SETUP: &[Step] = &[
    Step {
        command: "ip -d -j addr show",
        release: &[],
    },
    Step {
        command: "ip link add banger0 address 06:00:ac:1e:00:01 type bridge",
        release: &["ip link del banger0"],
    },
    Step {
        command: "ip addr add 172.30.0.1/24 dev banger0",
        release: &["ip addr del 172.30.0.1/24 dev banger0"],
    },
    Step {
        command: "ip link set banger0 up",
        release: &[],
    },
    Step {
        command: "ip tuntap add dev bt-0123456789ab mode tap user 1000",
        release: &["ip link del bt-0123456789ab"],
    },
    Step {
        command: "ip link set dev bt-0123456789ab master banger0 up",
        release: &[],
    },
    Step {
        command: "nft -j list tables",
        release: &[],
    },
    Step {
        command: "nft -j -f -",
        release: &["nft -j -f -"],
    },
    Step {
        command: "nft -j -f -",
        release: &["nft -j list table inet banger", "nft -j -f -"],
    },
    Step {
        command: "sysctl -n net.ipv4.ip_forward",
        release: &[],
    },
    Step {
        command: "sysctl -w net.ipv4.ip_forward=1",
        release: &["sysctl -w net.ipv4.ip_forward=0"],
    },
];

#[test]
fn nat_setup_on_a_fresh_host_runs_every_step_and_records_every_resource() {
    let fake = fresh_host(FakeRunner::new());
    let acquired = setup_vm_network(&fake, &IpLinks, &cfg(), &nat_vm()).unwrap();
    let expected: Vec<&str> = NAT_SETUP.iter().map(|s| s.command).collect();
    assert_eq!(fake.calls(), expected);
    assert_eq!(
        acquired.resources(),
        [
            Resource::Bridge {
                name: "banger0".into()
            },
            Resource::BridgeAddress {
                bridge: "banger0".into(),
                cidr: "172.30.0.1/24".into()
            },
            Resource::Tap { name: TAP.into() },
            Resource::NftTable,
            Resource::NftVmRules { vm: VM_ID.into() },
            Resource::Sysctl {
                key: IP_FORWARD.into(),
                previous: "0".into()
            },
        ]
    );
    let specs = fake.specs();
    let stdin = |i: usize| -> serde_json::Value {
        serde_json::from_slice(specs[i].stdin.as_deref().unwrap()).unwrap()
    };
    assert_eq!(stdin(7), nft::table_document(&cfg()));
    assert_eq!(stdin(8), nft::vm_rules_document(&cfg(), &nat_vm(), &[]));
}

/// The guard of the rollback contract: whichever step fails, exactly the resources acquired
/// before it are released, newest first, and the step's error is what the caller sees.
#[test]
fn a_failure_at_each_step_releases_exactly_what_was_acquired_in_reverse() {
    for n in 1..=NAT_SETUP.len() {
        let fake = fresh_host(FakeRunner::new().fail_nth(Matcher::any(), n, "boom"));
        let err = setup_vm_network(&fake, &IpLinks, &cfg(), &nat_vm()).unwrap_err();

        let mut expected: Vec<&str> = NAT_SETUP[..n].iter().map(|s| s.command).collect();
        for step in NAT_SETUP[..n - 1].iter().rev() {
            expected.extend(step.release);
        }
        assert_eq!(fake.calls(), expected, "failing step {n}");

        assert!(
            matches!(err, NetworkError::Command { .. }),
            "step {n}: cleanup succeeded, so the step's own error is returned: {err:?}"
        );
        let text = ledger::error_chain(&err);
        assert!(
            text.contains(NAT_SETUP[n - 1].command) && text.ends_with("boom"),
            "step {n}: {text}"
        );
    }
}

#[test]
fn a_failing_cleanup_step_does_not_stop_the_others_and_is_reported() {
    let fake = fresh_host(
        FakeRunner::new()
            .fail_nth(Matcher::prefix("sysctl", ["-w"]), 1, "sysctl boom")
            .fail_nth(Matcher::prefix("ip", ["link", "del", TAP]), 1, "tap boom"),
    );
    let err = setup_vm_network(&fake, &IpLinks, &cfg(), &nat_vm()).unwrap_err();

    let mut expected: Vec<&str> = NAT_SETUP.iter().map(|s| s.command).collect();
    expected.extend([
        "nft -j list table inet banger",
        "nft -j -f -",
        "nft -j -f -",
        "ip link del bt-0123456789ab",
        "ip addr del 172.30.0.1/24 dev banger0",
        "ip link del banger0",
    ]);
    assert_eq!(fake.calls(), expected);

    let NetworkError::CleanupFailed { cause, cleanup } = &err else {
        panic!("expected CleanupFailed, got {err:?}");
    };
    assert!(matches!(**cause, NetworkError::Command { .. }));
    assert_eq!(cleanup.failures.len(), 1);
    assert_eq!(
        cleanup.failures[0].resource,
        Resource::Tap { name: TAP.into() }
    );
    assert_eq!(
        err.to_string(),
        "cannot set net.ipv4.ip_forward to 1: `sysctl -w net.ipv4.ip_forward=1` failed with \
         exit code 1: sysctl boom; cleaning up afterwards also failed: cannot release 1 network \
         resource: tap bt-0123456789ab: cannot delete bt-0123456789ab: `ip link del \
         bt-0123456789ab` failed with exit code 1: tap boom"
    );
}

#[test]
fn release_all_joins_every_failure() {
    let fake = FakeRunner::new()
        .fail_nth(Matcher::prefix("ip", ["link", "del"]), 1, "first")
        .fail_nth(Matcher::prefix("ip", ["link", "del"]), 2, "second");
    let acquired = Acquired::from(vec![
        Resource::Bridge {
            name: "banger0".into(),
        },
        Resource::NftTable,
        Resource::Tap { name: TAP.into() },
    ]);
    let err = acquired.release_all(&fake, &IpLinks, &cfg()).unwrap_err();
    assert_eq!(
        fake.calls(),
        [
            "ip link del bt-0123456789ab",
            "nft -j -f -",
            "ip link del banger0"
        ]
    );
    assert_eq!(err.failures.len(), 2);
    let text = err.to_string();
    assert!(
        text.starts_with("cannot release 2 network resources: tap bt-0123456789ab: "),
        "{text}"
    );
    assert!(
        text.contains("first; bridge banger0: cannot delete banger0"),
        "{text}"
    );
    assert!(text.ends_with("second"), "{text}");
}

#[test]
fn setup_only_creates_what_is_missing() {
    let links = serde_json::json!([
        {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": [
            {"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {"ifname": "banger0", "flags": ["BROADCAST", "UP"], "linkinfo": {"info_kind": "bridge"},
         "addr_info": [{"family": "inet", "local": "172.30.0.1", "prefixlen": 24},
                       {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
    ]);
    let tables =
        r#"{"nftables":[{"metainfo":{}},{"table":{"family":"inet","name":"banger","handle":3}}]}"#;
    let fake = fresh_host(
        FakeRunner::new()
            .respond(
                Matcher::prefix("ip", ["-d", "-j"]),
                CommandOutput::with_stdout(links.to_string()),
            )
            .respond(
                Matcher::prefix("nft", ["-j", "list", "tables"]),
                CommandOutput::with_stdout(tables),
            )
            .respond(
                Matcher::prefix("sysctl", ["-n"]),
                CommandOutput::with_stdout("1\n"),
            ),
    );
    let acquired = setup_vm_network(&fake, &IpLinks, &cfg(), &nat_vm()).unwrap();
    assert_eq!(
        fake.calls(),
        [
            "ip -d -j addr show",
            "ip tuntap add dev bt-0123456789ab mode tap user 1000",
            "ip link set dev bt-0123456789ab master banger0 up",
            "nft -j list tables",
            "nft -j list table inet banger",
            "nft -j -f -",
            "sysctl -n net.ipv4.ip_forward",
        ]
    );
    assert_eq!(
        acquired.resources(),
        [
            Resource::Tap { name: TAP.into() },
            Resource::NftVmRules { vm: VM_ID.into() }
        ]
    );
    // Rules left by an earlier run are replaced in the same transaction.
    let doc: serde_json::Value =
        serde_json::from_slice(fake.specs()[5].stdin.as_deref().unwrap()).unwrap();
    insta::assert_json_snapshot!("vm_rules_replacing_stale", doc);
}

#[test]
fn a_bridge_without_its_address_gets_it_and_is_brought_up() {
    let links = r#"[{"ifname":"banger0","flags":["BROADCAST"],"linkinfo":{"info_kind":"bridge"},"addr_info":[]}]"#;
    let fake = FakeRunner::new().respond(
        Matcher::prefix("ip", ["-d", "-j"]),
        CommandOutput::with_stdout(links),
    );
    let acquired = setup_vm_network(&fake, &IpLinks, &cfg(), &plain_vm()).unwrap();
    assert_eq!(
        fake.calls(),
        [
            "ip -d -j addr show",
            "ip addr add 172.30.0.1/24 dev banger0",
            "ip link set banger0 up",
            "ip tuntap add dev bt-0123456789ab mode tap user 1000",
            "ip link set dev bt-0123456789ab master banger0 up",
        ]
    );
    assert_eq!(acquired.len(), 2);
    assert!(acquired.resources()[0].is_shared());
    assert!(!acquired.resources()[1].is_shared());
}

#[test]
fn a_tap_left_by_a_crash_is_replaced() {
    let links = r#"[{"ifname":"banger0","flags":["UP"],"linkinfo":{"info_kind":"bridge"},
        "addr_info":[{"family":"inet","local":"172.30.0.1","prefixlen":24}]},
        {"ifname":"bt-0123456789ab","flags":[],"master":"banger0","linkinfo":{"info_kind":"tun"}}]"#;
    let fake = FakeRunner::new().respond(
        Matcher::prefix("ip", ["-d", "-j"]),
        CommandOutput::with_stdout(links),
    );
    setup_vm_network(&fake, &IpLinks, &cfg(), &plain_vm()).unwrap();
    assert_eq!(
        fake.calls(),
        [
            "ip -d -j addr show",
            "ip link del bt-0123456789ab",
            "ip tuntap add dev bt-0123456789ab mode tap user 1000",
            "ip link set dev bt-0123456789ab master banger0 up",
        ]
    );
}

#[test]
fn conflicts_are_refused_before_anything_is_changed() {
    let cases = [
        (
            r#"[{"ifname":"banger0","flags":["UP"],"linkinfo":{"info_kind":"dummy"}}]"#,
            "banger0 exists but is a dummy link, not a bridge; remove it with `ip link del banger0` or configure another bridge name",
        ),
        (
            r#"[{"ifname":"eth0","flags":["UP"],"addr_info":[{"family":"inet","local":"172.30.5.9","prefixlen":16}]}]"#,
            "subnet 172.30.0.0/24 overlaps 172.30.5.9/16 on eth0; choose another `subnet` in config.toml",
        ),
        (
            r#"[{"ifname":"bt-0123456789ab","flags":["UP"],"linkinfo":{"info_kind":"veth"}}]"#,
            "bt-0123456789ab exists and is a veth link, not a tap banger left behind; remove it with `ip link del bt-0123456789ab`",
        ),
    ];
    for (links, message) in cases {
        let fake = FakeRunner::new().respond(
            Matcher::prefix("ip", ["-d", "-j"]),
            CommandOutput::with_stdout(links),
        );
        let err = setup_vm_network(&fake, &IpLinks, &cfg(), &plain_vm()).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(fake.calls(), ["ip -d -j addr show"]);
    }
}

#[test]
fn invalid_tap_names_are_refused_without_running_anything() {
    for (tap, reason) in [
        ("bt-0123456789abc", "1 to 15 bytes"),
        ("", "1 to 15 bytes"),
        ("bt-a/b", "letters, digits"),
        ("tap0", "starts with `bt-`"),
        ("bt-", "starts with `bt-`"),
    ] {
        let fake = FakeRunner::new();
        let vm = VmNet {
            tap: tap.into(),
            ..plain_vm()
        };
        let err = setup_vm_network(&fake, &IpLinks, &cfg(), &vm).unwrap_err();
        assert!(
            matches!(&err, NetworkError::InvalidTapName { name, .. } if name == tap),
            "{err:?}"
        );
        assert!(err.to_string().contains(reason), "{tap:?}: {err}");
        assert!(fake.calls().is_empty());
    }
}

#[test]
fn invalid_configuration_is_refused() {
    let fake = FakeRunner::new();
    let mut bad = cfg();
    bad.prefix_len = 31;
    assert!(matches!(
        setup_vm_network(&fake, &IpLinks, &bad, &plain_vm()),
        Err(NetworkError::InvalidConfig { .. })
    ));
    let mut bad = cfg();
    bad.bridge = "a-bridge-name-too-long".into();
    assert!(matches!(
        setup_vm_network(&fake, &IpLinks, &bad, &plain_vm()),
        Err(NetworkError::InvalidConfig { .. })
    ));
    assert!(fake.calls().is_empty());
}

#[test]
fn sudo_prefixes_privileged_commands_but_not_reads_of_links() {
    let fake = fresh_host(FakeRunner::new()).respond(
        Matcher::prefix("sudo", ["-n", "sysctl", "-n"]),
        CommandOutput::with_stdout("0\n"),
    );
    let cfg = NetConfig {
        privilege: Privilege::Sudo,
        ..cfg()
    };
    setup_vm_network(&fake, &IpLinks, &cfg, &nat_vm()).unwrap();
    let calls = fake.calls();
    assert_eq!(calls[0], "ip -d -j addr show");
    for call in &calls[1..] {
        assert!(call.starts_with("sudo -n "), "{call}");
    }
    assert_eq!(
        calls[1],
        "sudo -n ip link add banger0 address 06:00:ac:1e:00:01 type bridge"
    );
    assert_eq!(calls[6], "sudo -n nft -j list tables");
    let nft = &fake.specs()[7];
    assert_eq!(nft.args, ["-n", "nft", "-j", "-f", "-"]);
    assert!(nft.stdin.is_some(), "the document still goes to stdin");
}

#[test]
fn releasing_what_is_already_gone_succeeds() {
    let fake = FakeRunner::new()
        .fail_nth(
            Matcher::prefix("ip", ["link", "del"]),
            1,
            "Cannot find device \"bt-0123456789ab\"",
        )
        .fail_nth(
            Matcher::prefix("ip", ["addr", "del"]),
            1,
            "Error: ipv4: Address not found.",
        )
        .fail_nth(
            Matcher::prefix("nft", ["-j", "list", "table"]),
            1,
            "Error: No such file or directory\nlist table inet banger",
        );
    let c = cfg();
    release(&fake, &IpLinks, &c, &Resource::Tap { name: TAP.into() }).unwrap();
    release(
        &fake,
        &IpLinks,
        &c,
        &Resource::BridgeAddress {
            bridge: "banger0".into(),
            cidr: "172.30.0.1/24".into(),
        },
    )
    .unwrap();
    release(
        &fake,
        &IpLinks,
        &c,
        &Resource::NftVmRules { vm: VM_ID.into() },
    )
    .unwrap();
    // A VM without rules in an existing table: nothing to delete, no second nft call.
    release(
        &fake,
        &IpLinks,
        &c,
        &Resource::NftVmRules { vm: VM_ID.into() },
    )
    .unwrap();
    assert_eq!(
        fake.calls(),
        [
            "ip link del bt-0123456789ab",
            "ip addr del 172.30.0.1/24 dev banger0",
            "nft -j list table inet banger",
            "nft -j list table inet banger",
        ]
    );
    // Other failures are errors.
    let fake = FakeRunner::new().fail_nth("ip", 1, "Operation not permitted");
    let err = release(&fake, &IpLinks, &c, &Resource::Tap { name: TAP.into() }).unwrap_err();
    assert!(
        ledger::error_chain(&err).ends_with("Operation not permitted"),
        "{err}"
    );
}

#[test]
fn teardown_releases_the_vm_first_then_the_shared_resources_given() {
    let fake = fresh_host(FakeRunner::new());
    let shared = [Resource::Sysctl {
        key: IP_FORWARD.into(),
        previous: "0".into(),
    }];
    teardown_vm_network(&fake, &IpLinks, &cfg(), &nat_vm(), &shared).unwrap();
    assert_eq!(
        fake.calls(),
        [
            "nft -j list table inet banger",
            "nft -j -f -",
            "ip link del bt-0123456789ab",
            "sysctl -w net.ipv4.ip_forward=0",
        ]
    );
    let doc: serde_json::Value =
        serde_json::from_slice(fake.specs()[1].stdin.as_deref().unwrap()).unwrap();
    insta::assert_json_snapshot!("delete_vm_rules", doc);

    // A plain VM owns only its tap; a failing step does not stop the next one.
    let fake = FakeRunner::new().fail_nth("ip", 1, "busy");
    let err = teardown_vm_network(
        &fake,
        &IpLinks,
        &cfg(),
        &plain_vm(),
        &[Resource::Bridge {
            name: "banger0".into(),
        }],
    )
    .unwrap_err();
    assert_eq!(
        fake.calls(),
        ["ip link del bt-0123456789ab", "ip link del banger0"]
    );
    assert_eq!(err.failures.len(), 1);
}

#[test]
fn orphan_taps_are_banger_taps_no_record_owns() {
    let links = r#"[{"ifname":"lo"},{"ifname":"banger0"},{"ifname":"bt-aaaaaaaaaaaa"},
        {"ifname":"bt-bbbbbbbbbbbb"},{"ifname":"tap0"}]"#;
    let fake = FakeRunner::new().respond(
        Matcher::prefix("ip", ["-d", "-j"]),
        CommandOutput::with_stdout(links),
    );
    let orphans = list_orphan_taps(&fake, &IpLinks, &["bt-aaaaaaaaaaaa".into()]).unwrap();
    assert_eq!(orphans, ["bt-bbbbbbbbbbbb"]);

    let fake = FakeRunner::new().respond(
        Matcher::prefix("ip", ["-d", "-j"]),
        CommandOutput::with_stdout("not json"),
    );
    let err = list_orphan_taps(&fake, &IpLinks, &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot understand the output of `ip -d -j addr show`"),
        "{err}"
    );
}

#[test]
fn host_links_parses_kind_state_master_and_ipv4() {
    let text = r#"[{"ifindex":2,"ifname":"banger0","flags":["BROADCAST","MULTICAST","UP"],"address":"06:00:ac:1e:00:01",
        "operstate":"UNKNOWN","linkinfo":{"info_kind":"bridge","info_data":{"stp_state":0}},
        "addr_info":[{"family":"inet","local":"172.30.0.1","prefixlen":24,"scope":"global"},
                     {"family":"inet6","local":"fe80::1","prefixlen":64}]},
        {"ifindex":3,"ifname":"bt-0123456789ab","flags":["NO-CARRIER","BROADCAST","UP"],
         "master":"banger0","linkinfo":{"info_kind":"tun","info_data":{"type":"tap"}},"addr_info":[]}]"#;
    let links = link::parse_links(text).unwrap();
    assert_eq!(
        links,
        [
            HostLink {
                name: "banger0".into(),
                kind: Some("bridge".into()),
                up: true,
                master: None,
                mac: Some("06:00:ac:1e:00:01".into()),
                ipv4: vec![(Ipv4Addr::new(172, 30, 0, 1), 24)],
            },
            HostLink {
                name: TAP.into(),
                kind: Some("tun".into()),
                up: true,
                master: Some("banger0".into()),
                mac: None,
                ipv4: vec![],
            },
        ]
    );
    assert_eq!(link::parse_links("  \n").unwrap(), []);
}

#[test]
fn tap_names_fit_in_an_interface_name() {
    assert_eq!(tap_name("0123456789ABCDEF"), "bt-0123456789ab");
    let hashed = tap_name("some-vm");
    assert_eq!(hashed.len(), 15);
    assert!(hashed.starts_with("bt-"));
    assert_eq!(hashed, tap_name("some-vm"), "stable");
    assert_ne!(hashed, tap_name("some-vm2"));
    for id in ["0123456789abcdef", "x", "some-vm", "ünïcode"] {
        validate_tap(&tap_name(id)).unwrap();
    }
}

#[test]
fn overlap_and_subnet_arithmetic() {
    let a = Ipv4Addr::new(172, 30, 0, 1);
    assert!(overlaps(a, 24, Ipv4Addr::new(172, 30, 0, 200), 24));
    assert!(overlaps(a, 24, Ipv4Addr::new(172, 16, 0, 1), 12));
    assert!(!overlaps(a, 24, Ipv4Addr::new(172, 30, 1, 1), 24));
    assert!(!overlaps(a, 24, Ipv4Addr::new(127, 0, 0, 1), 8));
    assert_eq!(cfg().subnet(), "172.30.0.0/24");
    assert_eq!(cfg().host_cidr(), "172.30.0.1/24");
}

#[test]
fn rebuild_replaces_the_table_atomically() {
    let fake = FakeRunner::new();
    let other = VmNet::new("fedcba9876543210", Ipv4Addr::new(172, 30, 0, 3), false);
    rebuild_nat_table(&fake, &cfg(), &[nat_vm(), other]).unwrap();
    assert_eq!(fake.calls(), ["nft -j -f -"]);
    let doc: serde_json::Value =
        serde_json::from_slice(fake.specs()[0].stdin.as_deref().unwrap()).unwrap();
    assert_eq!(doc, nft::rebuild_document(&cfg(), &[nat_vm()]));
    insta::assert_json_snapshot!("rebuild_one_nat_vm", doc);

    insta::assert_json_snapshot!(
        "rebuild_no_nat_vm",
        nft::rebuild_document(&cfg(), &[plain_vm()])
    );

    // Without nft and without NAT VMs there is nothing to rebuild.
    let fake = FakeRunner::new().not_found("nft");
    rebuild_nat_table(&fake, &cfg(), &[plain_vm()]).unwrap();
    let fake = FakeRunner::new().fail_nth("sudo", 1, "sudo: nft: command not found");
    let sudo = NetConfig {
        privilege: Privilege::Sudo,
        ..cfg()
    };
    rebuild_nat_table(&fake, &sudo, &[]).unwrap();
    let fake = FakeRunner::new().not_found("nft");
    assert!(rebuild_nat_table(&fake, &cfg(), &[nat_vm()]).is_err());
}

#[test]
fn nft_documents() {
    insta::assert_json_snapshot!("table", nft::table_document(&cfg()));
    insta::assert_json_snapshot!("vm_rules", nft::vm_rules_document(&cfg(), &nat_vm(), &[]));
    insta::assert_json_snapshot!("delete_table", nft::delete_table_document());
}

#[test]
fn acquired_round_trips_through_json() {
    let acquired = Acquired::from(vec![
        Resource::Bridge {
            name: "banger0".into(),
        },
        Resource::BridgeAddress {
            bridge: "banger0".into(),
            cidr: "172.30.0.1/24".into(),
        },
        Resource::Tap { name: TAP.into() },
        Resource::NftTable,
        Resource::NftVmRules { vm: VM_ID.into() },
        Resource::Sysctl {
            key: IP_FORWARD.into(),
            previous: "0".into(),
        },
    ]);
    insta::assert_json_snapshot!("acquired", acquired);
    let text = serde_json::to_string(&acquired).unwrap();
    let back: Acquired = serde_json::from_str(&text).unwrap();
    assert_eq!(back, acquired);
    let shown: Vec<String> = back.into_iter().map(|r| r.to_string()).collect();
    assert_eq!(
        shown,
        [
            "bridge banger0",
            "address 172.30.0.1/24 on banger0",
            "tap bt-0123456789ab",
            "nftables table inet banger",
            "NAT rules of VM 0123456789abcdef",
            "sysctl net.ipv4.ip_forward (restoring 0)",
        ]
    );
}

/// A [`Links`] done "in-process" whose every step is handed to the recording runner as a
/// pseudo-command (`netlink create-tap NAME`, ...), so that one ordered list shows the link
/// steps among the commands, and the fake's failure injection reaches them too.
#[derive(Debug)]
struct InProcessLinks;

impl InProcessLinks {
    fn step(
        runner: &dyn CommandRunner,
        args: &[&str],
    ) -> Result<crate::runner::CommandOutput, NetworkError> {
        run(
            runner,
            &CommandSpec::new("netlink").args(args.iter().copied()),
            args.join(" "),
        )
    }
}

impl Links for InProcessLinks {
    fn list(&self, runner: &dyn CommandRunner) -> Result<Vec<HostLink>, NetworkError> {
        let out = Self::step(runner, &["list"])?;
        Ok(link::parse_links(&out.stdout_lossy()).unwrap())
    }
    fn create_tap(
        &self,
        runner: &dyn CommandRunner,
        _cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        Self::step(runner, &["create-tap", name]).map(drop)
    }
    fn attach_up(
        &self,
        runner: &dyn CommandRunner,
        cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        Self::step(runner, &["attach-up", name, &cfg.bridge]).map(drop)
    }
    fn delete(
        &self,
        runner: &dyn CommandRunner,
        _cfg: &NetConfig,
        name: &str,
    ) -> Result<(), NetworkError> {
        Self::step(runner, &["delete", name]).map(drop)
    }
}

/// The rollback contract holds for in-process links too: links are listed, the tap made and
/// attached through the [`Links`], and whichever step fails, what was acquired before it is
/// released newest first, the tap and the bridge through the same [`Links`].
#[test]
fn in_process_links_are_rolled_back_like_commands() {
    let setup = [
        "netlink list",
        "ip link add banger0 address 06:00:ac:1e:00:01 type bridge",
        "ip addr add 172.30.0.1/24 dev banger0",
        "ip link set banger0 up",
        "netlink create-tap bt-0123456789ab",
        "netlink attach-up bt-0123456789ab banger0",
    ];
    let releases: [&[&str]; 6] = [
        &[],
        &["netlink delete banger0"],
        &["ip addr del 172.30.0.1/24 dev banger0"],
        &[],
        &["netlink delete bt-0123456789ab"],
        &[],
    ];
    let fake = FakeRunner::new();
    let acquired = setup_vm_network(&fake, &InProcessLinks, &cfg(), &plain_vm()).unwrap();
    assert_eq!(fake.calls(), setup);
    assert_eq!(acquired.len(), 3);

    for n in 1..=setup.len() {
        let fake = FakeRunner::new().fail_nth(Matcher::any(), n, "boom");
        let err = setup_vm_network(&fake, &InProcessLinks, &cfg(), &plain_vm()).unwrap_err();
        let mut expected: Vec<&str> = setup[..n].to_vec();
        for release in releases[..n - 1].iter().rev() {
            expected.extend(release.iter());
        }
        assert_eq!(fake.calls(), expected, "failing step {n}");
        assert!(
            ledger::error_chain(&err).ends_with("boom"),
            "step {n}: {err}"
        );
    }

    // Teardown and orphan listing go through the same links.
    let fake = FakeRunner::new().respond(
        Matcher::prefix("netlink", ["list"]),
        CommandOutput::with_stdout(r#"[{"ifname":"lo"},{"ifname":"bt-bbbbbbbbbbbb"}]"#),
    );
    teardown_vm_network(&fake, &InProcessLinks, &cfg(), &plain_vm(), &[]).unwrap();
    let orphans = list_orphan_taps(&fake, &InProcessLinks, &[]).unwrap();
    assert_eq!(orphans, ["bt-bbbbbbbbbbbb"]);
    assert_eq!(
        fake.calls(),
        ["netlink delete bt-0123456789ab", "netlink list"]
    );
}

/// A restored VM's tap is made off the bridge, and joins it only when asked.
#[test]
fn an_isolated_setup_leaves_the_tap_off_the_bridge_until_it_is_attached() {
    let fake = fresh_host(FakeRunner::new());
    let acquired = setup_vm_network_isolated(&fake, &IpLinks, &cfg(), &nat_vm()).unwrap();
    let expected: Vec<&str> = NAT_SETUP
        .iter()
        .map(|s| s.command)
        .filter(|c| !c.contains("master banger0"))
        .collect();
    assert_eq!(fake.calls(), expected);
    assert!(
        acquired
            .resources()
            .contains(&Resource::Tap { name: TAP.into() })
    );
    attach_vm_tap(&fake, &IpLinks, &cfg(), &nat_vm()).unwrap();
    assert_eq!(
        fake.calls().last().unwrap(),
        "ip link set dev bt-0123456789ab master banger0 up"
    );
}

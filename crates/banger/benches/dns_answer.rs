//! Benchmark: how long bangerd takes to answer a DNS question on the bridge, for a VM's name
//! (A), a VM's address (PTR), a name in the domain that does not exist (NXDOMAIN), and a name
//! outside the domain forwarded to the host's resolver, here a fake one on the namespace's
//! loopback (whose own round trip is measured too, as the floor of a forward).
//!
//! Run with `cargo bench -p banger --bench dns_answer` as root (it makes a network namespace).
//! The daemon runs in that namespace with 100 VM records (not started: names are answered for
//! every VM banger owns); the bridge is made by hand with the host address, as a first VM start
//! would, so bangerd serves names from its start. Each figure is one UDP round trip from a
//! client in the namespace, `BENCH_RUNS` (default 2,000) questions after 200 not counted. It
//! prints figures and asserts nothing about time.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::Sandbox;
use support::dns::{FakeUpstream, NetnsResolvConf, ask_udp, in_netns, question};
use support::netns::{E2e, Netns};

const VMS: usize = 100;
const WARMUP: usize = 200;

fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    format!(
        "median {:.0} µs, min {:.0}, p95 {:.0}, p99 {:.0} ({} questions)",
        us(samples[samples.len() / 2]),
        us(samples[0]),
        us(samples[samples.len() * 95 / 100]),
        us(samples[samples.len() * 99 / 100]),
        samples.len()
    )
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("root not available (the benchmark makes a network namespace)");
        return;
    }
    let runs = banger_test_support::bench_runs(2000);
    let Some(netns) = Netns::create() else {
        banger_test_support::skip!("cannot create a network namespace");
        return;
    };
    let ns = netns.0.clone();
    for args in [
        &["link", "add", "banger0", "type", "bridge"][..],
        &["addr", "add", "172.30.0.1/24", "dev", "banger0"],
        &["link", "set", "banger0", "up"],
    ] {
        let ok = Command::new("ip")
            .args(["-n", &ns])
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?} in {ns}");
    }
    let _resolv = NetnsResolvConf::write(&ns, "nameserver 127.0.0.1\n");
    let upstream = FakeUpstream::start(&ns);
    let t = E2e {
        sandbox: Sandbox::new(),
        netns,
        cgroup_mounts: String::new(),
    };
    let (kernel, rootfs) = t.sandbox.boot_files();
    t.ok(&[
        "image",
        "register",
        "--name",
        "bench",
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ]);
    for i in 0..VMS {
        let name = format!("vm-{i:03}");
        t.ok(&[
            "vm",
            "create",
            "--name",
            &name,
            "--image",
            "bench",
            "--no-start",
        ]);
    }
    let ip = t.vm("vm-050")["network"]["ip"].as_str().unwrap().to_owned();
    let reverse = {
        let o: Vec<&str> = ip.split('.').collect();
        format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
    };
    let dns = t.json(&["doctor"])["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dns")
        .cloned()
        .unwrap();
    println!("doctor: {}", dns["detail"]);

    let bangerd: SocketAddr = "172.30.0.1:53".parse().unwrap();
    let fake: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let cases = vec![
        (
            "A, a VM's name (vm-050.vm)",
            bangerd,
            "vm-050.vm.".to_owned(),
            RecordType::A,
            ResponseCode::NoError,
        ),
        (
            "PTR, a VM's address",
            bangerd,
            reverse,
            RecordType::PTR,
            ResponseCode::NoError,
        ),
        (
            "NXDOMAIN, no such VM",
            bangerd,
            "nope.vm.".into(),
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "forwarded to the fake upstream",
            bangerd,
            "outside.example.".into(),
            RecordType::A,
            ResponseCode::NoError,
        ),
        (
            "the fake upstream asked directly",
            fake,
            "outside.example.".into(),
            RecordType::A,
            ResponseCode::NoError,
        ),
    ];
    let results = in_netns(&ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut results = Vec::new();
        for (what, server, name, kind, code) in cases {
            let mut samples = Vec::with_capacity(runs);
            for i in 0..WARMUP + runs {
                let q = question(&name, kind);
                let started = Instant::now();
                let a = ask_udp(&socket, server, &q);
                let took = started.elapsed();
                assert_eq!(a.metadata.response_code, code, "{what}");
                if i >= WARMUP {
                    samples.push(took);
                }
            }
            results.push((what, stats(samples)));
        }
        results
    });
    for (what, figures) in results {
        println!("{what:<36} {figures}");
    }
    println!("(the fake upstream was asked {} times)", upstream.asked());
}

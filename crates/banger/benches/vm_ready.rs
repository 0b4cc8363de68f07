//! From `banger vm create` to a ready VM (guest agent healthy, sshd answering), stage by stage,
//! with the bootstrapped Debian image. Runs the CLI and its daemon inside a throw-away network
//! namespace like the end-to-end test; the image is bootstrapped first from the host's network
//! (fast when `$BANGER_TEST_CACHE`, default `/var/cache/banger-test`, has its inputs).
//!
//! `BANGER_BENCH_VMM` picks the backend (`auto` by default: QEMU with TCG on a host whose KVM
//! cannot boot a stock kernel, Firecracker where it can), so the same benchmark runs unchanged
//! against Firecracker on a KVM host: `BANGER_BENCH_VMM=firecracker cargo bench -p banger --bench
//! vm_ready`. `BENCH_RUNS` sets the number of VMs (default 5). Needs root, debootstrap, QEMU or
//! Firecracker; prints `SKIP:` otherwise. The sandbox, namespace and VMs go when it ends.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use support::netns::E2e;

fn main() {
    let runs = banger_test_support::bench_runs(5);
    let vmm = std::env::var("BANGER_BENCH_VMM").unwrap_or_else(|_| "auto".into());
    // The image, from the host's network; then the daemon that runs VMs, in the namespace.
    let t = Instant::now();
    let Some(e2e) = E2e::with_debian_image(&[("debootstrap", "--version")]) else {
        return;
    };
    println!("image bootstrap: {:.1}s", t.elapsed().as_secs_f64());
    e2e.config_on(&vmm, "300s", "");

    let mut stages: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut totals = Vec::new();
    let mut backend = String::new();
    for run in 0..runs {
        let name = format!("bench-{run}");
        let t = Instant::now();
        e2e.ok(&["vm", "create", "--name", &name]);
        totals.push(t.elapsed().as_millis() as u64);
        let vm = e2e.vm(&name);
        backend = vm["runtime"]["vmm"].as_str().unwrap_or("?").to_owned();
        for stage in vm["runtime"]["boot"].as_array().unwrap() {
            let stage_name = stage["stage"].as_str().unwrap().to_owned();
            if !order.contains(&stage_name) {
                order.push(stage_name.clone());
            }
            stages
                .entry(stage_name)
                .or_default()
                .push(stage["ms"].as_u64().unwrap());
        }
        e2e.ok(&["vm", "delete", &name]);
    }

    println!("{runs} VMs on {backend}, 1 vCPU, 1 GiB; medians (min, max) per stage");
    for stage in &order {
        let mut ms = stages.remove(stage).unwrap_or_default();
        ms.sort_unstable();
        println!(
            "  {stage:<10} {:>8} ms  ({} .. {})",
            ms[ms.len() / 2],
            ms[0],
            ms[ms.len() - 1]
        );
    }
    totals.sort_unstable();
    println!(
        "  {:<10} {:>8} ms  ({} .. {})  vm create, end to end",
        "total",
        totals[totals.len() / 2],
        totals[0],
        totals[totals.len() - 1]
    );
}

//! From `banger vm create` to a ready VM (guest agent healthy, sshd answering), stage by stage,
//! with the bootstrapped Debian image. Runs the CLI and its daemon inside a throw-away network
//! namespace like the end-to-end test; the image is bootstrapped first from the host's network
//! (fast when `$BANGER_TEST_CACHE`, default `/var/cache/banger-test`, has its inputs).
//!
//! `BANGER_BENCH_VMM` picks the backend (`auto` by default: QEMU with TCG on a host whose KVM
//! cannot boot a stock kernel, Firecracker where it can), so the same benchmark runs unchanged
//! against Firecracker on a KVM host: `BANGER_BENCH_VMM=firecracker cargo bench -p banger --bench
//! vm_ready`. `BENCH_RUNS` sets the number of VMs (default 5). Needs root, debootstrap, QEMU or
//! Firecracker; prints `SKIP:` otherwise.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

fn main() {
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("root not available");
        return;
    }
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        banger_test_support::skip!("debootstrap not found");
        return;
    }
    let runs = banger_test_support::bench_runs(5);
    let vmm = std::env::var("BANGER_BENCH_VMM").unwrap_or_else(|_| "auto".into());
    let netns = format!("banger-bench-{}", std::process::id());
    if !Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .is_ok_and(|s| s.success())
    {
        banger_test_support::skip!("cannot create a network namespace");
        return;
    }
    let sandbox = support::Sandbox::new();
    let cache = std::env::var_os("BANGER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger-test"));
    sandbox.config(&format!(
        "vmm = \"{vmm}\"\ncache_dir = \"{}\"\n[defaults]\nvcpus = 1\nmemory_mib = 1024\n\
         disk = \"2G\"\nwork_disk = \"1G\"\nready_timeout = \"300s\"\n[web]\nenabled = false\n",
        cache.display()
    ));
    let in_netns = |args: &[&str]| -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &netns, env!("CARGO_BIN_EXE_banger")])
            .args(args)
            .envs(sandbox.env())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The image, from the host's network; then the daemon that runs VMs, in the namespace.
    let t = Instant::now();
    sandbox.ok(&["image", "bootstrap", "debian"]);
    sandbox.ok(&["daemon", "stop"]);
    println!(
        "image bootstrap (cache: {}): {:.1}s",
        cache.display(),
        t.elapsed().as_secs_f64()
    );

    let mut stages: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut totals = Vec::new();
    let mut backend = String::new();
    for run in 0..runs {
        let name = format!("bench-{run}");
        let t = Instant::now();
        let (ok, out, err) = in_netns(&["vm", "create", "--name", &name]);
        let total = t.elapsed();
        assert!(ok, "vm create failed:\n{out}\n{err}");
        totals.push(total.as_millis() as u64);
        let (_, shown, _) = in_netns(&["vm", "show", &name, "-o", "json"]);
        let vm: Value = serde_json::from_str(&shown).unwrap();
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
        let (ok, _, err) = in_netns(&["vm", "delete", &name]);
        assert!(ok, "vm delete failed: {err}");
    }
    let _ = in_netns(&["daemon", "stop"]);
    let _ = Command::new("ip").args(["netns", "del", &netns]).status();

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

//! Benchmark: `banger vm list -o json` end to end (process start, socket, daemon, SQLite,
//! rendering) with 1,000 VM records, and bangerd's resident memory when idle.
//!
//! Run with `cargo bench -p banger --bench vm_list`. It prints figures and asserts nothing
//! about time: targets (20 ms per list, 30 MiB idle RSS on a 2-core machine) are for people
//! to compare against, see docs/benchmarks.md.

use std::process::Stdio;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use support::Sandbox;

const VMS: usize = 1000;
const RUNS: usize = 100;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    format!(
        "min {:.2} ms, median {:.2} ms, p95 {:.2} ms, mean {:.2} ms ({} runs)",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 95 / 100]),
        mean,
        samples.len()
    )
}

fn main() {
    let env = Sandbox::new();
    // A /20 holds the 1,000 guest addresses the benchmark needs.
    env.config("subnet = \"10.240.0.0/20\"\n[web]\nlisten = \"127.0.0.1:0\"\n");

    let started = Instant::now();
    env.ok(&["daemon", "start"]);
    println!(
        "daemon start (cold, from the CLI): {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let pid = env.daemon_pid();
    std::thread::sleep(Duration::from_millis(300));
    let idle_empty = rss_kib(pid);

    env.register("bench");
    let started = Instant::now();
    for i in 0..VMS {
        let name = format!("vm-{i:04}");
        env.ok(&[
            "vm",
            "create",
            "--no-start",
            "--name",
            &name,
            "--image",
            "bench",
            "--vcpus",
            "1",
            "--memory",
            "256",
        ]);
    }
    let create_each = started.elapsed() / VMS as u32;
    println!(
        "vm create --no-start, end to end: {:.2} ms each ({VMS} VMs)",
        create_each.as_secs_f64() * 1000.0
    );

    // Warm up once, then measure.
    let out = env.json_text(&["vm", "list"]);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(VMS),
        "list returned the wrong count"
    );
    println!("vm list -o json output: {} KiB", out.len() / 1024);

    for (label, args, target) in [
        (
            "banger vm list -o json",
            &["vm", "list", "-o", "json"][..],
            "   [target < 20 ms]",
        ),
        ("banger vm list (text)", &["vm", "list"][..], ""),
    ] {
        let mut samples = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_banger"));
            cmd.args(args)
                .envs(env.env())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let t = Instant::now();
            let status = cmd.status().unwrap();
            samples.push(t.elapsed());
            assert!(status.success());
        }
        println!("{label}, {VMS} VMs: {}{target}", stats(samples));
    }

    std::thread::sleep(Duration::from_millis(500));
    println!(
        "bangerd idle RSS: {:.1} MiB empty, {:.1} MiB with {VMS} VMs after {} lists   [target < 30 MiB]",
        idle_empty as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0,
        2 * RUNS
    );
}

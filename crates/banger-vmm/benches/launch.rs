//! How long banger takes to launch a VM, against Firecracker launching the same VM by itself.
//!
//! - banger: from the `Vmm::launch` call until Firecracker accepted `InstanceStart` (spawn,
//!   wait for the API socket, eight configuration requests pipelined on one connection,
//!   `InstanceStart`; the VM has three drives and a vsock device, no network interface).
//! - raw: `firecracker --no-api --config-file <json> --id <id>` with the same configuration
//!   (the JSON is banger's own [`configuration`] of the same spec: same kernel, initrd, drives,
//!   vsock, logger and metrics), from the spawn until Firecracker's log says
//!   `Successfully started microvm`, which it writes right after starting the vCPUs, the point
//!   at which it would answer `InstanceStart`. The log is polled every 100 µs.
//!
//! Runs alternate between the two so that both see the same machine load; one warm-up run of
//! each is not counted. Besides the ratio of the medians, the median of the per-pair ratios and
//! the ratio of the fastest runs are printed: on a shared, busy machine they are the steadier
//! figures (the fastest runs are the ones the load disturbed least). The guest is the tiny
//! kernel of `banger_vmm::testing`. `BENCH_RUNS` changes the number of runs (default 10).

use std::path::Path;
use std::time::{Duration, Instant};

use banger_vmm::testing;
use banger_vmm::{Firecracker, Vmm};

fn main() {
    let Some(binary) = testing::firecracker_or_skip() else {
        return;
    };
    let runs = banger_test_support::bench_runs(10);
    let fx = testing::Fixture::new();
    let fc = Firecracker::new(binary.clone());

    let mut banger = Vec::new();
    let mut raw = Vec::new();
    for run in 0..=runs {
        let b = launch_banger(&fc, &fx, run);
        let r = launch_raw(&binary.path, &fx, run);
        if run > 0 {
            banger.push(b);
            raw.push(r);
        }
    }

    // Each banger run and the raw run after it saw about the same machine load; on a busy
    // machine the median of those pairs' ratios is steadier than the ratio of the medians.
    let mut paired: Vec<f64> = banger
        .iter()
        .zip(&raw)
        .map(|(b, r)| b.as_secs_f64() / r.as_secs_f64())
        .collect();
    paired.sort_by(f64::total_cmp);
    let paired_median = paired[paired.len() / 2];
    let (banger_median, raw_median) = (testing::median(&mut banger), testing::median(&mut raw));
    println!(
        "launch until InstanceStart is accepted, Firecracker {}, {runs} runs each:",
        binary.version
    );
    println!(
        "  banger launch (spawn + 9 API requests)  median {}  min {}  max {}",
        ms(banger_median),
        ms(banger[0]),
        ms(banger[banger.len() - 1])
    );
    println!(
        "  raw firecracker --no-api --config-file  median {}  min {}  max {}",
        ms(raw_median),
        ms(raw[0]),
        ms(raw[raw.len() - 1])
    );
    println!(
        "  ratio banger / raw: {:.2} (target: at most 1.30)",
        banger_median.as_secs_f64() / raw_median.as_secs_f64()
    );
    println!("  median of paired run ratios: {paired_median:.2}");
    println!(
        "  ratio of the fastest runs: {:.2}",
        banger[0].as_secs_f64() / raw[0].as_secs_f64()
    );
}

fn launch_banger(fc: &Firecracker, fx: &testing::Fixture, run: usize) -> Duration {
    let spec = fx.spec(&format!("b{run}"), None);
    let started = Instant::now();
    let vm = fc.launch(&spec).expect("banger launch");
    let elapsed = started.elapsed();
    fc.stop(&vm, Duration::ZERO).expect("stop");
    elapsed
}

fn launch_raw(firecracker: &Path, fx: &testing::Fixture, run: usize) -> Duration {
    testing::launch_raw(firecracker, &fx.spec(&format!("r{run}"), None))
}

fn ms(d: Duration) -> String {
    format!("{:6.2} ms", d.as_secs_f64() * 1000.0)
}

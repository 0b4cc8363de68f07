//! The same `banger vm create` on Firecracker and on QEMU inside the lab (docs/lab.md), and on
//! QEMU on this host: create to ready (agent and sshd answering), stage by stage. The lab is
//! opened with `LAB_QEMU=1`, so it has this host's QEMU beside Firecracker; inside, both run
//! with the lab's KVM (nested), while on this host QEMU runs under TCG (the host's own KVM cannot
//! boot a stock kernel). Lab figures are timed inside the lab (`date +%s%N` around the command),
//! host figures around the CLI call. The creates alternate (Firecracker, QEMU, host QEMU) and
//! each VM is deleted before the next.
//!
//! `BENCH_RUNS` sets the rounds (default 3). Needs root, QEMU, debootstrap and Firecracker, like
//! the lab test; prints `SKIP:` otherwise.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;
use support::lab::{self, Lab, median, stage_ms as stages, timed};

/// One column of figures: the whole create and each stage, over the rounds.
#[derive(Default)]
struct Column {
    create: Vec<f64>,
    stages: BTreeMap<String, Vec<f64>>,
    order: Vec<String>,
}

impl Column {
    fn add(&mut self, create_ms: f64, vm: &Value) {
        assert_eq!(vm["state"], "running", "{vm}");
        self.create.push(create_ms);
        for (name, ms) in stages(vm) {
            if !self.order.contains(&name) {
                self.order.push(name.clone());
            }
            self.stages.entry(name).or_default().push(ms);
        }
    }

    fn stage(&self, name: &str) -> String {
        self.stages
            .get(name)
            .map_or_else(|| "–".into(), |ms| format!("{:.0}", median(ms.clone())))
    }
}

fn main() {
    let runs = banger_test_support::bench_runs(3);
    let Some(t) = lab::open_for_bench(&[("LAB_QEMU", "1")]) else {
        return;
    };
    let lab = Lab { t: &t };
    let doctor = lab.ok(&["doctor"]);
    println!("inside the lab:\n{doctor}");

    let (mut fc, mut qemu, mut host) = (Column::default(), Column::default(), Column::default());
    for round in 0..runs {
        for (vmm, column) in [("firecracker", &mut fc), ("qemu", &mut qemu)] {
            let name = format!("{vmm}-{round}");
            let ms = timed(&lab, &format!("banger vm create --name {name} --vmm {vmm}"));
            column.add(ms, &lab.vm(&name));
            lab.ok(&["vm", "delete", &name]);
        }
        // The same create on this host, QEMU under TCG.
        let name = format!("host-{round}");
        let started = Instant::now();
        t.ok(&[
            "vm", "create", "--name", &name, "--vmm", "qemu", "--memory", "512",
        ]);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        host.add(ms, &t.vm(&name));
        t.ok(&["vm", "delete", &name]);
        println!(
            "round {}: lab Firecracker {:.0} ms, lab QEMU {:.0} ms, host QEMU (TCG) {:.0} ms",
            round + 1,
            fc.create[round],
            qemu.create[round],
            host.create[round]
        );
    }
    lab.ok(&["daemon", "stop"]);

    println!(
        "\nmedians of {runs} rounds, ms (lab: 1 vCPU, 512 MiB guests with the lab's nested KVM; \
         host: the same image under TCG)"
    );
    println!(
        "| stage | lab, Firecracker | lab, QEMU (KVM) | host, QEMU (TCG) |\n|---|---|---|---|"
    );
    let mut order = fc.order.clone();
    for name in qemu.order.iter().chain(&host.order) {
        if !order.contains(name) {
            order.push(name.clone());
        }
    }
    for name in &order {
        println!(
            "| `{name}` | {} | {} | {} |",
            fc.stage(name),
            qemu.stage(name),
            host.stage(name)
        );
    }
    println!(
        "| **`vm create` to ready** | **{:.0}** | **{:.0}** | **{:.0}** |",
        median(fc.create),
        median(qemu.create),
        median(host.create)
    );
}

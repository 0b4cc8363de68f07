//! Three ways to a Firecracker guest whose agent answers, in the lab (docs/lab.md): a cold
//! `banger vm create` (a boot), `banger vm clone` of a running VM (a snapshot and a restore),
//! and `banger vm create` that takes a ready VM from the warm pool (docs/pool.md). Each is timed
//! inside the lab (`date +%s%N` around the command, which returns once the agent and sshd
//! answer), with its stages up to the agent from `vm show`. The pool refills between rounds
//! (not timed).
//!
//! `BENCH_RUNS` sets the rounds (default 3). Needs root, QEMU, debootstrap and Firecracker, like
//! the lab test; prints `SKIP:` otherwise.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::lab::{self, Lab, median, stage_ms, timed};

/// Milliseconds of a VM's start stages up to its agent answering (ssh and services after it
/// left out).
fn to_agent(lab: &Lab<'_>, vm: &str) -> f64 {
    stage_ms(&lab.vm(vm))
        .iter()
        .take_while(|(name, _)| name != "ssh")
        .map(|(_, ms)| ms)
        .sum()
}

fn main() {
    let runs = banger_test_support::bench_runs(3);
    let Some(t) = lab::open_for_bench(&[]) else {
        return;
    };
    let lab = Lab { t: &t };
    let pool_ready = || {
        lab.json(&["pool", "list"])
            .as_array()
            .and_then(|a| a.first().cloned())
            .is_some_and(|p| p["ready"] == 1)
    };
    lab.ok(&["pool", "set", "debian", "1"]);
    lab.ok(&["vm", "create", "--name", "src"]);

    let (mut cold, mut clone, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cold_agent, mut clone_agent, mut pooled_agent) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..runs {
        // The pool's fill is not part of any figure.
        lab.wait_for("the pool to fill", Duration::from_secs(600), pool_ready);
        // Cold: a create the pool cannot serve (another memory size) boots.
        let name = format!("cold{round}");
        cold.push(timed(
            &lab,
            &format!("banger vm create --name {name} --memory 384"),
        ));
        cold_agent.push(to_agent(&lab, &name));
        let name = format!("clone{round}");
        clone.push(timed(&lab, &format!("banger vm clone src {name}")));
        clone_agent.push(to_agent(&lab, &name));
        let name = format!("pooled{round}");
        pooled.push(timed(&lab, &format!("banger vm create --name {name}")));
        assert_eq!(lab.vm(&name)["pool"], "taken", "the pool was not ready");
        pooled_agent.push(to_agent(&lab, &name));
        println!(
            "round {}: cold create {:.0} ms (agent {:.0}), clone {:.0} ms (agent {:.0}), \
             pooled create {:.0} ms (agent {:.0})",
            round + 1,
            cold[round],
            cold_agent[round],
            clone[round],
            clone_agent[round],
            pooled[round],
            pooled_agent[round]
        );
        for vm in [
            format!("cold{round}"),
            format!("clone{round}"),
            format!("pooled{round}"),
        ] {
            lab.ok(&["vm", "delete", &vm]);
        }
    }
    println!(
        "median of {runs}: command → agent and ssh: cold create {:.0} ms, clone {:.0} ms, \
         pooled create {:.0} ms; stages to the agent: cold {:.0} ms, clone {:.0} ms, pooled {:.0} ms",
        median(cold),
        median(clone),
        median(pooled),
        median(cold_agent),
        median(clone_agent),
        median(pooled_agent)
    );
    // What a daemon restart does to a full pool: the ready VM adopted (the same one, still
    // paused), or ended and remade.
    lab.wait_for("the pool to fill", Duration::from_secs(600), pool_ready);
    let hidden = "ls /root/.local/state/banger/vms/ | sort | tr '\\n' ' '";
    let before = lab.sh_ok(hidden);
    let restart = timed(&lab, "banger daemon restart && banger pool list");
    let after = lab.sh_ok(hidden);
    println!(
        "daemon restart with a full pool: {restart:.0} ms; VM directories before {before:?}, after {after:?}; \
         ready right after: {}",
        pool_ready()
    );
    println!(
        "{}",
        lab.sh_ok(
            "grep -E 'reconcile|discarding|dropping|adopt' /root/.local/state/banger/bangerd.log \
             | tail -n 20 | cut -c1-400"
        )
    );
    lab.ok(&["pool", "set", "debian", "0"]);
    lab.ok(&["vm", "delete", "src"]);
}

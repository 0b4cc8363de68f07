//! Firecracker guests booted for real, end to end, in banger's lab: a VM that banger makes on
//! QEMU (TCG, which offers the guest the CPU's virtualization) runs this build's `banger` and
//! `bangerd` with the Firecracker binary this host uses, and boots Firecracker guests one level
//! down (this host's own `/dev/kvm` is kvm_pvm, which cannot boot a stock guest kernel). The lab
//! is opened with `scripts/lab`, the way a person opens one, and everything inside is driven
//! through the real CLI inside: doctor, create and its readiness stages over Firecracker's
//! hybrid vsock, exec, ssh, cp, logs, health, ports, stats, restart, pause/resume, stop, a
//! Firecracker and a bangerd killed, delete.
//!
//! The lab VM lives in a network namespace the test makes; the inner daemon makes its own bridge
//! and taps inside the lab. Needs root, QEMU, debootstrap, the OpenSSH client and Firecracker
//! (`firecracker` in PATH, or `BANGER_FIRECRACKER`); prints `SKIP:` and passes without them.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::lab::{self, Lab};
use support::netns::E2e;

#[test]
fn firecracker_guests_boot_and_live_their_whole_life_in_the_lab() {
    let Some(firecracker) = lab::firecracker() else {
        println!("SKIP: firecracker not found (put it in PATH or set BANGER_FIRECRACKER)");
        return;
    };
    // The image is exported into the lab by scripts/lab.
    let Some(t) = E2e::with_debian_image(&[
        ("qemu-system-x86_64", "--version"),
        ("debootstrap", "--version"),
        ("ssh", "-V"),
    ]) else {
        return;
    };
    let kernel = t.json(&["image", "show", "debian"])["manifest"]["kernel_version"]
        .as_str()
        .unwrap()
        .to_owned();

    let opened = Instant::now();
    let (stdout, stderr, ok) = lab::open(&t, &firecracker);
    assert!(
        ok,
        "scripts/lab failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    println!(
        "lab opened in {:.1}s\n{stdout}",
        opened.elapsed().as_secs_f64()
    );
    let lab = Lab { t: &t };

    // The doctor inside: this KVM boots stock kernels, and auto picks Firecracker.
    let doctor = lab.json(&["doctor"]);
    let check = |name: &str| -> Value {
        doctor["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {doctor}"))
            .clone()
    };
    assert_eq!(check("kvm")["status"], "ok", "{doctor}");
    assert_eq!(check("firecracker")["status"], "ok", "{doctor}");
    assert!(
        check("vmm")["detail"]
            .as_str()
            .unwrap()
            .contains("uses Firecracker"),
        "{doctor}"
    );

    // create, without --vmm, runs on Firecracker and waits for the agent (over the hybrid
    // vsock), then sshd.
    let started = Instant::now();
    let (code, out, err) = lab.banger(&["vm", "create", "--name", "fc"]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!(
        "in the lab: create → ready on Firecracker: {:.1}s\n{err}",
        started.elapsed().as_secs_f64()
    );
    for stage in ["agent: done", "ssh: done"] {
        assert!(err.contains(stage), "{stage} not in {err}");
    }
    let vm = lab.vm("fc");
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["runtime"]["vmm"], "firecracker", "{vm}");
    assert_eq!(
        Lab::stages(&vm),
        ["checks", "network", "vmm", "started", "agent", "ssh"],
        "{vm}"
    );

    // The Firecracker process names its VM (it was the daemon's spare, started as this VM).
    let pid = vm["runtime"]["pid"].as_u64().unwrap();
    let id = vm["id"].as_str().unwrap().to_owned();
    let cmdline = lab.sh_ok(&format!("tr '\\0' ' ' < /proc/{pid}/cmdline"));
    assert!(cmdline.contains(&format!("--id {id}")), "{cmdline}");

    // exec: output and exit codes through two agents.
    let (code, out, _) = lab.banger(&["vm", "exec", "fc", "--", "uname", "-r"]);
    assert_eq!((code, out.trim()), (0, kernel.as_str()));
    let (code, out, err) = lab.banger(&[
        "vm",
        "exec",
        "fc",
        "--",
        "sh",
        "-c",
        "echo o; echo e >&2; exit 7",
    ]);
    assert_eq!((code, out.as_str(), err.as_str()), (7, "o\n", "e\n"));
    // ssh, with the VM's own host key and banger's key.
    let (code, out, err) = lab.banger(&["vm", "ssh", "fc", "--", "hostname"]);
    assert_eq!((code, out.trim()), (0, "fc"), "{err}");

    // cp both ways, modes kept.
    lab.sh_ok(
        "mkdir -p /root/cp-src/sub && printf '#!/bin/sh\\necho hi\\n' > /root/cp-src/sub/tool.sh \
         && chmod 755 /root/cp-src/sub/tool.sh",
    );
    lab.ok(&["vm", "cp", "/root/cp-src", "fc:/root"]);
    assert_eq!(
        lab.ok(&["vm", "exec", "fc", "--", "/root/cp-src/sub/tool.sh"]),
        "hi\n"
    );
    // As `docker cp`: a directory copied to a missing destination becomes it.
    lab.ok(&["vm", "cp", "fc:/root/cp-src", "/root/cp-back"]);
    assert_eq!(
        lab.sh_ok("stat -c %a /root/cp-back/sub/tool.sh && cat /root/cp-back/sub/tool.sh"),
        "755\n#!/bin/sh\necho hi\n"
    );

    // logs (the serial console), health (the guest's boot milestones), ports, stats.
    let logs = lab.ok(&["vm", "logs", "fc"]);
    assert!(logs.contains("Linux version"), "{logs}");
    let health = lab.json(&["vm", "health", "fc"]);
    assert_eq!(health["ready"], true, "{health}");
    let guest_stages: Vec<&str> = health["boot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(guest_stages.first(), Some(&"init_started"), "{health}");
    assert!(guest_stages.contains(&"agent_listening"), "{health}");
    let ports = lab.json(&["vm", "ports", "fc"]);
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == 22 && p["process"] == "sshd"),
        "{ports}"
    );
    let stats = lab.json(&["vm", "stats", "fc"]);
    assert!(stats.is_object(), "{stats}");

    // restart keeps /root (and the guest synced before powering off).
    lab.ok(&[
        "vm",
        "exec",
        "fc",
        "--",
        "sh",
        "-c",
        "echo kept > /root/kept",
    ]);
    let (code, _, err) = lab.banger(&["vm", "restart", "fc"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lab.ok(&["vm", "exec", "fc", "--", "cat", "/root/kept"]),
        "kept\n"
    );

    // pause, then resume: the agent answers again.
    lab.ok(&["vm", "pause", "fc"]);
    assert_eq!(lab.vm("fc")["state"], "paused");
    lab.ok(&["vm", "resume", "fc"]);
    assert_eq!(lab.vm("fc")["state"], "running");
    assert_eq!(
        lab.ok(&["vm", "exec", "fc", "--", "cat", "/root/kept"]),
        "kept\n"
    );
    assert_eq!(lab.json(&["vm", "health", "fc"])["ready"], true);

    // bangerd killed with SIGKILL: the next daemon adopts the running guest, which answers.
    let daemon = lab.json(&["daemon", "status"])["pid"].as_u64().unwrap();
    let vm_pid = lab.vm("fc")["runtime"]["pid"].as_u64().unwrap();
    lab.sh_ok(&format!(
        "kill -9 {daemon}; while [ -e /proc/{daemon} ]; do sleep 0.1; done"
    ));
    let adopted = lab.vm("fc");
    assert_eq!(adopted["state"], "running", "{adopted}");
    assert_eq!(adopted["runtime"]["pid"].as_u64().unwrap(), vm_pid);
    assert_eq!(
        lab.ok(&["vm", "exec", "fc", "--", "cat", "/root/kept"]),
        "kept\n"
    );

    // stop ends the guest cleanly; a start brings /root back.
    let (code, _, err) = lab.banger(&["vm", "stop", "fc"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(lab.vm("fc")["state"], "stopped");
    assert!(
        lab.sh(&format!("[ -e /proc/{vm_pid} ]")).0 != 0,
        "the stopped VM's Firecracker is gone"
    );

    // Firecracker killed with SIGKILL: noticed, the VM failed, its tap gone.
    let (code, _, err) = lab.banger(&["vm", "start", "fc", "--no-wait"]);
    assert_eq!(code, 0, "{err}");
    let running = lab.vm("fc");
    let pid = running["runtime"]["pid"].as_u64().unwrap();
    let tap = running["runtime"]["tap"].as_str().unwrap().to_owned();
    lab.sh_ok(&format!("kill -9 {pid}"));
    lab.wait_for(
        "the killed Firecracker to be noticed",
        Duration::from_secs(60),
        || lab.vm("fc")["state"] == "failed",
    );
    let failed = lab.vm("fc");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("killed or crashed"),
        "{failed}"
    );
    let links = lab.sh_ok("ip -br link");
    assert!(!links.contains(&tap), "{links}");

    // delete leaves no process, tap, socket or file inside the lab.
    let id = failed["id"].as_str().unwrap().to_owned();
    lab.ok(&["vm", "delete", "fc"]);
    let links = lab.sh_ok("ip -br link");
    assert!(!links.contains("bt-"), "{links}");
    // (The daemon's next spare Firecracker waits under a fresh id of its own.)
    let left = lab.sh_ok(&format!(
        "ls /root/.local/state/banger/vms/ 2>/dev/null; ls /tmp/banger-0/vms/ 2>/dev/null \
         | grep '^{id}'; ps -eo args | grep -c '[f]irecracker.*{id}' || true"
    ));
    assert_eq!(left.trim(), "0", "left in the lab: {left}");
    lab.ok(&["daemon", "stop"]);
    let (_, procs, _) = lab.sh("ps -eo comm | grep -c -x firecracker || true");
    assert_eq!(
        procs.trim(),
        "0",
        "no Firecracker outlives the inner daemon"
    );
}

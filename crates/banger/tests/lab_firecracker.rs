//! Firecracker guests booted for real, end to end, in banger's lab: a VM that banger makes on
//! QEMU (TCG, which offers the guest the CPU's virtualization) runs this build's `banger` and
//! `bangerd` with the Firecracker binary this host uses, and boots Firecracker guests one level
//! down (this host's own `/dev/kvm` is kvm_pvm, which cannot boot a stock guest kernel). The lab
//! is opened with `scripts/lab`, the way a person opens one, and everything inside is driven
//! through the real CLI inside: doctor, create and its readiness stages over Firecracker's
//! hybrid vsock, exec, ssh, cp, logs, health, ports, stats, restart, pause/resume, stop, a
//! Firecracker and a bangerd killed, delete; then snapshots, restores and clones; then the warm
//! pool.
//!
//! The lab VM lives in a network namespace the test makes; the inner daemon makes its own bridge
//! and taps inside the lab. Needs root, QEMU, debootstrap, the OpenSSH client and Firecracker
//! (`firecracker` in PATH, or `BANGER_FIRECRACKER`); prints `SKIP:` and passes without them.
//!
//! It stays one file because it is one test: opening the lab costs minutes, so every phase (life,
//! soak, builds, snapshots, a killed daemon, the warm pool) runs in the one lab the test opens.
//! Each phase leaves the lab as it found it, without VMs: when the lab VM itself dies under a
//! phase (QEMU's emulation of SVM has faults of its own; see `Lab::run_phase`), that phase runs
//! again in a fresh lab (four runs at most), and the test's standard error says so with the
//! evidence.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::lab::{self, Lab};
use support::netns::E2e;

/// The lab's root bangerd runs Firecracker behind the jailer the lab was given: the VM's
/// Firecracker runs as a uid other than root, chrooted into its jail, in a cgroup whose
/// `memory.max` is the VM's memory plus the configured overhead (the lab mounts cgroup v2).
fn assert_jailed(lab: &Lab<'_>, vm: &Value, jailer: &Value, cgroups: &Value) {
    assert_eq!(jailer["status"], "ok", "{jailer}");
    assert_eq!(cgroups["status"], "ok", "{cgroups}");
    let jail = &vm["runtime"]["jail"];
    let pid = vm["runtime"]["pid"].as_u64().unwrap();
    let uid = jail["uid"].as_u64().expect("the VM is jailed");
    assert_ne!(uid, 0, "{vm}");
    let status = lab.sh_ok(&format!("grep -E '^(Uid|NSpid):' /proc/{pid}/status"));
    assert!(
        status.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")),
        "Firecracker runs as the jail's uid: {status}"
    );
    let chroot = jail["chroot"].as_str().unwrap();
    // Its / is the jail: the API socket is there, and nothing of the lab's own tree.
    lab.sh_ok(&format!(
        "[ \"$(stat -L -c %i /proc/{pid}/root/api.sock)\" = \"$(stat -c %i {chroot}/api.sock)\" ] \
         && [ -e /proc/{pid}/root/firecracker ] && [ ! -e /proc/{pid}/root/etc/passwd ]"
    ));
    let cgroup = jail["cgroup"].as_str().expect("cgroup v2 in the lab");
    let memory_mib = vm["memory_mib"].as_u64().unwrap();
    let max = lab.sh_ok(&format!("cat {cgroup}/memory.max"));
    assert_eq!(
        max.trim().parse::<u64>().unwrap(),
        (memory_mib + 64) * 1024 * 1024,
        "memory.max of {cgroup}"
    );
    assert_eq!(
        jail["memory_max"].as_u64(),
        Some((memory_mib + 64) * 1024 * 1024)
    );
    let member = lab.sh_ok(&format!("cat /proc/{pid}/cgroup"));
    assert!(
        cgroup.ends_with(member.trim().trim_start_matches("0::")),
        "{member} vs {cgroup}"
    );
    println!("in the lab: Firecracker pid {pid} runs as uid {uid} in {chroot}, cgroup {cgroup}");
}

#[test]
fn firecracker_guests_boot_and_live_their_whole_life_in_the_lab() {
    let Some(firecracker) = lab::firecracker() else {
        banger_test_support::skip_absent!(
            "firecracker not found (put it in PATH or set BANGER_FIRECRACKER)"
        );
        return;
    };
    lab::phase("the host's Debian image");
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

    lab::phase("opening the lab");
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

    // Each phase leaves the lab without VMs, so that a phase can run again in a fresh lab
    // (see `Lab::run_phase`).
    lab.run_phase(&firecracker, "doctor and create", |lab| {
        first_vm_lives(lab, &kernel)
    });
    lab.run_phase(&firecracker, "snapshots and clones", snapshots_and_clones);
    lab.run_phase(&firecracker, "the warm pool", warm_pool);
    lab.run_phase(
        &firecracker,
        "images built and promoted",
        images_built_on_firecracker,
    );
    lab.run_phase(&firecracker, "a soak with real guests", |lab| {
        soak_with_real_guests(lab, 8)
    });

    lab.ok(&["daemon", "stop"]);
    let (_, procs, _) = lab.sh("ps -eo comm | grep -c -x firecracker || true");
    assert_eq!(
        procs.trim(),
        "0",
        "no Firecracker outlives the inner daemon"
    );
}

/// The first Firecracker VM's whole life inside the lab: the doctor's verdict, create, exec,
/// ssh, cp, logs, health, ports, stats, restart, pause, a killed daemon, stop, reset, poweroff,
/// a killed Firecracker and delete.
fn first_vm_lives(lab: &Lab<'_>, kernel: &str) {
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

    // The Firecracker process names its VM.
    let pid = vm["runtime"]["pid"].as_u64().unwrap();
    let id = vm["id"].as_str().unwrap().to_owned();
    let cmdline = lab.sh_ok(&format!("tr '\\0' ' ' < /proc/{pid}/cmdline"));
    assert!(cmdline.contains(&format!("--id {id}")), "{cmdline}");
    if lab::jailer().is_some() {
        assert_jailed(lab, &vm, &check("jailer"), &check("cgroups"));
    }

    // exec: output and exit codes through two agents.
    let (code, out, _) = lab.banger(&["vm", "exec", "fc", "--", "uname", "-r"]);
    assert_eq!((code, out.trim()), (0, kernel));
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
    // stats: the guest's own figures, which must agree with the VM's spec.
    let stats = lab.json(&["vm", "stats", "fc"]);
    let spec = lab.vm("fc");
    assert_eq!(stats["cpus"], spec["vcpus"], "{stats}");
    let total = stats["memory"]["total_bytes"].as_u64().unwrap_or(0);
    let memory = spec["memory_mib"].as_u64().unwrap() << 20;
    assert!(
        total <= memory && total > memory / 2,
        "the guest sees {total} bytes of {memory}: {stats}"
    );
    assert!(
        stats["memory"]["available_bytes"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert!(stats["uptime_ms"].as_u64().unwrap_or(0) > 0, "{stats}");
    let disks: Vec<&str> = stats["disks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["total_bytes"].as_u64().unwrap_or(0) > 0)
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert!(disks.contains(&"/") && disks.contains(&"/root"), "{stats}");

    lab.phase("restart, pause, a killed daemon, exec");
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

    // exec passes piped input through both agents, with --env and --workdir.
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (code, out, err) = lab.t.banger_stdin(
        &[
            "vm", "exec", "lab", "--", "banger", "vm", "exec", "fc", "--", "cat",
        ],
        &input,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out == input, "{} bytes back of {}", out.len(), input.len());
    let (code, out, err) = lab.banger(&[
        "vm",
        "exec",
        "--env",
        "PROBE=lab",
        "--workdir",
        "/tmp",
        "fc",
        "--",
        "sh",
        "-c",
        "echo $PROBE $(pwd)",
    ]);
    assert_eq!((code, out.as_str()), (0, "lab /tmp\n"), "{err}");
    // -t: the command gets a terminal in the guest (the CLI in the lab gets one from script).
    let (code, out, err) = lab.sh("script -qec 'banger vm exec -t fc -- tty' /dev/null");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("/dev/pts/"), "{out}");
    lab.ok(&[
        "vm",
        "exec",
        "fc",
        "--",
        "sh",
        "-c",
        "echo gone > /etc/banger-reset-probe",
    ]);

    lab.phase("stop, reset, poweroff, a killed Firecracker, delete");
    // stop ends the guest cleanly; a start brings /root back. The guest ends itself (the
    // agent's shutdown reboots it, and Firecracker exits on the reset): its VMM is not
    // terminated after the graceful wait, as a guest that merely powered off would leave it.
    let stopping = Instant::now();
    let (code, _, err) = lab.banger(&["vm", "stop", "fc"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the guest shut down"), "{err}");
    println!(
        "in the lab: vm stop (the guest ends itself): {:.1}s",
        stopping.elapsed().as_secs_f64()
    );
    assert_eq!(lab.vm("fc")["state"], "stopped");
    assert!(
        lab.sh(&format!("[ -e /proc/{vm_pid} ]")).0 != 0,
        "the stopped VM's Firecracker is gone"
    );

    // reset: a fresh root from the image, /root and the VM's identity kept.
    lab.ok(&["vm", "reset", "fc"]);
    let (code, _, err) = lab.banger(&["vm", "start", "fc"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = lab.banger(&["vm", "exec", "fc", "--", "cat", "/etc/banger-reset-probe"]);
    assert_ne!(code, 0, "the root was reset: {out}");
    assert_eq!(
        lab.ok(&["vm", "exec", "fc", "--", "cat", "/root/kept"]),
        "kept\n"
    );
    assert_eq!(lab.ok(&["vm", "exec", "fc", "--", "hostname"]).trim(), "fc");
    // `poweroff` typed inside ends the VM: it reboots (a real power-off would only halt the
    // vCPUs on Firecracker, and the VM would stay up), the daemon sees Firecracker exit cleanly.
    let _ = lab.banger(&["vm", "exec", "fc", "--", "poweroff"]);
    lab.wait_for(
        "the VM to stop after poweroff inside",
        Duration::from_secs(90),
        || lab.vm("fc")["state"] == "stopped",
    );

    // Firecracker killed with SIGKILL once its guest is up: noticed, the VM failed with the
    // guest's last console lines, its tap gone.
    let (code, _, err) = lab.banger(&["vm", "start", "fc"]);
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
    let last_error = failed["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("killed or crashed"), "{failed}");
    let console = last_error
        .split_once("last console lines:")
        .map(|(_, lines)| lines.trim())
        .unwrap_or_default();
    assert!(!console.is_empty(), "the guest's console: {failed}");
    println!("in the lab: a killed Firecracker's VM failed with: {last_error}");
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
    let jails = lab.sh_ok(&format!(
        "ls /root/.local/state/banger/jail/firecracker/ 2>/dev/null | grep -c '^{id}' || true"
    ));
    assert_eq!(jails.trim(), "0", "its jail is gone");
}

/// A short soak with real, jailed guests: create (booted to its agent and SSH), exec, stop,
/// start, delete, `cycles` times. Afterwards the lab holds what it held after the first
/// cycle (no VM directory, jail, cgroup, tap or Firecracker more) and bangerd's file
/// descriptors and threads are where they were (within a small bound); its memory is printed.
fn soak_with_real_guests(lab: &Lab<'_>, cycles: usize) {
    let state = "/root/.local/state/banger";
    let read = || -> Vec<u64> {
        let pid = daemon_pid(lab);
        lab.sh_ok(&format!(
            "echo $(ls /proc/{pid}/fd | wc -l) \
                  $(awk '/^Threads/ {{print $2}}' /proc/{pid}/status) \
                  $(awk '/^VmRSS/ {{print $2}}' /proc/{pid}/status) \
                  $(ls -A {state}/vms | wc -l) \
                  $(ls -A {state}/jail/firecracker 2>/dev/null | wc -l) \
                  $(ls /sys/fs/cgroup/banger 2>/dev/null | grep -cE '^[0-9a-f]{{16}}$' || true) \
                  $(ip -br link | grep -c '^bt-' || true) \
                  $(ps -eo comm | grep -c -x firecracker || true)"
        ))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
    };
    let cycle = |name: &str| {
        lab.ok(&["vm", "create", "--name", name, "--memory", "256"]);
        assert_eq!(exec(lab, name, "hostname").trim(), name);
        lab.ok(&["vm", "stop", name]);
        lab.ok(&["vm", "start", name]);
        assert_eq!(exec(lab, name, "hostname").trim(), name);
        lab.ok(&["vm", "delete", name]);
    };
    // A cycle whose guest the emulator crashed, in a lab that ran on, is deleted (its clean-up
    // is counted like any other) and made up by one more, up to GUEST_CRASHES times a soak:
    // eighteen nested boots meet such a crash often enough that running the whole phase again
    // for each once failed all four runs. Every other failure fails the phase.
    const GUEST_CRASHES: usize = 3;
    let mut crashes: Vec<String> = Vec::new();
    let mut named = 0;
    let mut run_cycles = |count: usize, crashes: &mut Vec<String>| {
        let mut done = 0;
        while done < count {
            let name = format!("soak{named}");
            named += 1;
            match lab.unless_a_guest_crashed(|| cycle(&name)) {
                Ok(()) => done += 1,
                Err(evidence) => {
                    crashes.push(format!("{name}: {evidence}"));
                    assert!(
                        crashes.len() <= GUEST_CRASHES,
                        "the emulator crashed more than {GUEST_CRASHES} guests of the soak: \
                         {crashes:#?}"
                    );
                    lab::phase(&format!(
                        "a soak with real guests: {evidence}; deleting {name} and making it up"
                    ));
                    lab.ok(&["vm", "delete", &name]);
                }
            }
        }
    };
    // The first cycle makes what every VM shares.
    run_cycles(1, &mut crashes);
    let before = read();
    let started = Instant::now();
    run_cycles(cycles, &mut crashes);
    let took = started.elapsed();
    let after = read();
    const NAMES: [&str; 8] = [
        "fds",
        "threads",
        "rss_kib",
        "vm dirs",
        "jails",
        "cgroups",
        "taps",
        "firecrackers",
    ];
    let show = |r: &[u64]| {
        NAMES
            .iter()
            .zip(r)
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "in the lab: soak of {cycles} real guests (create, exec, stop, start, exec, delete): \
         {:.1}s a cycle; cycles made up for a guest the emulator crashed: {}\n  before: {}\n  \
         after:  {}",
        took.as_secs_f64() / cycles as f64,
        crashes.len(),
        show(&before),
        show(&after)
    );
    assert_eq!(after[3..], before[3..], "left in the lab: {}", show(&after));
    for i in [0, 1] {
        assert!(
            after[i] <= before[i] + 4,
            "bangerd's {} grew: {} → {}",
            NAMES[i],
            before[i],
            after[i]
        );
    }
}

/// `image build` and `image promote` with Firecracker guests: a recipe (a file, a command, a
/// service answering HTTP) built on a Firecracker build VM, a Firecracker VM of the image
/// ready once its service answers, and a promoted VM's root booting in a new VM.
fn images_built_on_firecracker(lab: &Lab<'_>) {
    lab.sh_ok(
        "mkdir -p /root/recipe && echo from-the-recipe >/root/recipe/motd && \
         cat >/root/recipe/web.toml <<'EOF'
name = \"web\"
memory_mib = 256
[[file]]
src = \"motd\"
dest = \"/etc/motd\"
[[run]]
command = \"mkdir -p /srv/www && echo built-on-firecracker >/srv/www/index.html\"
[[service]]
name = \"web\"
port = 8080
command = \"busybox httpd -f -p 8080 -h /srv/www\"
http = \"/\"
EOF",
    );
    let started = Instant::now();
    let (code, out, err) = lab.banger(&[
        "image",
        "build",
        "-f",
        "/root/recipe/web.toml",
        "--disk",
        "1G",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!(
        "in the lab: image build on Firecracker: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        err.contains("on firecracker"),
        "the build VM is a Firecracker one: {err}"
    );
    // The build VM's guest ends itself (a reboot, which ends Firecracker) rather than
    // waiting out the stop's deadline.
    let shutdown = err
        .lines()
        .find(|l| l.trim_start().starts_with("shut down: done"))
        .unwrap_or_default();
    assert!(
        shutdown.ends_with(": the guest shut down"),
        "the build VM shut down cleanly: {err}"
    );
    println!("in the lab: build VM {}", shutdown.trim());
    assert!(
        lab.json(&["vm", "list"]).as_array().unwrap().is_empty(),
        "no build VM is left"
    );

    let (code, out, err) = lab.banger(&[
        "vm", "create", "--name", "w1", "--image", "web", "--memory", "256",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("web: done"), "{err}");
    assert_eq!(lab.vm("w1")["runtime"]["vmm"], "firecracker");
    assert_eq!(exec(lab, "w1", "cat /etc/motd").trim(), "from-the-recipe");
    assert_eq!(
        exec(lab, "w1", "busybox wget -qO- http://127.0.0.1:8080/").trim(),
        "built-on-firecracker"
    );

    exec(lab, "w1", "echo promoted-on-firecracker >/etc/promoted");
    lab.ok(&["vm", "stop", "w1"]);
    let started = Instant::now();
    lab.ok(&["image", "promote", "w1", "web-plus"]);
    println!(
        "in the lab: image promote: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    lab.ok(&[
        "vm", "create", "--name", "w2", "--image", "web-plus", "--memory", "256",
    ]);
    assert_eq!(
        exec(lab, "w2", "cat /etc/promoted").trim(),
        "promoted-on-firecracker"
    );
    assert_eq!(exec(lab, "w2", "hostname").trim(), "w2");
    for vm in ["w1", "w2"] {
        lab.ok(&["vm", "delete", vm]);
    }
    for image in ["web-plus", "web"] {
        lab.ok(&["image", "delete", image]);
    }
}

/// `banger vm exec VM -- sh -c SCRIPT` in the lab, which must succeed; its stdout.
fn exec(lab: &Lab<'_>, vm: &str, script: &str) -> String {
    lab.ok(&["vm", "exec", vm, "--", "sh", "-c", script])
}

/// Snapshots and clones of real Firecracker guests: a running VM snapshotted and running on;
/// VMs restored from the snapshot that run from that moment (its processes, its files) yet each
/// have their own identity (hostname, address, SSH host key, agent token, random state) and
/// share nothing with the source or each other; `vm clone`; a snapshot deleted while a restored
/// VM runs; a restore that fails leaving nothing behind; a restored VM that later boots cold as
/// itself.
fn snapshots_and_clones(lab: &Lab<'_>) {
    // The source: a Firecracker VM with a file on its work disk, one in its root, and a
    // process that runs from before the snapshot.
    let started = Instant::now();
    lab.ok(&["vm", "create", "--name", "src", "--memory", "256"]);
    let cold = started.elapsed();
    exec(
        lab,
        "src",
        "echo from-src > /root/marker && echo root-file > /etc/banger-test \
         && (setsid sleep 100000 </dev/null >/dev/null 2>&1 &)",
    );
    let src = lab.vm("src");
    let src_ip = src["network"]["ip"].as_str().unwrap().to_owned();

    // vm snapshot: the source runs on, its agent answering.
    let started = Instant::now();
    let snap = lab.json(&["vm", "snapshot", "src", "--name", "s1"]);
    let took = started.elapsed();
    assert_eq!(snap["name"], "s1", "{snap}");
    assert_eq!(snap["vm"]["name"], "src", "{snap}");
    assert_eq!(snap["memory_mib"], 256, "{snap}");
    assert!(
        snap["firecracker_version"]
            .as_str()
            .unwrap()
            .starts_with("1."),
        "{snap}"
    );
    let size = snap["size_bytes"].as_u64().unwrap();
    assert!(size > 0, "{snap}");
    println!(
        "in the lab: snapshot of a 256 MiB guest: {:.2}s, {} MiB on disk",
        took.as_secs_f64(),
        size >> 20
    );
    assert_eq!(lab.vm("src")["state"], "running");
    assert_eq!(exec(lab, "src", "cat /root/marker").trim(), "from-src");
    let list = lab.ok(&["snapshot", "list"]);
    assert!(list.contains("s1") && list.contains("src"), "{list}");

    // Two VMs restored from it: each tells its guest who it is before it counts as started.
    let mut restored = Vec::new();
    let mut identity_reports = Vec::new();
    for name in ["c1", "c2"] {
        let started = Instant::now();
        let (code, out, err) =
            lab.banger(&["vm", "create", "--from-snapshot", "s1", "--name", name]);
        assert_eq!(code, 0, "{out}\n{err}");
        restored.push(started.elapsed());
        assert!(err.contains("identity: done"), "{err}");
        assert!(err.contains("random state reseeded"), "{err}");
        identity_reports.push(err.clone());
        let vm = lab.vm(name);
        assert_eq!(vm["state"], "running", "{vm}");
        assert_eq!(vm["runtime"]["vmm"], "firecracker", "{vm}");
        assert_eq!(
            Lab::stages(&vm),
            [
                "checks", "network", "vmm", "identity", "started", "agent", "ssh"
            ],
            "{vm}"
        );
    }
    println!(
        "in the lab: cold create → ready {:.1}s; create --from-snapshot → ready {:.1}s, {:.1}s",
        cold.as_secs_f64(),
        restored[0].as_secs_f64(),
        restored[1].as_secs_f64()
    );

    // The clone runs from the snapshot's moment: the source's files and processes ...
    assert_eq!(exec(lab, "c1", "cat /root/marker").trim(), "from-src");
    assert_eq!(exec(lab, "c1", "cat /etc/banger-test").trim(), "root-file");
    let sleeping = exec(lab, "c1", "ps -eo args | grep -c '^sleep 100000' || true");
    assert_eq!(
        sleeping.trim(),
        "1",
        "the source's process runs on in the clone"
    );

    // ... with its own identity: hostname, address, agent token (exec above used the clone's
    // own), SSH host key (vm ssh checks the clone's exact key).
    let c1 = lab.vm("c1");
    let c1_ip = c1["network"]["ip"].as_str().unwrap().to_owned();
    assert_ne!(c1_ip, src_ip);
    assert_eq!(exec(lab, "c1", "hostname").trim(), "c1");
    // The guest's local addresses (the image has no `ip`): the line above each "/32 host LOCAL".
    let addrs = exec(lab, "c1", "grep -B1 '/32 host LOCAL' /proc/net/fib_trie");
    assert!(addrs.contains(&c1_ip), "{addrs}");
    assert!(!addrs.contains(&src_ip), "{addrs}");
    let (code, out, err) = lab.banger(&["vm", "ssh", "c1", "--", "hostname"]);
    assert_eq!((code, out.trim()), (0, "c1"), "{err}");
    let key = |vm: &str| exec(lab, vm, "cat /etc/ssh/ssh_host_ed25519_key.pub");
    assert_ne!(key("c1"), key("src"));
    assert_ne!(key("c1"), key("c2"));
    // The clone answers on its own network address, from the lab.
    let (code, _, _) = lab.sh(&format!(
        "timeout 10 bash -c 'exec 3<>/dev/tcp/{c1_ip}/22 && head -c 4 <&3' | grep -q SSH-"
    ));
    assert_eq!(code, 0, "sshd answers on the clone's address {c1_ip}");

    // Two clones of one snapshot do not share their kernel's random state.
    let random = |vm: &str| {
        exec(
            lab,
            vm,
            "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'",
        )
    };
    let (r1, r2) = (random("c1"), random("c2"));
    assert_eq!(r1.len(), 64);
    assert_ne!(r1, r2, "clones of one snapshot read the same random bytes");
    // How it is made sure: Firecracker gives a restored VM a new VM generation ID (an ACPI
    // device, `VMGENCTR`), and a guest kernel with the `vmgenid` driver reseeds its random
    // generator from it at once ("crng reseeded due to virtual machine fork"). banger's agent
    // reseeds in every case (credited host entropy, then RNDRESEEDCRNG), and its identity
    // report says whether the kernel had the driver: that report must match the guest, and
    // where the driver is bound its reseed must have happened. (This image's kernel, Debian's
    // cloud kernel, is built without the driver: the different bytes above are the agent's.)
    for (vm, report) in ["c1", "c2"].into_iter().zip(&identity_reports) {
        let bound = exec(
            lab,
            vm,
            "ls /sys/bus/acpi/drivers/vmgenid/ /sys/bus/platform/drivers/vmgenid/ 2>/dev/null \
             | grep -c -i -e VMGEN -e VM_GEN -e FCVMGID || true",
        );
        let devices = exec(
            lab,
            vm,
            "ls /sys/bus/acpi/devices/ | grep -i -e VMGEN -e VM_GEN -e FCVMGID || true",
        );
        println!(
            "in the lab: {vm}: VM generation ID ACPI devices [{}], bound to vmgenid: {}",
            devices.split_whitespace().collect::<Vec<_>>().join(" "),
            bound.trim()
        );
        // Firecracker 1.16 names it by the ACPI id Linux's driver matches (`VMGENCTR`).
        assert!(
            devices.contains("VMGENCTR") || devices.contains("FCVMGID"),
            "{vm} has no VM generation ID device: {devices}"
        );
        if bound.trim() == "0" {
            assert!(
                report.contains("no VM generation ID device"),
                "the agent saw a driver the guest lacks: {report}"
            );
        } else {
            assert!(
                report.contains("(and VM generation ID)"),
                "the agent missed the driver: {report}"
            );
            let reseeded = exec(
                lab,
                vm,
                "dmesg | grep -c 'crng reseeded due to virtual machine fork' || true",
            );
            assert_ne!(reseeded.trim(), "0", "{vm}'s vmgenid driver did not reseed");
        }
    }
    // Source and clones share nothing afterwards.
    exec(lab, "c1", "echo c1 > /root/c1-only");
    exec(lab, "src", "echo src > /root/src-only");
    assert!(
        exec(lab, "src", "ls /root/c1-only 2>&1 || true").contains("No such file"),
        "c1-only seen in src"
    );
    assert!(
        exec(lab, "c1", "ls /root/src-only 2>&1 || true").contains("No such file"),
        "src-only seen in c1"
    );
    assert!(exec(lab, "c2", "ls /root/c1-only 2>&1 || true").contains("No such file"));

    // Deleting the snapshot frees its space; the VMs restored from it run on.
    let snapshots = "/root/.local/state/banger/snapshots";
    let before = lab.sh_ok(&format!("du -sm {snapshots} | cut -f1"));
    lab.ok(&["snapshot", "delete", "s1"]);
    let after = lab.sh_ok(&format!("ls -A {snapshots} | wc -l"));
    assert_eq!(after.trim(), "0", "snapshot files left (was {before} MiB)");
    assert_eq!(exec(lab, "c1", "cat /root/c1-only").trim(), "c1");
    let (code, _, err) = lab.banger(&["snapshot", "show", "s1"]);
    assert_ne!(code, 0);
    assert!(err.contains("no snapshot named"), "{err}");

    // vm clone: snapshot, restore, and no snapshot left over.
    let started = Instant::now();
    let (code, out, err) = lab.banger(&["vm", "clone", "src", "c3"]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!(
        "in the lab: vm clone → ready {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(exec(lab, "c3", "hostname").trim(), "c3");
    assert_eq!(exec(lab, "c3", "cat /root/src-only").trim(), "src");
    // The clone's snapshot goes once its start is over.
    lab.wait_for(
        "the clone's snapshot to go",
        std::time::Duration::from_secs(30),
        || {
            lab.json(&["snapshot", "list"])
                .as_array()
                .unwrap()
                .is_empty()
        },
    );

    // A restored VM boots cold as itself later: its own name and address from its config drive.
    lab.ok(&["vm", "stop", "c1"]);
    lab.ok(&["vm", "start", "c1"]);
    let c1 = lab.vm("c1");
    assert_eq!(
        Lab::stages(&c1),
        ["checks", "network", "vmm", "started", "agent", "ssh"],
        "a later start boots: {c1}"
    );
    assert_eq!(exec(lab, "c1", "hostname").trim(), "c1");
    assert_eq!(exec(lab, "c1", "cat /root/c1-only").trim(), "c1");

    // A restore that fails (a damaged state file) leaves no process, tap or socket behind.
    lab.ok(&["vm", "snapshot", "src", "--name", "s2"]);
    let s2: Value = lab.json(&["snapshot", "show", "s2"]);
    let s2_dir = format!("{snapshots}/{}", s2["id"].as_str().unwrap());
    lab.sh_ok(&format!("truncate -s 100 {s2_dir}/vmstate"));
    let taps_before = lab.sh_ok("ip -br link | grep -c '^bt-' || true");
    let (code, _, err) = lab.banger(&["vm", "create", "--from-snapshot", "s2", "--name", "bad"]);
    assert_ne!(code, 0, "a damaged snapshot must not restore");
    assert!(
        err.contains("snapshot") || err.contains("cannot start"),
        "{err}"
    );
    let bad = lab.vm("bad");
    assert_ne!(bad["state"], "running", "{bad}");
    let bad_id = bad["id"].as_str().unwrap().to_owned();
    let left = lab.sh_ok(&format!(
        "ps -eo args | grep -c '[f]irecracker.*{bad_id}' || true; ls /tmp/banger-0/vms/ 2>/dev/null | grep -c '^{bad_id}' || true"
    ));
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["0", "0"],
        "{left}"
    );
    let taps_after = lab.sh_ok("ip -br link | grep -c '^bt-' || true");
    if taps_after.trim() != taps_before.trim() {
        let (_, links, _) = lab.sh("ip -br link");
        let (_, vms, _) = lab.banger(&["vm", "list"]);
        panic!(
            "{} taps before the failed restore, {} after\n{links}\n{vms}\n{}",
            taps_before.trim(),
            taps_after.trim(),
            lab.diagnosis()
        );
    }
    lab.ok(&["vm", "delete", "bad"]);
    lab.ok(&["snapshot", "delete", "s2"]);

    killed_during_a_snapshot_and_a_clone(lab);

    // Everything goes with the VMs.
    lab.phase("snapshots and clones: deleting the VMs");
    for vm in ["c1", "c2", "c3", "c4", "src"] {
        lab.ok(&["vm", "delete", vm]);
    }
    let links = lab.sh_ok("ip -br link");
    assert!(!links.contains("bt-"), "{links}");
    let left = lab.sh_ok(&format!(
        "ls -A /root/.local/state/banger/vms/ {snapshots} | grep -v ':$' | grep -c . || true"
    ));
    assert_eq!(left.trim(), "0", "left in the lab: {left}");
}

/// The PID of the lab's bangerd.
fn daemon_pid(lab: &Lab<'_>) -> u64 {
    lab.json(&["daemon", "status"])["pid"].as_u64().unwrap()
}

/// bangerd killed with SIGKILL while Firecracker writes a snapshot of `src` (paused, its drives
/// on the snapshot's copies), then while `vm clone` restores a new VM: the next daemon leaves
/// no snapshot, file or link behind, `src` runs on its own disks as before, and the clone
/// either runs as itself or, stopped, boots as itself.
fn killed_during_a_snapshot_and_a_clone(lab: &Lab<'_>) {
    let state = "/root/.local/state/banger";
    let src = lab.vm("src");
    let src_id = src["id"].as_str().unwrap().to_owned();
    let chroot = src["runtime"]["jail"]["chroot"]
        .as_str()
        .unwrap_or("/nonexistent")
        .to_owned();
    exec(lab, "src", "echo before > /root/around-the-kill && sync");
    let daemon = daemon_pid(lab);
    // Killed once the memory file is being written: the drives point at the copies by then.
    let hit = lab.sh_ok(&format!(
        "setsid banger vm snapshot src --name killed </dev/null >/dev/null 2>&1 & \
         for i in $(seq 1200); do \
           if ls -s {state}/snapshots/*/memory 2>/dev/null | grep -qv '^ *0 '; then break; fi; \
           sleep 0.05; \
         done; \
         test -e {state}/vms/{src_id}/.snapshotting && echo interrupted || echo finished; \
         kill -9 {daemon}; while [ -e /proc/{daemon} ]; do sleep 0.1; done"
    ));
    println!(
        "in the lab: bangerd killed during a snapshot: {}",
        hit.trim()
    );
    assert_eq!(hit.trim(), "interrupted", "the kill came too late");
    // The next daemon: no snapshot, no links in the jail, src running as its user had it.
    let after = lab.vm("src");
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(after["runtime"]["pid"], src["runtime"]["pid"], "{after}");
    assert!(
        lab.json(&["snapshot", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let left = lab.sh_ok(&format!(
        "ls -A {state}/snapshots | wc -l; ls -A {chroot} | grep -c '^snapshot-' || true; \
         ls -A {state}/vms/{src_id} | grep -c snapshotting || true"
    ));
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0"],
        "{left}"
    );
    // Its writes land on its own disk: they are there after a restart.
    exec(lab, "src", "echo after > /root/around-the-kill && sync");
    lab.ok(&["vm", "restart", "src"]);
    assert_eq!(
        exec(lab, "src", "cat /root/around-the-kill").trim(),
        "after"
    );

    // Killed while the clone's guest is told its identity (restored, the snapshot's token
    // still beside it), or at whatever point the clone had reached.
    let daemon = daemon_pid(lab);
    let hit = lab.sh_ok(&format!(
        "setsid banger vm clone src c4 </dev/null >/dev/null 2>&1 & \
         for i in $(seq 1200); do \
           if ls {state}/vms/*/restore.agent-token >/dev/null 2>&1 \
              && ! ls {state}/vms/*/restore.vmstate >/dev/null 2>&1; then break; fi; \
           sleep 0.02; \
         done; \
         if ls {state}/vms/*/restore.agent-token >/dev/null 2>&1; then \
           if ls {state}/vms/*/restore.vmstate >/dev/null 2>&1; then echo before-restore; \
           else echo during-identity; fi; \
         else echo after-identity; fi; \
         kill -9 {daemon}; while [ -e /proc/{daemon} ]; do sleep 0.1; done"
    ));
    println!("in the lab: bangerd killed during a clone: {}", hit.trim());
    let c4 = lab.vm("c4");
    match c4["state"].as_str().unwrap() {
        "running" => assert_eq!(hit.trim(), "after-identity", "{c4}"),
        "stopped" => {
            lab.ok(&["vm", "start", "c4"]);
        }
        other => panic!("the clone is {other}: {c4}"),
    }
    assert_eq!(exec(lab, "c4", "hostname").trim(), "c4");
    assert_ne!(lab.vm("c4")["network"]["ip"], src["network"]["ip"]);
    assert_eq!(exec(lab, "c4", "cat /root/around-the-kill").trim(), "after");
    lab.wait_for(
        "the killed clone's snapshot to go",
        Duration::from_secs(30),
        || {
            lab.json(&["snapshot", "list"])
                .as_array()
                .unwrap()
                .is_empty()
        },
    );
    let left = lab.sh_ok(&format!(
        "ls -A {state}/snapshots | wc -l; ls {state}/vms/*/restore.* 2>/dev/null | wc -l"
    ));
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["0", "0"],
        "{left}"
    );
    assert_eq!(exec(lab, "src", "hostname").trim(), "src");
}

/// The warm pool with real Firecracker guests: `pool set` fills it (a template snapshot, a VM
/// restored from it and paused), `vm create` takes the ready VM, which answers its agent on its
/// own token and has its own hostname, address and SSH host key, `vm ssh` works, the pool
/// refills, a restarted daemon adopts the ready VM, and two pooled VMs read different random
/// bytes. Turned off, the pool leaves nothing.
fn warm_pool(lab: &Lab<'_>) {
    // Polled while the lab works hard (filling the pool boots and restores guests, nested
    // under emulation): a poll the lab's own agent is too busy to take is "not yet".
    let pool_ready = || {
        let (code, out, _) = lab.banger(&["pool", "list", "-o", "json"]);
        code == 0
            && serde_json::from_str::<Value>(&out)
                .ok()
                .and_then(|v| v.as_array().and_then(|a| a.first().cloned()))
                .is_some_and(|p| p["ready"] == 1)
    };
    let started = Instant::now();
    let set = lab.json(&["pool", "set", "debian", "1"]);
    assert_eq!(set["size"], 1, "{set}");
    lab.wait_for(
        "a ready VM in the pool",
        Duration::from_secs(600),
        pool_ready,
    );
    println!(
        "in the lab: pool set → one ready VM: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let pool = lab.json(&["pool", "list"]);
    assert!(pool[0]["template_bytes"].as_u64().unwrap() > 0, "{pool}");
    // The pool's VMs and template are hidden.
    assert!(lab.json(&["vm", "list"]).as_array().unwrap().is_empty());
    assert!(
        lab.json(&["snapshot", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    let mut taken = Vec::new();
    for (i, name) in ["p1", "p2"].into_iter().enumerate() {
        if i > 0 {
            // bangerd killed with SIGKILL while the pool refills (a ready VM being restored
            // from the template): the next daemon ends or discards what was half made and
            // refills, and nothing else is left.
            let vms = "/root/.local/state/banger/vms";
            let daemon = daemon_pid(lab);
            let hit = lab.sh_ok(&format!(
                "for i in $(seq 1200); do [ $(ls -A {vms} | wc -l) -ge 2 ] && break; sleep 0.05; done; \
                 sleep 0.5; \
                 if ls {vms}/*/restore.agent-token >/dev/null 2>&1; then echo identity; \
                 else echo another-step; fi; \
                 kill -9 {daemon}; while [ -e /proc/{daemon} ]; do sleep 0.1; done"
            ));
            println!(
                "in the lab: bangerd killed while the pool refilled (at the {} step)",
                hit.trim()
            );
            // The pool refilled; a restarted daemon adopts its paused VM.
            lab.wait_for("the pool to refill", Duration::from_secs(300), pool_ready);
            let left = lab.sh_ok(&format!(
                "ls -A {vms} | wc -l; ls -A /root/.local/state/banger/snapshots | wc -l"
            ));
            assert_eq!(
                left.split_whitespace().collect::<Vec<_>>(),
                ["2", "1"],
                "p1, one ready VM and the template: {left}"
            );
            lab.ok(&["daemon", "restart"]);
            assert!(pool_ready(), "{}", lab.ok(&["pool", "list"]));
        }
        let started = Instant::now();
        let (code, out, err) = lab.banger(&["vm", "create", "--name", name]);
        taken.push(started.elapsed());
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("the warm pool"), "{out}");
        assert!(err.contains("from the warm pool"), "{err}");
        assert!(err.contains("identity: done"), "{err}");
        let vm = lab.vm(name);
        assert_eq!(vm["pool"], "taken", "{vm}");
        assert_eq!(vm["state"], "running", "{vm}");
        assert_eq!(
            Lab::stages(&vm),
            ["pool", "identity", "started", "agent", "ssh"],
            "{vm}"
        );
        // Its own identity: hostname, address, the host key banger pinned, the agent on its
        // new token (exec reads it), ssh.
        assert_eq!(exec(lab, name, "hostname").trim(), name);
        let ip = vm["network"]["ip"].as_str().unwrap();
        let addrs = exec(lab, name, "grep -B1 '/32 host LOCAL' /proc/net/fib_trie");
        assert!(addrs.contains(ip), "{addrs}");
        let id = vm["id"].as_str().unwrap();
        let pinned = lab.sh_ok(&format!(
            "cut -d' ' -f2 /root/.local/state/banger/vms/{id}/ssh_host_ed25519_key.pub"
        ));
        let guest_key = exec(lab, name, "cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub");
        assert_eq!(guest_key.trim(), pinned.trim());
        let (code, out, err) = lab.banger(&["vm", "ssh", name, "--", "hostname"]);
        assert_eq!((code, out.trim()), (0, name), "{err}");
    }
    println!(
        "in the lab: vm create from the pool → ready {:.2}s, {:.2}s",
        taken[0].as_secs_f64(),
        taken[1].as_secs_f64()
    );
    let (p1, p2) = (lab.vm("p1"), lab.vm("p2"));
    assert_ne!(p1["network"]["ip"], p2["network"]["ip"]);
    let key = |vm: &str| exec(lab, vm, "cat /etc/ssh/ssh_host_ed25519_key.pub");
    assert_ne!(key("p1"), key("p2"));
    let random = |vm: &str| {
        exec(
            lab,
            vm,
            "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'",
        )
    };
    let (r1, r2) = (random("p1"), random("p2"));
    assert_eq!(r1.len(), 64);
    assert_ne!(r1, r2, "two pooled VMs read the same random bytes");

    // Off: the ready VM and the template go; the taken VMs stay theirs.
    lab.ok(&["pool", "set", "debian", "0"]);
    let snapshots = "/root/.local/state/banger/snapshots";
    lab.wait_for("the pool to empty", Duration::from_secs(120), || {
        let (code, out, _) = lab.sh(&format!(
            "ls -A /root/.local/state/banger/vms/ | wc -l; ls -A {snapshots} | wc -l"
        ));
        code == 0 && out.split_whitespace().collect::<Vec<_>>() == ["2", "0"]
    });
    for vm in ["p1", "p2"] {
        lab.ok(&["vm", "delete", vm]);
    }
    let links = lab.sh_ok("ip -br link");
    assert!(!links.contains("bt-"), "{links}");
    let left = lab.sh_ok("ls -A /root/.local/state/banger/vms/ | wc -l");
    assert_eq!(left.trim(), "0", "left in the lab: {left}");
}

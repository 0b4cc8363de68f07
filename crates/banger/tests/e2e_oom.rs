//! A VM whose VMM outgrows its cgroup's memory limit fails alone, and says why: real QEMU
//! guests of the bootstrapped Debian image, in a namespace, each QEMU in a cgroup of its own
//! (cgroup v2, or v1's memory controller on a hybrid host) whose limit leaves QEMU almost
//! nothing beyond its guest's memory (`qemu_memory_overhead = "4M"`). A guest that fills its
//! memory then pushes its QEMU past the limit: the kernel's OOM killer ends that QEMU, the VM is
//! recorded failed with the reason and its cgroup is removed, while another VM and bangerd run
//! on. Needs root, QEMU, debootstrap and a cgroup hierarchy with the memory controller; prints
//! `SKIP:` and passes without them.

mod support;

use std::time::Duration;

use support::netns::E2e;

#[test]
fn a_vmm_past_its_memory_limit_fails_alone_and_says_why() {
    let Some(mut t) = E2e::with_debian_image(&[
        ("qemu-system-x86_64", "--version"),
        ("debootstrap", "--version"),
    ]) else {
        return;
    };
    if !t.with_host_cgroups() {
        banger_test_support::skip!("this host mounts no cgroup hierarchy");
        return;
    }
    t.config_with("300s", "qemu_memory_overhead = \"4M\"\n");
    let report = t.json(&["doctor"]);
    let cgroups = support::doctor_check(&report, "qemu-cgroups");
    if cgroups["status"] != "ok" {
        banger_test_support::skip!("QEMU VMs get no cgroups here: {}", cgroups["detail"]);
        return;
    }
    assert!(
        cgroups["detail"].as_str().unwrap().contains("plus 4 MiB"),
        "{cgroups}"
    );

    t.ok(&["vm", "create", "--name", "calm", "--memory", "256"]);
    t.ok(&["vm", "create", "--name", "greedy", "--memory", "256"]);
    let greedy = t.vm("greedy");
    let cgroup = greedy["runtime"]["qemu"]["cgroup"]
        .as_str()
        .expect("a cgroup")
        .to_owned();
    assert_eq!(
        greedy["runtime"]["qemu"]["memory_max"].as_u64(),
        Some((256 + 4) << 20)
    );
    let calm_pid = t.vm("calm")["runtime"]["pid"].as_u64().unwrap();

    // The guest fills a tmpfs as large as its memory: every page of its memory is touched, and
    // QEMU, which needs more than 4 MiB of its own, goes past the limit.
    let _ = t.banger_within(
        &[
            "vm",
            "exec",
            "greedy",
            "--",
            "sh",
            "-c",
            "mkdir -p /mnt/fill && mount -t tmpfs -o size=256m tmpfs /mnt/fill && \
             dd if=/dev/zero of=/mnt/fill/zeros bs=1M count=256; sleep 30",
        ],
        Duration::from_secs(300),
    );
    t.wait_for(
        "the greedy VM to be recorded failed",
        Duration::from_secs(120),
        || t.vm("greedy")["state"] == "failed",
    );
    let failed = t.vm("greedy");
    let error = failed["last_error"].as_str().unwrap_or_default().to_owned();
    println!("greedy: {error}");
    assert!(
        error.contains("killed by the kernel's OOM killer")
            && error.contains("memory limit (260 MiB"),
        "{failed}"
    );
    assert!(
        !std::path::Path::new(&cgroup).exists(),
        "its cgroup is removed"
    );

    // The other VM and bangerd run on.
    let calm = t.vm("calm");
    assert_eq!(calm["state"], "running", "{calm}");
    assert_eq!(calm["runtime"]["pid"].as_u64(), Some(calm_pid));
    assert_eq!(
        t.ok(&["vm", "exec", "calm", "--", "echo", "still here"]),
        "still here\n"
    );
    t.ok(&["vm", "delete", "greedy"]);
    t.ok(&["vm", "delete", "calm"]);
}

//! Throughput of `banger vm exec` (through bangerd's exec relay and the guest agent) against
//! `banger vm ssh` (OpenSSH to the guest's sshd) on the same guest: MB/s into the guest
//! through standard input (`cat > /dev/null`) and out of it through standard output
//! (`head -c N /dev/zero`), each timed end to end from the host and counted byte for byte.
//! Runs the CLI and its daemon inside a throw-away network namespace like the end-to-end
//! test, with the bootstrapped Debian image (cached in `$BANGER_TEST_CACHE`, default
//! `/var/cache/banger-test`). `BENCH_MIB` sets the size per transfer (default 64), `BENCH_RUNS`
//! the repetitions (default 3). Needs root, debootstrap, QEMU and the OpenSSH client; prints
//! `SKIP:` otherwise. The sandbox, namespace and VM go when it ends.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use support::lab::median;
use support::netns::E2e;

fn main() {
    let mib = banger_test_support::bench_setting("BENCH_MIB", 64);
    let runs = banger_test_support::bench_runs(3);
    let Some(e2e) = E2e::with_debian_image(&[
        ("debootstrap", "--version"),
        ("qemu-system-x86_64", "--version"),
        ("ssh", "-V"),
    ]) else {
        return;
    };
    e2e.config_on("auto", "300s", "");
    e2e.ok(&["vm", "create", "--name", "bench"]);

    let bytes = mib << 20;
    let chunk = vec![0x5au8; 1 << 20];
    // MB/s of `cmd` fed `bytes` on stdin (or reading `bytes` from its stdout).
    let push = |cmd: &mut Command| {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for _ in 0..mib {
            stdin.write_all(&chunk).unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success());
        bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
    };
    let pull = |cmd: &mut Command| {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut count = 0;
        let mut buf = vec![0u8; 1 << 16];
        let mut out = child.stdout.take().unwrap();
        loop {
            match out.read(&mut buf).unwrap() {
                0 => break,
                n => count += n,
            }
        }
        assert!(child.wait().unwrap().success());
        assert_eq!(count, bytes);
        bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
    };
    let size = format!("{mib}M");
    let mut rows = Vec::new();
    for via in ["exec", "ssh"] {
        let command = |tail: &[&str]| {
            let mut args = vec!["vm", via, "bench", "--"];
            args.extend(tail);
            e2e.command(&args)
        };
        let stdin: Vec<f64> = (0..runs)
            .map(|_| push(&mut command(&["sh", "-c", "cat > /dev/null"])))
            .collect();
        let stdout: Vec<f64> = (0..runs)
            .map(|_| pull(&mut command(&["head", "-c", &size, "/dev/zero"])))
            .collect();
        rows.push((via, median(stdin), median(stdout)));
    }

    println!(
        "{mib} MiB per transfer, median of {runs}, 1 vCPU guest, MB/s end to end from the host"
    );
    println!("  {:<10} {:>10} {:>10}", "", "stdin", "stdout");
    for (via, stdin, stdout) in rows {
        println!("  vm {via:<7} {stdin:>10.1} {stdout:>10.1}");
    }
}

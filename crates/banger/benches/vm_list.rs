//! Benchmark: `banger vm list -o json` end to end (process start, socket, daemon, SQLite,
//! rendering) with 1,000 VM records, and bangerd's resident memory when idle.
//!
//! Run with `cargo bench -p banger --bench vm_list`. It prints figures and asserts nothing
//! about time: targets (20 ms per list, 30 MiB idle RSS on a 2-core machine) are for people
//! to compare against, see docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const VMS: usize = 1000;
const RUNS: usize = 100;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_banger"));
        let home = self.dir.path();
        cmd.args(args)
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("BANGER_DAEMON_BIN", env!("CARGO_BIN_EXE_bangerd"))
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run banger");
        if !out.status.success() {
            panic!(
                "banger {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.command(&["daemon", "stop"]).output();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn daemon_pid(env: &Env) -> u32 {
    let out = env.run(&["daemon", "status", "-o", "json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    info["pid"].as_u64().expect("pid") as u32
}

fn fake_vmlinux(path: &Path) {
    let mut elf = vec![0u8; 4096];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes());
    elf[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(path, elf).unwrap();
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
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::create_dir_all(env.path("config/banger")).unwrap();
    // A /20 holds the 1,000 guest addresses the benchmark needs.
    std::fs::write(
        env.path("config/banger/config.toml"),
        "subnet = \"10.240.0.0/20\"\n",
    )
    .unwrap();

    let started = Instant::now();
    env.run(&["daemon", "start"]);
    println!(
        "daemon start (cold, from the CLI): {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let pid = daemon_pid(&env);
    std::thread::sleep(Duration::from_millis(300));
    let idle_empty = rss_kib(pid);

    fake_vmlinux(&env.path("vmlinux"));
    let rootfs = env.path("rootfs.ext4");
    std::fs::File::create(&rootfs)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&rootfs)
        .status()
        .expect("mkfs.ext4 (e2fsprogs) is needed");
    assert!(mkfs.success());
    env.run(&[
        "image",
        "register",
        "--name",
        "bench",
        "--kernel",
        env.path("vmlinux").to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ]);

    let started = Instant::now();
    for i in 0..VMS {
        let name = format!("vm-{i:04}");
        env.run(&[
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
    let out = env.run(&["vm", "list", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(VMS),
        "list returned the wrong count"
    );
    println!("vm list -o json output: {} KiB", out.stdout.len() / 1024);

    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut cmd = env.command(&["vm", "list", "-o", "json"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let t = Instant::now();
        let status = cmd.status().unwrap();
        samples.push(t.elapsed());
        assert!(status.success());
    }
    println!(
        "banger vm list -o json, {VMS} VMs: {}   [target < 20 ms]",
        stats(samples)
    );

    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut cmd = env.command(&["vm", "list"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let t = Instant::now();
        assert!(cmd.status().unwrap().success());
        samples.push(t.elapsed());
    }
    println!("banger vm list (text), {VMS} VMs: {}", stats(samples));

    std::thread::sleep(Duration::from_millis(500));
    println!(
        "bangerd idle RSS: {:.1} MiB empty, {:.1} MiB with {VMS} VMs after {} lists   [target < 30 MiB]",
        idle_empty as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0,
        2 * RUNS
    );
}

//! How long bangerd takes from a request to a running Firecracker instance, against Firecracker
//! launching the same VM by itself.
//!
//! - `vm start`: from `POST /v1/vms/{name}/start` until the client sees the operation's `vmm`
//!   stage done (Firecracker accepted `InstanceStart`): the daemon's checks, starting a
//!   Firecracker (a spare serves only creates: it is started as the VM it will become), the tap
//!   on the bridge, configuration and start; and until the whole operation ended.
//! - `vm create`: from `POST /v1/vms` (with start) until the same point: this adds the record,
//!   the VM's SSH host key and config drive, and taking its overlay and work disks from the
//!   pool (which is given the time to refill between rounds, as between a user's creates);
//!   the same with the spare taken away first, so the start spawns its own Firecracker; and the
//!   same with sizes the pool has never seen, so both disks are made by the create.
//! - raw: `firecracker --no-api --config-file` with the configuration of the very same VM
//!   (the daemon's own spec: kernel, drives, tap, MAC, vsock, logger, metrics), its tap created
//!   beforehand, from the spawn until Firecracker logs `Successfully started microvm`.
//!
//! Runs alternate so that all see the same machine load; one warm-up round is not counted.
//! Before each timed step the disk pool and the spare Firecracker are left to refill and the
//! kernel 50 ms to finish what the previous step left it, so every step, the raw launch included, starts from a quiet host.
//! Runs a real daemon inside a throw-away network namespace like `tests/firecracker_vm.rs`, so it
//! needs root, iproute2, nftables is not needed, and Firecracker; it prints `SKIP:` otherwise.
//! `BENCH_RUNS` sets the number of rounds (default 10); `BENCH_SAMPLES=1` prints every round's
//! figures as well as the medians. `BENCH_TRACE=debug` (any tracing filter)
//! prints the daemon's log with microsecond timestamps on stderr, which shows where a start's
//! time goes. `BENCH_LINKS=ip` makes the daemon's taps with `ip` commands, as a daemon that is not
//! root does (without sudo's own cost), instead of in-process. `BENCH_JAILER=1` runs the
//! daemon's VMs behind Firecracker's jailer (`jailer = true`, the jailer from `PATH`; otherwise
//! `jailer = false`, so that a root run measures the unjailed start): what
//! jailing adds to a start. The daemon keeps no spare Firecracker then (a jailed VM's uid,
//! chroot and cgroup are chosen at its start), so the create-without-spare round is skipped.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_api::paths::Paths;
use banger_api::{
    Client, CreateVmRequest, Operation, OperationState, RegisterImageRequest, StageState, VmAction,
};
use banger_daemon::HostDeps;
use banger_host::network::netns::Netns;
use banger_host::runner::{CommandOutput, CommandRunner, CommandSpec, RealRunner, RunError};
use banger_vmm::testing;

fn main() {
    if let Ok(filter) = std::env::var("BENCH_TRACE") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(tracing_subscriber::fmt::time::Uptime::default())
            .with_writer(std::io::stderr)
            .init();
    }
    let Some(binary) = testing::firecracker_or_skip() else {
        return;
    };
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("taps and the bridge need root");
        return;
    }
    let netns = match Netns::create("banger-bench-") {
        Ok(netns) => netns,
        Err(error) => {
            banger_test_support::skip!("cannot create a network namespace: {error}");
            return;
        }
    };
    netns.enter().unwrap();
    let runs = banger_test_support::bench_runs(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(&binary.path, runs));
    drop(runtime);
    drop(netns);
}

/// Runs every command for real but does not say so, so that the daemon keeps to `ip` commands
/// for its taps instead of doing the same in-process.
#[derive(Debug)]
struct Commands;

impl CommandRunner for Commands {
    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError> {
        RealRunner.run(cmd)
    }
}

/// When the `vmm` stage was seen done, and when the operation ended.
async fn follow(client: &Client, op: Operation, started: Instant) -> (Duration, Duration) {
    let mut vmm_done = None;
    let mut check = |op: &Operation| {
        if vmm_done.is_none()
            && op
                .stages
                .iter()
                .any(|s| s.name == "vmm" && s.state == StageState::Done)
        {
            vmm_done = Some(started.elapsed());
        }
    };
    check(&op);
    let finished = client.watch_operation(&op.id, &mut check).await.unwrap();
    let total = started.elapsed();
    assert_eq!(finished.state, OperationState::Succeeded, "{finished:?}");
    (vmm_done.unwrap_or(total), total)
}

async fn bench(firecracker: &Path, runs: usize) {
    let jailed = std::env::var_os("BENCH_JAILER").is_some_and(|v| v == "1");
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths {
        config_file: dir.path().join("config/banger/config.toml"),
        state_dir: dir.path().join("state/banger"),
        runtime_dir: dir.path().join("run/banger"),
    };
    std::fs::create_dir_all(paths.config_file.parent().unwrap()).unwrap();
    std::fs::write(
        &paths.config_file,
        format!(
            "vmm = \"firecracker\"\nfirecracker_bin = \"{}\"\n{}[defaults]\n\
             stop_timeout = \"0s\"\ndisk = \"1G\"\nwork_disk = \"1G\"\n[web]\nenabled = false\n",
            firecracker.display(),
            if jailed {
                "jailer = true\n"
            } else {
                "jailer = false\n"
            }
        ),
    )
    .unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, testing::tiny_kernel()).unwrap();
    // An initrd that lists banger's init features, so the VMs get config drives (the guest
    // never gets that far: the tiny kernel has nothing to run).
    let initrd = dir.path().join("initrd");
    let mut cpio = banger_image::initramfs::Initramfs::new();
    cpio.init_features().unwrap();
    std::fs::write(&initrd, cpio.to_bytes()).unwrap();
    let rootfs = dir.path().join("rootfs.ext4");
    testing::ext4(&rootfs, 64);
    let mut deps = HostDeps::real();
    let links = if std::env::var("BENCH_LINKS").as_deref() == Ok("ip") {
        deps.runner = std::sync::Arc::new(Commands);
        "taps made with ip commands"
    } else {
        "taps made in-process"
    };
    let running = banger_daemon::start_with(paths.clone(), deps)
        .await
        .unwrap();
    let d = running.daemon.clone();
    let client = Client::new(running.socket());
    let op = client
        .register_image(&RegisterImageRequest {
            publish: Vec::new(),
            name: "tiny".into(),
            kernel: kernel.display().to_string(),
            initrd: Some(initrd.display().to_string()),
            rootfs: rootfs.display().to_string(),
        })
        .await
        .unwrap();
    client.watch_operation(&op.id, |_| {}).await.unwrap();
    let request = |name: &str, start: bool| CreateVmRequest {
        name: Some(name.into()),
        image: Some("tiny".into()),
        vcpus: Some(1),
        memory_mib: Some(128),
        start: Some(start),
        ..Default::default()
    };
    // Sizes no create asked for before: nothing of them is pooled.
    let unpooled = |name: &str, run: usize| CreateVmRequest {
        disk_bytes: Some((1 << 30) + ((run as i64 + 1) << 20)),
        work_disk_bytes: Some((1 << 30) + ((run as i64 + 1) << 20)),
        ..request(name, true)
    };
    client.create_vm(&request("bench", false)).await.unwrap();

    // The raw launch's own tap, on the same bridge, made once (banger makes its tap per start).
    let raw_tap = "bt-rawbench0";
    let ip = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}");
    };

    let (mut start_vmm, mut start_total, mut create_vmm, mut no_spare, mut unpooled_vmm, mut raw) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    // Before each timed step: the pool refilled (its mkfs runs 300 ms after a create) and a
    // moment for what the last step left to the kernel (a deleted tap, a reaped process), so
    // that no step, banger's or the raw launch, runs beside the previous one's aftermath.
    let settle = || async {
        let pool = d.clone();
        let filled =
            tokio::task::spawn_blocking(move || pool.disks.wait_filled(Duration::from_secs(30)))
                .await
                .unwrap();
        assert!(filled, "the disk pool did not refill within 30 s");
        if !jailed {
            let spare = d.clone();
            let ready = tokio::task::spawn_blocking(move || {
                spare.spare.wait_ready(Duration::from_secs(30))
            })
            .await
            .unwrap();
            assert!(ready, "no spare Firecracker within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The spare taken away (and ended), so that the next start starts its own Firecracker.
    let without_spare = || {
        let id = d.spare.claim().expect("a spare Firecracker");
        let spare = d.spare.take(&id).expect("the spare just claimed");
        let fc = banger_vmm::Firecracker::new(
            banger_vmm::FirecrackerBinary::check(firecracker.to_owned(), &RealRunner).unwrap(),
        );
        assert!(fc.release_spare(spare).is_empty());
    };
    for run in 0..=runs {
        // vm start of an existing VM.
        settle().await;
        let t = Instant::now();
        let op = client.vm_action("bench", VmAction::Start).await.unwrap();
        let (vmm, total) = follow(&client, op, t).await;
        let vm = client.get_vm("bench").await.unwrap();
        let image = d.store.find_image("tiny").unwrap().unwrap();
        let spec = banger_daemon::machine::vm_spec(&d, &vm, &image).unwrap();
        let op = client.vm_action("bench", VmAction::Stop).await.unwrap();
        client.watch_operation(&op.id, |_| {}).await.unwrap();

        // vm create of a new VM, its disks ready in the pool.
        settle().await;
        let name = format!("c{run}");
        let t = Instant::now();
        let created = client.create_vm(&request(&name, true)).await.unwrap();
        let (created_vmm, _) = follow(&client, created.operation.unwrap(), t).await;
        client.delete_vm(&name).await.unwrap();

        // vm create of a new VM with its disks pooled, but no spare Firecracker ready (a
        // jailed daemon never has one: the create above was that already).
        let no_spare_vmm = if jailed {
            created_vmm
        } else {
            settle().await;
            without_spare();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let name = format!("s{run}");
            let t = Instant::now();
            let created = client.create_vm(&request(&name, true)).await.unwrap();
            let (no_spare_vmm, _) = follow(&client, created.operation.unwrap(), t).await;
            client.delete_vm(&name).await.unwrap();
            no_spare_vmm
        };

        // vm create with sizes the pool does not hold: both disks made by the create.
        settle().await;
        let name = format!("u{run}");
        let t = Instant::now();
        let created = client.create_vm(&unpooled(&name, run)).await.unwrap();
        let (made_vmm, _) = follow(&client, created.operation.unwrap(), t).await;
        client.delete_vm(&name).await.unwrap();

        // Raw Firecracker with the same VM's configuration.
        if run == 0 {
            ip(&["tuntap", "add", "dev", raw_tap, "mode", "tap"]);
            ip(&["link", "set", raw_tap, "master", "banger0"]);
            ip(&["link", "set", raw_tap, "up"]);
        }
        settle().await;
        let r = launch_raw(firecracker, spec, raw_tap, dir.path(), run);

        if std::env::var_os("BENCH_SAMPLES").is_some() {
            println!(
                "round {run:>2}{}: start {}  create {}  create without spare {}  raw {}",
                if run == 0 { " (warm-up)" } else { "" },
                ms(vmm),
                ms(created_vmm),
                ms(no_spare_vmm),
                ms(r)
            );
        }
        if run > 0 {
            start_vmm.push(vmm);
            start_total.push(total);
            create_vmm.push(created_vmm);
            no_spare.push(no_spare_vmm);
            unpooled_vmm.push(made_vmm);
            raw.push(r);
        }
    }
    client.delete_vm("bench").await.unwrap();
    running.stop().await;

    let raw_rounds = raw.clone();
    let raw_median = testing::median(&mut raw);
    // Two ratios: of the medians, and the median of each round's ratio to that round's raw
    // launch, which a change in the machine's load during the run moves less.
    let row = |what: &str, samples: &mut Vec<Duration>| {
        let mut per_round: Vec<f64> = samples
            .iter()
            .zip(&raw_rounds)
            .map(|(s, r)| s.as_secs_f64() / r.as_secs_f64())
            .collect();
        per_round.sort_by(f64::total_cmp);
        let m = testing::median(samples);
        println!(
            "{what:<44} median {}  min {}  {:.2}x raw  (per round {:.2}x)",
            ms(m),
            ms(*samples.iter().min().unwrap()),
            m.as_secs_f64() / raw_median.as_secs_f64(),
            per_round[per_round.len() / 2]
        );
    };
    println!(
        "{runs} rounds, tiny guest kernel and initrd, one vCPU, 128 MiB, four drives (root, \
         overlay, work, config), tap, vsock; {links}{}",
        if jailed {
            "; VMs behind the jailer (no spare Firecracker)"
        } else {
            ""
        }
    );
    row(
        "vm start: request -> InstanceStart accepted",
        &mut start_vmm,
    );
    row("vm start: request -> operation done", &mut start_total);
    row(
        "vm create: request -> InstanceStart accepted",
        &mut create_vmm,
    );
    if !jailed {
        row("vm create, no spare Firecracker: same", &mut no_spare);
    }
    row("vm create, disks not pooled: same", &mut unpooled_vmm);
    println!(
        "{:<44} median {}  min {}",
        "raw firecracker --config-file -> started",
        ms(raw_median),
        ms(*raw.iter().min().unwrap())
    );
}

/// The raw launch of `spec` with paths of its own and `tap`.
fn launch_raw(
    firecracker: &Path,
    mut spec: banger_vmm::VmSpec,
    tap: &str,
    dir: &Path,
    run: usize,
) -> Duration {
    let id = format!("raw{run}");
    let raw_dir = dir.join(&id);
    std::fs::create_dir_all(&raw_dir).unwrap();
    spec.vm_id = id;
    spec.paths.api_socket = raw_dir.join("api.sock");
    spec.paths.console_log = raw_dir.join("console.log");
    spec.paths.vmm_log = raw_dir.join("vmm.log");
    spec.paths.metrics = raw_dir.join("metrics.json");
    if let Some(vsock) = &mut spec.vsock {
        vsock.uds_path = raw_dir.join("vsock.sock");
    }
    if let Some(net) = &mut spec.net {
        net.tap = tap.to_owned();
    }
    testing::launch_raw(firecracker, &spec)
}

fn ms(d: Duration) -> String {
    format!("{:7.2} ms", d.as_secs_f64() * 1000.0)
}

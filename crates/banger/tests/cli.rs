//! End-to-end tests of the `banger` binary against a real `bangerd`: each test gets its own
//! home, XDG directories and daemon (started by banger itself, stopped by a guard), so tests
//! run in parallel without seeing each other.

use banger_host::runner::{CommandRunner, CommandSpec, RealRunner};
use serde_json::Value;

/// Exit codes of the CLI, as documented in `banger_cli::exit`.
const INVALID_INPUT: i32 = 3;
const NOT_FOUND: i32 = 4;
const CONFLICT: i32 = 5;
const UNAVAILABLE: i32 = 6;
const OPERATION_FAILED: i32 = 7;
const OVER_CAPACITY: i32 = 11;
const USAGE: i32 = 2;

mod support;

use support::{Sandbox, create_stopped};

/// Snapshot settings that hide what differs between runs.
fn settings(sandbox: &Sandbox) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(
        &regex_escape(&sandbox.root().display().to_string()),
        "[SANDBOX]",
    );
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]");
    settings.add_filter(r#""id": "[^"]+""#, r#""id": "[ID]""#);
    settings.add_filter(r"\b[0-9a-f]{16}\b", "[ID]");
    settings.add_filter(r"\((just now|\d+[smhd] ago)\)", "([AGE])");
    settings.add_filter(
        r#""allocated_bytes": \d+"#,
        r#""allocated_bytes": "[ALLOCATED]""#,
    );
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

#[test]
fn the_first_command_starts_the_daemon_and_status_reports_it() {
    let sandbox = Sandbox::new();
    let (_, stderr) = sandbox.run(&["daemon", "status"], UNAVAILABLE);
    let socket = sandbox.root().join("run/banger/bangerd.sock");
    assert_eq!(
        stderr,
        format!(
            "error: bangerd is not running (socket: {})\n\
             hint: start it with `banger daemon start`; any other banger command starts it too\n",
            socket.display()
        )
    );

    let stdout = sandbox.ok(&["vm", "list"]);
    assert_eq!(
        stdout,
        "No VMs yet. Create one with: banger vm create --name dev\n"
    );
    assert_eq!(sandbox.json(&["vm", "list"]), serde_json::json!([]));

    let status = sandbox.ok(&["daemon", "status"]);
    let info = sandbox.json(&["daemon", "status"]);
    let pid = info["pid"].as_u64().unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pid:", &pid.to_string()]),
        "{status}"
    );
    assert_eq!(info["socket"], socket.display().to_string());
    assert_eq!(
        info["state_dir"],
        sandbox.root().join("state/banger").display().to_string()
    );
    assert!(
        !status.contains("outdated"),
        "the daemon banger started is the expected build: {status}"
    );

    assert_eq!(
        sandbox.ok(&["daemon", "start"]),
        format!("bangerd is already running (pid {pid}).\n")
    );
    assert_eq!(
        sandbox.ok(&["daemon", "stop"]),
        format!("bangerd stopped (pid {pid}).\n")
    );
    sandbox.run(&["daemon", "status"], UNAVAILABLE);
    assert_eq!(sandbox.ok(&["daemon", "stop"]), "bangerd is not running.\n");
    let stopped = sandbox.json(&["daemon", "stop"]);
    assert_eq!(
        stopped,
        serde_json::json!({"was_running": false, "pid": null})
    );

    let started = sandbox.ok(&["daemon", "start"]);
    let pid = sandbox.daemon_pid();
    assert_eq!(started, format!("bangerd started (pid {pid}).\n"));
    let restarted = sandbox.json(&["daemon", "restart"]);
    assert_ne!(restarted["pid"].as_u64().unwrap(), u64::from(pid));
    assert_eq!(
        restarted["pid"].as_u64().unwrap(),
        u64::from(sandbox.daemon_pid())
    );
}

#[test]
fn images_and_vms_through_their_lifecycle() {
    let sandbox = Sandbox::new();
    assert_eq!(
        sandbox.ok(&["image", "list"]),
        "No images yet. Build the default one from Debian packages:\n  banger image bootstrap \
         debian\nor register your own:\n  banger image register --name NAME --kernel vmlinux \
         --rootfs rootfs.ext4\n"
    );

    let (stdout, stderr) = sandbox.register("base");
    assert!(
        stdout.starts_with("Registered image base.\n\nname:           base\n"),
        "{stdout}"
    );
    assert!(stderr.starts_with("Registering image base\n"), "{stderr}");
    assert!(stderr.contains(": done"), "stages are shown: {stderr}");
    assert!(!stderr.contains("error"), "{stderr}");

    let list = sandbox.ok(&["image", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].starts_with("NAME  SOURCE      KERNEL      SIZE  CREATED"),
        "{list}"
    );
    assert!(
        lines[1].starts_with("base  registered  6.1.0-test"),
        "{list}"
    );
    let printed = sandbox.json_text(&["image", "list"]);
    settings(&sandbox).bind(|| {
        insta::assert_snapshot!("image_list_json", printed);
    });
    let images: Value = serde_json::from_str(&printed).unwrap();
    let shown = sandbox.json(&["image", "show", "base"]);
    assert_eq!(shown, images[0]);

    // One vCPU: bangerd caps vCPUs at the host's CPUs, and a CI machine may have one.
    let printed = sandbox.json_text(&create_stopped(
        "dev",
        "base",
        &[
            "--vcpus",
            "1",
            "--memory",
            "512",
            "--disk",
            "1G",
            "--work-disk",
            "256M",
            "--nat",
        ],
    ));
    settings(&sandbox).bind(|| {
        insta::assert_snapshot!("vm_create_json", printed);
    });
    let created: Value = serde_json::from_str(&printed).unwrap();
    let second = sandbox.ok(&create_stopped("web-1", "base", &["--vcpus", "1"]));
    assert!(
        second.starts_with("Created VM web-1 (not started).\n\nname:"),
        "{second}"
    );

    let list = sandbox.ok(&["vm", "list"]);
    settings(&sandbox).bind(|| {
        insta::assert_snapshot!("vm_list_text", list);
    });
    let vms = sandbox.json(&["vm", "list"]);
    assert_eq!(vms.as_array().unwrap().len(), 2);
    assert_eq!(vms[0], created);

    let show = sandbox.ok(&["vm", "show", "dev"]);
    settings(&sandbox).bind(|| {
        insta::assert_snapshot!("vm_show_text", show);
    });
    let mut shown = sandbox.json(&["vm", "show", "dev"]);
    let seed = shown.as_object_mut().unwrap().remove("work_seed").unwrap();
    assert_eq!(seed["changed"], false, "{seed}");
    assert_eq!(seed["vm"], seed["image"], "{seed}");
    assert_eq!(
        shown, created,
        "show adds only the work seed to what list says"
    );

    let updated = sandbox.json(&["vm", "set", "dev", "--vcpus", "1", "--memory", "1024"]);
    assert_eq!(updated["vcpus"], 1);
    assert_eq!(updated["memory_mib"], 1024);
    let text = sandbox.ok(&["vm", "set", "dev", "--work-disk", "512M"]);
    assert!(text.starts_with("Updated VM dev.\n\n"), "{text}");
    assert!(
        text.contains("work disk: 512M (mounted at /root)\n"),
        "{text}"
    );
    // The disk itself grew, filesystem included.
    let work = sandbox
        .root()
        .join("state/banger/vms")
        .join(created["id"].as_str().unwrap())
        .join("work.ext4");
    assert_eq!(std::fs::metadata(&work).unwrap().len(), 512 << 20);
    let out = RealRunner
        .run(&CommandSpec::new("dumpe2fs").args(["-h".to_owned(), work.display().to_string()]))
        .unwrap()
        .stdout_lossy();
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(field("Block count:") * field("Block size:"), 512 << 20);

    // An image in use cannot go.
    let (_, stderr) = sandbox.run(&["image", "delete", "base"], CONFLICT);
    assert!(stderr.starts_with("error: "), "{stderr}");

    assert_eq!(sandbox.ok(&["vm", "delete", "dev"]), "Deleted VM dev.\n");
    assert_eq!(
        sandbox.json(&["vm", "delete", "web-1"]),
        serde_json::json!({"deleted": "web-1"})
    );
    assert_eq!(sandbox.json(&["vm", "list"]), serde_json::json!([]));
    assert_eq!(
        sandbox.ok(&["image", "delete", "base"]),
        "Deleted image base.\n"
    );
    assert_eq!(sandbox.json(&["image", "list"]), serde_json::json!([]));
}

#[test]
fn bad_values_are_refused_before_reaching_the_daemon() {
    let sandbox = Sandbox::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--vcpus", "0"],
            "error: vCPUs must be at least 1 (got 0)\nhint: pass --vcpus with a value from 1 to 32\n",
        ),
        (
            &["--vcpus", "-2"],
            "error: vCPUs must be at least 1 (got -2)\nhint: pass --vcpus with a value from 1 to 32\n",
        ),
        (
            &["--memory", "64"],
            "error: memory must be at least 128 MiB (got 64)\nhint: pass --memory in MiB, e.g. --memory 1024\n",
        ),
        (
            &["--disk", "4X"],
            "error: \"4X\" is not a size\nhint: write a number with a unit: 512M, 4G, 1.5T (K, M, G, T are powers of 1024)\n",
        ),
        (
            &["--work-disk", "1M"],
            "error: work disk size must be at least 64M (got 1M)\nhint: sizes take a unit: 512M, 4G, 1T\n",
        ),
        (
            &["--name", "Bad_Name"],
            "error: VM name \"Bad_Name\" contains 'B' (names are lower-case)\nhint: use 1-63 characters from a-z, 0-9 and '-', starting and ending with a letter or digit\n",
        ),
    ];
    for (args, message) in cases {
        let mut argv = vec!["vm", "create", "--no-start"];
        argv.extend_from_slice(args);
        let (stdout, stderr) = sandbox.run(&argv, INVALID_INPUT);
        assert_eq!(stdout, "");
        assert_eq!(&stderr, message, "{args:?}");
    }
    // JSON mode reports the same error as an object.
    let out = sandbox
        .banger(["vm", "create", "--no-start", "--vcpus", "0", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(INVALID_INPUT));
    let error: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["code"], "invalid_input");
    assert_eq!(error["message"], "vCPUs must be at least 1 (got 0)");

    let (_, stderr) = sandbox.run(&["vm", "create", "--no-start", "--no-wait"], USAGE);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (_, stderr) = sandbox.run(&["vm", "set", "dev"], INVALID_INPUT);
    assert_eq!(
        stderr,
        "error: nothing to change for VM \"dev\"\nhint: pass --vcpus, --memory or --work-disk\n"
    );
    let (_, stderr) = sandbox.run(
        &[
            "image", "register", "--name", "base", "--kernel", "nope", "--rootfs", "nope",
        ],
        INVALID_INPUT,
    );
    assert_eq!(
        stderr,
        "error: kernel file nope does not exist\nhint: pass --kernel with the path of the kernel\n"
    );

    // None of that needed bangerd, so none was started.
    sandbox.run(&["daemon", "status"], UNAVAILABLE);
}

#[test]
fn refusals_from_the_daemon_leave_state_unchanged() {
    let sandbox = Sandbox::new();
    sandbox.register("base");
    sandbox.ok(&create_stopped("dev", "base", &[]));
    let before = sandbox.json(&["vm", "list"]);

    let (_, stderr) = sandbox.run(&create_stopped("dev", "base", &[]), CONFLICT);
    assert!(stderr.starts_with("error: "), "{stderr}");
    // bangerd treats an unknown image in a create request as an invalid value.
    sandbox.run(&create_stopped("other", "nope", &[]), INVALID_INPUT);
    sandbox.run(
        &["vm", "create", "--no-start", "--name", "x", "--vcpus", "0"],
        INVALID_INPUT,
    );
    // The work disk only grows.
    sandbox.run(&["vm", "set", "dev", "--work-disk", "64M"], INVALID_INPUT);
    assert_eq!(sandbox.json(&["vm", "list"]), before);

    let (_, stderr) = sandbox.run(&["vm", "show", "nope"], NOT_FOUND);
    assert!(stderr.starts_with("error: "), "{stderr}");
    let out = sandbox
        .banger(["-o", "json", "vm", "delete", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(NOT_FOUND));
    let error: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["code"], "not_found");
    sandbox.run(&["image", "show", "nope"], NOT_FOUND);

    // bangerd checks the files' formats before it starts the registration operation.
    let kernel = sandbox.root().join("vmlinux");
    let bogus = sandbox.root().join("bogus.img");
    std::fs::write(&bogus, vec![0u8; 4096]).unwrap();
    let (_, stderr) = sandbox.run(
        &[
            "image",
            "register",
            "--name",
            "bogus",
            "--kernel",
            kernel.to_str().unwrap(),
            "--rootfs",
            bogus.to_str().unwrap(),
        ],
        INVALID_INPUT,
    );
    assert_eq!(
        stderr,
        format!(
            "error: rootfs {} is not an ext4 filesystem image (found unrecognised data)\n\
             hint: make an ext4 image from a directory tree with \
             `mkfs.ext4 -d DIR rootfs.ext4 SIZE`\n",
            bogus.display()
        )
    );
    assert_eq!(
        sandbox.json(&["image", "list"]).as_array().unwrap().len(),
        1
    );
}

/// `image export` then `image import` move an image through one file: relative paths work
/// (the CLI sends them absolute), stages are shown, collisions name the flag that avoids them,
/// and the imported image is one like any other.
#[test]
fn an_image_moves_through_an_exported_file() {
    let sandbox = Sandbox::new();
    sandbox.register("base");
    let (stdout, stderr) = sandbox.run(&["image", "export", "base", "base.banger-image"], 0);
    let file = sandbox.root().join("base.banger-image");
    assert!(file.is_file());
    assert!(
        stderr.starts_with(&format!("Exporting image base to {}\n", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains(": done"), "stages are shown: {stderr}");
    let bytes = std::fs::metadata(&file).unwrap().len();
    let shown = stdout.replace(
        &format!("({})", banger_api::validate::format_size(bytes)),
        "(SIZE)",
    );
    settings(&sandbox).bind(|| {
        insta::assert_snapshot!("image_export_text", shown);
    });

    let (_, stderr) = sandbox.run(&["image", "export", "base", "base.banger-image"], CONFLICT);
    settings(&sandbox).bind(|| {
        insta::assert_snapshot!("image_export_exists", stderr);
    });
    let exported = sandbox.json(&["image", "export", "base", "base.banger-image", "--force"]);
    assert_eq!(exported["path"], file.display().to_string());
    assert_eq!(exported["name"], "base");

    let (_, stderr) = sandbox.run(&["image", "import", "base.banger-image"], CONFLICT);
    settings(&sandbox).bind(|| {
        insta::assert_snapshot!("image_import_collision", stderr);
    });
    let (stdout, stderr) = sandbox.run(
        &["image", "import", "base.banger-image", "--name", "copy"],
        0,
    );
    assert!(stderr.starts_with("Importing image copy from "), "{stderr}");
    assert!(stderr.contains("unpack rootfs"), "{stderr}");
    // Allocated sizes depend on the filesystem the sandbox is on.
    let mut import_settings = settings(&sandbox);
    import_settings.add_filter(r"[0-9.]+[BKMGT]? allocated\)", "[ALLOCATED] allocated)");
    import_settings.add_filter(r"[0-9.]+[BKMGT]? on disk", "[ALLOCATED] on disk");
    import_settings.add_filter(r"by banger \d+\.\d+\.\d+\S*", "by banger [VERSION]");
    import_settings.bind(|| {
        insta::assert_snapshot!("image_import_text", stdout);
    });
    let imported = sandbox.json(&["image", "import", "base.banger-image", "--name", "copy2"]);
    assert_eq!(imported["source"], "imported");
    assert_eq!(imported["manifest"]["name"], "copy2");
    let base = sandbox.json(&["image", "show", "base"]);
    assert_eq!(
        imported["manifest"]["created_from"],
        base["manifest"]["created_from"]
    );
    sandbox.ok(&create_stopped("dev", "copy", &[]));

    // Not an export: refused before anything starts.
    let (_, stderr) = sandbox.run(
        &["image", "import", "vmlinux", "--name", "x"],
        INVALID_INPUT,
    );
    settings(&sandbox).bind(|| {
        insta::assert_snapshot!("image_import_foreign", stderr);
    });
    assert_eq!(
        sandbox.json(&["image", "list"]).as_array().unwrap().len(),
        3
    );
}

/// A start that cannot happen (here: the configured Firecracker does not exist) fails with the
/// reason, leaves the VM stopped with that reason recorded, and the lifecycle commands refuse
/// what the VM's state does not allow.
#[test]
fn a_start_that_cannot_happen_leaves_the_vm_stopped_with_the_reason() {
    let sandbox = Sandbox::new();
    sandbox.config(
        "vmm = \"firecracker\"\nfirecracker_bin = \"/nonexistent/firecracker\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n",
    );
    sandbox.register("base");
    let (_, stderr) = sandbox.run(
        &[
            "vm", "create", "--name", "dev", "--image", "base", "--vcpus", "1",
        ],
        OPERATION_FAILED,
    );
    assert!(
        stderr.contains("Created VM dev (172.30.0.2); starting it\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: Firecracker cannot run VMs here: ")
            && stderr.contains("/nonexistent/firecracker"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: install Firecracker"), "{stderr}");
    let vm = sandbox.json(&["vm", "show", "dev"]);
    assert_eq!(vm["state"], "stopped");
    assert!(vm.get("runtime").is_none(), "{vm}");
    assert!(
        vm["last_error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/firecracker"),
        "{vm}"
    );
    let show = sandbox.ok(&["vm", "show", "dev"]);
    assert!(
        show.contains("\nlast error: Firecracker cannot run VMs here"),
        "{show}"
    );
    // The same through `vm start`, and the refusals of what a stopped VM cannot do.
    sandbox.run(&["vm", "start", "dev"], OPERATION_FAILED);
    let (_, stderr) = sandbox.run(&["vm", "stop", "dev"], CONFLICT);
    assert!(
        stderr.starts_with(
            "error: VM \"dev\" is stopped; only a running or paused VM can be stopped"
        ),
        "{stderr}"
    );
    sandbox.run(&["vm", "pause", "dev"], CONFLICT);
    sandbox.run(&["vm", "resume", "dev"], CONFLICT);
    sandbox.run(&["vm", "restart", "dev"], CONFLICT);
    sandbox.run(&["vm", "start", "nope"], NOT_FOUND);
    // A stopped VM is deleted with its files.
    let id = vm["id"].as_str().unwrap().to_owned();
    let dir = sandbox.root().join("state/banger/vms").join(&id);
    assert!(dir.join("overlay.ext4").exists() && dir.join("work.ext4").exists());
    sandbox.ok(&["vm", "delete", "dev"]);
    assert!(!dir.exists());
}

#[test]
fn a_daemon_of_another_build_is_restarted() {
    let sandbox = Sandbox::new();
    let bin = sandbox.root().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let first = bin.join("bangerd-a");
    std::fs::copy(env!("CARGO_BIN_EXE_bangerd"), &first).unwrap();

    sandbox
        .banger_with(&first, ["daemon", "start"])
        .assert()
        .success();
    let before = sandbox.json(&["daemon", "status"]);

    // A rebuilt daemon: another file, so another inode, size or mtime.
    let second = bin.join("bangerd-b");
    std::fs::copy(env!("CARGO_BIN_EXE_bangerd"), &second).unwrap();

    // Status only reports the difference; it restarts nothing.
    let status = sandbox
        .banger_with(&second, ["daemon", "status"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.lines().any(|l| l.starts_with("outdated:")
            && l.ends_with(&format!(
                " the running build differs from {}; the next banger command restarts it",
                second.display()
            ))),
        "{status}"
    );
    assert_eq!(sandbox.json(&["daemon", "status"])["pid"], before["pid"]);
    let out = sandbox
        .banger_with(&second, ["vm", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "banger: restarting bangerd (running build differs from {})\n",
            second.display()
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "No VMs yet. Create one with: banger vm create --name dev\n"
    );

    let after = sandbox.json(&["daemon", "status"]);
    assert_ne!(after["pid"], before["pid"]);
    assert_ne!(after["build_id"], before["build_id"]);
    let expected = banger_api::build::build_id_of(&second).unwrap();
    assert_eq!(after["build_id"], expected);

    // The old daemon is gone, and the new one is not restarted again.
    let old_pid = before["pid"].as_u64().unwrap() as u32;
    assert!(!banger_host::process::pid_alive(old_pid));
    let again = sandbox
        .banger_with(&second, ["vm", "list"])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stderr), "");
}

#[test]
fn a_daemon_that_fails_to_start_is_reported_with_its_startup_log() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    let broken = sandbox.root().join("broken-bangerd");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'bangerd: cannot open the database: disk on fire' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = sandbox
        .banger_with(&broken, ["vm", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(UNAVAILABLE));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = sandbox.root().join("run/banger/bangerd.startup.log");
    let expected_tail = format!(
        "exited while starting; the last lines of its startup log {}:\n  \
         bangerd: cannot open the database: disk on fire\nhint: bangerd's log is ",
        log.display()
    );
    assert!(stderr.starts_with("error: bangerd (pid "), "{stderr}");
    assert!(stderr.contains(&expected_tail), "{stderr}");
}

#[test]
fn completions_and_man_page_come_from_the_definitions() {
    let sandbox = Sandbox::new();
    let bash = sandbox.ok(&["completions", "bash"]);
    assert!(
        bash.contains("banger__subcmd__vm__subcmd__create"),
        "bash completion names subcommands"
    );
    assert!(bash.contains("--no-start"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(!sandbox.ok(&["completions", shell]).is_empty(), "{shell}");
    }
    let man = sandbox.ok(&["man"]);
    assert!(
        man.starts_with(".ie \\n(.g .ds Aq"),
        "{}",
        &man[..80.min(man.len())]
    );
    assert!(man.contains(".TH banger 1"), "roff title");
    sandbox.run(&["completions", "tcsh"], USAGE);
    // Neither needed the daemon.
    sandbox.run(&["daemon", "status"], UNAVAILABLE);
}

/// This host's memory as bangerd reads it (`MemTotal`), in KiB.
fn host_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("MemTotal in /proc/meminfo")
}

/// A VM that admission control refuses exits 11 with the figures and the way out, and leaves
/// nothing behind: a create, started or not, and a `vm set` to sizes that could never start.
#[test]
fn admission_refusals_exit_11_with_the_figures_and_a_hint() {
    let sandbox = Sandbox::new();
    // Whatever this host's memory, the reserve leaves VMs exactly 512 MiB.
    let host_kib = host_memory_kib();
    let reserve_kib = host_kib - 512 * 1024;
    sandbox.config(&format!(
        "[admission]\nmemory_reserve = \"{reserve_kib}K\"\n"
    ));
    sandbox.register("base");
    let config = sandbox.root().join("config/banger/config.toml");
    let expected = format!(
        "error: VM \"big\" could never start on this host: its 1024 MiB of guest memory is \
         more than the 512 MiB all running VMs may reserve together (memory_ratio 1.0 × ({} MiB \
         host memory − {} MiB memory_reserve))\n\
         hint: pass a smaller --memory or --vcpus; or raise the limits in [admission] of {} \
         (`memory_ratio`, `vcpu_ratio` or `memory_reserve`, or `enabled = false` to turn the \
         check off) and restart the daemon\n",
        host_kib / 1024,
        reserve_kib / 1024,
        config.display()
    );
    for start in [true, false] {
        let mut args = vec![
            "vm", "create", "--name", "big", "--image", "base", "--vcpus", "1", "--memory", "1024",
        ];
        if !start {
            args.push("--no-start");
        }
        let (stdout, stderr) = sandbox.run(&args, OVER_CAPACITY);
        assert_eq!(stdout, "");
        assert_eq!(stderr, expected, "start: {start}");
    }
    let out = sandbox
        .banger([
            "vm", "create", "--name", "big", "--image", "base", "--memory", "1024", "-o", "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(OVER_CAPACITY));
    let error: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["code"], "over_capacity");
    assert_eq!(sandbox.json(&["vm", "list"]), serde_json::json!([]));
    let vms_dir = sandbox.root().join("state/banger/vms");
    let left: Vec<_> = std::fs::read_dir(&vms_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // A VM that fits is made; it cannot be set to sizes that never would.
    sandbox.ok(&create_stopped(
        "small",
        "base",
        &["--vcpus", "1", "--memory", "256"],
    ));
    let (_, stderr) = sandbox.run(&["vm", "set", "small", "--memory", "1024"], OVER_CAPACITY);
    assert!(
        stderr.starts_with("error: VM \"small\" could never start on this host: its 1024 MiB"),
        "{stderr}"
    );
    assert_eq!(sandbox.json(&["vm", "show", "small"])["memory_mib"], 256);
}

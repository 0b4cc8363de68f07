//! The first real VM, end to end, through real components only: `banger image bootstrap
//! debian` builds the image from Debian packages (cached between runs outside the repository,
//! in `$BANGER_TEST_CACHE`, default `/var/cache/banger-test`, keyed by its inputs), then VMs are
//! created on QEMU (TCG here: this machine's KVM cannot boot a stock kernel) and driven with the
//! `banger` CLI: readiness through the guest agent and sshd, exec exit codes, exec's streams
//! (stdin, 32 MiB each way, signals) and an interactive `exec -it` under tmux, ssh, ports, the
//! work disk surviving a restart, NAT rules, a readiness timeout's diagnosis, a QEMU killed
//! mid-boot, and deletes that leave nothing behind; and images that declare their own services
//! (waited for by a start, their log shown when one never answers).
//!
//! Everything runs inside a network namespace the test creates and removes: the CLI and the
//! daemon it starts are run with `ip netns exec`, so the bridge, taps, rules and the guests'
//! traffic never touch the host's network. Needs root, QEMU, debootstrap and the OpenSSH client;
//! prints `SKIP:` and passes without them.
//!
//! It stays one file: its tests share the namespace harness and the bootstrapped image, and each
//! test's steps build on the VMs the steps before made.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::{E2e, have};

fn no_files_left(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// `banger ARGS` inside the test's namespace, not yet run.
fn banger_cmd(t: &E2e, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &t.netns.0, env!("CARGO_BIN_EXE_banger")])
        .args(args)
        .current_dir(t.sandbox.root())
        .envs(t.sandbox.env());
    cmd
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `vm exec` like `docker exec`: standard input through, large streams both ways, the
/// user's environment, directory and account, signals, and an interactive terminal.
fn exec_streams_and_terminals(t: &E2e) {
    // Piped input reaches the command.
    let mut child = banger_cmd(t, &["vm", "exec", "e2e", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (out.status.code(), &out.stdout[..]),
        (Some(0), &b"hi\n"[..])
    );

    // 32 MiB in through stdin, hashed in the guest; 32 MiB out through stdout, counted.
    let data = t.sandbox.root().join("exec-in.bin");
    let mut bytes = Vec::with_capacity(32 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while bytes.len() < 32 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&data, &bytes).unwrap();
    drop(bytes);
    let host = Command::new("sha256sum").arg(&data).output().unwrap();
    let host_hash = String::from_utf8_lossy(&host.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let out = banger_cmd(t, &["vm", "exec", "e2e", "--", "sha256sum"])
        .stdin(std::fs::File::open(&data).unwrap())
        .output()
        .unwrap();
    println!("exec: 32 MiB in: {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next(),
        Some(host_hash.as_str())
    );
    let started = Instant::now();
    let mut child = banger_cmd(
        t,
        &["vm", "exec", "e2e", "--", "head", "-c", "32M", "/dev/zero"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let count = std::io::copy(&mut child.stdout.take().unwrap(), &mut std::io::sink()).unwrap();
    assert_eq!((child.wait().unwrap().code(), count), (Some(0), 32 << 20));
    println!("exec: 32 MiB out: {:.1}s", started.elapsed().as_secs_f64());

    // --env, --workdir and --user.
    assert_eq!(
        t.ok(&[
            "vm",
            "exec",
            "-e",
            "A=1",
            "--env",
            "B=two words",
            "-w",
            "/tmp",
            "--user",
            "nobody",
            "e2e",
            "--",
            "sh",
            "-c",
            "echo \"$A $B\"; pwd; id -un",
        ]),
        "1 two words\n/tmp\nnobody\n"
    );

    // SIGINT to banger reaches a command without a terminal: it dies of it, 128 + 2.
    let mut child = banger_cmd(
        t,
        &[
            "vm",
            "exec",
            "e2e",
            "--",
            "sh",
            "-c",
            "echo up; exec sleep 100",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "up\n");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));

    // An interactive shell on a terminal, typed into under tmux.
    if !have("tmux", "-V") {
        banger_test_support::skip!("tmux not found (the interactive exec)");
        return;
    }
    let socket = t.sandbox.root().join("tmux.sock");
    let mut command = format!("ip netns exec {} env", t.netns.0);
    for (key, value) in t.sandbox.env() {
        command.push_str(&format!(
            " {key}={}",
            shell_quote(&value.display().to_string())
        ));
    }
    command.push_str(&format!(
        " {} vm exec -it e2e -- sh; echo \"exec exited with status $?\"; \
         stty -a | tr ' ;' '\\n\\n' | grep -qx icanon && echo terminal restored; sleep 60",
        shell_quote(env!("CARGO_BIN_EXE_banger"))
    ));
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    struct KillServer<'a>(&'a Path);
    impl Drop for KillServer<'_> {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .arg("-S")
                .arg(self.0)
                .arg("kill-server")
                .output();
        }
    }
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "30",
        "-s",
        "exec",
        &command,
    ]);
    let _server = KillServer(&socket);
    let wait_for = |what: &str, ready: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = tmux(&["capture-pane", "-p", "-t", "exec"]);
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; the screen shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let lines = |screen: &str, line: &str| screen.lines().filter(|l| l.trim_end() == line).count();
    wait_for("the guest's prompt", &|s| s.contains('#'));
    tmux(&["send-keys", "-t", "exec", "echo $((6*7))", "Enter"]);
    wait_for("6*7", &|s| lines(s, "42") == 1);
    // The guest's terminal has the pane's size, and follows it when it changes.
    let pane = || {
        tmux(&[
            "display-message",
            "-p",
            "-t",
            "exec",
            "#{pane_height} #{pane_width}",
        ])
    };
    let size = pane();
    tmux(&["send-keys", "-t", "exec", "stty size", "Enter"]);
    wait_for("the first size", &|s| lines(s, size.trim()) == 1);
    tmux(&["resize-window", "-t", "exec", "-x", "120", "-y", "40"]);
    let size = pane();
    assert_ne!(size.trim(), "", "tmux knows the pane's size");
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", "exec", "stty size", "Enter"]);
    wait_for("the new size", &|s| lines(s, size.trim()) == 1);
    // Ctrl-C is a byte for the guest's terminal, which interrupts its foreground job.
    tmux(&["send-keys", "-t", "exec", "sleep 100", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", "exec", "C-c"]);
    tmux(&["send-keys", "-t", "exec", "echo after $((1+1))", "Enter"]);
    // What was typed while the sleep ran is echoed early: the answer may share the prompt's line.
    wait_for("Ctrl-C to end the sleep", &|s| {
        s.lines()
            .any(|l| l.trim_end().ends_with("after 2") && !l.contains("echo"))
    });
    tmux(&["send-keys", "-t", "exec", "exit 3", "Enter"]);
    wait_for("the exit status and a restored terminal", &|s| {
        s.contains("exec exited with status 3") && s.contains("terminal restored")
    });
}

#[test]
fn a_bootstrapped_debian_vm_end_to_end_under_qemu() {
    let Some(mut t) = E2e::with_debian_image(&[
        ("qemu-system-x86_64", "--version"),
        ("debootstrap", "--version"),
        ("ssh", "-V"),
        ("nft", "--version"),
    ]) else {
        return;
    };
    // The daemon sees the host's cgroups, as one outside a namespace does.
    let cgroups = t.with_host_cgroups();
    let image = t.json(&["image", "show", "debian"]);
    assert_eq!(
        image["manifest"]["init_features"],
        serde_json::json!(["config-drive"]),
        "banger's init reads config drives"
    );
    let kernel = image["manifest"]["kernel_version"]
        .as_str()
        .unwrap()
        .to_owned();

    // Create waits until the agent and sshd answer.
    let started = Instant::now();
    let (code, out, err) = t.banger(&["vm", "create", "--name", "e2e"]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!("create → ready: {:.1}s", started.elapsed().as_secs_f64());
    assert!(out.starts_with("Started VM e2e."), "{out}");
    for stage in ["agent: done", "ssh: done"] {
        assert!(err.contains(stage), "{stage} not in {err}");
    }
    let vm = t.vm("e2e");
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["runtime"]["vmm"], "qemu");
    let boot: Vec<&str> = vm["runtime"]["boot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        boot,
        ["checks", "network", "vmm", "started", "agent", "ssh"]
    );

    // exec: output and exit codes come back.
    let (code, out, _) = t.banger(&["vm", "exec", "e2e", "--", "uname", "-r"]);
    assert_eq!((code, out.trim()), (0, kernel.as_str()));
    let (code, out, err) = t.banger(&[
        "vm",
        "exec",
        "e2e",
        "--",
        "sh",
        "-c",
        "echo o; echo e >&2; exit 7",
    ]);
    assert_eq!((code, out.as_str(), err.as_str()), (7, "o\n", "e\n"));
    exec_streams_and_terminals(&t);
    // The kernel's modules are in the image: one the initramfs did not load can be loaded.
    let (code, out, err) = t.banger(&[
        "vm",
        "exec",
        "e2e",
        "--",
        "sh",
        "-c",
        "/sbin/modprobe dummy && grep -c '^dummy ' /proc/modules",
    ]);
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    // ssh, with the VM's own host key and banger's key.
    let (code, out, err) = t.banger(&["vm", "ssh", "e2e", "--", "hostname"]);
    assert_eq!((code, out.trim()), (0, "e2e"), "{err}");
    // ports lists sshd and the agent.
    let ports = t.json(&["vm", "ports", "e2e"]);
    let listening: Vec<(u64, String)> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["process"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(listening.contains(&(22, "sshd".into())), "{listening:?}");
    assert!(
        listening.contains(&(1024, "banger-agent".into())),
        "{listening:?}"
    );
    let health = t.json(&["vm", "health", "e2e"]);
    assert_eq!(health["ready"], true);
    // The boot as the guest saw it: banger's /init first, then the agent.
    let guest_stages: Vec<&str> = health["boot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        guest_stages,
        [
            "init_started",
            "init_modules_loaded",
            "init_disks_found",
            "init_root_mounted",
            "init_network_configured",
            "init_switch_root",
            "agent_started",
            "agent_listening"
        ],
        "{health}"
    );
    assert!(
        t.ok(&["vm", "show", "e2e"])
            .contains("\nboot:      checks ")
    );

    // cp follows docker cp's rules both ways, modes included.
    let local = t.sandbox.root().join("cp-src");
    std::fs::create_dir_all(local.join("sub")).unwrap();
    std::fs::write(local.join("sub/tool.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(local.join("x.txt"), "x\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            local.join("sub/tool.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let at = |p: &str| t.sandbox.root().join(p).to_str().unwrap().to_owned();
    // A directory into an existing directory, under its own name.
    t.ok(&["vm", "cp", &at("cp-src"), "e2e:/root"]);
    assert_eq!(
        t.ok(&["vm", "exec", "e2e", "--", "/root/cp-src/sub/tool.sh"]),
        "hi\n"
    );
    // A file to a new name is that file, and copying it again overwrites it (the issue's
    // case); a file onto a directory goes inside it; a directory's contents with `/.`; a
    // directory to a new name; a relative guest path starts at /root.
    t.ok(&["vm", "cp", &at("cp-src/x.txt"), "e2e:/root/y.txt"]);
    t.ok(&["vm", "cp", &at("cp-src/x.txt"), "e2e:y.txt"]);
    t.ok(&["vm", "cp", &at("cp-src/x.txt"), "e2e:/tmp"]);
    t.ok(&["vm", "cp", &at("cp-src/."), "e2e:/tmp"]);
    t.ok(&["vm", "cp", &at("cp-src"), "e2e:/root/renamed"]);
    assert_eq!(
        t.ok(&[
            "vm", "exec", "e2e", "--", "sh", "-c",
            "test -f /root/y.txt && cat /root/y.txt /tmp/x.txt /tmp/sub/tool.sh /root/renamed/x.txt \
             && stat -c %a /root/renamed/sub/tool.sh",
        ]),
        "x\nx\n#!/bin/sh\necho hi\nx\n755\n"
    );
    // The refusals say what is wrong, not that the agent may be down.
    for (src, dst, code, needle) in [
        (
            at("cp-src/x.txt"),
            "e2e:/root/nodir/".to_owned(),
            4,
            "destination directory e2e:/root/nodir/ does not exist",
        ),
        (
            at("cp-src/x.txt"),
            "e2e:/no/such/x".to_owned(),
            4,
            "parent directory /no/such does not exist",
        ),
        (
            at("cp-src"),
            "e2e:/root/y.txt".to_owned(),
            3,
            "cannot copy the directory",
        ),
        (
            at("cp-src/x.txt/"),
            "e2e:/root".to_owned(),
            3,
            "is not a directory",
        ),
        (
            "e2e:/root/nope".to_owned(),
            at("cp-back"),
            4,
            "e2e:/root/nope does not exist",
        ),
        (at("nope"), "e2e:/root".to_owned(), 4, "nope does not exist"),
    ] {
        let (got, _, err) = t.banger(&["vm", "cp", &src, &dst]);
        assert_eq!(got, code, "{src} -> {dst}: {err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(!err.contains("agent may not be up"), "{err}");
    }
    // Out of the guest: into an existing directory, to a new name, contents with `/.`.
    std::fs::create_dir(at("cp-back")).unwrap();
    t.ok(&["vm", "cp", "e2e:/root/cp-src", &at("cp-back")]);
    t.ok(&["vm", "cp", "e2e:/root/y.txt", &at("cp-back/z.txt")]);
    t.ok(&["vm", "cp", "e2e:/root/cp-src/.", &at("cp-back")]);
    let copied = t.sandbox.root().join("cp-back/cp-src/sub/tool.sh");
    assert_eq!(
        std::fs::read_to_string(&copied).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    assert_eq!(std::fs::read_to_string(at("cp-back/z.txt")).unwrap(), "x\n");
    assert_eq!(std::fs::read_to_string(at("cp-back/x.txt")).unwrap(), "x\n");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&copied).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
    // `-`: a tar stream both ways.
    let (code, tar, err) = t.banger_stdin(&["vm", "cp", "e2e:/root/cp-src", "-"], b"");
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.contains(&"cp-src/sub/tool.sh".to_owned()),
        "{names:?}"
    );
    let (code, _, err) = t.banger_stdin(&["vm", "cp", "-", "e2e:/srv"], &tar);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        t.ok(&["vm", "exec", "e2e", "--", "cat", "/srv/cp-src/x.txt"]),
        "x\n"
    );
    // A large copy streams both ways: 96 MiB in and out, the CLI's memory far below it.
    let big = t.sandbox.root().join("big.bin");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<u8> = (0..(96usize << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(&big, &data).unwrap();
    for (what, args) in [
        (
            "into the guest",
            vec!["vm", "cp", big.to_str().unwrap(), "e2e:/root/big.bin"],
        ),
        (
            "out of the guest",
            vec!["vm", "cp", "e2e:/root/big.bin", &at("big-back.bin")],
        ),
    ] {
        let done = support::deadline::run(
            t.command(&args),
            None,
            what,
            support::deadline::default_limit(),
        );
        assert_eq!(
            done.code(),
            0,
            "{what}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        println!(
            "vm cp of 96 MiB {what}: the CLI's peak memory {} KiB",
            done.peak_rss_kib
        );
        assert!(
            done.peak_rss_kib < 48 * 1024,
            "{what}: the CLI held {} KiB at once",
            done.peak_rss_kib
        );
    }
    let back = std::fs::read(at("big-back.bin")).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the copy came back unchanged");
    t.ok(&["vm", "exec", "e2e", "--", "rm", "/root/big.bin"]);

    // The work disk (and the root's overlay) survive a restart; the guest shut down cleanly.
    t.ok(&[
        "vm",
        "exec",
        "e2e",
        "--",
        "sh",
        "-c",
        "echo kept > /root/kept; echo over > /etc/over; echo '# mine' >> /etc/hosts",
    ]);
    let (code, _, err) = t.banger(&["vm", "restart", "e2e"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("stop: done"), "{err}");
    assert_eq!(
        t.ok(&["vm", "exec", "e2e", "--", "cat", "/root/kept", "/etc/over"]),
        "kept\nover\n"
    );
    // The VM's files came from its config drive at the first boot only: a change to one of
    // them (here /etc/hosts) survives the restart.
    assert_eq!(
        t.ok(&[
            "vm",
            "exec",
            "e2e",
            "--",
            "grep",
            "-c",
            "mine",
            "/etc/hosts"
        ]),
        "1\n"
    );
    let logs = t.ok(&["vm", "logs", "e2e"]);
    assert!(
        logs.contains("Linux version"),
        "the console holds the boot: {logs}"
    );
    // `vm logs` is the boot being run; the one before is kept beside it as console.log.1.
    assert!(
        logs.contains("config: /dev/vdd (applied before)")
            && !logs.contains("config: /dev/vdd (9 files applied)"),
        "the second boot left the config drive: {logs}"
    );
    let id = t.vm("e2e")["id"].as_str().unwrap().to_owned();
    let previous = std::fs::read_to_string(
        t.sandbox
            .root()
            .join(format!("state/banger/vms/{id}/console.log.1")),
    )
    .unwrap();
    assert!(
        previous.contains("config: /dev/vdd (9 files applied)"),
        "the first boot applied it: {previous}"
    );

    // reset: refused while running; once stopped, the root goes back to the image while
    // /root, the address and the host key stay.
    let (code, _, err) = t.banger(&["vm", "reset", "e2e"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("banger vm stop e2e"), "{err}");
    let ip = t.vm("e2e")["network"]["ip"].clone();
    t.ok(&["vm", "stop", "e2e"]);
    let reset = t.json(&["vm", "reset", "e2e"]);
    assert_eq!(reset["network"]["ip"], ip);
    t.ok(&["vm", "start", "e2e"]);
    assert_eq!(
        t.ok(&[
            "vm",
            "exec",
            "e2e",
            "--",
            "sh",
            "-c",
            "cat /root/kept; test -e /etc/over || echo reset",
        ]),
        "kept\nreset\n"
    );
    // ssh checks the VM's recorded host key strictly: the same key came back.
    let (code, out, err) = t.banger(&["vm", "ssh", "e2e", "--", "hostname"]);
    assert_eq!((code, out.trim()), (0, "e2e"), "{err}");

    // `poweroff` typed inside ends the VM (through a reboot, which ends QEMU): it is recorded
    // stopped, a clean end, not failed.
    let _ = t.banger(&["vm", "exec", "e2e", "--", "poweroff"]);
    t.wait_for(
        "the VM to stop after poweroff inside",
        Duration::from_secs(60),
        || t.vm("e2e")["state"] != "running",
    );
    let ended = t.vm("e2e");
    assert_eq!(ended["state"], "stopped", "{ended}");
    t.ok(&["vm", "start", "e2e"]);

    // --nat adds the VM's rules and delete removes them, with the tap, process and files.
    let (code, _, err) = t.banger(&["vm", "create", "--name", "e2e-nat", "--nat", "--no-wait"]);
    assert_eq!(code, 0, "{err}");
    let nat = t.vm("e2e-nat");
    let comment = format!("banger-vm:{}", nat["id"].as_str().unwrap());
    assert!(t.nat_comments().contains(&comment));
    t.ok(&["vm", "delete", "e2e-nat"]);
    assert!(!t.nat_comments().contains(&comment));

    // A QEMU killed mid-boot is noticed: the VM fails and its tap and sockets go.
    let (code, _, err) = t.banger(&["vm", "create", "--name", "e2e-kill", "--no-wait"]);
    assert_eq!(code, 0, "{err}");
    let killed = t.vm("e2e-kill");
    let pid = killed["runtime"]["pid"].as_u64().unwrap() as i32;
    let tap = killed["runtime"]["tap"].as_str().unwrap().to_owned();
    let api_socket = PathBuf::from(killed["runtime"]["api_socket"].as_str().unwrap());
    assert!(t.taps().contains(&tap));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    t.wait_for(
        "the killed QEMU to be noticed",
        Duration::from_secs(20),
        || t.vm("e2e-kill")["state"] == "failed",
    );
    let failed = t.vm("e2e-kill");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("killed or crashed"),
        "{failed}"
    );
    assert!(!t.taps().contains(&tap));
    assert!(!api_socket.exists());
    t.ok(&["vm", "delete", "e2e-kill"]);

    // A guest that is not ready in time: the start fails with a diagnosis, the VM keeps running.
    // kill -9 of the daemon leaves the VM running; the next daemon (started by the next
    // command, with the new configuration) adopts it.
    let vm_pid = t.vm("e2e")["runtime"]["pid"].as_u64().unwrap();
    // The guest has run all along as a uid of its own from qemu_uids, under QEMU's seccomp
    // sandbox, which the kernel reports (mode 2: a filter) with NoNewPrivs.
    let status = std::fs::read_to_string(format!("/proc/{vm_pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let uids = field("Uid:");
    let uid: u32 = uids[0].parse().unwrap();
    assert!((901_000..=901_999).contains(&uid), "QEMU runs as {uids:?}");
    assert!(
        uids.iter().all(|u| *u == uids[0]),
        "every uid dropped: {uids:?}"
    );
    assert_eq!(field("Gid:")[0], uids[0]);
    assert_eq!(field("Seccomp:"), ["2"], "{status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
    // vm show says the same.
    let confined = &t.vm("e2e")["runtime"]["qemu"];
    assert_eq!(confined["uid"].as_u64(), Some(u64::from(uid)), "{confined}");
    assert_eq!(confined["sandbox"], true, "{confined}");
    let shown = t.ok(&["vm", "show", "e2e"]);
    assert!(
        shown.contains(&format!("uid {uid}, gid {uid}, seccomp sandbox")),
        "{shown}"
    );
    // ... and runs in a cgroup of its own (cgroup v2, or v1's memory controller on a hybrid
    // host) whose memory limit is its memory plus qemu_memory_overhead.
    assert!(cgroups, "this host mounts no cgroup hierarchy");
    let id = t.vm("e2e")["id"].as_str().unwrap().to_owned();
    let cgroup = confined["cgroup"].as_str().expect("a cgroup").to_owned();
    assert!(cgroup.ends_with(&format!("/banger/{id}")), "{confined}");
    let memory = t.vm("e2e")["memory_mib"].as_u64().unwrap();
    assert_eq!(
        confined["memory_max"].as_u64(),
        Some((memory + 256) << 20),
        "{confined}"
    );
    let limit_file = ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .map(|f| std::path::Path::new(&cgroup).join(f))
        .find(|p| p.exists())
        .expect("the cgroup's memory limit file");
    assert_eq!(
        std::fs::read_to_string(&limit_file).unwrap().trim(),
        ((memory + 256) << 20).to_string()
    );
    let member = std::fs::read_to_string(format!("/proc/{vm_pid}/cgroup")).unwrap();
    assert!(
        member.contains(&format!("/banger/{id}\n")),
        "QEMU is in its cgroup: {member}"
    );
    println!("QEMU {vm_pid} runs in {cgroup} ({})", limit_file.display());
    let daemon_pid = t.json(&["daemon", "status"])["pid"].as_u64().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon_pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    t.wait_for("the daemon to die", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{daemon_pid}")).exists()
    });
    t.config("1s");
    let adopted = t.vm("e2e");
    assert_eq!(
        adopted["state"], "running",
        "the next daemon adopted the VM"
    );
    assert_eq!(adopted["runtime"]["pid"].as_u64().unwrap(), vm_pid);
    assert_eq!(
        t.ok(&["vm", "exec", "e2e", "--", "cat", "/root/kept"]),
        "kept\n"
    );
    let (code, _, err) = t.banger(&["vm", "create", "--name", "e2e-slow"]);
    assert_ne!(code, 0);
    for needle in [
        "did not become ready within 1s",
        "VMM: qemu pid",
        "tap: bt-",
        "hint: the VM is still running",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let slow = t.vm("e2e-slow");
    assert_eq!(slow["state"], "running");
    assert!(
        slow["last_error"]
            .as_str()
            .unwrap()
            .contains("did not become ready")
    );

    // Deleting everything leaves no process, tap, rule, socket, file or cgroup.
    let mut pids = Vec::new();
    let mut cgroups = Vec::new();
    for name in ["e2e", "e2e-slow"] {
        let vm = t.vm(name);
        pids.push(vm["runtime"]["pid"].as_u64().unwrap() as u32);
        cgroups.extend(vm["runtime"]["qemu"]["cgroup"].as_str().map(String::from));
        t.ok(&["vm", "delete", name]);
    }
    assert_eq!(cgroups.len(), 2, "both QEMUs had a cgroup");
    for cgroup in &cgroups {
        assert!(!Path::new(cgroup).exists(), "{cgroup} is left");
    }
    assert!(
        pids.iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    );
    assert!(t.taps().is_empty(), "{:?}", t.taps());
    assert!(!t.nat_comments().contains("banger-vm:"));
    let root = t.sandbox.root();
    assert!(no_files_left(&root.join("run/banger/vms")).is_empty());
    assert!(no_files_left(&root.join("state/banger/vms")).is_empty());
}

/// Writes `files` (guest path, mode, contents) into a copy of an ext4 root with `debugfs`,
/// replacing what is there, as root-owned files.
fn write_into_root(root: &Path, scratch: &Path, files: &[(&str, u32, String)]) {
    use std::os::unix::fs::PermissionsExt;
    let mut commands = String::new();
    for (i, (path, mode, contents)) in files.iter().enumerate() {
        let local = scratch.join(format!("file-{i}"));
        std::fs::write(&local, contents).unwrap();
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(*mode)).unwrap();
        let parent = Path::new(path).parent().unwrap().display().to_string();
        commands.push_str(&format!(
            "mkdir {parent}\nrm {path}\nwrite {} {path}\nsif {path} mode 0{:o}\n\
             sif {path} uid 0\nsif {path} gid 0\n",
            local.display(),
            0o100000 | mode
        ));
    }
    let script = scratch.join("debugfs.cmds");
    std::fs::write(&script, commands).unwrap();
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs: {out:?}");
    for (path, _, contents) in files {
        let read = Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(root)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&read.stdout),
            *contents,
            "{path} was not written"
        );
    }
}

/// An image that declares its own service: `vm create` returns once the service's port
/// answers, the service's output is in its log, `vm show` lists its address; a service that
/// never listens fails the start after its own deadline, with its log in the error.
#[test]
fn image_services_are_waited_for_and_a_silent_one_shows_its_log() {
    use banger_api::ServiceCheck;
    use banger_image::bootstrap::guest;

    let Some(t) = E2e::with_debian_image(&[
        ("qemu-system-x86_64", "--version"),
        ("debootstrap", "--version"),
        ("debugfs", "-V"),
    ]) else {
        return;
    };
    let image = t.json(&["image", "show", "debian"]);
    let stored = |role: &str| -> PathBuf {
        let path = PathBuf::from(image["files"][role]["path"].as_str().unwrap());
        if path.is_absolute() {
            path
        } else {
            t.sandbox.root().join("state/banger").join(path)
        }
    };
    let scratch = t.sandbox.root().join("service-root");
    std::fs::create_dir_all(&scratch).unwrap();
    let root = scratch.join("rootfs.ext4");
    let copied = Command::new("cp")
        .arg("--sparse=always")
        .arg(stored("rootfs"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success());
    let inittab = String::from_utf8(
        Command::new("debugfs")
            .args(["-R", "cat /etc/inittab"])
            .arg(&root)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(inittab.contains("banger-agent"), "{inittab}");
    let guest::GuestFile::File {
        contents: runner, ..
    } = guest::service_runner()
    else {
        panic!("the service runner is a file");
    };
    let register = |name: &str| {
        let (kernel, initrd, rootfs) = (stored("kernel"), stored("initrd"), root.clone());
        t.ok(&[
            "image",
            "register",
            "--name",
            name,
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--rootfs",
            rootfs.to_str().unwrap(),
        ]);
    };

    // An HTTP server on 4096, as an image declares it.
    let web = ServiceCheck {
        name: "web".into(),
        port: 4096,
        timeout_secs: None,
        http: None,
    };
    write_into_root(
        &root,
        &scratch,
        &[
            (
                &format!("/{}", guest::SERVICE_RUNNER),
                0o755,
                runner.clone(),
            ),
            (
                &format!("/{}/web", guest::SERVICES_DIR),
                0o755,
                guest::service_script(
                    "web",
                    "mkdir -p /tmp/www && echo banger-web-ok >/tmp/www/index.html && \
                     echo serving && exec busybox httpd -f -v -p 4096 -h /tmp/www",
                ),
            ),
            (
                "/etc/inittab",
                0o644,
                format!("{inittab}{}", guest::service_inittab_line(&web)),
            ),
        ],
    );
    register("svc-web");
    let declared = t.json(&["image", "show", "svc-web"]);
    assert_eq!(
        declared["manifest"]["services"],
        serde_json::json!([
            {"name": "agent", "port": 1024},
            {"name": "ssh", "port": 22},
            {"name": "web", "port": 4096},
        ])
    );

    // A service that prints and exits, with a deadline of its own.
    let failing = ServiceCheck {
        name: "failing".into(),
        port: 4097,
        timeout_secs: Some(50),
        http: None,
    };
    write_into_root(
        &root,
        &scratch,
        &[
            (
                &format!("/{}/failing", guest::SERVICES_DIR),
                0o755,
                guest::service_script("failing", "echo banger-service-test-marker; exit 1"),
            ),
            (
                "/etc/inittab",
                0o644,
                format!("{inittab}{}", guest::service_inittab_line(&failing)),
            ),
        ],
    );
    register("svc-failing");
    assert_eq!(
        t.json(&["image", "show", "svc-failing"])["manifest"]["services"][2],
        serde_json::json!({"name": "failing", "port": 4097, "timeout_secs": 50})
    );

    // Create returns once the service answers: right after, it serves.
    let (code, out, err) = t.banger(&["vm", "create", "--name", "svc", "--image", "svc-web"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("web: done"), "{err}");
    let vm = t.vm("svc");
    let ip = vm["network"]["ip"].as_str().unwrap().to_owned();
    let page = t.netns.enter(|| {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect((ip.as_str(), 4096)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /index.html HTTP/1.0\r\nHost: svc\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        stream.read_to_string(&mut page).unwrap();
        page
    });
    assert!(
        page.starts_with("HTTP/1.") && page.contains("banger-web-ok"),
        "{page}"
    );
    let boot: Vec<&str> = vm["runtime"]["boot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(boot[boot.len() - 3..], ["agent", "ssh", "web"]);
    // The service ran from /root with its output in its own log.
    let log = t.ok(&["vm", "exec", "svc", "--", "cat", "/var/log/banger/web.log"]);
    assert!(log.contains("banger-service: starting web"), "{log}");
    assert!(log.contains("serving"), "{log}");
    let shown = t.ok(&["vm", "show", "svc"]);
    println!("{shown}");
    assert!(
        shown.contains(&format!(
            "service:   web (port 4096): svc.vm:4096 ({ip}:4096)\n"
        )),
        "{shown}"
    );
    t.ok(&["vm", "delete", "svc"]);

    // A service that never listens: the start gives up after the service's own deadline
    // (longer than the configured one) and shows what the service printed.
    t.ok(&["daemon", "stop"]);
    t.config("45s");
    let (code, out, err) = t.banger(&[
        "vm",
        "create",
        "--name",
        "svc-failing",
        "--image",
        "svc-failing",
    ]);
    assert_ne!(code, 0, "{out}");
    println!("the failed start said:\n{err}");
    for needle in [
        "did not become ready within 50s: service failing (port 4097) never answered",
        "last lines of service failing's log /var/log/banger/failing.log:",
        "    banger-service: starting failing",
        "    banger-service-test-marker",
        "hint: the VM is still running",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let failed = t.vm("svc-failing");
    assert_eq!(failed["state"], "running");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("banger-service-test-marker"),
        "{failed}"
    );
    let pid = failed["runtime"]["pid"].as_u64().unwrap();
    t.ok(&["vm", "delete", "svc-failing"]);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

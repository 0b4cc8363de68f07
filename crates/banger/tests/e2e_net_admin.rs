//! A daemon that is not root, given `CAP_NET_ADMIN` on its file (`setcap cap_net_admin+ep`,
//! what `scripts/setup` offers and `banger doctor` says), runs a real QEMU guest with NAT
//! without sudo: its taps, bridge, NAT rules and forwarding are made in-process or by the
//! `ip`, `nft` and `sysctl` it hands the capability to, and by nothing else. Runs banger as
//! `nobody` (with `setpriv`, which gives it no sudo) inside a network namespace the test makes,
//! with the Debian image the root sandbox bootstrapped, exported and imported as `nobody`.
//! What still needs root, a promotion, goes through `sudo -n` with the rule `banger doctor`
//! gives (written for `nobody` for the test's duration). Needs root, QEMU, debootstrap,
//! nftables, setpriv, setcap and sudo; prints `SKIP:` and passes without them.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::deadline;
use support::netns::E2e;

const NOBODY: u32 = 65534;
const NET_ADMIN: u64 = 1 << 12;

/// banger as `nobody`, in the namespace, with a home of its own; its VMs deleted and its daemon
/// stopped when dropped.
struct Nobody<'a> {
    ns: &'a str,
    root: PathBuf,
}

impl Nobody<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns, "setpriv"])
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
            ])
            .arg(self.root.join("banger"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.root.join("home"))
            .env("XDG_CONFIG_HOME", self.root.join("config"))
            .env("XDG_STATE_HOME", self.root.join("state"))
            .env("XDG_RUNTIME_DIR", self.root.join("run"))
            .env("BANGER_DAEMON_BIN", self.root.join("bangerd"));
        cmd
    }

    fn banger(&self, args: &[&str]) -> (i32, String, String) {
        let what = format!("banger {} (as nobody)", args.join(" "));
        let done = deadline::run(self.command(args), None, &what, deadline::default_limit());
        (
            done.code(),
            String::from_utf8_lossy(&done.stdout).into_owned(),
            String::from_utf8_lossy(&done.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.banger(args);
        assert_eq!(code, 0, "banger {args:?} as nobody\n{out}\n{err}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }
}

impl Drop for Nobody<'_> {
    fn drop(&mut self) {
        let limit = Duration::from_secs(180);
        let run = |args: &[&str]| {
            deadline::try_run(self.command(args), None, "clean-up as nobody", limit).ok()
        };
        if let Some(done) = run(&["vm", "list", "-o", "json"])
            && let Ok(Value::Array(vms)) = serde_json::from_slice::<Value>(&done.stdout)
        {
            for vm in vms {
                if let Some(name) = vm["name"].as_str() {
                    run(&["vm", "delete", name]);
                }
            }
        }
        run(&["daemon", "stop"]);
    }
}

/// `CapEff` of process `pid`, as a mask.
fn effective_capabilities(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap();
    u64::from_str_radix(mask.trim(), 16).unwrap()
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

fn in_namespace(ns: &str, program: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_daemon_with_cap_net_admin_runs_a_guest_with_nat_without_sudo() {
    let Some(t) = E2e::with_debian_image(&[
        ("qemu-system-x86_64", "--version"),
        ("debootstrap", "--version"),
        ("nft", "--version"),
        ("setpriv", "--version"),
        ("sudo", "--version"),
    ]) else {
        return;
    };
    if Command::new("setcap").arg("-h").output().is_err() {
        banger_test_support::skip!("setcap not found (Debian package libcap2-bin)");
        return;
    }
    let ns = t.netns.0.clone();

    // A home `nobody` owns: the binaries (bangerd with CAP_NET_ADMIN on its file), a config,
    // and the root sandbox's Debian image as one file.
    let home = tempfile::tempdir().unwrap();
    let root = home.path().to_owned();
    for dir in ["home", "config/banger", "state", "run"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(
        root.join("config/banger/config.toml"),
        "vmm = \"qemu\"\n[defaults]\nvcpus = 1\nmemory_mib = 1024\ndisk = \"2G\"\n\
         work_disk = \"1G\"\nready_timeout = \"300s\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    for bin in [env!("CARGO_BIN_EXE_banger"), env!("CARGO_BIN_EXE_bangerd")] {
        let to = root.join(Path::new(bin).file_name().unwrap());
        std::fs::copy(bin, &to).unwrap();
    }
    let image = root.join("debian.banger-image");
    t.sandbox
        .ok(&["image", "export", "debian", &image.display().to_string()]);
    t.sandbox.ok(&["daemon", "stop"]);
    let chown = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(&root)
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    // After the chown, which would clear it.
    let setcap = Command::new("setcap")
        .args(["cap_net_admin+ep"])
        .arg(root.join("bangerd"))
        .output()
        .unwrap();
    if !setcap.status.success() {
        banger_test_support::skip!(
            "this filesystem keeps no file capabilities: {}",
            String::from_utf8_lossy(&setcap.stderr)
        );
        return;
    }
    let nobody = Nobody {
        ns: &ns,
        root: root.clone(),
    };

    nobody.ok(&["image", "import", &image.display().to_string()]);
    let daemon = nobody.json(&["daemon", "status"]);
    let bangerd = daemon["pid"].as_u64().unwrap() as u32;
    assert_eq!(uid_of(bangerd), NOBODY);
    assert_eq!(
        effective_capabilities(bangerd),
        NET_ADMIN,
        "bangerd holds CAP_NET_ADMIN and nothing else"
    );
    let report = nobody.json(&["doctor"]);
    let sudo = support::doctor_check(&report, "sudo");
    assert_eq!(sudo["status"], "ok", "{sudo}");
    assert!(
        sudo["detail"].as_str().unwrap().contains("CAP_NET_ADMIN"),
        "{sudo}"
    );

    // A guest with NAT: the bridge, its tap, the NAT rules and forwarding, all without sudo
    // (which `nobody` cannot use).
    nobody.ok(&["vm", "create", "--name", "np", "--nat"]);
    let vm = nobody.json(&["vm", "show", "np"]);
    assert_eq!(vm["state"], "running", "{vm}");
    let out = nobody.ok(&["vm", "exec", "np", "--", "sh", "-c", "id -u; hostname"]);
    assert_eq!(out, "0\nnp\n");
    let tap = vm["runtime"]["tap"].as_str().unwrap().to_owned();
    let links = in_namespace(&ns, "ip", &["-br", "link"]);
    assert!(links.contains(&tap) && links.contains("banger0"), "{links}");
    let id = vm["id"].as_str().unwrap().to_owned();
    let rules = in_namespace(&ns, "nft", &["list", "table", "inet", "banger"]);
    assert!(rules.contains(&id), "NAT rules for {id}:\n{rules}");
    assert_eq!(
        in_namespace(&ns, "sysctl", &["-n", "net.ipv4.ip_forward"]).trim(),
        "1"
    );
    // The VMM runs as nobody and holds no capability: only the network commands got it.
    let qemu = vm["runtime"]["pid"].as_u64().unwrap() as u32;
    assert_eq!(uid_of(qemu), NOBODY);
    assert_eq!(effective_capabilities(qemu), 0, "QEMU holds no capability");

    // What still needs root goes through sudo: a promotion (loop mounts in a mount namespace),
    // allowed by the rule `banger doctor` gives, for `nobody`, for the rest of the test.
    nobody.ok(&[
        "vm",
        "exec",
        "np",
        "--",
        "sh",
        "-c",
        "echo promoted >/etc/promoted; mkdir -p /root/work; echo kept >/root/work/notes; sync",
    ]);
    nobody.ok(&["vm", "stop", "np"]);
    let rule = SudoRule::allow_promotion(&nobody);
    let (code, out, err) = nobody.banger(&["image", "promote", "np", "np-image", "--with-work"]);
    assert_eq!(code, 0, "promote as nobody through sudo:\n{out}\n{err}");
    nobody.ok(&["vm", "create", "--name", "np2", "--image", "np-image"]);
    let out = nobody.ok(&[
        "vm",
        "exec",
        "np2",
        "--",
        "sh",
        "-c",
        "cat /etc/promoted /root/work/notes; stat -c %u /root/work/notes",
    ]);
    assert_eq!(out, "promoted\nkept\n0\n");
    drop(rule);
    nobody.ok(&["vm", "delete", "np2"]);

    // Delete takes the tap and the rules away again.
    nobody.ok(&["vm", "delete", "np"]);
    let links = in_namespace(&ns, "ip", &["-br", "link"]);
    assert!(!links.contains(&tap), "{links}");
    let rules = in_namespace(&ns, "nft", &["list", "table", "inet", "banger"]);
    assert!(!rules.contains(&id), "{rules}");
}

/// A sudoers rule for `nobody`, removed when dropped: the one `banger doctor`'s
/// `sudo-promote` line gives as its fix.
struct SudoRule(PathBuf);

impl SudoRule {
    fn allow_promotion(nobody: &Nobody<'_>) -> SudoRule {
        let report = nobody.json(&["doctor"]);
        let check = support::doctor_check(&report, "sudo-promote");
        assert_eq!(check["status"], "warn", "no sudo rule yet: {check}");
        let fix = check["fix"].as_str().unwrap();
        let rule = fix
            .split_once("echo \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(rule, _)| rule.replace("$USER", "nobody"))
            .unwrap_or_else(|| panic!("a sudoers line in {fix}"));
        let path = PathBuf::from(format!("/etc/sudoers.d/banger-test-{}", std::process::id()));
        std::fs::write(&path, format!("{rule}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        let rule = SudoRule(path);
        let report = nobody.json(&["doctor"]);
        let check = support::doctor_check(&report, "sudo-promote");
        assert_eq!(check["status"], "ok", "with the rule: {check}");
        rule
    }
}

impl Drop for SudoRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

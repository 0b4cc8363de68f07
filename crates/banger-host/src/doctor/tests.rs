//! Doctor checks against a fake host: a temporary directory standing in for `/` (its `dev`,
//! `sys`, `proc` and `sbin`), a PATH of empty executables, and the fake runner answering the
//! version and inspection commands.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::runner::{CommandOutput, FakeRunner, Matcher};

/// A fake host's root directory.
struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    fn new() -> FakeHost {
        FakeHost {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, path: &str, content: &str) -> &Self {
        let path = self.root().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    fn dir(&self, path: &str) -> &Self {
        std::fs::create_dir_all(self.root().join(path)).unwrap();
        self
    }

    /// Empty executables named `programs` in `dir` (relative to the root).
    fn programs(&self, dir: &str, programs: &[&str]) -> &Self {
        for program in programs {
            let path = self.root().join(dir).join(program);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        self
    }

    /// A PATH of the root's `bin`.
    fn path(&self) -> OsString {
        self.root().join("bin").into_os_string()
    }

    /// A host like this project's CI machines: kvm_pvm and every host tool installed. (The VMM
    /// binaries are banger-vmm's availability's to check.)
    fn ci_like() -> FakeHost {
        let host = FakeHost::new();
        host.file("dev/kvm", "")
            .file("dev/net/tun", "")
            .dir("sys/module/kvm")
            .dir("sys/module/kvm_pvm")
            .file("proc/sys/net/ipv4/ip_forward", "0\n")
            .dir("state")
            .programs(
                "bin",
                &[
                    "ip",
                    "mkfs.ext4",
                    "debugfs",
                    "resize2fs",
                    "e2fsck",
                    "ssh",
                    "sudo",
                ],
            )
            .programs("usr/sbin", &["nft"]);
        host
    }

    /// A workstation with hardware KVM and the tools `image bootstrap` needs.
    fn workstation() -> FakeHost {
        let host = FakeHost::ci_like();
        std::fs::remove_dir(host.root().join("sys/module/kvm_pvm")).unwrap();
        host.dir("sys/module/kvm_intel")
            .programs("bin", &["apt-cache", "apt-get", "dpkg-deb", "curl"])
            .programs("usr/sbin", &["debootstrap"])
            .file(DEBIAN_ARCHIVE_KEYRING.trim_start_matches('/'), "")
            .file("proc/sys/net/ipv4/ip_forward", "1\n");
        host
    }
}

fn versions(fake: FakeRunner) -> FakeRunner {
    fake.respond(
        "nft",
        CommandOutput::with_stdout("nftables v1.0.6 (Lester Gooch #5)\n"),
    )
    .respond(
        "ssh",
        CommandOutput {
            code: Some(0),
            stdout: Vec::new(),
            stderr: b"OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024\n".to_vec(),
        },
    )
}

fn links(fake: FakeRunner, json: &str) -> FakeRunner {
    fake.respond(
        Matcher::prefix("ip", ["-d", "-j"]),
        CommandOutput::with_stdout(json.to_owned()),
    )
}

const BRIDGE_UP: &str = r#"[{"ifname":"lo","flags":["UP"],"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
    {"ifname":"banger0","flags":["UP"],"address":"06:00:ac:1e:00:01","linkinfo":{"info_kind":"bridge"},
     "addr_info":[{"family":"inet","local":"172.30.0.1","prefixlen":24}]},
    {"ifname":"bt-0123456789ab","flags":["UP"],"master":"banger0","linkinfo":{"info_kind":"tun"}}]"#;

fn net(privilege: Privilege) -> NetConfig {
    NetConfig {
        bridge: "banger0".into(),
        host_address: Ipv4Addr::new(172, 30, 0, 1),
        prefix_len: 24,
        privilege,
        tap_owner: 1000,
    }
}

fn plenty(_: &Path) -> Result<FsUsage, DiskError> {
    Ok(FsUsage {
        total_bytes: 100 * GIB,
        available_bytes: 40 * GIB,
    })
}

fn doctor<'a>(host: &FakeHost, fake: &'a FakeRunner, privilege: Privilege) -> Doctor<'a> {
    Doctor::new(fake, net(privilege), host.root().join("state/banger"))
        .root(host.root())
        .path_var(host.path())
        .fs_usage(plenty)
}

/// The checks as JSON with the temporary root replaced, for snapshots.
fn redacted(host: &FakeHost, checks: &[Check]) -> serde_json::Value {
    let text = serde_json::to_string(checks)
        .unwrap()
        .replace(host.root().to_str().unwrap(), "[root]");
    serde_json::from_str(&text).unwrap()
}

fn find<'c>(checks: &'c [Check], name: &str) -> &'c Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

fn assert_every_problem_has_a_fix(checks: &[Check]) {
    for check in checks {
        assert_eq!(
            check.fix.is_some(),
            check.status != CheckStatus::Ok,
            "{check:?}"
        );
    }
}

#[test]
fn a_kvm_pvm_host_is_explained() {
    let host = FakeHost::ci_like();
    let fake = links(versions(FakeRunner::new()), "[]");
    let checks = doctor(&host, &fake, Privilege::Root).run(Vec::new());
    let kvm = find(&checks, "kvm");
    assert_eq!(kvm.status, CheckStatus::Warn);
    assert_eq!(
        kvm.detail,
        "kvm_pvm (paravirtual KVM): Firecracker and QEMU -enable-kvm start but a stock guest \
         kernel cannot boot; banger uses QEMU with TCG here"
    );
    assert_every_problem_has_a_fix(&checks);
    assert!(!checks.iter().any(Check::is_fail), "{checks:#?}");
    insta::assert_json_snapshot!("ci_like_host", redacted(&host, &checks));
}

#[test]
fn a_workstation_with_hardware_kvm_passes_every_host_check() {
    let host = FakeHost::workstation();
    let fake = links(versions(FakeRunner::new()), BRIDGE_UP);
    let checks = doctor(&host, &fake, Privilege::Root).run(Vec::new());
    assert!(
        checks.iter().all(|c| c.status == CheckStatus::Ok),
        "{checks:#?}"
    );
    insta::assert_json_snapshot!("workstation", redacted(&host, &checks));
    assert!(
        fake.calls_matching(Matcher::any())
            .iter()
            .all(|c| !c.contains("firecracker") && !c.contains("qemu")),
        "the VMM binaries are banger-vmm's to run"
    );
}

#[test]
fn the_callers_backend_checks_come_right_after_kvm() {
    let host = FakeHost::workstation();
    let fake = links(versions(FakeRunner::new()), BRIDGE_UP);
    let backends = ["firecracker", "qemu", "vmm"]
        .map(|name| Check::ok(name, "from the caller"))
        .to_vec();
    let checks = doctor(&host, &fake, Privilege::Root).run(backends);
    let names: Vec<&str> = checks.iter().take(5).map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["kvm", "firecracker", "qemu", "vmm", "tun"]);
}

#[test]
fn an_unprivileged_user_on_a_bare_host_is_told_what_to_install() {
    let host = FakeHost::new();
    host.file("proc/sys/net/ipv4/ip_forward", "0\n")
        .dir("dev/kvm") // a directory: exists but cannot be opened read-write
        .dir("sys/module/kvm_amd")
        .programs("bin", &["ip", "ssh", "sudo"])
        .programs("usr/sbin", &["mkfs.ext4", "debugfs", "resize2fs", "e2fsck"]);
    let fake = links(versions(FakeRunner::new()), "[]").respond(
        "sudo",
        CommandOutput {
            code: Some(1),
            stdout: Vec::new(),
            stderr: b"sudo: a password is required\n".to_vec(),
        },
    );
    let checks = doctor(&host, &fake, Privilege::Sudo).run(Vec::new());
    assert_every_problem_has_a_fix(&checks);
    insta::assert_json_snapshot!("bare_host_unprivileged", redacted(&host, &checks));
    assert_eq!(
        fake.calls_matching("sudo"),
        [
            "sudo -n true",
            "sudo -n -l ip",
            "sudo -n -l nft",
            "sudo -n -l sysctl",
            "sudo -n true",
            "sudo -n -l debootstrap",
            "sudo -n -l mkfs.ext4",
            "sudo -n -l cp",
            "sudo -n -l rm",
            "sudo -n -l du",
            "sudo -n -l umount",
            "sudo -n -l install",
            "sudo -n -l tee",
            "sudo -n true",
            "sudo -n -l sh",
            "sudo -n -l unshare",
            "sudo -n -l cp",
            "sudo -n -l chmod",
            "sudo -n -l chown",
            "sudo -n -l du",
            "sudo -n -l mkfs.ext4",
            "sudo -n -l rm",
        ]
    );
}

/// A daemon that holds `CAP_NET_ADMIN` needs no sudo for the network, and is not asked about
/// it; a bootstrap or a promotion still goes through sudo, which the doctor still checks.
#[test]
fn a_daemon_with_net_admin_needs_sudo_only_for_images() {
    let host = FakeHost::workstation();
    let fake = links(versions(FakeRunner::new()), BRIDGE_UP);
    let checks = doctor(&host, &fake, Privilege::NetAdmin).run(Vec::new());
    let sudo = find(&checks, "sudo");
    assert_eq!(sudo.status, CheckStatus::Ok, "{sudo:?}");
    assert!(sudo.detail.contains("CAP_NET_ADMIN"), "{sudo:?}");
    let asked = fake.calls_matching("sudo");
    for program in ["ip", "nft", "sysctl"] {
        assert!(
            !asked.contains(&format!("sudo -n -l {program}")),
            "{asked:?}"
        );
    }
    // Passwordless here: asked once for the bootstrap's programs, once for the promotion's.
    assert_eq!(asked, ["sudo -n true", "sudo -n true"]);
    assert!(find(&checks, "sudo-bootstrap").status == CheckStatus::Ok);
}

#[test]
fn bootstrap_preflight_fails_without_debootstrap_where_doctor_only_warns() {
    let host = FakeHost::workstation();
    std::fs::remove_file(host.root().join("usr/sbin/debootstrap")).unwrap();
    let fake = links(versions(FakeRunner::new()), BRIDGE_UP);
    let d = doctor(&host, &fake, Privilege::Root);
    assert_eq!(
        find(&d.run(Vec::new()), "debootstrap").status,
        CheckStatus::Warn
    );
    let checks = d.preflight(Preflight::Bootstrap);
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["debootstrap", "e2fsprogs", "disk"]);
    let check = find(&checks, "debootstrap");
    assert_eq!(check.status, CheckStatus::Fail);
    assert_eq!(
        check.fix.as_deref(),
        Some("sudo apt-get install debootstrap")
    );

    // Without apt the kernel package cannot be fetched either.
    std::fs::remove_file(host.root().join("bin/apt-cache")).unwrap();
    let check = d.preflight(Preflight::Bootstrap).remove(0);
    assert_eq!(check.status, CheckStatus::Fail);
    assert!(
        check.detail.starts_with("apt-cache not found"),
        "{}",
        check.detail
    );
}

#[test]
fn bootstrap_needs_sudo_for_its_privileged_programs() {
    let host = FakeHost::workstation();
    // sudo rules for the network programs only.
    let fake = links(versions(FakeRunner::new()), BRIDGE_UP)
        .fail_nth(
            Matcher::prefix("sudo", ["-n", "true"]),
            1,
            "a password is required",
        )
        .fail_nth(
            Matcher::prefix("sudo", ["-n", "true"]),
            2,
            "a password is required",
        );
    let fake = BOOTSTRAP_PRIVILEGED.iter().fold(fake, |fake, program| {
        fake.fail_nth(
            Matcher::prefix("sudo", ["-n", "-l", program]),
            1,
            "not allowed",
        )
    });
    let d = doctor(&host, &fake, Privilege::Sudo);
    let checks = d.preflight(Preflight::Bootstrap);
    let check = find(&checks, "sudo-bootstrap");
    assert_eq!(check.status, CheckStatus::Fail);
    assert!(
        check
            .detail
            .contains("refuses debootstrap, mkfs.ext4, cp, rm, du, umount, install, tee"),
        "{}",
        check.detail
    );
    assert!(
        check
            .fix
            .as_deref()
            .unwrap()
            .contains("/etc/sudoers.d/banger")
    );

    // Root needs no sudo at all.
    let fake = FakeRunner::new();
    let checks = doctor(&host, &fake, Privilege::Root).preflight(Preflight::Bootstrap);
    assert!(checks.iter().all(|c| c.name != "sudo-bootstrap"));
    assert!(fake.calls_matching("sudo").is_empty());
}

#[test]
fn kvm_permission_and_kinds() {
    let host = FakeHost::workstation();
    let fake = FakeRunner::new();
    let d = doctor(&host, &fake, Privilege::Sudo);
    let denied = d.check_kvm(&Kvm::NoAccess(
        KvmKind::Intel,
        io::Error::from(io::ErrorKind::PermissionDenied),
    ));
    assert_eq!(denied.status, CheckStatus::Fail);
    assert_eq!(
        denied.fix.as_deref(),
        Some("sudo usermod -aG kvm \"$USER\", then log out and in again")
    );
    // kvm_pvm wins over a hardware module loaded next to it.
    host.dir("sys/module/kvm_pvm");
    assert!(matches!(d.kvm(), Kvm::Usable(KvmKind::Pvm)));
    std::fs::remove_dir(host.root().join("sys/module/kvm_pvm")).unwrap();
    std::fs::remove_dir(host.root().join("sys/module/kvm_intel")).unwrap();
    assert!(matches!(d.kvm(), Kvm::Usable(KvmKind::Unknown)));
    std::fs::remove_file(host.root().join("dev/kvm")).unwrap();
    assert!(matches!(d.kvm(), Kvm::Missing));
}

#[test]
fn bridge_states() {
    let host = FakeHost::ci_like();
    let cases = [
        (
            "[]",
            CheckStatus::Ok,
            "banger0 does not exist yet; it is created with 172.30.0.1/24 when the first VM starts",
        ),
        (
            BRIDGE_UP,
            CheckStatus::Ok,
            "banger0 is up with 172.30.0.1/24 (1 tap attached)",
        ),
        (
            r#"[{"ifname":"banger0","flags":[],"linkinfo":{"info_kind":"bridge"},"addr_info":[{"family":"inet","local":"172.30.0.1","prefixlen":24}]}]"#,
            CheckStatus::Warn,
            "banger0 exists but is down; the next VM start fixes it",
        ),
        (
            r#"[{"ifname":"banger0","flags":["UP"],"linkinfo":{"info_kind":"bridge"},"addr_info":[{"family":"inet","local":"172.30.0.1","prefixlen":24},{"family":"inet","local":"10.9.0.1","prefixlen":24}]}]"#,
            CheckStatus::Warn,
            "banger0 also carries 10.9.0.1/24 (an earlier subnet?)",
        ),
        (
            r#"[{"ifname":"banger0","flags":["UP"],"address":"8a:11:22:33:44:55","linkinfo":{"info_kind":"bridge"},"addr_info":[{"family":"inet","local":"172.30.0.1","prefixlen":24}]}]"#,
            CheckStatus::Warn,
            "banger0 has the MAC address 8a:11:22:33:44:55 instead of banger's fixed 06:00:ac:1e:00:01: it can change when a tap is removed, cutting the other VMs off until their ARP caches expire",
        ),
        (
            r#"[{"ifname":"banger0","flags":["UP"],"linkinfo":{"info_kind":"veth"}}]"#,
            CheckStatus::Fail,
            "banger0 exists but is a veth link, not a bridge",
        ),
        (
            r#"[{"ifname":"docker1","flags":["UP"],"addr_info":[{"family":"inet","local":"172.30.0.1","prefixlen":16}]}]"#,
            CheckStatus::Fail,
            "subnet 172.30.0.0/24 overlaps 172.30.0.1/16 on docker1",
        ),
    ];
    for (json, status, detail) in cases {
        let fake = links(FakeRunner::new(), json);
        let check = doctor(&host, &fake, Privilege::Root).check_bridge();
        assert_eq!((check.status, check.detail.as_str()), (status, detail));
        assert_eq!(check.fix.is_some(), status != CheckStatus::Ok);
    }
}

#[test]
fn disk_space_thresholds() {
    fn usage(available: u64) -> Result<FsUsage, DiskError> {
        Ok(FsUsage {
            total_bytes: 50 * GIB,
            available_bytes: available,
        })
    }
    fn ample(_: &Path) -> Result<FsUsage, DiskError> {
        usage(5 * GIB)
    }
    fn low(_: &Path) -> Result<FsUsage, DiskError> {
        usage(5 * GIB - 1)
    }
    fn tiny(_: &Path) -> Result<FsUsage, DiskError> {
        usage(GIB - 1)
    }
    let host = FakeHost::ci_like();
    let fake = FakeRunner::new();
    let d = doctor(&host, &fake, Privilege::Root);
    assert_eq!(
        d.clone().fs_usage(ample).check_disk().status,
        CheckStatus::Ok
    );
    assert_eq!(
        d.clone().fs_usage(low).check_disk().status,
        CheckStatus::Warn
    );
    let fail = d.fs_usage(tiny).check_disk();
    assert_eq!(fail.status, CheckStatus::Fail);
    assert!(fail.detail.ends_with("VMs need at least 1 GiB"), "{fail:?}");
    assert!(fail.fix.unwrap().contains("XDG_STATE_HOME"));
}

#[test]
fn disk_space_is_measured_on_the_nearest_existing_directory() {
    fn seen(path: &Path) -> Result<FsUsage, DiskError> {
        assert!(path.exists(), "{}", path.display());
        assert!(path.ends_with("state"), "{}", path.display());
        plenty(path)
    }
    let host = FakeHost::ci_like();
    let fake = FakeRunner::new();
    let check = doctor(&host, &fake, Privilege::Root)
        .fs_usage(seen)
        .check_disk();
    assert_eq!(check.status, CheckStatus::Ok);
}

#[test]
fn sudo_readiness() {
    let host = FakeHost::ci_like();
    let fake = FakeRunner::new();
    let check = doctor(&host, &fake, Privilege::Sudo).check_sudo().unwrap();
    assert_eq!(check.detail, "sudo -n works without a password");

    // A rule limited to what banger runs is enough.
    let fake = FakeRunner::new().fail_nth(Matcher::prefix("sudo", ["-n", "true"]), 1, "no");
    let check = doctor(&host, &fake, Privilege::Sudo).check_sudo().unwrap();
    assert_eq!(check.status, CheckStatus::Ok);
    assert_eq!(
        check.detail,
        "sudo allows ip, nft and sysctl without a password"
    );

    let fake = FakeRunner::new()
        .fail_nth(Matcher::prefix("sudo", ["-n", "true"]), 1, "no")
        .fail_nth(Matcher::prefix("sudo", ["-n", "-l", "nft"]), 1, "no");
    let check = doctor(&host, &fake, Privilege::Sudo).check_sudo().unwrap();
    assert_eq!(check.status, CheckStatus::Fail);
    assert!(check.detail.contains("refuses nft"), "{check:?}");
    assert!(check.fix.unwrap().contains("/etc/sudoers.d/banger"));

    assert!(doctor(&host, &fake, Privilege::Root).check_sudo().is_none());
}

#[test]
fn preflights_select_their_checks() {
    let host = FakeHost::ci_like();
    let fake = links(versions(FakeRunner::new()), "[]");
    let names = |kind, privilege| -> Vec<String> {
        doctor(&host, &fake, privilege)
            .preflight(kind)
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(
        names(Preflight::Host, Privilege::Sudo),
        ["tun", "iproute2", "disk", "sudo"]
    );
    // The host preflight of a root daemon runs nothing at all: every process costs a start
    // milliseconds.
    let quiet = links(FakeRunner::new(), "[]");
    doctor(&host, &quiet, Privilege::Root).preflight(Preflight::Host);
    assert!(quiet.calls().is_empty(), "{:?}", quiet.calls());
    assert_eq!(
        names(Preflight::Nat, Privilege::Sudo),
        ["nftables", "ip_forward", "sudo"]
    );
    assert_eq!(
        names(Preflight::Resize, Privilege::Root),
        ["e2fsprogs", "disk"]
    );
}

#[test]
fn nat_preflight_fails_without_nft_where_doctor_only_warns() {
    let host = FakeHost::ci_like();
    std::fs::remove_file(host.root().join("usr/sbin/nft")).unwrap();
    let fake = links(versions(FakeRunner::new()), "[]");
    let d = doctor(&host, &fake, Privilege::Root);
    assert_eq!(
        find(&d.run(Vec::new()), "nftables").status,
        CheckStatus::Warn
    );
    let nat = d.preflight(Preflight::Nat);
    let check = find(&nat, "nftables");
    assert_eq!(check.status, CheckStatus::Fail);
    assert_eq!(check.fix.as_deref(), Some("sudo apt-get install nftables"));
}

#[test]
fn only_hardware_kvm_boots_stock_guests() {
    let host = FakeHost::workstation();
    let probed = probe_kvm(host.root());
    assert!(matches!(probed, Kvm::Usable(KvmKind::Intel)), "{probed:?}");
    assert!(probed.boots_stock_guests());
    host.dir("sys/module/kvm_pvm");
    let probed = probe_kvm(host.root());
    assert!(matches!(probed, Kvm::Usable(KvmKind::Pvm)), "{probed:?}");
    assert!(!probed.boots_stock_guests());
    assert!(
        !Kvm::NoAccess(
            KvmKind::Intel,
            io::Error::from(io::ErrorKind::PermissionDenied)
        )
        .boots_stock_guests()
    );
    assert!(!Kvm::Missing.boots_stock_guests());
    assert_eq!(KvmKind::Pvm.module(), "kvm_pvm");
}

#[test]
fn image_build_says_what_fetching_and_promoting_lack() {
    // A workstation with apt but neither Debian's keyring nor curl.
    let host = FakeHost::workstation();
    std::fs::remove_file(
        host.root()
            .join(DEBIAN_ARCHIVE_KEYRING.trim_start_matches('/')),
    )
    .unwrap();
    std::fs::remove_file(host.root().join("bin/curl")).unwrap();
    let fake = links(versions(FakeRunner::new()), BRIDGE_UP);
    let checks = doctor(&host, &fake, Privilege::Root).run(Vec::new());
    let check = find(&checks, "image-build");
    assert_eq!(check.status, CheckStatus::Warn);
    assert!(
        check.detail.contains("Debian's archive keyring"),
        "{}",
        check.detail
    );
    assert!(check.detail.contains("curl"), "{}", check.detail);
    assert_eq!(
        check.fix.as_deref(),
        Some("sudo apt-get install debian-archive-keyring; sudo apt-get install curl")
    );
    // Root promotes without sudo.
    assert!(checks.iter().all(|c| c.name != "sudo-promote"));

    // Everything there.
    host.file(DEBIAN_ARCHIVE_KEYRING.trim_start_matches('/'), "")
        .programs("bin", &["curl"]);
    let checks = doctor(&host, &fake, Privilege::Root).run(Vec::new());
    assert_eq!(find(&checks, "image-build").status, CheckStatus::Ok);

    // No apt at all: the keyring is not the problem then.
    let bare = FakeHost::ci_like();
    let checks = doctor(&bare, &fake, Privilege::Root).run(Vec::new());
    let check = find(&checks, "image-build");
    assert!(check.detail.contains("apt-get"), "{}", check.detail);
    assert!(!check.detail.contains("keyring"), "{}", check.detail);

    // Not root, sudo asks for a password and has no rule for unshare: said, with the rule.
    let fake = (1..=3).fold(links(versions(FakeRunner::new()), BRIDGE_UP), |fake, n| {
        fake.fail_nth(
            Matcher::prefix("sudo", ["-n", "true"]),
            n,
            "a password is required",
        )
    });
    let fake = fake.fail_nth(
        Matcher::prefix("sudo", ["-n", "-l", "unshare"]),
        1,
        "not allowed",
    );
    let checks = doctor(&host, &fake, Privilege::Sudo).run(Vec::new());
    let check = find(&checks, "sudo-promote");
    assert_eq!(check.status, CheckStatus::Warn);
    assert!(
        check.detail.contains("refuses unshare:"),
        "{}",
        check.detail
    );
    assert!(
        check.fix.as_deref().unwrap().contains("/usr/bin/unshare"),
        "{check:?}"
    );
    // With the rule, it is fine.
    let fake = (1..=3).fold(links(versions(FakeRunner::new()), BRIDGE_UP), |fake, n| {
        fake.fail_nth(
            Matcher::prefix("sudo", ["-n", "true"]),
            n,
            "a password is required",
        )
    });
    let checks = doctor(&host, &fake, Privilege::Sudo).run(Vec::new());
    assert_eq!(find(&checks, "sudo-promote").status, CheckStatus::Ok);
}

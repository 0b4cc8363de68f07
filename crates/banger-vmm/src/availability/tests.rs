//! The doctor's backend checks against a fake host: a temporary PATH of empty executables, a
//! `/dev/kvm` given as banger-host's probe would report it, and the fake runner answering
//! `--version` and `-machine help` the way the real binaries do.

use std::io;
use std::os::unix::fs::PermissionsExt;

use banger_host::doctor::CheckStatus;
use banger_host::{CommandOutput, FakeRunner, Matcher};

use super::*;

const MACHINES: &str = "Supported machines are:\n\
    microvm              microvm (i386)\n\
    pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n";

/// A directory standing in for PATH.
struct Bin {
    dir: tempfile::TempDir,
}

impl Bin {
    /// A PATH holding empty executables named `programs`.
    fn with(programs: &[&str]) -> Bin {
        let bin = Bin {
            dir: tempfile::tempdir().unwrap(),
        };
        for program in programs {
            bin.install(program);
        }
        bin
    }

    fn install(&self, program: &str) -> PathBuf {
        let path = self.dir.path().join(program);
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn path_var(&self) -> &OsStr {
        self.dir.path().as_os_str()
    }

    /// Both backends' checks with nothing configured in config.toml.
    fn detect(&self, runner: &FakeRunner, kvm: Kvm) -> Availability {
        Availability::detect_in(None, None, Some(self.path_var()), runner, kvm)
    }

    /// `checks` as JSON with the temporary directory replaced, for snapshots.
    fn redacted(&self, checks: &[Check]) -> serde_json::Value {
        let text = serde_json::to_string(checks)
            .unwrap()
            .replace(self.dir.path().to_str().unwrap(), "[bin]");
        serde_json::from_str(&text).unwrap()
    }
}

/// Answers like the releases banger is tested with: Firecracker `firecracker` (e.g.
/// `v1.16.1`) and Debian 12's QEMU with microvm.
fn host(firecracker: &str) -> FakeRunner {
    FakeRunner::new()
        .respond(
            "firecracker",
            CommandOutput::with_stdout(format!(
                "Firecracker {firecracker}\n\nSupported snapshot data format versions: v1.0.0\n"
            )),
        )
        .respond(
            Matcher::prefix(PROGRAM, ["--version"]),
            CommandOutput::with_stdout(
                "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)\n\
                 Copyright (c) 2003-2022 Fabrice Bellard\n",
            ),
        )
        .respond(
            Matcher::prefix(PROGRAM, ["-machine"]),
            CommandOutput::with_stdout(MACHINES),
        )
}

fn intel() -> Kvm {
    Kvm::Usable(KvmKind::Intel)
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
fn a_workstation_with_hardware_kvm_uses_firecracker() {
    let bin = Bin::with(&["firecracker", PROGRAM]);
    let runner = host("v1.16.1");
    let available = bin.detect(&runner, intel());
    let checks = available.checks();
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["firecracker", "qemu", "vmm"]);
    assert!(
        checks.iter().all(|c| c.status == CheckStatus::Ok),
        "{checks:#?}"
    );
    insta::assert_json_snapshot!("workstation", bin.redacted(&checks));
    assert_eq!(
        runner.calls_matching("firecracker").len(),
        1,
        "probed once per run"
    );
}

#[test]
fn a_kvm_pvm_host_falls_back_to_qemu_tcg() {
    let bin = Bin::with(&[PROGRAM]);
    let checks = bin
        .detect(&host("v1.16.1"), Kvm::Usable(KvmKind::Pvm))
        .checks();
    assert_every_problem_has_a_fix(&checks);
    assert!(!checks.iter().any(Check::is_fail), "{checks:#?}");
    insta::assert_json_snapshot!("ci_like_host", bin.redacted(&checks));
}

#[test]
fn a_bare_host_is_told_what_to_install() {
    let bin = Bin::with(&[]);
    let kvm = Kvm::NoAccess(KvmKind::Amd, io::Error::from_raw_os_error(21));
    let checks = bin.detect(&host("v1.16.1"), kvm).checks();
    assert_every_problem_has_a_fix(&checks);
    insta::assert_json_snapshot!("bare_host", bin.redacted(&checks));
}

// Guards the doctor against calling a Firecracker usable that a launch refuses: it used to
// accept any binary whose `--version` said "Firecracker", so a 1.10.0 was "ok" and `vmm = auto`
// was said to use it while every start chose QEMU.
#[test]
fn a_firecracker_older_than_the_minimum_fails_and_auto_uses_qemu() {
    let bin = Bin::with(&["firecracker", PROGRAM]);
    let runner = host("v1.10.0");
    let available = bin.detect(&runner, intel());
    let checks = available.checks();

    let firecracker = find(&checks, "firecracker");
    assert_eq!(firecracker.status, CheckStatus::Fail, "{firecracker:?}");
    assert_eq!(
        firecracker.detail,
        format!(
            "{} is Firecracker 1.10.0; banger needs 1.12.0 or newer",
            bin.dir.path().join("firecracker").display()
        )
    );
    assert!(
        firecracker.fix.as_deref().unwrap().contains("1.12.0"),
        "{firecracker:?}"
    );

    let vmm = find(&checks, "vmm");
    assert_eq!(vmm.status, CheckStatus::Warn, "{vmm:?}");
    assert!(
        vmm.detail
            .starts_with("vmm = \"auto\" uses QEMU with KVM because Firecracker is not usable (")
            && vmm
                .detail
                .contains("is Firecracker 1.10.0; banger needs 1.12.0 or newer"),
        "{vmm:?}"
    );
    assert!(!vmm.detail.contains("uses Firecracker"), "{vmm:?}");
    assert_eq!(available.auto().0, VmmChoice::Qemu(Accel::Kvm));
    insta::assert_json_snapshot!("old_firecracker", bin.redacted(&checks));
}

#[test]
fn the_vmm_check_says_what_auto_picks_and_why() {
    let both = Bin::with(&["firecracker", PROGRAM]);
    let qemu_only = Bin::with(&[PROGRAM]);
    let firecracker_only = Bin::with(&["firecracker"]);
    let runner = host("v1.16.1");
    let cases = [
        (
            &both,
            intel(),
            CheckStatus::Ok,
            "vmm = \"auto\" uses Firecracker",
        ),
        (
            &both,
            Kvm::Usable(KvmKind::Pvm),
            CheckStatus::Warn,
            "vmm = \"auto\" uses QEMU with TCG (software emulation, slow) because /dev/kvm is \
             kvm_pvm, which cannot boot a stock guest kernel",
        ),
        (
            &both,
            Kvm::Missing,
            CheckStatus::Warn,
            "vmm = \"auto\" uses QEMU with TCG (software emulation, slow) because /dev/kvm does \
             not exist",
        ),
        (
            &both,
            Kvm::NoAccess(
                KvmKind::Intel,
                io::Error::from(io::ErrorKind::PermissionDenied),
            ),
            CheckStatus::Warn,
            "vmm = \"auto\" uses QEMU with TCG (software emulation, slow) because /dev/kvm \
             cannot be opened",
        ),
        (
            &firecracker_only,
            Kvm::Missing,
            CheckStatus::Fail,
            "no backend can run VMs: /dev/kvm does not exist, and QEMU is not installed",
        ),
    ];
    for (bin, kvm, status, detail) in cases {
        let check = bin.detect(&runner, kvm).check_vmm();
        assert_eq!((check.status, check.detail.as_str()), (status, detail));
    }

    let check = qemu_only.detect(&runner, intel()).check_vmm();
    assert_eq!(check.status, CheckStatus::Warn);
    assert!(
        check.detail.starts_with(
            "vmm = \"auto\" uses QEMU with KVM because Firecracker is not usable (firecracker \
             not found in PATH"
        ),
        "{check:?}"
    );
}

#[test]
fn the_vmm_check_says_what_a_start_would_choose() {
    // The doctor's line is worded from auto_choice's decision, the one Backends::for_start
    // follows for `vmm = auto`: whatever the host, the two name the same backend.
    let bin = Bin::with(&["firecracker", PROGRAM]);
    for firecracker in ["v1.16.1", "v1.10.0"] {
        let runner = host(firecracker);
        let kvms: [fn() -> Kvm; 4] = [
            intel,
            || Kvm::Usable(KvmKind::Pvm),
            || Kvm::Missing,
            || Kvm::NoAccess(KvmKind::Amd, io::Error::from_raw_os_error(13)),
        ];
        for kvm in kvms {
            let available = bin.detect(&runner, kvm());
            let (choice, _) = available.auto();
            let binary = FirecrackerBinary::check(bin.dir.path().join("firecracker"), &runner);
            assert_eq!(choice, auto_choice(binary.as_ref(), &kvm()).0);
            let said = available.check_vmm().detail;
            let expected = match choice {
                VmmChoice::Firecracker => "uses Firecracker",
                VmmChoice::Qemu(Accel::Kvm) => "uses QEMU with KVM",
                VmmChoice::Qemu(Accel::Tcg) => "uses QEMU with TCG",
            };
            assert!(said.contains(expected), "{firecracker} {choice:?}: {said}");
        }
    }
}

#[test]
fn a_configured_firecracker_must_exist_and_be_firecracker() {
    let bin = Bin::with(&["firecracker", PROGRAM]);
    let missing = bin.dir.path().join("opt/firecracker");
    let runner = FakeRunner::new().respond("firecracker", CommandOutput::with_stdout("hello\n"));
    let detect = |configured: &Path, runner: &FakeRunner| {
        Availability::detect_in(Some(configured), None, None, runner, intel()).check_firecracker()
    };
    let check = detect(&missing, &runner);
    assert_eq!(check.status, CheckStatus::Fail);
    assert_eq!(
        check.detail,
        format!(
            "the configured binary {} does not exist or is not executable",
            missing.display()
        )
    );

    let configured = bin.dir.path().join("firecracker");
    let check = detect(&configured, &runner);
    assert_eq!(check.status, CheckStatus::Fail);
    assert_eq!(
        check.detail,
        format!(
            "{} does not look like Firecracker: `--version` printed \"hello\"",
            configured.display()
        )
    );

    let crashing = FakeRunner::new().fail_nth("firecracker", 1, "Illegal instruction");
    let check = detect(&configured, &crashing);
    assert_eq!(check.status, CheckStatus::Fail);
    assert!(check.detail.ends_with("Illegal instruction"), "{check:?}");
    assert_eq!(
        check.fix.as_deref(),
        Some("reinstall Firecracker from its GitHub releases (x86_64 build)")
    );
}

#[test]
fn the_configured_qemu_is_the_one_checked_and_it_needs_microvm() {
    let bin = Bin::with(&[]);
    let elsewhere = Bin::with(&[PROGRAM]);
    let configured = elsewhere.dir.path().join(PROGRAM);
    let runner = host("v1.16.1");
    let available = Availability::detect_in(
        None,
        Some(&configured),
        Some(bin.path_var()),
        &runner,
        intel(),
    );
    let check = available.check_qemu();
    assert_eq!(check.status, CheckStatus::Ok, "{check:?}");
    assert_eq!(
        check.detail,
        format!(
            "QEMU 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12) at {}",
            configured.display()
        )
    );

    let without_microvm = FakeRunner::new()
        .respond(
            Matcher::prefix(PROGRAM, ["--version"]),
            CommandOutput::with_stdout("QEMU emulator version 8.0.0\n"),
        )
        .respond(
            Matcher::prefix(PROGRAM, ["-machine"]),
            CommandOutput::with_stdout("Supported machines are:\npc  Standard PC\n"),
        );
    let available =
        Availability::detect_in(None, Some(&configured), None, &without_microvm, intel());
    let checks = available.checks();
    let qemu = find(&checks, "qemu");
    assert_eq!(qemu.status, CheckStatus::Fail);
    assert!(
        qemu.detail.contains("without the microvm machine type"),
        "{qemu:?}"
    );
    let vmm = find(&checks, "vmm");
    assert_eq!(vmm.status, CheckStatus::Fail, "{vmm:?}");
    assert!(vmm.detail.ends_with("and QEMU is not usable"), "{vmm:?}");
}

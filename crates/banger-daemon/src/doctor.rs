//! `GET /v1/doctor`: the host checks of `banger-host`'s doctor, with banger-vmm's verdict on the
//! VMM binaries and `vmm = "auto"` in their place after the KVM check, run by the daemon because
//! it is the daemon's view of the host (its user, its PATH, its configuration, its state
//! filesystem) that matters.

use std::path::Path;

use banger_api::{DoctorCheck, DoctorCheckStatus, DoctorReport};
use banger_host::doctor::{Check, CheckStatus, Doctor, dns};
use banger_host::network::NetConfig;
use banger_host::runner::RealRunner;
use banger_vmm::Availability;

use crate::Daemon;
use crate::config::JailMode;
use crate::machine::backend::JailDecision;
use banger_vmm::cgroup::{Cgroups, Hierarchy};

/// The code of a request refused because preflight checks failed: `no_space` when all that
/// fails is the state filesystem's free space (the `disk` check), `unavailable` otherwise.
pub fn refusal_code<'a>(failed: impl IntoIterator<Item = &'a Check>) -> banger_api::ErrorCode {
    let mut any = false;
    for check in failed {
        if check.name != "disk" {
            return banger_api::ErrorCode::Unavailable;
        }
        any = true;
    }
    if any {
        banger_api::ErrorCode::NoSpace
    } else {
        banger_api::ErrorCode::Unavailable
    }
}

/// Runs every check. Blocking: it runs a few short commands (`firecracker --version`,
/// `sudo -n true`, …). The binaries are detected afresh rather than taken from the machines'
/// cache: the doctor is where a user checks a binary just installed.
pub fn report(d: &Daemon) -> DoctorReport {
    let runner = RealRunner;
    let net = NetConfig::new(d.pool.gateway(), d.pool.prefix_len());
    let backends = Availability::detect(
        d.config.firecracker_bin.as_deref(),
        d.config.qemu_bin.as_deref(),
        &runner,
        banger_host::probe_kvm(Path::new("/")),
    );
    let bridge = net.bridge.clone();
    let mut checks = Doctor::new(&runner, net, d.paths.state_dir.clone()).run(backends.checks());
    checks.extend(jail_checks(d, &runner));
    let root = rustix::process::geteuid().is_root();
    checks.push(qemu_check(d.config.qemu, root));
    checks.push(qemu_cgroups_check(
        d.config.qemu,
        root,
        &banger_vmm::cgroup::Cgroups::detect(),
    ));
    checks.push(uid_ranges_check(
        &[
            ("jail_uids", d.config.jail.uids),
            ("qemu_uids", d.config.qemu.uids),
        ],
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        &std::fs::read_to_string("/etc/group").unwrap_or_default(),
    ));
    let serving = d.dns.serving();
    checks.push(dns::serving_check(&serving, d.dns.domain()));
    checks.push(dns::host_resolver_check(
        &d.dns.host_resolver(),
        &serving,
        &bridge,
        d.dns.domain(),
    ));
    DoctorReport {
        checks: checks.into_iter().map(to_wire).collect(),
    }
}

/// The `qemu-confinement` line: how QEMU VMs are confined (their uid, the seccomp sandbox).
fn qemu_check(settings: crate::config::QemuSettings, root: bool) -> Check {
    const NAME: &str = "qemu-confinement";
    match (settings.sandbox, root) {
        (true, true) => Check::ok(
            NAME,
            format!(
                "QEMU VMs drop to their own uid of {}-{} once started and run under QEMU's \
                 seccomp sandbox (no spawning, no obsolete system calls, no resource changes)",
                settings.uids.0, settings.uids.1
            ),
        ),
        (true, false) => Check::ok(
            NAME,
            "QEMU VMs run as bangerd's user under QEMU's seccomp sandbox (no spawning, no \
             privilege raising, no obsolete system calls, no resource changes)",
        ),
        (false, true) => Check::warn(
            NAME,
            format!(
                "QEMU VMs drop to their own uid of {}-{} but run without QEMU's seccomp \
                 sandbox (qemu_sandbox = false)",
                settings.uids.0, settings.uids.1
            ),
            "remove `qemu_sandbox = false` from config.toml",
        ),
        (false, false) => Check::warn(
            NAME,
            "QEMU VMs run as bangerd's user without QEMU's seccomp sandbox (qemu_sandbox = \
             false)",
            "remove `qemu_sandbox = false` from config.toml",
        ),
    }
}

/// The `qemu-cgroups` line: whether each QEMU VM gets a cgroup of its own with memory and CPU
/// limits, where, and why not.
fn qemu_cgroups_check(
    settings: crate::config::QemuSettings,
    root: bool,
    cgroups: &banger_vmm::cgroup::Cgroups,
) -> Check {
    use banger_vmm::cgroup::{Cgroups, Hierarchy};
    const NAME: &str = "qemu-cgroups";
    let limits = format!(
        "a memory limit of its memory plus {} MiB, a CPU quota of its vCPUs",
        settings.memory_overhead_mib
    );
    if !root {
        return Check::ok(
            NAME,
            "QEMU VMs run in bangerd's own cgroup: only a root bangerd makes one for each \
             (admission control still bounds what they reserve together)",
        );
    }
    if !settings.cgroups {
        return Check::warn(
            NAME,
            "QEMU VMs run in bangerd's own cgroup, without limits (qemu_cgroups = false)",
            "remove `qemu_cgroups = false` from config.toml",
        );
    }
    match cgroups {
        Cgroups::Usable(Hierarchy::V2 { root }) => Check::ok(
            NAME,
            format!(
                "each QEMU VM runs in a cgroup of its own under {}/banger (cgroup v2): {limits}",
                root.display()
            ),
        ),
        Cgroups::Usable(Hierarchy::V1 { memory, cpu }) => Check::ok(
            NAME,
            format!(
                "each QEMU VM runs in a cgroup of its own under {}/banger and {}/banger \
                 (cgroup v1): {limits}",
                memory.display(),
                cpu.display()
            ),
        ),
        Cgroups::Unusable(why) => Check::warn(
            NAME,
            format!("QEMU VMs run without cgroup limits: {why}"),
            "mount cgroup v2 with the memory and cpu controllers (or cgroup v1's memory and \
             cpu controllers), then `banger daemon restart`",
        ),
    }
}

/// The `uid-ranges` line: the uids VMMs drop to must be nobody else's, on this host or of the
/// other range: a VMM sharing a uid with a user or a service could signal its processes and
/// read what it owns. `passwd` and `group` are the texts of `/etc/passwd` and `/etc/group`.
fn uid_ranges_check(ranges: &[(&str, (u32, u32))], passwd: &str, group: &str) -> Check {
    const NAME: &str = "uid-ranges";
    let mut clashes = Vec::new();
    for (key, (first, last)) in ranges {
        for (file, text, what) in [
            ("/etc/passwd", passwd, "user"),
            ("/etc/group", group, "group"),
        ] {
            for line in text.lines() {
                let mut fields = line.split(':');
                let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                if let Ok(id) = id.parse::<u32>()
                    && (*first..=*last).contains(&id)
                {
                    clashes.push(format!("{what} {name} ({file}) has id {id}, in {key}"));
                }
            }
        }
    }
    for (i, (a, (a_first, a_last))) in ranges.iter().enumerate() {
        for (b, (b_first, b_last)) in &ranges[i + 1..] {
            if a_first <= b_last && b_first <= a_last {
                clashes.push(format!(
                    "{a} {a_first}-{a_last} and {b} {b_first}-{b_last} overlap"
                ));
            }
        }
    }
    let described = ranges
        .iter()
        .map(|(key, (first, last))| format!("{key} {first}-{last}"))
        .collect::<Vec<_>>()
        .join(", ");
    if clashes.is_empty() {
        Check::ok(
            NAME,
            format!("{described}: no user or group of this host has one of these ids"),
        )
    } else {
        Check::warn(
            NAME,
            clashes.join("; "),
            "give jail_uids and qemu_uids in config.toml ranges of their own that no user, \
             group or service of this host uses",
        )
    }
}

/// The `jailer` line (whether Firecracker VMs run jailed, and why not) and the `cgroups` line
/// (whether their cgroup limits can be set here).
fn jail_checks(d: &Daemon, runner: &RealRunner) -> Vec<Check> {
    let Ok(binary) =
        banger_vmm::FirecrackerBinary::detect(d.config.firecracker_bin.as_deref(), runner)
    else {
        // The `firecracker` line says why; without Firecracker there is nothing to jail.
        return Vec::new();
    };
    let Some(decision) = d.machines.backends.jail_decision(&binary) else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    let settings = &d.config.jail;
    match &decision {
        JailDecision::Jailed(jail) => {
            checks.push(Check::ok(
                "jailer",
                format!(
                    "Firecracker VMs run behind {} (Firecracker {}): each as its own uid of \
                     {}-{}, chrooted under {}, in its own pid namespace",
                    jail.jailer.path.display(),
                    jail.jailer.version,
                    jail.uids.0,
                    jail.uids.1,
                    jail.chroot_base.display()
                ),
            ));
            checks.push(match &jail.cgroup {
                Cgroups::Usable(Hierarchy::V2 { root }) => Check::ok(
                    "cgroups",
                    format!(
                        "cgroup v2 at {} offers memory and cpu: each jailed VM gets \
                         memory.max = its memory + {} MiB and cpu.max = its vCPUs",
                        root.display(),
                        jail.memory_overhead_mib
                    ),
                ),
                Cgroups::Usable(Hierarchy::V1 { memory, cpu }) => Check::ok(
                    "cgroups",
                    format!(
                        "cgroup v1's memory controller at {} and cpu controller at {}: each \
                         jailed VM gets memory.limit_in_bytes = its memory + {} MiB and a CPU \
                         quota of its vCPUs",
                        memory.display(),
                        cpu.display(),
                        jail.memory_overhead_mib
                    ),
                ),
                Cgroups::Unusable(why) => Check::warn(
                    "cgroups",
                    format!("jailed VMs run without cgroup limits: {why}"),
                    "mount cgroup v2 with the memory and cpu controllers (or cgroup v1's memory \
                     and cpu controllers), then `banger daemon restart`",
                ),
            });
        }
        JailDecision::Direct(why) if settings.mode == JailMode::Off => checks.push(Check::warn(
            "jailer",
            format!(
                "Firecracker runs directly, as bangerd's user, without chroot or cgroup: {why}"
            ),
            "remove `jailer = false` from config.toml to run VMs jailed",
        )),
        JailDecision::Direct(why) if rustix::process::geteuid().is_root() => {
            checks.push(Check::warn(
                "jailer",
                format!("Firecracker VMs run as root without the jailer: {why}"),
                format!(
                    "install the jailer of Firecracker {} on PATH or set jailer_bin in \
                     config.toml",
                    binary.version
                ),
            ))
        }
        JailDecision::Direct(why) => checks.push(Check::ok(
            "jailer",
            format!("Firecracker runs as bangerd's own user, without the jailer ({why})"),
        )),
        JailDecision::Refused(why) => checks.push(Check::fail(
            "jailer",
            format!("Firecracker VMs cannot start: {why}"),
            "install the jailer of the same Firecracker release (or set jailer_bin), run \
             bangerd as root, or set jailer = false in config.toml",
        )),
    }
    checks
}

fn to_wire(check: Check) -> DoctorCheck {
    DoctorCheck {
        name: check.name,
        status: match check.status {
            CheckStatus::Ok => DoctorCheckStatus::Ok,
            CheckStatus::Warn => DoctorCheckStatus::Warn,
            CheckStatus::Fail => DoctorCheckStatus::Fail,
        },
        detail: check.detail,
        fix: check.fix,
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;

    #[test]
    fn a_refusal_for_free_space_alone_is_no_space() {
        let disk = Check::fail("disk", "0.2 GiB free", "free space");
        let tun = Check::fail("tun", "no /dev/net/tun", "modprobe tun");
        assert_eq!(refusal_code([&disk]), banger_api::ErrorCode::NoSpace);
        assert_eq!(
            refusal_code([&disk, &tun]),
            banger_api::ErrorCode::Unavailable
        );
        assert_eq!(refusal_code([&tun]), banger_api::ErrorCode::Unavailable);
    }
}

#[cfg(test)]
mod qemu_tests {
    use super::*;
    use banger_host::doctor::CheckStatus;

    #[test]
    fn the_qemu_cgroups_line_says_where_and_why_not() {
        use banger_vmm::cgroup::{Cgroups, Hierarchy};
        let on = crate::config::QemuSettings::default();
        let v1 = Cgroups::Usable(Hierarchy::V1 {
            memory: "/sys/fs/cgroup/memory".into(),
            cpu: "/sys/fs/cgroup/cpu".into(),
        });
        let check = qemu_cgroups_check(on, true, &v1);
        assert_eq!(check.status, CheckStatus::Ok);
        assert!(
            check.detail.contains("/sys/fs/cgroup/memory/banger")
                && check.detail.contains("cgroup v1")
                && check.detail.contains("plus 256 MiB"),
            "{}",
            check.detail
        );
        let v2 = Cgroups::Usable(Hierarchy::V2 {
            root: "/sys/fs/cgroup".into(),
        });
        assert!(
            qemu_cgroups_check(on, true, &v2)
                .detail
                .contains("cgroup v2")
        );
        let none = Cgroups::Unusable("no cgroup v2 hierarchy is mounted".into());
        let check = qemu_cgroups_check(on, true, &none);
        assert_eq!(check.status, CheckStatus::Warn);
        assert!(
            check.detail.contains("no cgroup v2 hierarchy"),
            "{}",
            check.detail
        );
        let off = crate::config::QemuSettings {
            cgroups: false,
            ..on
        };
        let check = qemu_cgroups_check(off, true, &v1);
        assert_eq!(check.status, CheckStatus::Warn);
        assert!(check.detail.contains("qemu_cgroups = false"));
        let user = qemu_cgroups_check(on, false, &v1);
        assert_eq!(user.status, CheckStatus::Ok);
        assert!(user.detail.contains("only a root bangerd"));
    }

    #[test]
    fn the_qemu_line_says_what_confines_qemu_and_warns_without_the_sandbox() {
        let on = crate::config::QemuSettings::default();
        let off = crate::config::QemuSettings {
            sandbox: false,
            ..on
        };
        let root = qemu_check(on, true);
        assert_eq!(root.status, CheckStatus::Ok);
        assert!(root.detail.contains("901000-901999"), "{}", root.detail);
        let user = qemu_check(on, false);
        assert_eq!(user.status, CheckStatus::Ok);
        assert!(user.detail.contains("as bangerd's user"), "{}", user.detail);
        for check in [qemu_check(off, true), qemu_check(off, false)] {
            assert_eq!(check.status, CheckStatus::Warn);
            assert!(
                check.detail.contains("qemu_sandbox = false"),
                "{}",
                check.detail
            );
        }
    }
}

#[cfg(test)]
mod uid_range_tests {
    use super::*;
    use banger_host::doctor::CheckStatus;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                          svc:x:900005:900005::/var/lib/svc:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nbuilders:x:901002:alice\n";

    #[test]
    fn uids_of_users_groups_or_the_other_range_are_warned_about() {
        let ranges = [
            ("jail_uids", (900_000, 900_999)),
            ("qemu_uids", (901_000, 901_999)),
        ];
        let check = uid_ranges_check(&ranges, "root:x:0:0::/root:/bin/sh\n", "root:x:0:\n");
        assert_eq!(check.status, CheckStatus::Ok, "{}", check.detail);
        assert!(
            check
                .detail
                .contains("jail_uids 900000-900999, qemu_uids 901000-901999")
        );

        let check = uid_ranges_check(&ranges, PASSWD, GROUP);
        assert_eq!(check.status, CheckStatus::Warn);
        assert!(
            check
                .detail
                .contains("user svc (/etc/passwd) has id 900005, in jail_uids"),
            "{}",
            check.detail
        );
        assert!(
            check
                .detail
                .contains("group builders (/etc/group) has id 901002, in qemu_uids"),
            "{}",
            check.detail
        );
        assert!(!check.detail.contains("nobody"), "{}", check.detail);

        let overlapping = [
            ("jail_uids", (900_000, 900_999)),
            ("qemu_uids", (900_500, 901_500)),
        ];
        let check = uid_ranges_check(&overlapping, "", "");
        assert_eq!(check.status, CheckStatus::Warn);
        assert!(check.detail.contains("overlap"), "{}", check.detail);
    }
}

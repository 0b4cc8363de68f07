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
use banger_vmm::firecracker::CgroupSupport;

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
                CgroupSupport::Usable(root) => Check::ok(
                    "cgroups",
                    format!(
                        "cgroup v2 at {} offers memory and cpu: each jailed VM gets \
                         memory.max = its memory + {} MiB and cpu.max = its vCPUs",
                        root.display(),
                        jail.memory_overhead_mib
                    ),
                ),
                CgroupSupport::Unusable(why) => Check::warn(
                    "cgroups",
                    format!("jailed VMs run without cgroup limits: {why}"),
                    "boot the host with cgroup v2 alone (systemd.unified_cgroup_hierarchy=1 on \
                     the kernel command line), so that its memory and cpu controllers are \
                     available",
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

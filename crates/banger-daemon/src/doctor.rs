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

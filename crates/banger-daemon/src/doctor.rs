//! `GET /v1/doctor`: the host checks of `banger-host`'s doctor, run by the daemon because it is
//! the daemon's view of the host (its user, its PATH, its state filesystem) that matters.

use banger_api::{DoctorCheck, DoctorCheckStatus, DoctorReport};
use banger_host::doctor::{Check, CheckStatus, Doctor};
use banger_host::network::NetConfig;
use banger_host::runner::RealRunner;

use crate::Daemon;

/// Runs every check. Blocking: it runs a few short commands (`firecracker --version`,
/// `sudo -n true`, …).
pub fn report(d: &Daemon) -> DoctorReport {
    let runner = RealRunner;
    let net = NetConfig::new(d.pool.gateway(), d.pool.prefix_len());
    let checks = Doctor::new(&runner, net, d.paths.state_dir.clone())
        .firecracker(d.config.firecracker_bin.clone())
        .run();
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

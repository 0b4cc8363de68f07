//! IPv4 forwarding for NAT VMs: `net.ipv4.ip_forward` is switched on when a NAT VM needs it and
//! the value found before is recorded, so that it can be put back when the last NAT VM goes.
//! Read and written with `sysctl` through the runner (privileged, since writing needs root and
//! `sysctl` lives in `/usr/sbin`, which `sudo`'s path has and a user's often lacks).

use super::{Acquired, NetConfig, NetworkError, Resource, run};
use crate::runner::CommandRunner;

/// The sysctl key that lets the host route the VMs' packets.
pub const IP_FORWARD: &str = "net.ipv4.ip_forward";

fn read(runner: &dyn CommandRunner, cfg: &NetConfig, key: &str) -> Result<String, NetworkError> {
    let cmd = cfg.privileged("sysctl", ["-n", key]);
    let value = run(runner, &cmd, format!("read {key}"))?
        .stdout_lossy()
        .trim()
        .to_owned();
    if value.is_empty() {
        return Err(NetworkError::UnexpectedOutput {
            command: cmd.display(),
            reason: "no value".into(),
        });
    }
    Ok(value)
}

/// Sets sysctl `key` to `value`.
pub(crate) fn write(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    key: &str,
    value: &str,
) -> Result<(), NetworkError> {
    run(
        runner,
        &cfg.privileged("sysctl", ["-w", &format!("{key}={value}")]),
        format!("set {key} to {value}"),
    )
    .map(drop)
}

/// Turns IPv4 forwarding on unless it already is, recording the previous value.
pub(crate) fn enable_ip_forward(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    acquired: &mut Acquired,
) -> Result<(), NetworkError> {
    let previous = read(runner, cfg, IP_FORWARD)?;
    if previous == "1" {
        return Ok(());
    }
    write(runner, cfg, IP_FORWARD, "1")?;
    acquired.record(Resource::Sysctl {
        key: IP_FORWARD.to_owned(),
        previous,
    });
    Ok(())
}

//! The host's own resolver and banger's VM names: when systemd-resolved runs, the bridge gets
//! per-link DNS (`resolvectl dns BRIDGE ADDR[:PORT]`) and a routing-only domain
//! (`resolvectl domain BRIDGE ~DOMAIN`), so the host sends queries for `NAME.DOMAIN` (and only
//! those) to bangerd's DNS server on the bridge. `resolvectl revert BRIDGE` takes both away. On a
//! host without systemd-resolved nothing is changed: `/etc/resolv.conf` belongs to the user, and
//! the doctor says how to add the names by hand.

use std::net::Ipv4Addr;
use std::path::Path;

use super::{NetConfig, NetworkError, run};
use crate::runner::CommandRunner;

/// The varlink socket systemd-resolved (246 and later) listens on while it runs, relative to
/// the root; its presence is how banger tells that resolved is the host's resolver.
pub const RESOLVED_SOCKET: &str = "run/systemd/resolve/io.systemd.Resolve";

/// Whether systemd-resolved runs on the host whose root directory is `root`.
pub fn resolved_running(root: &Path) -> bool {
    root.join(RESOLVED_SOCKET).exists()
}

/// `ADDR` for port 53, `ADDR:PORT` otherwise: the form `resolvectl dns` takes.
pub fn server_spec(address: Ipv4Addr, port: u16) -> String {
    if port == 53 {
        address.to_string()
    } else {
        format!("{address}:{port}")
    }
}

/// Points the bridge's per-link DNS at `address:port` for the names under `domain`. Either both
/// settings are made or neither stays: a failure of the second reverts the first.
pub fn set_link_dns(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    address: Ipv4Addr,
    port: u16,
    domain: &str,
) -> Result<(), NetworkError> {
    let bridge = cfg.bridge.as_str();
    let server = server_spec(address, port);
    run(
        runner,
        &cfg.privilege
            .command("resolvectl", ["dns", bridge, server.as_str()]),
        format!("set {bridge}'s DNS server to {server} with resolvectl"),
    )?;
    let routing = format!("~{domain}");
    let domain_set = run(
        runner,
        &cfg.privilege
            .command("resolvectl", ["domain", bridge, routing.as_str()]),
        format!("route {domain} names to {bridge} with resolvectl"),
    );
    if let Err(cause) = domain_set {
        if let Err(cleanup) = revert_link_dns(runner, cfg) {
            tracing::warn!(error = %super::error_chain(&cleanup), "cannot revert the bridge's DNS");
        }
        return Err(cause);
    }
    Ok(())
}

/// Takes the bridge's per-link DNS server and domain away again.
pub fn revert_link_dns(runner: &dyn CommandRunner, cfg: &NetConfig) -> Result<(), NetworkError> {
    let bridge = cfg.bridge.as_str();
    run(
        runner,
        &cfg.privilege.command("resolvectl", ["revert", bridge]),
        format!("revert {bridge}'s DNS settings with resolvectl"),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_BRIDGE, Privilege};
    use super::*;
    use crate::runner::{FakeRunner, Matcher};

    fn cfg(privilege: Privilege) -> NetConfig {
        NetConfig {
            bridge: DEFAULT_BRIDGE.into(),
            host_address: Ipv4Addr::new(172, 30, 0, 1),
            prefix_len: 24,
            privilege,
            tap_owner: 1000,
        }
    }

    const HOST: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);

    #[test]
    fn sets_server_then_routing_domain() {
        let fake = FakeRunner::new();
        set_link_dns(&fake, &cfg(Privilege::Root), HOST, 53, "vm").unwrap();
        assert_eq!(
            fake.calls(),
            [
                "resolvectl dns banger0 172.30.0.1",
                "resolvectl domain banger0 '~vm'"
            ]
        );
    }

    #[test]
    fn a_fallback_port_is_part_of_the_server_and_sudo_is_used_when_not_root() {
        let fake = FakeRunner::new();
        set_link_dns(&fake, &cfg(Privilege::Sudo), HOST, 5053, "test").unwrap();
        assert_eq!(
            fake.calls(),
            [
                "sudo -n resolvectl dns banger0 172.30.0.1:5053",
                "sudo -n resolvectl domain banger0 '~test'"
            ]
        );
    }

    #[test]
    fn a_failed_domain_reverts_the_server() {
        let fake = FakeRunner::new().fail_nth(
            Matcher::prefix("resolvectl", ["domain"]),
            1,
            "Access denied",
        );
        let err = set_link_dns(&fake, &cfg(Privilege::Root), HOST, 53, "vm").unwrap_err();
        assert!(
            err.to_string().contains("route vm names to banger0"),
            "{err}"
        );
        assert_eq!(
            fake.calls(),
            [
                "resolvectl dns banger0 172.30.0.1",
                "resolvectl domain banger0 '~vm'",
                "resolvectl revert banger0"
            ]
        );
    }

    #[test]
    fn a_failed_server_changes_nothing_more() {
        let fake = FakeRunner::new().fail_nth(Matcher::any(), 1, "no such link");
        assert!(set_link_dns(&fake, &cfg(Privilege::Root), HOST, 53, "vm").is_err());
        assert_eq!(fake.calls(), ["resolvectl dns banger0 172.30.0.1"]);
    }

    #[test]
    fn revert_is_one_command() {
        let fake = FakeRunner::new();
        revert_link_dns(&fake, &cfg(Privilege::Root)).unwrap();
        assert_eq!(fake.calls(), ["resolvectl revert banger0"]);
    }

    #[test]
    fn resolved_is_detected_by_its_socket() {
        let root = tempfile::tempdir().unwrap();
        assert!(!resolved_running(root.path()));
        std::fs::create_dir_all(root.path().join("run/systemd/resolve")).unwrap();
        std::fs::write(root.path().join(RESOLVED_SOCKET), "").unwrap();
        assert!(resolved_running(root.path()));
    }
}

//! The doctor's two lines about VM names: whether bangerd's DNS server answers on the bridge
//! (`dns`), and whether the host's own resolver asks it (`host-dns`). The daemon knows the
//! first (it runs the server) and reports it as a [`DnsServing`]; the second depends on
//! systemd-resolved, which banger configures itself, or on the user.

use std::net::SocketAddr;

use super::Check;
use crate::network::resolved::server_spec;

/// What bangerd's DNS server is doing, as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsServing {
    /// `[dns] enabled = false` in config.toml.
    Disabled,
    /// The bridge is not up yet: the server starts with the first VM.
    NotStarted,
    /// Listening (UDP and TCP) on `address`. `fallback` says why that is not port 53.
    Serving {
        address: SocketAddr,
        fallback: Option<String>,
    },
    /// It could bind no port at all; VMs run without names.
    Failed { reason: String },
}

/// How the host's resolver was found to stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostResolver {
    /// systemd-resolved runs and banger set the bridge's per-link DNS.
    ResolvedConfigured,
    /// systemd-resolved runs but `resolvectl` failed: the error.
    ResolvedFailed(String),
    /// systemd-resolved runs; the bridge is not up yet, so nothing is set.
    ResolvedPending,
    /// systemd-resolved runs, but another program holds port 53 on the bridge address, so
    /// banger leaves the bridge's DNS settings to whoever set them.
    ResolvedLeftAlone,
    /// No systemd-resolved on this host.
    NoResolved,
}

/// The `dns` line: where VM names are answered, or why they are not.
pub fn serving_check(serving: &DnsServing, domain: &str) -> Check {
    const NAME: &str = "dns";
    match serving {
        DnsServing::Disabled => Check::ok(
            NAME,
            "off (`[dns] enabled = false`): VMs have no names and use the host's resolvers",
        ),
        DnsServing::NotStarted => Check::ok(
            NAME,
            format!(
                "bangerd answers NAME.{domain} on the bridge once it is up (with the first VM start)"
            ),
        ),
        DnsServing::Serving {
            address,
            fallback: None,
        } => Check::ok(
            NAME,
            format!(
                "listening on {address} (UDP and TCP) for NAME.{domain} and PTR; other names are forwarded to the host's resolvers"
            ),
        ),
        DnsServing::Serving {
            address,
            fallback: Some(reason),
        } => Check::warn(
            NAME,
            format!(
                "listening on {address}, not port 53: {reason}; guests get the host's resolvers \
                 instead, and names answer only when asked there: dig -p {} @{} NAME.{domain}",
                address.port(),
                address.ip()
            ),
            "run bangerd as root or give it CAP_NET_BIND_SERVICE \
             (sudo setcap cap_net_bind_service=+ep $(command -v bangerd)), or free port 53 on \
             the bridge address; then restart the daemon",
        ),
        DnsServing::Failed { reason } => Check::warn(
            NAME,
            format!("not serving VM names: {reason}"),
            "free the port named above on the bridge address, then restart the daemon \
             (`banger daemon stop`; the next command starts it)",
        ),
    }
}

/// The `host-dns` line: whether `NAME.DOMAIN` resolves on the host, and how to make it.
pub fn host_resolver_check(
    resolver: &HostResolver,
    serving: &DnsServing,
    bridge: &str,
    domain: &str,
) -> Check {
    const NAME: &str = "host-dns";
    let address = match serving {
        DnsServing::Serving { address, .. } => *address,
        DnsServing::Disabled => {
            return Check::ok(NAME, "nothing to set up: VM names are off");
        }
        DnsServing::NotStarted | DnsServing::Failed { .. } => {
            return match resolver {
                HostResolver::NoResolved => Check::ok(
                    NAME,
                    "no systemd-resolved; how to resolve VM names on the host is shown once \
                     bangerd serves them",
                ),
                _ => Check::ok(
                    NAME,
                    format!(
                        "systemd-resolved runs; banger routes *.{domain} to the bridge once it \
                         serves names"
                    ),
                ),
            };
        }
    };
    let server = server_spec(
        match address.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => return Check::ok(NAME, "IPv6 servers are not routed"),
        },
        address.port(),
    );
    match resolver {
        HostResolver::ResolvedConfigured => Check::ok(
            NAME,
            format!("systemd-resolved sends *.{domain} to {server} (resolvectl status {bridge})"),
        ),
        HostResolver::ResolvedPending => Check::ok(
            NAME,
            format!(
                "systemd-resolved runs; banger routes *.{domain} to {server} when the bridge is up"
            ),
        ),
        HostResolver::ResolvedLeftAlone => Check::warn(
            NAME,
            format!(
                "systemd-resolved runs, but another program holds port 53 on {}, so banger \
                 leaves {bridge}'s DNS settings alone",
                address.ip()
            ),
            format!(
                "to send *.{domain} to bangerd instead: sudo resolvectl dns {bridge} {server} && \
                 sudo resolvectl domain {bridge} ~{domain}"
            ),
        ),
        HostResolver::ResolvedFailed(error) => Check::warn(
            NAME,
            format!("systemd-resolved runs but setting {bridge}'s DNS failed: {error}"),
            format!(
                "sudo resolvectl dns {bridge} {server} && sudo resolvectl domain {bridge} ~{domain}"
            ),
        ),
        HostResolver::NoResolved if address.port() == 53 => Check::warn(
            NAME,
            format!(
                "no systemd-resolved, so the host does not resolve NAME.{domain} (banger leaves \
                 /etc/resolv.conf alone); guests do"
            ),
            format!(
                "ask bangerd directly (dig @{} NAME.{domain}), or add `nameserver {}` first and \
                 `search {domain}` to /etc/resolv.conf (bangerd forwards other names to the \
                 nameservers after it), or route the domain in your local resolver \
                 (dnsmasq: server=/{domain}/{})",
                address.ip(),
                address.ip(),
                address.ip()
            ),
        ),
        HostResolver::NoResolved => Check::warn(
            NAME,
            format!(
                "no systemd-resolved, and bangerd serves on port {}, which /etc/resolv.conf \
                 cannot name, so the host does not resolve NAME.{domain}",
                address.port()
            ),
            format!(
                "ask bangerd directly (dig -p {} @{} NAME.{domain}), or route the domain in a \
                 local resolver (dnsmasq: server=/{domain}/{}#{})",
                address.port(),
                address.ip(),
                address.ip(),
                address.port()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::CheckStatus;
    use super::*;

    fn serving(port: u16, fallback: Option<&str>) -> DnsServing {
        DnsServing::Serving {
            address: SocketAddr::from(([172, 30, 0, 1], port)),
            fallback: fallback.map(str::to_owned),
        }
    }

    #[test]
    fn port_53_is_ok_and_says_where() {
        let c = serving_check(&serving(53, None), "vm");
        assert_eq!(c.status, CheckStatus::Ok);
        assert!(c.detail.contains("172.30.0.1:53"), "{}", c.detail);
    }

    #[test]
    fn a_fallback_port_warns_with_the_query_and_the_fix() {
        let c = serving_check(
            &serving(5053, Some("port 53 needs root or CAP_NET_BIND_SERVICE")),
            "vm",
        );
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(
            c.detail.contains("dig -p 5053 @172.30.0.1 NAME.vm"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("CAP_NET_BIND_SERVICE"));
        assert!(c.fix.unwrap().contains("setcap cap_net_bind_service"));
    }

    #[test]
    fn a_failure_warns_and_names_the_reason() {
        let c = serving_check(
            &DnsServing::Failed {
                reason: "172.30.0.1:53 and :5053 are in use".into(),
            },
            "vm",
        );
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(c.detail.contains(":5053 are in use"));
    }

    #[test]
    fn without_resolved_the_fix_names_the_lines_to_add() {
        let c = host_resolver_check(
            &HostResolver::NoResolved,
            &serving(53, None),
            "banger0",
            "vm",
        );
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(c.detail.contains("no systemd-resolved"));
        let fix = c.fix.unwrap();
        assert!(fix.contains("`nameserver 172.30.0.1`"), "{fix}");
        assert!(fix.contains("`search vm`"), "{fix}");
        assert!(fix.contains("server=/vm/172.30.0.1"), "{fix}");
    }

    #[test]
    fn without_resolved_on_a_fallback_port_resolv_conf_is_not_offered() {
        let c = host_resolver_check(
            &HostResolver::NoResolved,
            &serving(5053, Some("x")),
            "banger0",
            "vm",
        );
        let fix = c.fix.unwrap();
        assert!(!fix.contains("resolv.conf"), "{fix}");
        assert!(fix.contains("server=/vm/172.30.0.1#5053"), "{fix}");
    }

    #[test]
    fn a_taken_port_leaves_resolved_alone_and_says_how_to_override() {
        let c = host_resolver_check(
            &HostResolver::ResolvedLeftAlone,
            &serving(5053, Some("in use")),
            "banger0",
            "vm",
        );
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(
            c.detail
                .contains("another program holds port 53 on 172.30.0.1")
        );
        assert!(c.fix.unwrap().ends_with(
            "sudo resolvectl dns banger0 172.30.0.1:5053 && sudo resolvectl domain banger0 ~vm"
        ));
    }

    #[test]
    fn resolved_configured_or_failed() {
        let ok = host_resolver_check(
            &HostResolver::ResolvedConfigured,
            &serving(53, None),
            "banger0",
            "vm",
        );
        assert_eq!(ok.status, CheckStatus::Ok);
        assert!(ok.detail.contains("*.vm to 172.30.0.1"));
        let failed = host_resolver_check(
            &HostResolver::ResolvedFailed("Access denied".into()),
            &serving(5053, Some("x")),
            "banger0",
            "vm",
        );
        assert_eq!(failed.status, CheckStatus::Warn);
        assert_eq!(
            failed.fix.unwrap(),
            "sudo resolvectl dns banger0 172.30.0.1:5053 && sudo resolvectl domain banger0 ~vm"
        );
    }
}

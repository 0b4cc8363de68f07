//! VM names: bangerd's DNS server on the bridge's host address ([`answer`] says what it
//! answers), started when the bridge comes up (the first VM start, or a daemon start that finds
//! the bridge) and stopped with the daemon; the host resolver's per-link DNS through
//! systemd-resolved when it runs; and what a new VM's `/etc/resolv.conf` names.
//!
//! Port 53 needs root or CAP_NET_BIND_SERVICE and may be taken by another server on the bridge
//! address; then bangerd serves on `[dns] fallback_port` instead and new guests get the host's
//! resolvers (a guest's resolv.conf cannot name a port), so no guest is ever pointed at a
//! server that does not answer. A failure to bind at all leaves VMs running without names.
//! The doctor reports which of these holds.

pub mod answer;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use banger_host::CommandRunner;
use banger_host::doctor::dns::{DnsServing, HostResolver};
use banger_host::network::{NetConfig, resolved};
use hickory_server::Server;

use crate::Daemon;
use crate::config::DnsConfig;
use answer::{Handler, ResolvConf, Responder, VmNames, Zone};

/// How long a TCP client may stay silent before its connection is closed.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the host's resolvers are listed.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What a new VM's `/etc/resolv.conf` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestResolver {
    pub nameservers: Vec<Ipv4Addr>,
    pub search: Vec<String>,
}

/// The DNS service, one per daemon.
pub struct Dns {
    config: DnsConfig,
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct State {
    serving: DnsServing,
    /// Dropping it ends its tasks and closes its sockets.
    server: Option<Server<Handler>>,
    /// Whether banger set the bridge's per-link DNS in systemd-resolved, or why not.
    resolver: Option<HostResolver>,
}

impl Dns {
    pub fn new(config: &DnsConfig, runtime: tokio::runtime::Handle) -> Dns {
        Dns {
            config: config.clone(),
            runtime,
            state: Mutex::new(State {
                serving: if config.enabled {
                    DnsServing::NotStarted
                } else {
                    DnsServing::Disabled
                },
                server: None,
                resolver: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    /// What the server is doing, for the doctor.
    pub fn serving(&self) -> DnsServing {
        self.lock().serving.clone()
    }

    /// How the host's resolver stands, for the doctor.
    pub fn host_resolver(&self) -> HostResolver {
        self.lock().resolver.clone().unwrap_or_else(|| {
            if resolved::resolved_running(Path::new("/")) {
                HostResolver::ResolvedPending
            } else {
                HostResolver::NoResolved
            }
        })
    }

    /// Starts serving names on the bridge's host address, unless it already does (or names are
    /// off): port 53, else the fallback port. Then, when systemd-resolved runs, points the
    /// bridge's per-link DNS at it. Never fails: what went wrong is logged and kept for the
    /// doctor. `d` is only looked at (its store, for the names) and never kept alive by the
    /// server.
    pub fn bridge_up(&self, d: &Arc<Daemon>) {
        if !d.machines.runner.is_real() {
            // A daemon on a fake host (tests) has no bridge to serve on.
            return;
        }
        let mut state = self.lock();
        if !matches!(
            state.serving,
            DnsServing::NotStarted | DnsServing::Failed { .. }
        ) {
            return;
        }
        let net = &d.machines.net;
        let host = net.host_address;
        let Bound {
            udp,
            tcp,
            fallback,
            port_taken,
        } = match bind(host, 53, self.config.fallback_port) {
            Ok(bound) => bound,
            Err(reason) => {
                tracing::warn!(%reason, "not serving VM names");
                state.serving = DnsServing::Failed { reason };
                return;
            }
        };
        let address = udp.local_addr().unwrap_or(SocketAddr::from((host, 53)));
        let responder = match Zone::new(&self.config.domain, host, net.prefix_len) {
            Ok(zone) => Responder {
                zone,
                names: Arc::new(StoreNames(Arc::downgrade(d))),
                upstreams: Arc::new(ResolvConf {
                    path: PathBuf::from(RESOLV_CONF),
                    exclude: host,
                }),
                timeout: answer::UPSTREAM_TIMEOUT,
            },
            Err(reason) => {
                state.serving = DnsServing::Failed { reason };
                return;
            }
        };
        let server = {
            let _runtime = self.runtime.enter();
            let udp = udp
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UdpSocket::from_std(udp));
            let tcp = tcp
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(tcp));
            match (udp, tcp) {
                (Ok(udp), Ok(tcp)) => {
                    let mut server = Server::with_access(
                        Handler(Arc::new(responder)),
                        [],
                        clients(host, net.prefix_len),
                    );
                    server.register_socket(udp);
                    server.register_listener(tcp, TCP_TIMEOUT, 64);
                    server
                }
                (Err(e), _) | (_, Err(e)) => {
                    state.serving = DnsServing::Failed {
                        reason: format!("cannot use the sockets bound on {address}: {e}"),
                    };
                    return;
                }
            }
        };
        tracing::info!(%address, domain = %self.config.domain, fallback = ?fallback, "serving VM names");
        state.server = Some(server);
        state.serving = DnsServing::Serving { address, fallback };
        state.resolver = Some(if port_taken {
            // Whatever holds port 53 there (another bangerd on the same bridge, a dnsmasq) may
            // be what the host's resolver already asks: its settings are not banger's to change.
            left_alone(Path::new("/"))
        } else {
            link_host_resolver(
                &*d.machines.runner,
                net,
                address,
                &self.config.domain,
                Path::new("/"),
            )
        });
    }

    /// Stops serving and takes the bridge's per-link DNS away again (when banger set it).
    pub fn stop(&self, runner: &dyn CommandRunner, net: &NetConfig) {
        let mut state = self.lock();
        let Some(server) = state.server.take() else {
            return;
        };
        server.shutdown_token().cancel();
        drop(server);
        if state.resolver == Some(HostResolver::ResolvedConfigured)
            && let Err(e) = resolved::revert_link_dns(runner, net)
        {
            tracing::warn!(error = %banger_vmm::error_chain(&e), "cannot revert the bridge's DNS in systemd-resolved");
        }
        state.resolver = None;
        state.serving = DnsServing::NotStarted;
    }

    /// What a VM created now gets in its `/etc/resolv.conf`: bangerd on the bridge with the
    /// search domain when it answers (or will, once the bridge is up) on port 53; otherwise
    /// `host_dns`, the host's own resolvers.
    pub fn guest_resolver(
        &self,
        host_address: Ipv4Addr,
        host_dns: impl FnOnce() -> Vec<Ipv4Addr>,
    ) -> GuestResolver {
        let ours = match &self.lock().serving {
            DnsServing::Serving { address, .. } => address.port() == 53,
            DnsServing::NotStarted => may_bind_port_53(Path::new("/")),
            DnsServing::Disabled | DnsServing::Failed { .. } => false,
        };
        if ours {
            GuestResolver {
                nameservers: vec![host_address],
                search: vec![self.config.domain.clone()],
            }
        } else {
            GuestResolver {
                nameservers: host_dns(),
                search: Vec::new(),
            }
        }
    }
}

/// At daemon start: serves names at once when the bridge already has the host address (a
/// previous daemon's VMs may be running on it).
pub fn serve_if_bridge_up(d: &Arc<Daemon>) {
    let m = &d.machines;
    if !m.runner.is_real() {
        return;
    }
    let up = m.links.list(&*m.runner).is_ok_and(|links| {
        links.iter().any(|l| {
            l.name == m.net.bridge && l.ipv4.iter().any(|(addr, _)| *addr == m.net.host_address)
        })
    });
    if up {
        d.dns.bridge_up(d);
    }
}

/// The host's resolver when banger does not touch it because port 53 on the bridge address
/// belongs to another program.
fn left_alone(root: &Path) -> HostResolver {
    if resolved::resolved_running(root) {
        HostResolver::ResolvedLeftAlone
    } else {
        HostResolver::NoResolved
    }
}

/// Sets the bridge's per-link DNS when systemd-resolved runs under `root`.
fn link_host_resolver(
    runner: &dyn CommandRunner,
    net: &NetConfig,
    address: SocketAddr,
    domain: &str,
    root: &Path,
) -> HostResolver {
    if !runner.is_real() && root == Path::new("/") {
        // A daemon on a fake runner (tests) leaves the host's resolver alone.
        return HostResolver::NoResolved;
    }
    if !resolved::resolved_running(root) {
        return HostResolver::NoResolved;
    }
    let SocketAddr::V4(v4) = address else {
        return HostResolver::NoResolved;
    };
    match resolved::set_link_dns(runner, net, *v4.ip(), v4.port(), domain) {
        Ok(()) => HostResolver::ResolvedConfigured,
        Err(e) => {
            let error = banger_vmm::error_chain(&e);
            tracing::warn!(%error, "cannot route VM names through systemd-resolved");
            HostResolver::ResolvedFailed(error)
        }
    }
}

/// Who may ask: the VMs' subnet (the host itself asks from its bridge address) and loopback.
/// Anyone else who routes to the bridge address (a neighbour on the host's LAN) is turned
/// away, so bangerd never forwards for other machines.
fn clients(host: Ipv4Addr, prefix_len: u8) -> Vec<ipnet::IpNet> {
    let mut allowed = vec![ipnet::IpNet::V4(
        ipnet::Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("a valid prefix"),
    )];
    if let Ok(subnet) = ipnet::Ipv4Net::new(host, prefix_len) {
        allowed.push(ipnet::IpNet::V4(subnet.trunc()));
    }
    allowed
}

/// UDP and TCP sockets on `host:port`, else on `host:fallback` with the reason `port` was not
/// had; both protocols or neither.
fn bind(host: Ipv4Addr, port: u16, fallback: u16) -> Result<Bound, String> {
    let (why, taken) = match bind_both(SocketAddr::from((host, port))) {
        Ok((udp, tcp)) => {
            return Ok(Bound {
                udp,
                tcp,
                fallback: None,
                port_taken: false,
            });
        }
        Err(e) => (
            refusal(host, port, &e),
            e.kind() == io::ErrorKind::AddrInUse,
        ),
    };
    match bind_both(SocketAddr::from((host, fallback))) {
        Ok((udp, tcp)) => Ok(Bound {
            udp,
            tcp,
            fallback: Some(why),
            port_taken: taken,
        }),
        Err(e) => Err(format!("{why}, and {}", refusal(host, fallback, &e))),
    }
}

/// What [`bind`] got.
struct Bound {
    udp: UdpSocket,
    tcp: TcpListener,
    /// Why the preferred port was not had.
    fallback: Option<String>,
    /// Another program holds the preferred port on the bridge address.
    port_taken: bool,
}

fn bind_both(address: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::bind(address)?;
    let tcp = TcpListener::bind(address)?;
    Ok((udp, tcp))
}

/// Why `host:port` could not be had, in words a user can act on.
fn refusal(host: Ipv4Addr, port: u16, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            format!("port {port} needs root or CAP_NET_BIND_SERVICE, which bangerd does not have")
        }
        io::ErrorKind::AddrInUse => format!(
            "{host}:{port} is in use by another program (see `sudo ss -lunpt 'sport = :{port}'`)"
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!("{host} is not on any interface (is the bridge up?)")
        }
        _ => format!("cannot listen on {host}:{port}: {e}"),
    }
}

/// Whether this process may bind port 53: root, CAP_NET_BIND_SERVICE in its effective set, or
/// a host that lets anyone bind low ports (`net.ipv4.ip_unprivileged_port_start`).
fn may_bind_port_53(root: &Path) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let unprivileged_start = read("proc/sys/net/ipv4/ip_unprivileged_port_start")
        .trim()
        .parse::<u32>()
        .unwrap_or(1024);
    unprivileged_start <= 53 || has_net_bind_service(&read("proc/self/status"))
}

/// Whether `CapEff` in a `/proc/PID/status` text holds CAP_NET_BIND_SERVICE (bit 10).
fn has_net_bind_service(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 10) != 0)
}

/// The VMs' names and addresses, asked of the daemon's store at each query.
struct StoreNames(Weak<Daemon>);

impl VmNames for StoreNames {
    fn address_of(&self, name: &str) -> Option<Ipv4Addr> {
        let d = self.0.upgrade()?;
        d.store.vm_ip_by_name(name).ok()??.parse().ok()
    }

    fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
        let d = self.0.upgrade()?;
        d.store.vm_name_by_ip(&ip.to_string()).ok()?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::runner::FakeRunner;

    #[test]
    fn a_taken_port_falls_back_and_says_why() {
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let free = {
            let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let bound = bind(Ipv4Addr::LOCALHOST, port, free).unwrap();
        assert_eq!(bound.udp.local_addr().unwrap().port(), free);
        assert_eq!(bound.tcp.local_addr().unwrap().port(), free);
        assert!(bound.port_taken);
        assert_eq!(
            bound.fallback.unwrap(),
            format!(
                "127.0.0.1:{port} is in use by another program (see `sudo ss -lunpt 'sport = :{port}'`)"
            )
        );
    }

    #[test]
    fn both_ports_taken_is_an_error_naming_both() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let (pa, pb) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        let err = bind(Ipv4Addr::LOCALHOST, pa, pb).err().unwrap();
        assert!(err.contains(&format!("127.0.0.1:{pa} is in use")), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{pb} is in use")), "{err}");
        // The UDP half of the fallback, bound before TCP failed, was let go.
        UdpSocket::bind(("127.0.0.1", pb)).unwrap();
    }

    #[test]
    fn refusals_say_what_to_do() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            refusal(Ipv4Addr::new(172, 30, 0, 1), 53, &denied),
            "port 53 needs root or CAP_NET_BIND_SERVICE, which bangerd does not have"
        );
        let gone = io::Error::from(io::ErrorKind::AddrNotAvailable);
        assert!(refusal(Ipv4Addr::new(172, 30, 0, 1), 53, &gone).contains("bridge up"));
    }

    #[test]
    fn only_the_subnet_and_loopback_may_ask() {
        let allowed: Vec<String> = clients(Ipv4Addr::new(172, 30, 0, 1), 24)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["127.0.0.0/8", "172.30.0.0/24"]);
    }

    #[test]
    fn capabilities_are_read_from_the_status() {
        assert!(has_net_bind_service(
            "Name:\tx\nCapEff:\t0000000000000400\n"
        ));
        assert!(has_net_bind_service("CapEff:\t000001ffffffffff\n"));
        assert!(!has_net_bind_service("CapEff:\t0000000000000000\n"));
        assert!(!has_net_bind_service("CapPrm:\t0000000000000400\n"));
    }

    #[test]
    fn low_ports_for_everyone_count_as_permission() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("proc/sys/net/ipv4");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        std::fs::write(root.path().join("proc/self/status"), "CapEff:\t0\n").unwrap();
        std::fs::write(sys.join("ip_unprivileged_port_start"), "1024\n").unwrap();
        let as_root = rustix::process::geteuid().is_root();
        assert_eq!(may_bind_port_53(root.path()), as_root);
        std::fs::write(sys.join("ip_unprivileged_port_start"), "0\n").unwrap();
        assert!(may_bind_port_53(root.path()));
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn guests_get_bangerd_only_when_it_answers_on_53() {
        let rt = runtime();
        let host = Ipv4Addr::new(172, 30, 0, 1);
        let upstream = || vec![Ipv4Addr::new(10, 0, 0, 53)];
        let ours = GuestResolver {
            nameservers: vec![host],
            search: vec!["vm".into()],
        };
        let theirs = GuestResolver {
            nameservers: vec![Ipv4Addr::new(10, 0, 0, 53)],
            search: vec![],
        };
        let dns = Dns::new(&DnsConfig::default(), rt.handle().clone());
        let set = |serving: DnsServing| dns.lock().serving = serving;
        set(DnsServing::Serving {
            address: SocketAddr::from((host, 53)),
            fallback: None,
        });
        assert_eq!(dns.guest_resolver(host, upstream), ours);
        set(DnsServing::Serving {
            address: SocketAddr::from((host, 5053)),
            fallback: Some("x".into()),
        });
        assert_eq!(dns.guest_resolver(host, upstream), theirs);
        set(DnsServing::Failed { reason: "x".into() });
        assert_eq!(dns.guest_resolver(host, upstream), theirs);
        let off = Dns::new(
            &DnsConfig {
                enabled: false,
                ..DnsConfig::default()
            },
            rt.handle().clone(),
        );
        assert_eq!(off.serving(), DnsServing::Disabled);
        assert_eq!(off.guest_resolver(host, upstream), theirs);
    }

    /// The default bridge and subnet of a root daemon.
    fn net_config() -> NetConfig {
        NetConfig {
            bridge: "banger0".into(),
            host_address: Ipv4Addr::new(172, 30, 0, 1),
            prefix_len: 24,
            privilege: banger_host::network::Privilege::Root,
            tap_owner: 0,
        }
    }

    /// A daemon that stops takes the bridge's per-link DNS away when it set it, and leaves
    /// alone what it did not set.
    #[test]
    fn stopping_reverts_the_bridges_resolved_settings_only_when_banger_set_them() {
        let rt = runtime();
        let cfg = net_config();
        for (resolver, reverted) in [
            (
                HostResolver::ResolvedConfigured,
                vec!["resolvectl revert banger0"],
            ),
            (HostResolver::ResolvedLeftAlone, vec![]),
            (HostResolver::NoResolved, vec![]),
            (HostResolver::ResolvedFailed("denied".into()), vec![]),
        ] {
            let dns = Dns::new(&DnsConfig::default(), rt.handle().clone());
            {
                let _runtime = rt.enter();
                let responder = Responder {
                    zone: Zone::new("vm", cfg.host_address, cfg.prefix_len).unwrap(),
                    names: Arc::new(StoreNames(Weak::new())),
                    upstreams: Arc::new(Vec::<SocketAddr>::new()),
                    timeout: answer::UPSTREAM_TIMEOUT,
                };
                let mut state = dns.lock();
                state.server = Some(Server::with_access(
                    Handler(Arc::new(responder)),
                    [],
                    clients(cfg.host_address, cfg.prefix_len),
                ));
                state.serving = DnsServing::Serving {
                    address: SocketAddr::from((cfg.host_address, 53)),
                    fallback: None,
                };
                state.resolver = Some(resolver.clone());
            }
            let fake = FakeRunner::new();
            dns.stop(&fake, &cfg);
            assert_eq!(fake.calls(), reverted, "{resolver:?}");
            assert_eq!(dns.serving(), DnsServing::NotStarted);
            // A second stop has nothing left to undo.
            dns.stop(&fake, &cfg);
            assert_eq!(fake.calls(), reverted, "{resolver:?}");
        }
    }

    #[test]
    fn resolved_is_configured_only_where_it_runs() {
        let cfg = net_config();
        let address = SocketAddr::from((cfg.host_address, 53));
        let root = tempfile::tempdir().unwrap();
        let fake = FakeRunner::new();
        assert_eq!(
            link_host_resolver(&fake, &cfg, address, "vm", root.path()),
            HostResolver::NoResolved
        );
        assert!(fake.calls().is_empty());

        let socket = root.path().join(resolved::RESOLVED_SOCKET);
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        std::fs::write(&socket, "").unwrap();
        assert_eq!(
            link_host_resolver(&fake, &cfg, address, "vm", root.path()),
            HostResolver::ResolvedConfigured
        );
        assert_eq!(
            fake.calls(),
            [
                "resolvectl dns banger0 172.30.0.1",
                "resolvectl domain banger0 '~vm'"
            ]
        );

        // Port 53 held by another program: its settings stay as they are, no command runs.
        assert_eq!(left_alone(root.path()), HostResolver::ResolvedLeftAlone);
        assert_eq!(
            left_alone(tempfile::tempdir().unwrap().path()),
            HostResolver::NoResolved
        );

        let failing = FakeRunner::new().fail_nth(
            banger_host::runner::Matcher::any(),
            1,
            "Failed to set DNS configuration: Access denied",
        );
        match link_host_resolver(&failing, &cfg, address, "vm", root.path()) {
            HostResolver::ResolvedFailed(e) => assert!(e.contains("Access denied"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}

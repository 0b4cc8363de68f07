//! What a VM's page shows of its guest: the end of its console (and the JSON the page polls),
//! the agent's health and the ports the guest listens on, each checked for reach from the host.
//! Guest text is untrusted: it is cleaned and shortened here before a template sees it.

use askama::Template;
use std::net::{IpAddr, Ipv4Addr};

use banger_agent_protocol::protocol::{Health, ListeningPort, Transport};
use banger_api::Vm;
use serde::Serialize;

use super::format::{duration, vm_href};

/// The end of a VM's guest console, as its page shows it.
#[derive(Debug, Clone)]
pub struct ConsoleView {
    /// The last lines, control characters removed (askama escapes the rest).
    pub text: String,
    /// What the text is ("The last 40 lines of the guest's console.").
    pub note: String,
    /// Where the page's script polls for newer lines; `None` when nothing runs that could
    /// write any.
    pub live_href: Option<String>,
    /// Why the log could not be read.
    pub error: Option<String>,
}

/// How many console lines the VM page shows.
pub const CONSOLE_LINES: usize = 40;

/// `line` without terminal escape sequences and control characters: a guest's console is
/// written for a terminal, and a browser shows those as boxes or not at all.
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI (`ESC [ params final`) or a two-character escape.
            if chars.next_if_eq(&'[').is_some() {
                for p in chars.by_ref() {
                    if ('@'..='~').contains(&p) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// What the console section shows; the page's script writes the same as lines arrive.
pub(super) fn console_note(lines: usize, live: bool) -> String {
    let following = if live { ", following it" } else { "" };
    match lines {
        0 => "The guest has written nothing to its console yet.".to_owned(),
        1 => format!("The last line of the guest's console{following}."),
        n => format!("The last {n} lines of the guest's console{following}."),
    }
}

/// The JSON the VM page's script polls: the VM's state (a change reloads the page) and the
/// console's last lines.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleJson {
    pub state: &'static str,
    pub lines: Vec<String>,
    /// The note above the lines.
    pub note: String,
    pub error: Option<String>,
}

impl ConsoleJson {
    pub fn new(vm: &Vm, tail: Result<Vec<String>, String>) -> ConsoleJson {
        let (lines, error) = match tail {
            Ok(lines) => (lines.iter().map(|l| printable(l)).collect(), None),
            Err(e) => (Vec::new(), Some(e)),
        };
        ConsoleJson {
            state: vm.state.as_str(),
            note: console_note(lines.len(), true),
            lines,
            error,
        }
    }
}

/// Text that came from inside a guest (process names, its hostname): untrusted, so it is
/// stripped of control characters and cut to `max` characters before askama escapes it.
pub(super) fn guest_text(text: &str, max: usize) -> String {
    let clean = printable(text);
    match clean.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean,
    }
}

/// What the guest agent says about itself.
#[derive(Debug, Clone)]
pub struct HealthView {
    /// `ready`, or `not ready` while the agent says it is still coming up.
    pub state: &'static str,
    /// A class of the state badge.
    pub class: &'static str,
    pub version: String,
    /// Set when the agent is another version than bangerd ("bangerd is 0.2.0").
    pub version_note: Option<String>,
    pub hostname: String,
    pub uptime: String,
    /// Boot milestones as the guest saw them: name and time since its kernel started.
    pub boot: Vec<(String, String)>,
    pub listeners: String,
}

impl HealthView {
    pub fn new(health: &Health, daemon_version: &str) -> HealthView {
        let version = guest_text(&health.version, 40);
        HealthView {
            state: if health.ready { "ready" } else { "not ready" },
            class: if health.ready { "running" } else { "starting" },
            version_note: (version != daemon_version)
                .then(|| format!("bangerd is {daemon_version}")),
            version,
            hostname: guest_text(&health.hostname, 64),
            uptime: duration(health.uptime_ms),
            boot: health
                .boot
                .iter()
                .take(32)
                .map(|stage| (guest_text(&stage.name, 64), duration(stage.at_ms)))
                .collect(),
            listeners: health
                .listeners
                .iter()
                .take(8)
                .map(|l| guest_text(l, 64))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// Where a listening socket can be reached from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every address of the guest (`0.0.0.0`, `::`), the VM's own IP among them.
    Everywhere,
    /// The VM's IP, which the host reaches over banger's bridge.
    VmIp,
    /// Loopback only: programs inside the guest alone.
    Loopback,
    /// Another of the guest's addresses (a container bridge, say).
    Other,
}

impl Reach {
    pub fn of(address: IpAddr, vm_ip: Option<Ipv4Addr>) -> Reach {
        let address = address.to_canonical();
        if address.is_unspecified() {
            Reach::Everywhere
        } else if address.is_loopback() {
            Reach::Loopback
        } else if vm_ip.is_some_and(|ip| address == IpAddr::V4(ip)) {
            Reach::VmIp
        } else {
            Reach::Other
        }
    }
}

/// One listening socket of the guest.
#[derive(Debug, Clone)]
pub struct PortRow {
    pub port: u16,
    pub protocol: &'static str,
    pub address: String,
    /// `nginx (pid 412)`, or empty when the agent could not tell.
    pub process: String,
    /// `http://VM-IP:PORT/` for a TCP port the host can reach.
    pub href: Option<String>,
    /// Why there is no link.
    pub note: &'static str,
}

impl PortRow {
    pub fn new(port: &ListeningPort, vm_ip: Option<Ipv4Addr>) -> PortRow {
        let reach = Reach::of(port.address, vm_ip);
        let reachable = matches!(reach, Reach::Everywhere | Reach::VmIp);
        let (href, note) = match (reach, port.protocol, vm_ip) {
            (_, Transport::Tcp, Some(ip)) if reachable => {
                (Some(format!("http://{ip}:{}/", port.port)), "")
            }
            (_, Transport::Udp, _) if reachable => {
                (None, "UDP: reachable from the host, not a web page")
            }
            (Reach::Loopback, _, _) => (None, "loopback only: not reachable from the host"),
            _ => (
                None,
                "bound to another of the guest's addresses: not reachable from the host",
            ),
        };
        let process = match (&port.process, port.pid) {
            (Some(name), Some(pid)) => format!("{} (pid {pid})", guest_text(name, 32)),
            (Some(name), None) => guest_text(name, 32),
            (None, Some(pid)) => format!("pid {pid}"),
            (None, None) => String::new(),
        };
        PortRow {
            port: port.port,
            protocol: match port.protocol {
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
            },
            address: port.address.to_canonical().to_string(),
            process,
            href,
            note,
        }
    }
}

/// Most listening sockets the VM page lists.
pub const MAX_PORTS: usize = 200;

/// A running VM's guest, as its agent answered the VM page (within a short deadline).
#[derive(Debug, Clone)]
pub struct GuestView {
    pub vm_href: String,
    /// What the page's script fetches to refresh this section.
    pub refresh_href: String,
    /// `None` when the agent did not answer; `unreachable` says why.
    pub health: Option<HealthView>,
    pub unreachable: Option<String>,
    /// TCP before UDP, by port.
    pub ports: Vec<PortRow>,
    /// Why the ports could not be listed (when the agent answered about its health).
    pub ports_error: Option<String>,
    /// Sockets beyond [`MAX_PORTS`], not listed.
    pub ports_omitted: usize,
}

impl GuestView {
    pub fn new(
        vm: &Vm,
        health: Result<Health, String>,
        ports: Result<Vec<ListeningPort>, String>,
        daemon_version: &str,
    ) -> GuestView {
        let vm_ip: Option<Ipv4Addr> = vm.network.ip.parse().ok();
        let (health, unreachable) = match health {
            Ok(h) => (Some(HealthView::new(&h, daemon_version)), None),
            Err(e) => (None, Some(e)),
        };
        let (mut ports, ports_error) = match ports {
            Ok(list) => (list, None),
            // One message is enough when the agent answers nothing at all.
            Err(_) if unreachable.is_some() => (Vec::new(), None),
            Err(e) => (Vec::new(), Some(e)),
        };
        ports.sort_by_key(|p| (p.protocol == Transport::Udp, p.port, p.address));
        ports.dedup_by_key(|p| (p.protocol, p.port, p.address));
        let omitted = ports.len().saturating_sub(MAX_PORTS);
        GuestView {
            vm_href: vm_href(&vm.name),
            refresh_href: format!("{}/guest", vm_href(&vm.name)),
            health,
            unreachable,
            ports: ports
                .iter()
                .take(MAX_PORTS)
                .map(|p| PortRow::new(p, vm_ip))
                .collect(),
            ports_error,
            ports_omitted: omitted,
        }
    }
}

/// The guest section alone: what `/vms/{name}/guest` answers for the page's script to swap in.
#[derive(Template)]
#[template(source = "{% include \"vm_guest.html\" %}", ext = "html")]
pub struct GuestSection {
    pub guest: GuestView,
}

//! What the console's pages show: view models built from the API's types (sizes, times and
//! links already formatted, so templates stay dumb) and the askama templates that render them.
//! Everything here is pure, which is what the snapshot tests render.
//!
//! Every value reaches HTML through askama's escaping; links are built here with their path
//! segments and query values percent-encoded, so a VM or image name can never leave its
//! attribute or its segment.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use std::net::{IpAddr, Ipv4Addr};

use banger_agent_protocol::protocol::{Health, ListeningPort, Transport};
use banger_api::{
    Capacity, Image, Operation, OperationKind, OperationState, Stage, StageState, Timestamp, Vm,
    VmRuntime, VmState, validate,
};
use serde::Serialize;

use super::privilege::Problem;

/// What every page around its content needs.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// The session's CSRF token; every form carries it. Empty on pages shown without a session.
    pub csrf: String,
    /// The active navigation entry: `dashboard`, `vms`, `images`, `snapshots` or `operations`.
    pub nav: &'static str,
    /// A one-line message after a redirect ("Deleted VM dev.").
    pub notice: Option<String>,
    /// Why banger's privileged steps cannot run (`sudo -n` refused), shown above every page.
    pub banner: Option<Problem>,
}

impl Chrome {
    pub fn signed_in(&self) -> bool {
        !self.csrf.is_empty()
    }
}

/// A link with its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub label: String,
    pub href: String,
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved characters stay), as
/// the API's client does.
pub fn encode(text: &str) -> String {
    banger_api::client::escape(text)
}

/// `path?k=v&...`, leaving out empty values.
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

pub fn vm_href(name: &str) -> String {
    format!("/vms/{}", encode(name))
}

pub fn image_href(name: &str) -> String {
    format!("/images/{}", encode(name))
}

pub fn operation_href(id: &str) -> String {
    format!("/operations/{}", encode(id))
}

/// `2025-11-23 12:13:20 UTC`.
pub fn time(t: Timestamp) -> String {
    let text = t.to_string();
    match (text.get(..10), text.get(11..19)) {
        (Some(date), Some(clock)) => format!("{date} {clock} UTC"),
        _ => text,
    }
}

/// `35ms`, `1.4s`, `12s`, `3m 5s`: a VM's start stages take milliseconds
/// ([`banger_api::time::format_duration`], as the CLI and the TUI write them).
pub fn duration(ms: u64) -> String {
    banger_api::time::format_duration(std::time::Duration::from_millis(ms))
}

pub fn size(bytes: u64) -> String {
    validate::format_size(bytes)
}

/// A service's hint, as far as it makes sense in a browser. Hints are written for the CLI;
/// their parts (separated by `; `) naming its flags or commands (`--vcpus`, `banger vm list`)
/// would only confuse here, so only the others are kept.
pub fn console_hint(hint: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = hint?
        .split("; ")
        .filter(|part| !part.contains("--") && !part.contains("`banger"))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

fn percent(part: u64, whole: u64) -> u32 {
    part.saturating_mul(100)
        .checked_div(whole)
        .map_or(0, |p| p.min(100) as u32)
}

/// One capacity gauge of the dashboard.
#[derive(Debug, Clone)]
pub struct CapacityCard {
    pub title: &'static str,
    /// The headline figure, e.g. "2 of 8 vCPUs reserved (limit 32)".
    pub figure: String,
    /// Fill of the bar, 0-100: of admission control's limit when there is one, of the host's
    /// total otherwise (over-commit shows full; the figure tells the truth).
    pub percent: u32,
    pub notes: Vec<String>,
}

/// The dashboard's gauges: the figures of `GET /v1/capacity`, as the CLI and TUI show them.
pub fn capacity_cards(c: &Capacity) -> Vec<CapacityCard> {
    let disk_used = c
        .disk
        .fs_total_bytes
        .saturating_sub(c.disk.fs_available_bytes);
    let admission_note = |limited: bool| {
        if limited {
            "a start beyond the limit is refused".to_owned()
        } else {
            "admission control is off: starts are not limited".to_owned()
        }
    };
    vec![
        CapacityCard {
            title: "CPU",
            figure: match c.cpu.vcpu_limit {
                Some(limit) => format!(
                    "{} of {} vCPUs reserved (limit {limit})",
                    c.cpu.reserved_vcpus, c.cpu.host_cpus
                ),
                None => format!(
                    "{} of {} vCPUs reserved",
                    c.cpu.reserved_vcpus, c.cpu.host_cpus
                ),
            },
            percent: percent(
                c.cpu.reserved_vcpus.into(),
                c.cpu.vcpu_limit.unwrap_or(c.cpu.host_cpus).into(),
            ),
            notes: vec![
                format!(
                    "{} VM{}, {} running",
                    c.vms_total,
                    if c.vms_total == 1 { "" } else { "s" },
                    c.vms_running
                ),
                admission_note(c.cpu.vcpu_limit.is_some()),
            ],
        },
        CapacityCard {
            title: "Memory",
            figure: match c.memory.limit_bytes {
                Some(limit) => format!(
                    "{} of {} reserved (limit {})",
                    size(c.memory.reserved_bytes),
                    size(c.memory.host_bytes),
                    size(limit)
                ),
                None => format!(
                    "{} of {} reserved",
                    size(c.memory.reserved_bytes),
                    size(c.memory.host_bytes)
                ),
            },
            percent: percent(
                c.memory.reserved_bytes,
                c.memory.limit_bytes.unwrap_or(c.memory.host_bytes),
            ),
            notes: vec![
                format!("{} available on the host", size(c.memory.available_bytes)),
                admission_note(c.memory.limit_bytes.is_some()),
            ],
        },
        CapacityCard {
            title: "Disk",
            figure: format!(
                "{} of {} used",
                size(disk_used),
                size(c.disk.fs_total_bytes)
            ),
            percent: percent(disk_used, c.disk.fs_total_bytes),
            notes: vec![
                format!(
                    "VM disks {}, images {}, snapshots {} (allocated)",
                    size(c.disk.vm_allocated_bytes),
                    size(c.disk.image_allocated_bytes),
                    size(c.disk.snapshot_allocated_bytes)
                ),
                format!(
                    "{} free in {}",
                    size(c.disk.fs_available_bytes),
                    c.disk.path
                ),
            ],
        },
    ]
}

/// A VM as lists and its page show it.
#[derive(Debug, Clone)]
pub struct VmRow {
    pub name: String,
    pub href: String,
    pub state: &'static str,
    pub image: String,
    pub image_href: String,
    pub vcpus: u32,
    pub memory: String,
    pub disk: String,
    pub work_disk: String,
    pub ip: String,
    pub created: String,
}

impl From<&Vm> for VmRow {
    fn from(vm: &Vm) -> Self {
        VmRow {
            name: vm.name.clone(),
            href: vm_href(&vm.name),
            state: vm.state.as_str(),
            image: vm.image.name.clone(),
            image_href: image_href(&vm.image.name),
            vcpus: vm.vcpus,
            memory: size(u64::from(vm.memory_mib) * validate::MIB),
            disk: size(vm.disk_bytes),
            work_disk: size(vm.work_disk_bytes),
            ip: vm.network.ip.clone(),
            created: time(vm.created_at),
        }
    }
}

/// An action offered on a VM's page: a button that posts the change at once (start, pause,
/// resume), or a link to a confirmation page that posts it (stop, restart, delete).
#[derive(Debug, Clone)]
pub struct VmAction {
    pub label: &'static str,
    pub href: String,
    /// `primary` for what the state invites, `danger` for destructive actions, `secondary`
    /// for the others.
    pub class: &'static str,
    /// A POST form with the CSRF token rather than a link.
    pub post: bool,
}

/// What may be done to `vm` in its state, in the order the page shows them. A VM being
/// started or stopped has none: its operation's Cancel (for a start) is the only control.
pub fn vm_actions(vm: &Vm) -> Vec<VmAction> {
    let href = vm_href(&vm.name);
    let post = |label, action: &str, class| VmAction {
        label,
        href: format!("{href}/{action}"),
        class,
        post: true,
    };
    let confirm = |label, action: &str, class| VmAction {
        label,
        href: format!("{href}/{action}"),
        class,
        post: false,
    };
    match vm.state {
        VmState::Stopped | VmState::Failed => vec![
            post("Start", "start", "primary"),
            confirm("Reset root…", "reset", "secondary"),
            confirm("Delete…", "delete", "danger"),
        ],
        VmState::Running => vec![
            confirm("Stop…", "stop", "secondary"),
            confirm("Restart…", "restart", "secondary"),
            post("Pause", "pause", "secondary"),
            confirm("Delete…", "delete", "danger"),
        ],
        VmState::Paused => vec![
            post("Resume", "resume", "primary"),
            confirm("Stop…", "stop", "secondary"),
            confirm("Restart…", "restart", "secondary"),
            confirm("Delete…", "delete", "danger"),
        ],
        VmState::Starting | VmState::Stopping => Vec::new(),
    }
}

/// A running VM's VMM, as its page shows it.
#[derive(Debug, Clone)]
pub struct RuntimeView {
    /// The backend actually running it (`firecracker`, `qemu`).
    pub backend: &'static str,
    pub pid: u32,
    pub tap: String,
    pub api_socket: String,
    pub up_since: String,
    /// How its VMM is confined, when it runs behind the jailer.
    pub jail: Option<JailView>,
    /// How a QEMU is confined: its uid and sandbox.
    pub qemu: Option<String>,
}

/// A jailed VMM's confinement, as the VM's page shows it.
#[derive(Debug, Clone)]
pub struct JailView {
    /// `uid 10012, gid 10012`.
    pub ids: String,
    pub chroot: String,
    /// The cgroup and its memory limit, or why there is none.
    pub cgroup: String,
}

impl From<&VmRuntime> for RuntimeView {
    fn from(r: &VmRuntime) -> Self {
        RuntimeView {
            backend: r.vmm.as_str(),
            pid: r.pid,
            tap: r.tap.clone(),
            api_socket: r.api_socket.clone(),
            up_since: time(r.started_at),
            qemu: r
                .qemu
                .as_deref()
                .map(banger_api::VmQemuConfinement::describe),
            jail: r.jail.as_deref().map(|j| JailView {
                ids: format!("uid {}, gid {}", j.uid, j.gid),
                chroot: j.chroot.clone(),
                cgroup: match (&j.cgroup, j.memory_max) {
                    (Some(cgroup), Some(max)) => match &j.cpu_max {
                        Some(cpu) => format!("{cgroup} (memory.max {}, cpu.max {cpu})", size(max)),
                        None => format!("{cgroup} (memory.max {})", size(max)),
                    },
                    (Some(cgroup), None) => cgroup.clone(),
                    (None, _) => "none (the host's cgroup v2 lacks the memory and cpu \
                                  controllers)"
                        .into(),
                },
            }),
        }
    }
}

/// One stage of a VM's last start, with how long it took.
#[derive(Debug, Clone)]
pub struct BootStage {
    pub name: String,
    pub state: &'static str,
    pub took: String,
    pub note: String,
}

/// The stage timings of a VM's last start (or restart) the daemon remembers.
#[derive(Debug, Clone)]
pub struct BootView {
    pub kind: &'static str,
    pub href: String,
    pub state: &'static str,
    pub started: String,
    /// From the request to the end, when it ended.
    pub took: Option<String>,
    pub stages: Vec<BootStage>,
}

impl From<&Operation> for BootView {
    fn from(op: &Operation) -> Self {
        BootView {
            kind: kind_label(op.kind),
            href: operation_href(&op.id),
            state: op_state(op.state),
            started: time(op.created_at),
            took: op
                .ended_at
                .map(|end| duration(op.created_at.until(end).as_millis() as u64)),
            stages: op
                .stages
                .iter()
                .map(|s| BootStage {
                    name: s.name.clone(),
                    state: stage_state(s.state),
                    took: match (s.started_at, s.ended_at) {
                        (Some(start), Some(end)) => duration(start.until(end).as_millis() as u64),
                        _ => String::new(),
                    },
                    note: s.message.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// The operations of VM `vm` among `ops`: those started on its name since it was created
/// (an older VM of the same name is another VM), newest first.
fn operations_of<'a>(vm: &Vm, ops: &'a [Operation]) -> Vec<&'a Operation> {
    let mut mine: Vec<&Operation> = ops
        .iter()
        .filter(|op| {
            matches!(
                op.kind,
                OperationKind::StartVm | OperationKind::StopVm | OperationKind::RestartVm
            ) && op.target == vm.name
                && op.created_at >= vm.created_at
        })
        .collect();
    mine.sort_by_key(|op| std::cmp::Reverse((op.created_at, op.version)));
    mine
}

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
fn console_note(lines: usize, live: bool) -> String {
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
fn guest_text(text: &str, max: usize) -> String {
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

/// An image as lists and its page show it.
#[derive(Debug, Clone)]
pub struct ImageRow {
    pub name: String,
    pub href: String,
    pub source: &'static str,
    pub distro: String,
    pub kernel_version: String,
    pub rootfs: String,
    pub allocated: String,
    pub created: String,
    /// Set for a retired image: what replaced it.
    pub retired: Option<String>,
}

impl From<&Image> for ImageRow {
    fn from(image: &Image) -> Self {
        let files = &image.files;
        let allocated = files.kernel.allocated_bytes
            + files.rootfs.allocated_bytes
            + files.initrd.as_ref().map_or(0, |f| f.allocated_bytes);
        ImageRow {
            name: image.name.clone(),
            href: image_href(&image.name),
            source: image.source.as_str(),
            distro: match (&image.manifest.distro, &image.manifest.suite) {
                (Some(d), Some(s)) => format!("{d} {s}"),
                (Some(d), None) => d.clone(),
                _ => String::new(),
            },
            kernel_version: image.manifest.kernel_version.clone().unwrap_or_default(),
            rootfs: size(files.rootfs.bytes),
            allocated: size(allocated),
            created: time(image.created_at),
            retired: image.retired.as_ref().map(|r| {
                let by = r
                    .replaced_by
                    .as_ref()
                    .map(|by| format!(", replaced by {}", by.name))
                    .unwrap_or_default();
                format!(
                    "retired {}{by}: was {}, kept while VMs or snapshots use it",
                    time(r.at),
                    r.name
                )
            }),
        }
    }
}

/// One file of an image's boot set.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub role: &'static str,
    pub path: String,
    pub size: String,
    pub allocated: String,
}

/// One stage of an operation; the polling endpoint sends these too.
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    pub name: String,
    pub state: &'static str,
    pub percent: u32,
    pub detail: String,
}

/// An operation as pages show it and `/operations/{id}/json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct OpView {
    pub id: String,
    pub href: String,
    pub json_href: String,
    pub cancel_href: String,
    pub kind: &'static str,
    pub target: String,
    /// The page of what the operation works on, when it has one (a VM; an image once
    /// registered).
    pub target_href: Option<String>,
    pub state: &'static str,
    pub running: bool,
    pub cancel_requested: bool,
    /// Overall progress, 0-100.
    pub percent: u32,
    /// What is happening now, e.g. "copy rootfs: 3M of 16M".
    pub current: String,
    pub stages: Vec<StageView>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub result: Option<Link>,
    pub created: String,
    pub ended: Option<String>,
}

fn kind_label(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::RegisterImage => "Register image",
        OperationKind::BootstrapImage => "Bootstrap image",
        OperationKind::ExportImage => "Export image",
        OperationKind::ImportImage => "Import image",
        OperationKind::StartVm => "Start VM",
        OperationKind::StopVm => "Stop VM",
        OperationKind::RestartVm => "Restart VM",
        OperationKind::PromoteImage => "Promote VM to image",
        OperationKind::BuildImage => "Build image",
    }
}

fn op_state(state: OperationState) -> &'static str {
    match state {
        OperationState::Running => "running",
        OperationState::Succeeded => "succeeded",
        OperationState::Failed => "failed",
        OperationState::Cancelled => "cancelled",
    }
}

fn stage_state(state: StageState) -> &'static str {
    match state {
        StageState::Pending => "pending",
        StageState::Running => "running",
        StageState::Done => "done",
        StageState::Failed => "failed",
        StageState::Skipped => "skipped",
        StageState::Cancelled => "cancelled",
    }
}

/// Fraction of a stage's work done, when it reports progress.
fn stage_fraction(stage: &Stage) -> Option<(u64, u64)> {
    stage
        .progress
        .as_ref()
        .filter(|p| p.total > 0)
        .map(|p| (p.done.min(p.total), p.total))
}

fn stage_view(stage: &Stage) -> StageView {
    let percent = match stage.state {
        StageState::Done => 100,
        StageState::Running => stage_fraction(stage).map_or(0, |(d, t)| percent(d, t)),
        _ => 0,
    };
    let mut detail = Vec::new();
    if stage.state == StageState::Running
        && let Some(p) = &stage.progress
    {
        detail.push(if p.unit == "bytes" {
            format!("{} of {}", size(p.done), size(p.total))
        } else {
            format!("{} of {} {}", p.done, p.total, p.unit)
        });
    }
    if let (Some(start), Some(end)) = (stage.started_at, stage.ended_at) {
        detail.push(duration(start.until(end).as_millis() as u64));
    }
    if let Some(message) = &stage.message {
        detail.push(message.clone());
    }
    StageView {
        name: stage.name.clone(),
        state: stage_state(stage.state),
        percent,
        detail: detail.join(", "),
    }
}

impl From<&Operation> for OpView {
    fn from(op: &Operation) -> Self {
        let counted: Vec<&Stage> = op
            .stages
            .iter()
            .filter(|s| s.state != StageState::Skipped)
            .collect();
        let done = counted
            .iter()
            .filter(|s| s.state == StageState::Done)
            .count() as u64;
        let running = counted.iter().find(|s| s.state == StageState::Running);
        let percent = if op.state == OperationState::Succeeded {
            100
        } else if counted.is_empty() {
            0
        } else {
            // Each counted stage is an equal share; the running one adds what it reports.
            let share = running
                .and_then(|s| stage_fraction(s))
                .map_or(0, |(d, t)| d * 1000 / t);
            ((done * 1000 + share) * 100 / (counted.len() as u64 * 1000)).min(100) as u32
        };
        let current = match (op.state, running) {
            (OperationState::Running, Some(stage)) => {
                let view = stage_view(stage);
                if view.detail.is_empty() {
                    view.name
                } else {
                    format!("{}: {}", view.name, view.detail)
                }
            }
            (OperationState::Running, None) => "starting".to_owned(),
            // The state badge says it all.
            _ => String::new(),
        };
        let result = match (op.kind, op.state, &op.result) {
            (
                OperationKind::RegisterImage
                | OperationKind::BootstrapImage
                | OperationKind::ImportImage
                | OperationKind::PromoteImage
                | OperationKind::BuildImage,
                OperationState::Succeeded,
                Some(value),
            ) => value.get("name").and_then(|n| n.as_str()).map(|name| Link {
                label: format!("image {name}"),
                href: image_href(name),
            }),
            (
                OperationKind::StartVm | OperationKind::StopVm | OperationKind::RestartVm,
                OperationState::Succeeded,
                _,
            ) => Some(Link {
                label: format!("VM {}", op.target),
                href: vm_href(&op.target),
            }),
            _ => None,
        };
        let target_href = match op.kind {
            OperationKind::StartVm | OperationKind::StopVm | OperationKind::RestartVm => {
                Some(vm_href(&op.target))
            }
            OperationKind::RegisterImage
            | OperationKind::BootstrapImage
            | OperationKind::ImportImage
            | OperationKind::PromoteImage
            | OperationKind::BuildImage => result.as_ref().map(|link| link.href.clone()),
            // The image exported is the target; the result names a file, not a page.
            OperationKind::ExportImage => Some(image_href(&op.target)),
        };
        OpView {
            id: op.id.clone(),
            href: operation_href(&op.id),
            json_href: format!("{}/json", operation_href(&op.id)),
            cancel_href: format!("{}/cancel", operation_href(&op.id)),
            kind: kind_label(op.kind),
            target: op.target.clone(),
            target_href,
            state: op_state(op.state),
            running: !op.state.is_finished(),
            cancel_requested: op.cancel_requested,
            percent,
            current,
            stages: op.stages.iter().map(stage_view).collect(),
            error: op.error.as_ref().map(|e| e.message.clone()),
            hint: op
                .error
                .as_ref()
                .and_then(|e| console_hint(e.hint.as_deref())),
            result,
            created: time(op.created_at),
            ended: op.ended_at.map(time),
        }
    }
}

/// A form field: what the user typed and what is wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Field {
    pub value: String,
    pub error: Option<String>,
    pub hint: Option<String>,
}

impl Field {
    pub fn new(value: impl Into<String>) -> Field {
        Field {
            value: value.into(),
            ..Field::default()
        }
    }

    pub fn invalid(&self) -> bool {
        self.error.is_some()
    }
}

/// An error about the whole form rather than one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError {
    pub message: String,
    pub hint: Option<String>,
}

/// An image offered by the create form.
#[derive(Debug, Clone)]
pub struct ImageChoice {
    pub name: String,
    pub href: String,
    pub checked: bool,
    pub detail: String,
}

/// An entry of the picker.
#[derive(Debug, Clone)]
pub struct PickerEntry {
    pub name: String,
    pub href: String,
    pub is_dir: bool,
    pub size: String,
}

// ----- pages -----

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub chrome: Chrome,
    pub capacity: Vec<CapacityCard>,
    pub capacity_error: Option<String>,
    pub operations: Vec<OpView>,
    pub vms: Vec<VmRow>,
    pub images: Vec<ImageRow>,
}

#[derive(Template)]
#[template(path = "vms.html")]
pub struct VmListPage {
    pub chrome: Chrome,
    pub vms: Vec<VmRow>,
}

#[derive(Template)]
#[template(path = "vm.html")]
pub struct VmPage {
    pub chrome: Chrome,
    pub vm: VmRow,
    pub id: String,
    pub vmm: &'static str,
    pub nat: &'static str,
    pub prefix_len: u8,
    pub gateway: String,
    pub mac: String,
    pub vsock_cid: u32,
    /// Host ports forwarded to the VM, as links.
    pub published: Vec<PublishedView>,
    /// The image's own services (not the agent or sshd), as links.
    pub services: Vec<ServiceView>,
    pub updated: String,
    pub actions: Vec<VmAction>,
    pub runtime: Option<RuntimeView>,
    pub last_error: Option<String>,
    /// Set when the image (or the image that replaced it) now seeds what the VM's work disk
    /// lacks.
    pub work_seed: Option<String>,
    /// A start, stop or restart of this VM in progress (polled, with Cancel).
    pub operation: Option<OpView>,
    /// The last finished start or restart, when the daemon still remembers it.
    pub boot: Option<BootView>,
    /// Absent while the VM has never written to its console and runs nothing that could.
    pub console: Option<ConsoleView>,
    /// Health and listening ports from the guest agent: only while the VM runs.
    pub guest: Option<GuestView>,
    /// The promote form: a stopped VM's, or one whose submission was refused.
    pub promote: Option<PromoteForm>,
}

impl VmPage {
    /// `ops`: the operations the daemon knows (any order); `console`: the log's last lines or
    /// why they could not be read.
    pub fn new(
        chrome: Chrome,
        vm: &Vm,
        ops: &[Operation],
        console: Result<Vec<String>, String>,
    ) -> VmPage {
        let row = VmRow::from(vm);
        let mine = operations_of(vm, ops);
        let operation = mine
            .iter()
            .find(|op| !op.state.is_finished())
            .map(|op| OpView::from(*op));
        let boot = mine
            .iter()
            .find(|op| {
                op.state.is_finished()
                    && matches!(op.kind, OperationKind::StartVm | OperationKind::RestartVm)
            })
            .map(|op| BootView::from(*op));
        let has_vmm = matches!(
            vm.state,
            VmState::Starting | VmState::Running | VmState::Paused | VmState::Stopping
        );
        let console = match console {
            Ok(lines) if lines.is_empty() && !has_vmm => None,
            Ok(lines) => Some(ConsoleView {
                text: lines
                    .iter()
                    .map(|l| printable(l))
                    .collect::<Vec<_>>()
                    .join("\n"),
                note: console_note(lines.len(), has_vmm),
                live_href: has_vmm.then(|| format!("{}/console", row.href)),
                error: None,
            }),
            Err(e) => Some(ConsoleView {
                text: String::new(),
                note: String::new(),
                live_href: None,
                error: Some(e),
            }),
        };
        VmPage {
            chrome,
            actions: vm_actions(vm),
            vm: row,
            id: vm.id.clone(),
            vmm: vm.vmm.as_str(),
            nat: if vm.nat { "on" } else { "off" },
            prefix_len: vm.network.prefix_len,
            gateway: vm.network.gateway.clone(),
            mac: vm.network.mac.clone(),
            vsock_cid: vm.network.vsock_cid,
            published: vm
                .published_ports
                .iter()
                .map(|p| PublishedView {
                    url: p.url(),
                    listen: p.listen(),
                    guest_port: p.guest_port,
                    exposed: p.address != banger_api::validate::DEFAULT_PUBLISH_ADDRESS,
                })
                .collect(),
            services: Vec::new(),
            updated: time(vm.updated_at),
            runtime: vm.runtime.as_ref().map(RuntimeView::from),
            last_error: vm.last_error.clone(),
            work_seed: vm.work_seed.as_ref().filter(|s| s.changed).map(|s| {
                let image = match &s.replaced_by {
                    Some(by) => format!("Image {} (which replaced {})", by.name, vm.image.name),
                    None => format!("Image {}", vm.image.name),
                };
                let copy = match &s.seed_dir {
                    Some(dir) => format!("; copy what you need from {dir}"),
                    None => "; it seeds nothing now".to_owned(),
                };
                format!(
                    "{image} seeds other files than it did when this VM's work disk was made: \
                     they are not in its /root{copy}"
                )
            }),
            operation,
            boot,
            console,
            guest: None,
            promote: matches!(vm.state, VmState::Stopped | VmState::Failed)
                .then(|| crate::web::forms::PromoteInput::default().form(&Default::default())),
        }
    }

    /// The page with where the host reaches the image's services.
    pub fn with_services(mut self, services: &[banger_api::service::ServiceAddress]) -> VmPage {
        self.services = services
            .iter()
            .map(|s| ServiceView {
                name: s.name.clone(),
                port: s.port,
                href: s.href(),
                text: s.text(),
            })
            .collect();
        self
    }

    /// The page with its promote form as submitted, and why it was refused.
    pub fn with_promote(mut self, promote: PromoteForm) -> VmPage {
        self.promote = Some(promote);
        self
    }

    /// The page with what the guest agent answered.
    pub fn with_guest(mut self, guest: Option<GuestView>) -> VmPage {
        self.guest = guest;
        self
    }
}

/// An image service on a VM's page: a link to where the host reaches it.
pub struct ServiceView {
    pub name: String,
    pub port: u16,
    /// What a browser opens: the published URL, else `http://IP:PORT`.
    pub href: String,
    /// The published URL, else `NAME.DOMAIN:PORT (IP:PORT)`.
    pub text: String,
}

/// A published port on a VM's page: a link to the forwarded address.
pub struct PublishedView {
    /// `http://127.0.0.1:8080`.
    pub url: String,
    /// `ADDR:PORT` the listener binds.
    pub listen: String,
    pub guest_port: u16,
    /// Listens beyond loopback.
    pub exposed: bool,
}

/// The confirmation step of a stop or restart: says what happens and asks again.
#[derive(Template)]
#[template(path = "vm_confirm.html")]
pub struct VmConfirmPage {
    pub chrome: Chrome,
    pub vm: VmRow,
    /// `Stop VM dev?`
    pub title: String,
    pub explanation: String,
    pub action: String,
    pub button: String,
}

impl VmConfirmPage {
    /// `graceful`: how long the guest is given to shut down (`defaults.stop_timeout`).
    pub fn stop(chrome: Chrome, vm: &Vm, graceful: std::time::Duration) -> VmConfirmPage {
        let row = VmRow::from(vm);
        let how = stop_explanation(vm, graceful);
        VmConfirmPage {
            chrome,
            title: format!("Stop VM {}?", vm.name),
            explanation: format!(
                "{how} Programs running in the guest end; its disks, IP address and record are \
                 kept, and it can be started again."
            ),
            action: format!("{}/stop", row.href),
            button: format!("Stop {}", vm.name),
            vm: row,
        }
    }

    pub fn restart(chrome: Chrome, vm: &Vm, graceful: std::time::Duration) -> VmConfirmPage {
        let row = VmRow::from(vm);
        let how = stop_explanation(vm, graceful);
        VmConfirmPage {
            chrome,
            title: format!("Restart VM {}?", vm.name),
            explanation: format!(
                "{how} Then it is started again from its disks. Programs running in the guest \
                 end; what they did not write to disk is lost."
            ),
            action: format!("{}/restart", row.href),
            button: format!("Restart {}", vm.name),
            vm: row,
        }
    }
}

impl VmConfirmPage {
    pub fn reset(chrome: Chrome, vm: &Vm) -> VmConfirmPage {
        let row = VmRow::from(vm);
        VmConfirmPage {
            chrome,
            title: format!("Reset the root of VM {}?", vm.name),
            explanation: format!(
                "VM {}'s root goes back to its image {}: what was changed outside /root (installed \
                 packages, files in /etc, ...) is lost. Its work disk at /root, its name, address, \
                 keys and resources are kept; it stays stopped.",
                vm.name, vm.image.name
            ),
            action: format!("{}/reset", row.href),
            button: format!("Reset {}", vm.name),
            vm: row,
        }
    }
}

fn stop_explanation(vm: &Vm, graceful: std::time::Duration) -> String {
    if vm.state == VmState::Paused {
        format!(
            "VM {} is paused, so its guest cannot shut down by itself: its VMM is ended at once.",
            vm.name
        )
    } else {
        format!(
            "The guest of VM {} is asked to shut down; if it has not within {}, its VMM is ended.",
            vm.name,
            duration(graceful.as_millis() as u64)
        )
    }
}

/// A snapshot in the console's list.
#[derive(Debug, Clone)]
pub struct SnapshotRow {
    pub name: String,
    pub vm: String,
    pub image: String,
    pub memory: String,
    pub size: String,
    pub created: String,
    pub restore_action: String,
    pub delete_href: String,
}

impl From<&banger_api::Snapshot> for SnapshotRow {
    fn from(s: &banger_api::Snapshot) -> Self {
        let href = format!("/snapshots/{}", encode(&s.name));
        SnapshotRow {
            name: s.name.clone(),
            vm: s.vm.name.clone(),
            image: s.image.name.clone(),
            memory: format!("{} MiB", s.memory_mib),
            size: size(s.size_bytes),
            created: time(s.created_at),
            restore_action: format!("{href}/restore"),
            delete_href: format!("{href}/delete"),
        }
    }
}

#[derive(Template)]
#[template(path = "snapshots.html")]
pub struct SnapshotListPage {
    pub chrome: Chrome,
    pub snapshots: Vec<SnapshotRow>,
    /// Why the last "Create VM" was refused.
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "snapshot_delete.html")]
pub struct SnapshotDeletePage {
    pub chrome: Chrome,
    pub snapshot: SnapshotRow,
}

#[derive(Template)]
#[template(path = "vm_delete.html")]
pub struct VmDeletePage {
    pub chrome: Chrome,
    pub vm: VmRow,
    pub action: String,
}

#[derive(Template)]
#[template(path = "vm_new.html")]
pub struct VmFormPage {
    pub chrome: Chrome,
    pub form_error: Option<FormError>,
    pub name: Field,
    pub image: Field,
    pub images: Vec<ImageChoice>,
    pub vcpus: Field,
    pub memory_mib: Field,
    pub disk: Field,
    pub work_disk: Field,
    pub nat: bool,
    pub vmm: Field,
    pub vmms: Vec<(&'static str, bool)>,
    /// Start the VM once it is made.
    pub start: bool,
}

#[derive(Template)]
#[template(path = "images.html")]
pub struct ImageListPage {
    pub chrome: Chrome,
    pub images: Vec<ImageRow>,
    pub bootstrap: BootstrapForm,
}

/// The images page's bootstrap form.
#[derive(Debug, Clone)]
pub struct BootstrapForm {
    pub form_error: Option<FormError>,
    pub name: Field,
    pub suite: Field,
    /// Why `sudo -n` would refuse a bootstrap's root-owned steps (the doctor's check).
    pub sudo: Option<Problem>,
}

/// The build form (`/new/build`).
#[derive(Template)]
#[template(path = "image_build.html")]
pub struct BuildFormPage {
    pub chrome: Chrome,
    pub form_error: Option<FormError>,
    pub recipe: Field,
    pub builtin: Field,
    /// (value, label, selected): the typed recipe, then each built-in one.
    pub builtins: Vec<(&'static str, &'static str, bool)>,
    pub name: Field,
    pub base: Field,
    pub no_cache: bool,
    pub replace: bool,
}

/// A stopped VM's promote form.
#[derive(Debug, Clone)]
pub struct PromoteForm {
    pub form_error: Option<FormError>,
    pub name: Field,
    pub with_work: bool,
    pub replace: bool,
}

#[derive(Template)]
#[template(path = "image.html")]
pub struct ImagePage {
    pub chrome: Chrome,
    pub image: ImageRow,
    pub id: String,
    pub files: Vec<FileRow>,
    pub created_from: String,
    pub packages: Vec<(String, String)>,
    pub services: Vec<(String, u16)>,
    pub manifest_json: String,
    pub used_by: Vec<Link>,
    pub new_vm_href: String,
}

impl ImagePage {
    pub fn new(chrome: Chrome, image: &Image, used_by: &[String]) -> ImagePage {
        let file = |role, f: &banger_api::ImageFile| FileRow {
            role,
            path: f.path.clone(),
            size: size(f.bytes),
            allocated: size(f.allocated_bytes),
        };
        let mut files = vec![file("kernel", &image.files.kernel)];
        if let Some(initrd) = &image.files.initrd {
            files.push(file("initrd", initrd));
        }
        files.push(file("rootfs", &image.files.rootfs));
        let m = &image.manifest;
        ImagePage {
            chrome,
            image: ImageRow::from(image),
            id: image.id.clone(),
            files,
            created_from: m.created_from.clone(),
            packages: m
                .packages
                .iter()
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect(),
            services: m
                .services
                .iter()
                .map(|s| (s.name.clone(), s.port))
                .collect(),
            manifest_json: serde_json::to_string_pretty(m).unwrap_or_default(),
            used_by: used_by
                .iter()
                .map(|name| Link {
                    label: name.clone(),
                    href: vm_href(name),
                })
                .collect(),
            new_vm_href: with_query("/new/vm", &[("image", &image.name)]),
        }
    }
}

#[derive(Template)]
#[template(path = "image_new.html")]
pub struct ImageFormPage {
    pub chrome: Chrome,
    pub form_error: Option<FormError>,
    pub name: Field,
    pub kernel: Field,
    pub initrd: Field,
    pub rootfs: Field,
}

/// A path field of the register form with its picker link.
#[derive(Debug, Clone)]
pub struct PathField<'a> {
    pub id: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub field: &'a Field,
    pub browse_href: String,
}

impl ImageFormPage {
    /// The picker link for `field`, carrying what the form holds so nothing is lost.
    pub fn browse_href(&self, field: &str) -> String {
        with_query(
            "/picker",
            &[
                ("field", field),
                ("name", &self.name.value),
                ("kernel", &self.kernel.value),
                ("initrd", &self.initrd.value),
                ("rootfs", &self.rootfs.value),
            ],
        )
    }

    pub fn path_fields(&self) -> Vec<PathField<'_>> {
        [
            (
                "kernel",
                "Kernel",
                "An uncompressed ELF vmlinux.",
                &self.kernel,
            ),
            (
                "initrd",
                "Initrd (optional)",
                "A newc cpio archive, bare or compressed.",
                &self.initrd,
            ),
            (
                "rootfs",
                "Root filesystem",
                "An ext4 filesystem image.",
                &self.rootfs,
            ),
        ]
        .into_iter()
        .map(|(id, label, help, field)| PathField {
            id,
            label,
            help,
            field,
            browse_href: self.browse_href(id),
        })
        .collect()
    }
}

#[derive(Template)]
#[template(path = "picker.html")]
pub struct PickerPage {
    pub chrome: Chrome,
    /// `kernel`, `initrd` or `rootfs`.
    pub field: String,
    pub dir: String,
    pub crumbs: Vec<Link>,
    pub entries: Vec<PickerEntry>,
    /// Entries not shown because the listing is long.
    pub omitted: usize,
    pub hidden_toggle: Link,
    pub back_href: String,
    pub home_href: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "operations.html")]
pub struct OperationListPage {
    pub chrome: Chrome,
    pub operations: Vec<OpView>,
}

#[derive(Template)]
#[template(path = "operation.html")]
pub struct OperationPage {
    pub chrome: Chrome,
    pub op: OpView,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
    pub hint: Option<String>,
}

/// A page shown before (or instead of) the console: no session, wrong host, cross-site. It
/// stands alone, without the stylesheet, which itself needs a session.
#[derive(Template)]
#[template(path = "refusal.html")]
pub struct RefusalPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub sign_in: bool,
}

/// Renders a page; a template error (a bug) becomes a plain 500.
pub fn render(template: &impl Template) -> Response {
    render_with(StatusCode::OK, template)
}

pub fn render_with(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "web console: a page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

pub fn refusal(status: StatusCode, title: &str, message: &str) -> Response {
    render_with(
        status,
        &RefusalPage {
            title,
            message,
            sign_in: false,
        },
    )
}

/// 401 for everything without a session.
pub fn sign_in_required() -> Response {
    let mut response = render_with(
        StatusCode::UNAUTHORIZED,
        &RefusalPage {
            title: "Sign in",
            message: "This is banger's web console. It needs a session, which only the user who \
                      runs banger can start.",
            sign_in: true,
        },
    );
    // Not an HTTP authentication scheme a browser could prompt for; names what to do.
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("banger-login realm=\"run `banger web`\""),
    );
    response
}

#[cfg(test)]
mod tests {
    //! Snapshots of pages rendered from fixed data: a change in what users see is a reviewed
    //! change. (Pages rendered by a live daemon are in `web::tests`.)

    use banger_api::{
        ApiError, CpuCapacity, DiskCapacity, ImageFile, ImageFiles, ImageManifest, ImageRef,
        ImageSource, MemoryCapacity, Package, Progress, ServiceCheck, VmNetwork, VmmKind,
    };

    use banger_agent_protocol::protocol::BootStage as GuestBootStage;

    use super::*;
    use crate::web::forms::{
        BootstrapInput, BuildInput, FieldErrors, ImageInput, PromoteInput, VmInput,
    };

    const T: i64 = 1_763_900_000_000;

    fn chrome(nav: &'static str) -> Chrome {
        Chrome {
            csrf: "CSRF".into(),
            nav,
            notice: None,
            banner: None,
        }
    }

    fn vm(name: &str, state: VmState, n: u8) -> Vm {
        Vm {
            id: format!("vm{n:014}"),
            name: name.into(),
            image: ImageRef {
                id: "img0000000000001".into(),
                name: "debian".into(),
            },
            vcpus: 2,
            memory_mib: 1024,
            disk_bytes: 8 * validate::GIB,
            work_disk_bytes: 8 * validate::GIB,
            nat: n.is_multiple_of(2),
            vmm: VmmKind::Auto,
            state,
            network: VmNetwork {
                ip: format!("172.30.0.{}", n + 1),
                gateway: "172.30.0.1".into(),
                prefix_len: 24,
                mac: format!("06:00:ac:1e:00:{:02x}", n + 1),
                vsock_cid: u32::from(n) + 2,
            },
            runtime: None,
            last_error: None,
            work_seed: None,
            published_ports: Vec::new(),
            pool: None,
            created_at: Timestamp(T + i64::from(n) * 60_000),
            updated_at: Timestamp(T + i64::from(n) * 120_000),
        }
    }

    fn image(name: &str) -> Image {
        let file = |path: &str, bytes: u64| ImageFile {
            path: format!("/home/u/.local/state/banger/images/img0000000000001/{path}"),
            bytes,
            allocated_bytes: bytes / 3,
        };
        Image {
            id: "img0000000000001".into(),
            name: name.into(),
            source: ImageSource::Bootstrapped,
            files: ImageFiles {
                kernel: file("vmlinux", 38 * validate::MIB),
                initrd: Some(file("initrd", 6 * validate::MIB)),
                rootfs: file("rootfs.ext4", 2 * validate::GIB),
            },
            manifest: ImageManifest {
                publish: Vec::new(),
                name: name.into(),
                distro: Some("debian".into()),
                suite: Some("bookworm".into()),
                kernel_version: Some("6.1.0-28-cloud-amd64".into()),
                packages: vec![
                    Package {
                        name: "openssh-server".into(),
                        version: "1:9.2p1-2+deb12u3".into(),
                    },
                    Package {
                        name: "systemd".into(),
                        version: "252.33-1~deb12u1".into(),
                    },
                ],
                services: vec![ServiceCheck {
                    name: "opencode".into(),
                    port: 4096,
                    timeout_secs: None,
                    http: None,
                }],
                init_features: Vec::new(),
                created_from: "debootstrap bookworm (minbase)".into(),
                created_at: Timestamp(T),
                imported_from: None,
            },
            created_at: Timestamp(T),
            retired: None,
        }
    }

    fn capacity() -> Capacity {
        Capacity {
            cpu: CpuCapacity {
                host_cpus: 8,
                reserved_vcpus: 4,
                vcpu_limit: Some(32),
            },
            memory: MemoryCapacity {
                host_bytes: 32 * validate::GIB,
                available_bytes: 20 * validate::GIB,
                reserved_bytes: 3 * validate::GIB,
                limit_bytes: Some(31 * validate::GIB),
            },
            disk: DiskCapacity {
                path: "/home/u/.local/state/banger".into(),
                fs_total_bytes: 500 * validate::GIB,
                fs_available_bytes: 350 * validate::GIB,
                vm_allocated_bytes: 3 * validate::GIB / 2,
                image_allocated_bytes: 700 * validate::MIB,
                snapshot_allocated_bytes: 300 * validate::MIB,
            },
            vms_total: 3,
            vms_running: 1,
        }
    }

    fn running_op() -> Operation {
        let stage = |name: &str, state, progress: Option<(u64, u64)>, ends: bool| Stage {
            name: name.into(),
            state,
            started_at: (state != StageState::Pending && state != StageState::Skipped)
                .then_some(Timestamp(T)),
            ended_at: ends.then_some(Timestamp(T + 1_250)),
            message: (state == StageState::Skipped).then(|| "no initrd".to_owned()),
            progress: progress.map(|(done, total)| Progress {
                done,
                total,
                unit: "bytes".into(),
            }),
        };
        Operation {
            id: "op-00000000000000aa".into(),
            kind: OperationKind::RegisterImage,
            target: "base".into(),
            state: OperationState::Running,
            stages: vec![
                stage("copy kernel", StageState::Done, None, true),
                stage("copy initrd", StageState::Skipped, None, false),
                stage(
                    "copy rootfs",
                    StageState::Running,
                    Some((512 * validate::MIB, 2 * validate::GIB)),
                    false,
                ),
                stage("write manifest", StageState::Pending, None, false),
                stage("record", StageState::Pending, None, false),
            ],
            error: None,
            result: None,
            cancel_requested: false,
            created_at: Timestamp(T),
            ended_at: None,
            version: 7,
        }
    }

    fn render(template: &impl Template) -> String {
        template.render().unwrap()
    }

    #[test]
    fn dashboard_with_data() {
        let vms = [
            vm("dev", VmState::Running, 1),
            vm("web-1", VmState::Stopped, 2),
            vm("scratch", VmState::Failed, 3),
        ];
        insta::assert_snapshot!(render(&DashboardPage {
            chrome: chrome("dashboard"),
            capacity: capacity_cards(&capacity()),
            capacity_error: None,
            operations: vec![OpView::from(&running_op())],
            vms: vms.iter().map(VmRow::from).collect(),
            images: vec![ImageRow::from(&image("debian"))],
        }));
    }

    #[test]
    fn dashboard_empty() {
        let mut empty = capacity();
        empty.cpu.reserved_vcpus = 0;
        empty.memory.reserved_bytes = 0;
        empty.vms_total = 0;
        empty.vms_running = 0;
        // Admission control off: reserved against the host.
        empty.cpu.vcpu_limit = None;
        empty.memory.limit_bytes = None;
        insta::assert_snapshot!(render(&DashboardPage {
            chrome: Chrome {
                notice: Some("Deleted VM dev.".into()),
                ..chrome("dashboard")
            },
            capacity: capacity_cards(&empty),
            capacity_error: None,
            operations: vec![],
            vms: vec![],
            images: vec![],
        }));
    }

    #[test]
    fn vm_page_links_published_ports() {
        let mut dev = vm("dev", VmState::Running, 1);
        dev.runtime = Some(runtime());
        dev.published_ports = vec![
            banger_api::PublishedPort {
                address: "127.0.0.1".into(),
                host_port: 8080,
                guest_port: 4096,
            },
            banger_api::PublishedPort {
                address: "0.0.0.0".into(),
                host_port: 9000,
                guest_port: 80,
            },
        ];
        let html = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(vec![])));
        assert!(html.contains(
            r#"<a href="http://127.0.0.1:8080" target="_blank" rel="noopener noreferrer">http://127.0.0.1:8080</a> &rarr; guest port 4096</dd>"#
        ), "{html}");
        assert!(html.contains("(listens on 0.0.0.0:9000: reachable beyond this host)"));
        let start = html.find("<h2>Network</h2>").unwrap();
        let end = start + html[start..].find("</section>").unwrap();
        insta::assert_snapshot!("vm_page_network_with_published_ports", &html[start..end]);
    }

    #[test]
    fn vm_page() {
        insta::assert_snapshot!(render(&VmPage::new(
            chrome("vms"),
            &vm("dev", VmState::Stopped, 1),
            &[],
            Ok(vec![]),
        )));
    }

    fn runtime() -> VmRuntime {
        VmRuntime {
            vmm: VmmKind::Firecracker,
            pid: 4242,
            api_socket: "/run/user/1000/banger/vms/vm00000000000001.api".into(),
            vsock_socket: Some("/run/user/1000/banger/vms/vm00000000000001.vsock".into()),
            tap: "bt-vm0000000000".into(),
            started_at: Timestamp(T + 600_000),
            boot: Vec::new(),
            jail: None,
            qemu: None,
        }
    }

    /// A start of `target` at `at`, finished (`Some(state)`) or at its `vmm` stage.
    fn start_op(target: &str, at: i64, end: Option<OperationState>) -> Operation {
        let stage = |name: &str, from: i64, took: Option<i64>, message: Option<&str>| Stage {
            name: name.into(),
            state: if took.is_some() {
                StageState::Done
            } else if end.is_some() {
                StageState::Failed
            } else {
                StageState::Running
            },
            started_at: Some(Timestamp(at + from)),
            ended_at: took.map(|t| Timestamp(at + from + t)),
            message: message.map(str::to_owned),
            progress: None,
        };
        let ok = end == Some(OperationState::Succeeded);
        let mut stages = vec![
            stage(
                "checks",
                0,
                Some(35),
                Some("Firecracker will start the instance, but KVM cannot boot a stock kernel"),
            ),
            stage("network", 35, Some(120), None),
            stage(
                "vmm",
                155,
                ok.then_some(480),
                Some("firecracker pid 4242").filter(|_| ok),
            ),
        ];
        stages.push(Stage {
            name: "started".into(),
            state: if ok {
                StageState::Done
            } else {
                StageState::Pending
            },
            started_at: ok.then_some(Timestamp(at + 635)),
            ended_at: ok.then_some(Timestamp(at + 640)),
            message: None,
            progress: None,
        });
        Operation {
            id: format!("op-{at:016x}"),
            kind: OperationKind::StartVm,
            target: target.into(),
            state: end.unwrap_or(OperationState::Running),
            stages,
            error: (end == Some(OperationState::Failed))
                .then(|| ApiError::internal("cannot start VM dev: the VMM exited during boot")),
            result: None,
            cancel_requested: false,
            created_at: Timestamp(at),
            ended_at: end.map(|_| Timestamp(at + 640)),
            version: 9,
        }
    }

    #[test]
    fn vm_page_running_with_runtime_boot_timings_and_console() {
        let mut dev = vm("dev", VmState::Running, 1);
        dev.runtime = Some(runtime());
        let ops = [
            // Of an older VM that had the same name: not this one's.
            start_op("dev", T, Some(OperationState::Failed)),
            start_op("dev", T + 600_000, Some(OperationState::Succeeded)),
            start_op("web-1", T + 700_000, Some(OperationState::Succeeded)),
        ];
        let console = vec![
            "[    0.000000] Linux version 6.1.0-28-cloud-amd64".to_owned(),
            "\u{1b}[0;32m  OK  \u{1b}[0m Reached target <multi-user.target> & more".to_owned(),
            "dev login: ".to_owned(),
        ];
        insta::assert_snapshot!(render(&VmPage::new(chrome("vms"), &dev, &ops, Ok(console))));
    }

    /// A jailed VM's page says how its VMM is confined: its ids, chroot and cgroup.
    #[test]
    fn vm_page_shows_a_jailed_vmms_confinement() {
        let mut dev = vm("dev", VmState::Running, 1);
        let mut rt = runtime();
        rt.jail = Some(Box::new(banger_api::VmJail {
            uid: 10012,
            gid: 10012,
            chroot: "/var/lib/banger/jail/firecracker/vm00000000000001/root".into(),
            cgroup: Some("/sys/fs/cgroup/banger/vm00000000000001".into()),
            memory_max: Some((512 + 64) << 20),
            cpu_max: Some("100000 100000".into()),
        }));
        dev.runtime = Some(rt);
        let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(Vec::new())));
        for shown in [
            "<dt>Jailed as</dt><dd>uid 10012, gid 10012</dd>",
            "<code>/var/lib/banger/jail/firecracker/vm00000000000001/root</code>",
            "/sys/fs/cgroup/banger/vm00000000000001 (memory.max 576M, cpu.max 100000 100000)",
        ] {
            assert!(page.contains(shown), "{shown}\n{page}");
        }
        // Without a cgroup, the page says why.
        let mut rt = runtime();
        rt.jail = Some(Box::new(banger_api::VmJail {
            uid: 10012,
            gid: 10012,
            chroot: "/jail".into(),
            cgroup: None,
            memory_max: None,
            cpu_max: None,
        }));
        dev.runtime = Some(rt);
        let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(Vec::new())));
        assert!(
            page.contains("lacks the memory and cpu controllers"),
            "{page}"
        );
        // An unjailed VM's page has none of it.
        dev.runtime = Some(runtime());
        let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(Vec::new())));
        assert!(!page.contains("Jailed as"));
        assert!(!page.contains("Confined as"));
    }

    /// A QEMU VM's page says as whom its QEMU runs and whether its sandbox is on.
    #[test]
    fn vm_page_shows_a_qemus_confinement() {
        let mut dev = vm("dev", VmState::Running, 1);
        let mut rt = runtime();
        rt.vmm = VmmKind::Qemu;
        rt.qemu = Some(Box::new(banger_api::VmQemuConfinement {
            uid: Some(901_000),
            sandbox: true,
            cgroup: None,
            memory_max: None,
            cpu_max: None,
        }));
        dev.runtime = Some(rt);
        let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(Vec::new())));
        assert!(
            page.contains(
                "<dt>Confined as</dt><dd>uid 901000, gid 901000, seccomp sandbox, no cgroup of \
                 its own</dd>"
            ),
            "{page}"
        );
    }

    #[test]
    fn vm_page_failed_with_last_error() {
        let mut scratch = vm("scratch", VmState::Failed, 3);
        scratch.last_error = Some(
            "its VMM (pid 4242) was killed or crashed; last console lines:\n    [    3.101] \
             Kernel panic - not syncing: VFS: Unable to mount root fs"
                .into(),
        );
        let ops = [start_op(
            "scratch",
            T + 200_000,
            Some(OperationState::Succeeded),
        )];
        insta::assert_snapshot!(render(&VmPage::new(
            chrome("vms"),
            &scratch,
            &ops,
            Ok(vec![
                "[    3.101] Kernel panic - not syncing: VFS: Unable to mount root fs".into()
            ]),
        )));
    }

    #[test]
    fn vm_page_starting_shows_its_operation_in_progress() {
        let dev = vm("dev", VmState::Starting, 1);
        let ops = [start_op("dev", T + 600_000, None)];
        let page = VmPage::new(chrome("vms"), &dev, &ops, Ok(vec![]));
        assert!(page.actions.is_empty(), "nothing to do while it starts");
        assert!(
            page.boot.is_none(),
            "the running start is shown as in progress"
        );
        insta::assert_snapshot!(render(&page));
    }

    fn health() -> Health {
        Health {
            ready: true,
            version: "0.1.0".into(),
            hostname: "dev".into(),
            uptime_ms: 3_723_000,
            boot: vec![
                GuestBootStage {
                    name: "init".into(),
                    at_ms: 1_480,
                },
                GuestBootStage {
                    name: "agent".into(),
                    at_ms: 2_950,
                },
            ],
            listeners: vec!["vsock:1024".into(), "tcp:172.30.0.2:1024".into()],
        }
    }

    fn port(protocol: Transport, address: &str, port: u16, process: Option<&str>) -> ListeningPort {
        ListeningPort {
            protocol,
            address: address.parse().unwrap(),
            port,
            inode: u64::from(port),
            pid: process.map(|_| 400 + u32::from(port % 100)),
            process: process.map(str::to_owned),
        }
    }

    /// A guest's sockets of every kind: on every address, on the VM's IP, on loopback, on
    /// another address, UDP, and a process whose name is markup.
    fn ports() -> Vec<ListeningPort> {
        vec![
            port(Transport::Udp, "0.0.0.0", 68, Some("dhclient")),
            port(Transport::Tcp, "127.0.0.1", 5432, Some("postgres")),
            port(
                Transport::Tcp,
                "0.0.0.0",
                8080,
                Some("<script>alert(1)</script>"),
            ),
            port(Transport::Tcp, "::", 22, Some("sshd")),
            port(Transport::Tcp, "172.30.0.2", 3000, Some("node")),
            port(Transport::Tcp, "172.17.0.1", 9000, None),
            port(Transport::Tcp, "::1", 6379, Some("redis-server")),
            // The same socket reported twice is listed once.
            port(Transport::Tcp, "::", 22, Some("sshd")),
        ]
    }

    fn running_dev() -> Vm {
        let mut dev = vm("dev", VmState::Running, 1);
        dev.runtime = Some(runtime());
        dev
    }

    #[test]
    fn guest_section_with_health_and_ports() {
        let guest = GuestView::new(&running_dev(), Ok(health()), Ok(ports()), "0.1.0");
        let links: Vec<Option<&str>> = guest.ports.iter().map(|p| p.href.as_deref()).collect();
        assert_eq!(
            links,
            [
                Some("http://172.30.0.2:22/"),
                Some("http://172.30.0.2:3000/"),
                None,
                None,
                Some("http://172.30.0.2:8080/"),
                None,
                None,
            ],
            "TCP on every address or the VM's IP links; loopback, other addresses and UDP do not"
        );
        let html = render(&GuestSection { guest });
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62; (pid 480)"),
            "{html}"
        );
        assert!(
            html.contains(
                "<a href=\"http://172.30.0.2:8080/\" target=\"_blank\" rel=\"noopener noreferrer\">"
            ),
            "{html}"
        );
        insta::assert_snapshot!(html);
    }

    #[test]
    fn guest_section_when_the_agent_does_not_answer() {
        let guest = GuestView::new(
            &running_dev(),
            Err("it did not answer within 1.0 s".into()),
            Err("it did not answer within 1.0 s".into()),
            "0.1.0",
        );
        assert_eq!(guest.ports_error, None, "one message for both");
        insta::assert_snapshot!(render(&GuestSection { guest }));
    }

    #[test]
    fn guest_text_is_cleaned_and_a_version_mismatch_is_noted() {
        let mut h = health();
        h.version = "0.0.9".into();
        h.hostname = "dev\u{1b}[31m\u{7}".into();
        h.ready = false;
        let view = HealthView::new(&h, "0.1.0");
        assert_eq!(view.hostname, "dev");
        assert_eq!(view.state, "not ready");
        assert_eq!(view.version_note.as_deref(), Some("bangerd is 0.1.0"));
        let long = "x".repeat(100);
        let row = PortRow::new(&port(Transport::Tcp, "::", 1, Some(&long)), None);
        assert_eq!(row.process, format!("{}… (pid 401)", "x".repeat(32)));
        assert_eq!(row.href, None, "no VM IP, no link");
    }

    #[test]
    fn the_vm_page_shows_its_guest_section_only_when_given() {
        let dev = running_dev();
        let page = VmPage::new(chrome("vms"), &dev, &[], Ok(vec![]));
        assert!(!render(&page).contains("id=\"guest\""));
        let guest = GuestView::new(&dev, Ok(health()), Ok(vec![]), "0.1.0");
        let html = render(&page.with_guest(Some(guest)));
        assert!(html.contains(
            "<section class=\"panel guest\" id=\"guest\" data-guest=\"/vms/dev/guest\">"
        ));
        assert!(html.contains("Nothing in the guest is listening."));
    }

    #[test]
    fn the_vm_page_links_each_image_service() {
        let mut dev = running_dev();
        dev.published_ports = vec![banger_api::PublishedPort {
            address: "127.0.0.1".into(),
            host_port: 8080,
            guest_port: 4096,
        }];
        let declared =
            [("ssh", 22), ("opencode", 4096), ("api", 3000)].map(|(name, port)| ServiceCheck {
                name: name.into(),
                port,
                timeout_secs: None,
                http: None,
            });
        let services = banger_api::service::service_addresses(&dev, &declared, Some("vm"));
        let html =
            render(&VmPage::new(chrome("vms"), &dev, &[], Ok(vec![])).with_services(&services));
        let ip = &dev.network.ip;
        assert!(
            html.contains(
                "<dt>Service opencode</dt><dd><a href=\"http://127.0.0.1:8080\" target=\"_blank\" \
             rel=\"noopener noreferrer\">http://127.0.0.1:8080</a>"
            ),
            "{html}"
        );
        assert!(
            html.contains(&format!(
                "<dt>Service api</dt><dd><a href=\"http://{ip}:3000\" target=\"_blank\" \
             rel=\"noopener noreferrer\">dev.vm:3000 ({ip}:3000)</a>"
            )),
            "{html}"
        );
        assert!(!html.contains("Service ssh"));
    }

    #[test]
    fn reach_and_uptime() {
        let ip: Option<Ipv4Addr> = Some("172.30.0.2".parse().unwrap());
        let reach = |a: &str| Reach::of(a.parse().unwrap(), ip);
        assert_eq!(reach("0.0.0.0"), Reach::Everywhere);
        assert_eq!(reach("::"), Reach::Everywhere);
        assert_eq!(reach("172.30.0.2"), Reach::VmIp);
        assert_eq!(reach("::ffff:172.30.0.2"), Reach::VmIp);
        assert_eq!(reach("127.0.0.53"), Reach::Loopback);
        assert_eq!(reach("::1"), Reach::Loopback);
        assert_eq!(reach("172.30.0.3"), Reach::Other);
        assert_eq!(duration(42_000), "42s");
        assert_eq!(duration(720_000), "12m 0s");
        assert_eq!(duration(3_723_000), "1h 2m");
        assert_eq!(duration(187_200_000), "2d 4h");
    }

    fn sudo_banner() -> Problem {
        Problem {
            detail: "banger is not running as root and `sudo -n` refuses ip, nft, sysctl (a \
                     password would be needed): taps, the bridge and NAT rules cannot be set up"
                .into(),
            fix: Some(
                "echo \"$USER ALL=(root) NOPASSWD: /usr/sbin/ip\" | sudo tee \
                 /etc/sudoers.d/banger && sudo chmod 0440 /etc/sudoers.d/banger"
                    .into(),
            ),
        }
    }

    #[test]
    fn the_sudo_banner_is_on_every_page_while_sudo_is_not_ready() {
        let with = |banner: Option<Problem>| Chrome {
            banner,
            ..chrome("images")
        };
        let page = |banner| {
            render(&ImageListPage {
                chrome: with(banner),
                images: vec![],
                bootstrap: BootstrapInput::defaults().form(&FieldErrors::new(), None),
            })
        };
        let off = page(None);
        assert!(!off.contains("sudo-banner"), "{off}");
        insta::assert_snapshot!("images_page_with_sudo_banner", page(Some(sudo_banner())));
        // Error pages too.
        let error = render(&ErrorPage {
            chrome: with(Some(sudo_banner())),
            title: "Not found".into(),
            message: "no VM named \"x\"".into(),
            hint: None,
        });
        assert!(error.contains("id=\"sudo-banner\""));
    }

    #[test]
    fn build_form_as_first_shown() {
        insta::assert_snapshot!(render(
            &BuildInput::defaults().page(chrome("images"), &FieldErrors::new())
        ));
    }

    #[test]
    fn build_form_with_errors() {
        let input = BuildInput {
            recipe: "name = \"tools\"\n[[file]]\nsrc = \"motd\"\ndest = \"/etc/motd\"\n".into(),
            builtin: String::new(),
            name: "Tools".into(),
            base: "nope".into(),
            no_cache: true,
            replace: true,
        };
        let errors = FieldErrors::from([
            (
                "recipe",
                ApiError::invalid(
                    "file src \"motd\" is not an absolute path: the web form takes absolute \
                     host paths only",
                )
                .with_hint("write the full path of each file on the daemon's host"),
            ),
            ("name", validate::name("image", "Tools").unwrap_err()),
            ("base", ApiError::invalid("unknown base image \"nope\"")),
        ]);
        insta::assert_snapshot!(render(&input.page(chrome("images"), &errors)));
    }

    #[test]
    fn vm_page_with_a_refused_promotion() {
        let input = PromoteInput {
            name: "snap".into(),
            with_work: true,
            replace: false,
        };
        let errors = FieldErrors::from([(
            "form",
            ApiError::new(
                banger_api::ErrorCode::InvalidState,
                "VM \"dev\" is running; only a stopped VM's root can become an image",
            )
            .with_hint("stop it first: its root is consistent only when the guest has shut down"),
        )]);
        let mut running = vm("dev", VmState::Running, 1);
        running.runtime = Some(runtime());
        let page = render(
            &VmPage::new(chrome("vms"), &running, &[], Ok(vec![]))
                .with_promote(input.form(&errors)),
        );
        let promote = page
            .split("<section class=\"panel\" id=\"promote\">")
            .nth(1)
            .unwrap();
        insta::assert_snapshot!(promote.split("</section>").next().unwrap());
    }

    #[test]
    fn bootstrap_form_with_errors() {
        let input = BootstrapInput {
            name: "Debian!".into(),
            suite: "Bookworm".into(),
        };
        let errors = FieldErrors::from([
            ("name", validate::name("image", "Debian!").unwrap_err()),
            ("suite", validate::suite("Bookworm").unwrap_err()),
            (
                "form",
                ApiError::new(
                    banger_api::ErrorCode::Unavailable,
                    "debootstrap is not installed: `banger image bootstrap debian` cannot build images",
                )
                .with_hint("sudo apt-get install debootstrap"),
            ),
        ]);
        let sudo = Problem {
            detail: "banger is not running as root and `sudo -n` refuses debootstrap, mkfs.ext4: \
                     `banger image bootstrap` cannot build the root filesystem"
                .into(),
            fix: Some(
                "echo \"$USER ALL=(root) NOPASSWD: /usr/sbin/debootstrap\" | sudo tee \
                 /etc/sudoers.d/banger-bootstrap"
                    .into(),
            ),
        };
        insta::assert_snapshot!(render(&ImageListPage {
            chrome: chrome("images"),
            images: vec![ImageRow::from(&image("base"))],
            bootstrap: input.form(&errors, Some(sudo)),
        }));
    }

    #[test]
    fn a_running_bootstrap_has_its_progress_and_a_cancel_button() {
        // The image service's stages, at debootstrap, which reports what it has downloaded.
        let mut op = running_op();
        op.kind = OperationKind::BootstrapImage;
        op.target = "debian".into();
        let mut names: Vec<&str> = banger_image::bootstrap::STAGES.to_vec();
        names.push("record");
        op.stages = names
            .iter()
            .enumerate()
            .map(|(i, name)| Stage {
                name: (*name).into(),
                state: match i {
                    0 | 1 => StageState::Done,
                    2 => StageState::Running,
                    _ => StageState::Pending,
                },
                started_at: (i <= 2).then_some(Timestamp(T + i as i64 * 1_000)),
                ended_at: (i < 2).then_some(Timestamp(T + i as i64 * 1_000 + 900)),
                message: (i == 1).then(|| "linux-image-6.1.0-28-cloud-amd64".to_owned()),
                progress: (i == 2).then(|| Progress {
                    done: 96 * validate::MIB,
                    total: 240 * validate::MIB,
                    unit: "bytes".into(),
                }),
            })
            .collect();
        let view = OpView::from(&op);
        assert_eq!(view.cancel_href, "/operations/op-00000000000000aa/cancel");
        let html = render(&OperationPage {
            chrome: chrome("operations"),
            op: view,
        });
        assert!(html.contains("action=\"/operations/op-00000000000000aa/cancel\""));
        insta::assert_snapshot!("operation_bootstrap_running", html);
    }

    #[test]
    fn vm_actions_follow_the_state() {
        let labels = |state| -> Vec<&'static str> {
            vm_actions(&vm("dev", state, 1))
                .iter()
                .map(|a| a.label)
                .collect()
        };
        assert_eq!(
            labels(VmState::Stopped),
            ["Start", "Reset root…", "Delete…"]
        );
        assert_eq!(labels(VmState::Failed), ["Start", "Reset root…", "Delete…"]);
        assert_eq!(
            labels(VmState::Running),
            ["Stop…", "Restart…", "Pause", "Delete…"]
        );
        assert_eq!(
            labels(VmState::Paused),
            ["Resume", "Stop…", "Restart…", "Delete…"]
        );
        assert!(labels(VmState::Starting).is_empty());
        assert!(labels(VmState::Stopping).is_empty());
        // Those without a confirmation page post at once; the others link to theirs.
        for action in vm_actions(&vm("dev", VmState::Paused, 1)) {
            assert_eq!(
                action.post,
                !action.label.ends_with('…'),
                "{}",
                action.label
            );
        }
    }

    #[test]
    fn console_lines_lose_terminal_escapes_and_control_characters() {
        assert_eq!(
            printable("\u{1b}[0;32m  OK  \u{1b}[0m done\r\u{7}\tx"),
            "  OK   done\tx"
        );
        assert_eq!(printable("\u{1b}7saved\u{1b}8"), "saved");
        assert_eq!(printable("plain <b>"), "plain <b>");
    }

    #[test]
    fn vm_stop_and_restart_confirmations() {
        let dev = vm("dev", VmState::Running, 1);
        insta::assert_snapshot!(
            "vm_stop_confirmation",
            render(&VmConfirmPage::stop(
                chrome("vms"),
                &dev,
                std::time::Duration::from_secs(10)
            ))
        );
        let paused = vm("dev", VmState::Paused, 1);
        let page = VmConfirmPage::restart(chrome("vms"), &paused, std::time::Duration::ZERO);
        assert_eq!(page.action, "/vms/dev/restart");
        assert!(page.explanation.contains("paused"), "{}", page.explanation);
        assert!(render(&page).contains("value=\"CSRF\""));
    }

    #[test]
    fn vm_operations_link_to_their_vm() {
        let failed = OpView::from(&start_op("dev", T, Some(OperationState::Failed)));
        assert_eq!(failed.target_href.as_deref(), Some("/vms/dev"));
        assert_eq!(failed.result, None);
        let done = OpView::from(&start_op("dev", T, Some(OperationState::Succeeded)));
        assert_eq!(done.result.unwrap().label, "VM dev");
        insta::assert_snapshot!(
            "operation_start_failed",
            render(&OperationPage {
                chrome: chrome("operations"),
                op: failed,
            })
        );
    }

    #[test]
    fn vm_delete_confirmation() {
        let row = VmRow::from(&vm("dev", VmState::Stopped, 1));
        insta::assert_snapshot!(render(&VmDeletePage {
            chrome: chrome("vms"),
            action: format!("{}/delete", row.href),
            vm: row,
        }));
    }

    #[test]
    fn create_form_with_inline_errors() {
        let input = VmInput {
            name: "Dev_1".into(),
            image: "debian".into(),
            vcpus: "0".into(),
            memory_mib: "lots".into(),
            disk: "8G".into(),
            work_disk: "1M".into(),
            nat: true,
            vmm: "qemu".into(),
            start: false,
        };
        let errors = FieldErrors::from([
            ("name", validate::name("VM", "Dev_1").unwrap_err()),
            ("vcpus", validate::vcpus(0).unwrap_err()),
            (
                "memory_mib",
                ApiError::invalid("memory must be a whole number (got \"lots\")"),
            ),
            (
                "work_disk",
                validate::disk_bytes("work disk", 1 << 20, validate::MIN_WORK_DISK_BYTES)
                    .unwrap_err(),
            ),
        ]);
        let images = [image("debian"), image("base")];
        insta::assert_snapshot!(render(&input.page(chrome("vms"), &images, &errors)));
    }

    #[test]
    fn create_form_without_images() {
        let input = VmInput {
            vcpus: "2".into(),
            memory_mib: "1024".into(),
            disk: "8G".into(),
            work_disk: "8G".into(),
            vmm: "auto".into(),
            start: true,
            ..VmInput::default()
        };
        let errors = FieldErrors::from([(
            "form",
            ApiError::new(
                banger_api::ErrorCode::Exhausted,
                "no free guest IP address is left in 172.30.0.0/24",
            )
            .with_hint("delete VMs you no longer need"),
        )]);
        insta::assert_snapshot!(render(&input.page(chrome("vms"), &[], &errors)));
    }

    #[test]
    fn a_retired_image_and_a_vm_whose_seed_changed_say_so() {
        let mut old = image("debian-3f9a1c2b");
        old.retired = Some(Box::new(banger_api::RetiredImage {
            name: "debian".into(),
            replaced_by: Some(banger_api::ImageRef {
                id: "4567".into(),
                name: "debian".into(),
            }),
            at: Timestamp(T),
        }));
        let page = render(&ImagePage::new(chrome("images"), &old, &["dev".into()]));
        assert!(
            page.contains("<dt>Retired</dt><dd>")
                && page.contains(
                    ", replaced by debian: was debian, kept while VMs or snapshots use it"
                ),
            "{page}"
        );
        assert!(ImageRow::from(&image("debian")).retired.is_none());

        let mut dev = vm("dev", VmState::Stopped, 1);
        dev.image.name = old.name.clone();
        dev.work_seed = Some(Box::new(banger_api::WorkSeedStatus {
            vm: Some("aa".into()),
            image: "bb".into(),
            changed: true,
            seed_dir: Some("/state/images/4567/work-seed".into()),
            replaced_by: Some(banger_api::ImageRef {
                id: "4567".into(),
                name: "debian".into(),
            }),
        }));
        let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(vec![])));
        assert!(
            page.contains(
                "Image debian (which replaced debian-3f9a1c2b) seeds other files than it did \
                 when this VM&#39;s work disk was made: they are not in its /root; copy what you \
                 need from /state/images/4567/work-seed"
            ),
            "{page}"
        );
        dev.work_seed.as_mut().unwrap().changed = false;
        let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(vec![])));
        assert!(
            !page.contains("work-seed\""),
            "silent when unchanged: {page}"
        );
    }

    #[test]
    fn image_page() {
        insta::assert_snapshot!(render(&ImagePage::new(
            chrome("images"),
            &image("debian"),
            &["dev".into(), "web-1".into()]
        )));
    }

    #[test]
    fn register_form_with_errors() {
        let input = ImageInput {
            name: "base".into(),
            kernel: "/home/u/bzImage".into(),
            initrd: String::new(),
            rootfs: "rootfs.ext4".into(),
        };
        let errors = FieldErrors::from([
            (
                "kernel",
                ApiError::invalid("/home/u/bzImage is a bzImage, not an ELF vmlinux")
                    .with_hint("extract the vmlinux"),
            ),
            (
                "rootfs",
                ApiError::invalid("\"rootfs.ext4\" is not an absolute path"),
            ),
        ]);
        insta::assert_snapshot!(render(&input.page(chrome("images"), &errors)));
    }

    #[test]
    fn operation_page_running_and_failed() {
        let op = running_op();
        insta::assert_snapshot!(
            "operation_running",
            render(&OperationPage {
                chrome: chrome("operations"),
                op: OpView::from(&op),
            })
        );
        let mut failed = op;
        failed.state = OperationState::Failed;
        failed.stages[2].state = StageState::Failed;
        failed.stages[2].ended_at = Some(Timestamp(T + 4_000));
        failed.ended_at = Some(Timestamp(T + 4_000));
        failed.error = Some(
            ApiError::internal("no space left on device").with_hint("free disk space and retry"),
        );
        insta::assert_snapshot!(
            "operation_failed",
            render(&OperationPage {
                chrome: chrome("operations"),
                op: OpView::from(&failed),
            })
        );
    }

    #[test]
    fn operation_progress_counts_stages_and_the_running_share() {
        let view = OpView::from(&running_op());
        // 4 counted stages (one skipped): 1 done + a quarter of the running one.
        assert_eq!(view.percent, 31);
        assert_eq!(view.current, "copy rootfs: 512M of 2G");
        assert_eq!(view.stages[0].detail, "1.2s");
        assert_eq!(view.stages[2].percent, 25);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["running"], true);
        assert_eq!(json["stages"][1]["state"], "skipped");
    }

    #[test]
    fn hints_keep_what_a_browser_user_can_follow() {
        let hint = "install Firecracker 1.12.0 or newer and put it in PATH, or set \
                    firecracker_bin in config.toml; `banger doctor` checks it";
        assert_eq!(
            console_hint(Some(hint)).as_deref(),
            Some(
                "install Firecracker 1.12.0 or newer and put it in PATH, or set firecracker_bin \
                 in config.toml"
            )
        );
        assert_eq!(console_hint(Some("run `banger vm list`")), None);
        assert_eq!(
            console_hint(Some("pass --vcpus; or fewer VMs")).as_deref(),
            Some("or fewer VMs")
        );
        assert_eq!(console_hint(None), None);
    }

    #[test]
    fn links_encode_what_they_carry() {
        assert_eq!(vm_href("a b/c"), "/vms/a%20b%2Fc");
        assert_eq!(
            with_query("/p", &[("a", "x&y=z"), ("empty", ""), ("b", "/k")]),
            "/p?a=x%26y%3Dz&b=%2Fk"
        );
        assert_eq!(time(Timestamp(T)), "2025-11-23 12:13:20 UTC");
        assert_eq!(duration(35), "35ms");
        assert_eq!(duration(1_400), "1.4s");
        assert_eq!(duration(12_345), "12s");
        assert_eq!(duration(185_000), "3m 5s");
    }
}

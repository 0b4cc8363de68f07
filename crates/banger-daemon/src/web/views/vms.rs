//! The VM views: a VM's row in lists, the actions it offers, its runtime and boot timings, its
//! page, the confirmation of a stop, restart or delete, and the create form.

use askama::Template;

use banger_api::{Operation, OperationKind, Vm, VmRuntime, VmState, validate};

use super::format::{duration, image_href, operation_href, size, time, vm_href};
use super::guest::{ConsoleView, GuestView, console_note, printable};
use super::images::PromoteForm;
use super::operations::{OpView, kind_label, op_state, stage_state};
use super::{Chrome, Field, FormError, ImageChoice};

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
pub(super) fn operations_of<'a>(vm: &Vm, ops: &'a [Operation]) -> Vec<&'a Operation> {
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

pub(super) fn stop_explanation(vm: &Vm, graceful: std::time::Duration) -> String {
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

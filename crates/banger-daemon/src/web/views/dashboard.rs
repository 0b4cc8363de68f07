//! The dashboard: its capacity gauges (the figures of `GET /v1/capacity`) and its page.

use askama::Template;

use banger_api::Capacity;

use super::Chrome;
use super::format::{percent, size};
use super::images::ImageRow;
use super::operations::OpView;
use super::vms::VmRow;

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

//! What `banger` prints. Every renderer is a pure function from API data (and, where ages are
//! shown, the current time) to a `String`, so each view has a snapshot test and a change in
//! what users see is a reviewed change. Text output is aligned tables for lists and
//! `key: value` blocks for single resources; JSON output is the API's own JSON, pretty-printed.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use banger_api::service::ServiceAddress;
use banger_api::validate::{MIB, format_size};
use banger_api::{
    ApiError, DaemonInfo, DoctorCheckStatus, DoctorReport, ExportedImage, Image, ImageFile,
    Timestamp, Vm, WebLogin,
};
use serde::Serialize;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::cli::OutputFormat;

/// Writes `text` to stdout. A closed pipe (`banger vm list | head -1`) is not an error worth
/// reporting, so write failures are ignored rather than panicking like `print!` does.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes `text` to stderr, ignoring failures for the same reason as [`print`].
pub fn eprint(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Pretty JSON with a trailing newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising the API's own types cannot fail: they have no maps with non-string keys.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|e| {
        serde_json::json!({"code": "internal", "message": e.to_string()}).to_string()
    });
    text.push('\n');
    text
}

/// An error as printed on stderr: `error:`/`hint:` lines, or the `{code, message, hint}` object.
pub fn error(error: &ApiError, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json(error),
        OutputFormat::Text => {
            let mut text = format!("error: {}\n", error.message);
            if let Some(hint) = &error.hint {
                text.push_str(&format!("hint: {hint}\n"));
            }
            text
        }
    }
}

/// The confirmation of a deletion; `kind` is "VM" or "image".
pub fn deleted(kind: &str, name: &str, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json(&serde_json::json!({ "deleted": name })),
        OutputFormat::Text => format!("Deleted {kind} {name}.\n"),
    }
}

/// The result of `banger image export` (text).
pub fn exported(exported: &ExportedImage) -> String {
    let file = Path::new(&exported.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| exported.path.clone());
    format!(
        "Exported image {} to {} ({}).\nOn another host, after copying the file there: banger image import {}\n",
        exported.name,
        exported.path,
        format_size(exported.bytes),
        file
    )
}

/// `banger vm list`.
pub fn vm_list(vms: &[Vm]) -> String {
    if vms.is_empty() {
        return "No VMs yet. Create one with: banger vm create --name dev\n".into();
    }
    let mut table = Table::new([
        ("NAME", Align::Left),
        ("STATE", Align::Left),
        ("IMAGE", Align::Left),
        ("VCPUS", Align::Right),
        ("MEMORY", Align::Right),
        ("DISK", Align::Right),
        ("WORK", Align::Right),
        ("IP", Align::Left),
        ("NAT", Align::Left),
    ]);
    for vm in vms {
        table.row([
            vm.name.clone(),
            vm.state.to_string(),
            vm.image.name.clone(),
            vm.vcpus.to_string(),
            memory(vm.memory_mib),
            format_size(vm.disk_bytes),
            format_size(vm.work_disk_bytes),
            vm.network.ip.clone(),
            yes_no(vm.nat).into(),
        ]);
    }
    table.render()
}

/// `banger vm show` without the image's services.
pub fn vm_show(vm: &Vm, now: Timestamp) -> String {
    vm_show_with_services(vm, &[], now)
}

/// `banger vm show`, and the result of `vm create` / `vm set`: the VM and where the host
/// reaches each of its image's services.
pub fn vm_show_with_services(vm: &Vm, services: &[ServiceAddress], now: Timestamp) -> String {
    let net = &vm.network;
    let mut kv = KeyValues::default()
        .add("name", &vm.name)
        .add("id", &vm.id)
        .add("state", vm.state);
    if let Some(error) = &vm.last_error {
        let label = if vm.state == banger_api::VmState::Failed {
            "failure"
        } else {
            "last error"
        };
        kv = kv.add(label, error.replace('\n', "\n    "));
    }
    kv = kv.add("image", format!("{} ({})", vm.image.name, vm.image.id));
    if vm.pool == Some(banger_api::PoolRole::Taken) {
        kv = kv.add(
            "origin",
            "the warm pool (restored from its image's template snapshot)",
        );
    }
    kv = match &vm.runtime {
        Some(rt) if rt.vmm != vm.vmm => {
            kv.add("vmm", format!("{} (chosen for {})", rt.vmm, vm.vmm))
        }
        _ => kv.add("vmm", vm.vmm),
    };
    if let Some(rt) = &vm.runtime {
        kv = kv
            .add("pid", rt.pid)
            .add("up since", dated(rt.started_at, now))
            .add("tap", &rt.tap);
        if let Some(jail) = &rt.jail {
            kv = kv.add(
                "jail",
                format!(
                    "uid {}, gid {}, chroot {}, pid namespace, Firecracker's seccomp filters",
                    jail.uid, jail.gid, jail.chroot
                ),
            );
            kv = kv.add(
                "cgroup",
                match (&jail.cgroup, jail.memory_max, &jail.cpu_max) {
                    (Some(path), Some(memory), Some(cpu)) => {
                        format!("{path} (memory.max {} MiB, cpu.max {cpu})", memory / MIB)
                    }
                    (Some(path), _, _) => path.clone(),
                    _ => "none (no cgroup with memory and cpu here; see banger doctor)".into(),
                },
            );
        } else if rt.vmm == banger_api::VmmKind::Firecracker {
            kv = kv.add(
                "jail",
                "none: Firecracker runs as bangerd's user, under its seccomp filters (jailer = \
                 false, or bangerd is not root; see banger doctor)",
            );
        }
        if let Some(qemu) = &rt.qemu {
            kv = kv.add("confined", qemu.describe());
        }
        if !rt.boot.is_empty() {
            let stages: Vec<String> = rt
                .boot
                .iter()
                .map(|b| format!("{} {}", b.stage, duration_ms(b.ms)))
                .collect();
            kv = kv.add("boot", stages.join(", "));
        }
    }
    kv = kv
        .add("vcpus", vm.vcpus)
        .add("memory", memory(vm.memory_mib))
        .add(
            "disk",
            format!("{} (copy-on-write root)", format_size(vm.disk_bytes)),
        )
        .add(
            "work disk",
            format!("{} (mounted at /root)", format_size(vm.work_disk_bytes)),
        );
    if let Some(by) = vm.work_seed.as_ref().and_then(|s| s.replaced_by.as_ref()) {
        kv = kv.add(
            "image retired",
            format!(
                "{} took the name of this VM's image, now {}: new VMs of {} get the new image; \
                 this one keeps its own",
                by.name, vm.image.name, by.name
            ),
        );
    }
    if let Some(seed) = vm.work_seed.as_ref().filter(|s| s.changed) {
        let copy = match &seed.seed_dir {
            Some(dir) => format!(
                "; copy what you need from {dir}, e.g. `banger vm cp {dir}/.profile {}:/root`",
                vm.name
            ),
            None => "; the image seeds nothing now".to_owned(),
        };
        let image = seed
            .replaced_by
            .as_ref()
            .map_or(&vm.image.name, |by| &by.name);
        kv = kv.add(
            "work seed",
            format!(
                "changed in image {image} since this work disk was made: what it seeds now is not in /root{copy}"
            ),
        );
    }
    kv = kv
        .add("ip", format!("{}/{}", net.ip, net.prefix_len))
        .add("gateway", &net.gateway)
        .add("mac", &net.mac)
        .add("vsock cid", net.vsock_cid)
        .add("nat", if vm.nat { "on" } else { "off" });
    for p in &vm.published_ports {
        kv = kv.add(
            "published",
            format!("{} -> guest port {}", p.url(), p.guest_port),
        );
    }
    for service in services {
        kv = kv.add(
            "service",
            format!(
                "{} (port {}): {}",
                service.name,
                service.port,
                service.text()
            ),
        );
    }
    kv.add("created", dated(vm.created_at, now))
        .add("updated", dated(vm.updated_at, now))
        .render()
}

/// `banger vm port list`, and the end of `vm port add` / `vm port rm`.
pub fn published_ports(vm: &Vm) -> String {
    if vm.published_ports.is_empty() {
        return format!(
            "VM {} publishes no ports. Publish one with: banger vm port add {} 8080:80\n",
            vm.name, vm.name
        );
    }
    let mut table = Table::new([
        ("ADDRESS", Align::Left),
        ("HOST", Align::Right),
        ("GUEST", Align::Right),
        ("URL", Align::Left),
    ]);
    for p in &vm.published_ports {
        table.row([
            p.address.clone(),
            p.host_port.to_string(),
            p.guest_port.to_string(),
            p.url(),
        ]);
    }
    let mut text = table.render();
    if !vm.state.holds_resources() {
        text.push_str(&format!(
            "VM {} is {}: these ports are forwarded from its next start.\n",
            vm.name, vm.state
        ));
    }
    text
}

/// `banger image list`.
pub fn image_list(images: &[Image], now: Timestamp) -> String {
    if images.is_empty() {
        return "No images yet. Build the default one from Debian packages:\n  \
                banger image bootstrap debian\nor register your own:\n  \
                banger image register --name NAME --kernel vmlinux --rootfs rootfs.ext4\n"
            .into();
    }
    let mut table = Table::new([
        ("NAME", Align::Left),
        ("SOURCE", Align::Left),
        ("KERNEL", Align::Left),
        ("SIZE", Align::Right),
        ("CREATED", Align::Left),
    ]);
    for image in images {
        table.row([
            image.name.clone(),
            match &image.retired {
                // A retired image says so where its origin is: it is no one's to pick now.
                Some(r) => format!(
                    "{}, {}",
                    image.source.as_str(),
                    r.replaced_by
                        .as_ref()
                        .map_or_else(|| "retired".into(), |by| format!("replaced by {}", by.name))
                ),
                None => image.source.as_str().into(),
            },
            image
                .manifest
                .kernel_version
                .clone()
                .unwrap_or_else(|| "-".into()),
            format_size(allocated(image)),
            age(image.created_at, now),
        ]);
    }
    table.render()
}

/// `banger image show`, and the result of `image register`.
pub fn image_show(image: &Image, now: Timestamp) -> String {
    let m = &image.manifest;
    let mut kv = KeyValues::default()
        .add("name", &image.name)
        .add("id", &image.id)
        .add("source", image.source.as_str())
        .add("kernel", file(&image.files.kernel))
        .add(
            "kernel version",
            m.kernel_version.as_deref().unwrap_or("unknown"),
        )
        .add(
            "initrd",
            image
                .files
                .initrd
                .as_ref()
                .map_or_else(|| "none".into(), file),
        )
        .add("rootfs", file(&image.files.rootfs))
        .add("size", format!("{} on disk", format_size(allocated(image))));
    if let Some(distro) = &m.distro {
        let suite = m
            .suite
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        kv = kv.add("distro", format!("{distro}{suite}"));
    }
    if !m.packages.is_empty() {
        kv = kv.add("packages", m.packages.len());
    }
    if !m.publish.is_empty() {
        let ports: Vec<String> = m.publish.iter().map(u16::to_string).collect();
        kv = kv.add("publishes", format!("guest ports {}", ports.join(", ")));
    }
    if !m.services.is_empty() {
        let services: Vec<String> = m
            .services
            .iter()
            .map(|s| format!("{} (port {})", s.name, s.port))
            .collect();
        kv = kv.add("services", services.join(", "));
    }
    kv = if m.init_features.is_empty() {
        // Such an image's VMs get their files in an overlay disk made for each, which is slower.
        kv.add(
            "init",
            "reads no config drive: each VM's files go into its overlay disk",
        )
    } else {
        kv.add("init features", m.init_features.join(", "))
    };
    kv = kv.add("created from", &m.created_from);
    if let Some(imported_from) = &m.imported_from {
        kv = kv.add("imported from", imported_from);
    }
    kv = kv.add("created", dated(image.created_at, now));
    if let Some(r) = &image.retired {
        kv = kv.add("retired", retired(r, dated(r.at, now)));
    }
    kv.render()
}

/// What a retired image's `retired` line says, `when` it was retired told as the caller
/// tells times.
pub fn retired(r: &banger_api::RetiredImage, when: String) -> String {
    let by = match &r.replaced_by {
        Some(by) => format!("replaced by {} ({})", by.name, by.id),
        None => "the image that replaced it is gone too".to_owned(),
    };
    format!(
        "{when}: was {}, {by}; kept while VMs or snapshots use it, then deleted",
        r.name
    )
}

/// `banger snapshot list`.
pub fn snapshot_list(snapshots: &[banger_api::Snapshot], now: Timestamp) -> String {
    if snapshots.is_empty() {
        return "No snapshots yet. Take one of a running Firecracker VM:\n  \
                banger vm snapshot NAME\n"
            .into();
    }
    let mut table = Table::new([
        ("NAME", Align::Left),
        ("VM", Align::Left),
        ("IMAGE", Align::Left),
        ("MEMORY", Align::Right),
        ("SIZE", Align::Right),
        ("CREATED", Align::Left),
    ]);
    for s in snapshots {
        table.row([
            s.name.clone(),
            s.vm.name.clone(),
            s.image.name.clone(),
            format!("{} MiB", s.memory_mib),
            format_size(s.size_bytes),
            age(s.created_at, now),
        ]);
    }
    table.render()
}

/// `banger pool list`.
pub fn pool_list(entries: &[banger_api::PoolEntry]) -> String {
    if entries.is_empty() {
        return "No warm pool. Keep ready VMs of an image with:\n  banger pool set IMAGE N\n"
            .into();
    }
    let mut table = Table::new([
        ("IMAGE", Align::Left),
        ("READY", Align::Right),
        ("VCPUS", Align::Right),
        ("MEMORY", Align::Right),
        ("DISKS", Align::Left),
        ("TEMPLATE", Align::Right),
        ("LAST ERROR", Align::Left),
    ]);
    for e in entries {
        table.row([
            e.image.clone(),
            format!("{}/{}", e.ready, e.size),
            e.vcpus.to_string(),
            memory(e.memory_mib),
            format!(
                "{} + {}",
                format_size(e.disk_bytes),
                format_size(e.work_disk_bytes)
            ),
            e.template_bytes
                .map(format_size)
                .unwrap_or_else(|| "-".into()),
            e.last_error.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

/// The result of `banger pool set`.
pub fn pool_set(e: &banger_api::PoolEntry) -> String {
    if e.size == 0 {
        return format!(
            "Warm pool of {} off: its ready VMs and template are being removed.\n",
            e.image
        );
    }
    format!(
        "Warm pool of {}: {} of {} ready; bangerd fills it in the background \
         (`banger pool list`).\n`banger vm create --image {}` takes one when it asks for \
         {} vCPUs, {}, {} and {} disks (the defaults), without --nat or --publish.\n",
        e.image,
        e.ready,
        e.size,
        e.image,
        e.vcpus,
        memory(e.memory_mib),
        format_size(e.disk_bytes),
        format_size(e.work_disk_bytes)
    )
}

/// `banger snapshot show`, and the result of `vm snapshot`.
pub fn snapshot_show(s: &banger_api::Snapshot, now: Timestamp) -> String {
    KeyValues::default()
        .add("name", &s.name)
        .add("id", &s.id)
        .add("vm", format!("{} ({})", s.vm.name, s.vm.id))
        .add("image", &s.image.name)
        .add("vcpus", s.vcpus)
        .add("memory", format!("{} MiB", s.memory_mib))
        .add(
            "disks",
            format!(
                "{} root, {} work",
                format_size(s.disk_bytes),
                format_size(s.work_disk_bytes)
            ),
        )
        .add("size", format!("{} on disk", format_size(s.size_bytes)))
        .add("firecracker", &s.firecracker_version)
        .add("cpu", &s.cpu)
        .add("created", dated(s.created_at, now))
        .render()
}

/// `banger daemon status` (text). `outdated_against` names the daemon binary this banger
/// would start when the running daemon is another build.
pub fn daemon_status(info: &DaemonInfo, outdated_against: Option<&str>) -> String {
    let mut kv = KeyValues::default()
        .add("status", "running")
        .add("socket", &info.socket)
        .add("pid", info.pid)
        .add("version", &info.version)
        .add("build", &info.build_id);
    if let Some(binary) = outdated_against {
        kv = kv.add(
            "outdated",
            format!("the running build differs from {binary}; the next banger command restarts it"),
        );
    }
    let web = match (&info.web.url, &info.web.error) {
        (Some(url), _) => format!("{url} (sign in with: banger web)"),
        (None, Some(error)) => format!("not serving: {error}"),
        (None, None) => "not serving".to_owned(),
    };
    kv.add(
        "uptime",
        format_duration(Duration::from_secs(info.uptime_secs)),
    )
    .add("started", info.started_at)
    .add("state dir", &info.state_dir)
    .add("log file", &info.log_file)
    .add("web console", web)
    .render()
}

/// `banger web`: the one-time login URL and how long it stays valid.
pub fn web_login(login: &WebLogin, now: Timestamp) -> String {
    let secs = now.until(login.expires_at).as_secs();
    format!(
        "Open this URL in your browser within {}; it signs in once and then stops working:\n\n  {}\n",
        if secs >= 60 {
            format!("{} min", secs.div_ceil(60))
        } else {
            format!("{secs} s")
        },
        login.url
    )
}

/// `banger doctor`: one line a check, the fix under each problem, a summary.
pub fn doctor(report: &DoctorReport) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let (mut warn, mut fail) = (0, 0);
    for check in &report.checks {
        let mark = match check.status {
            DoctorCheckStatus::Ok => "ok  ",
            DoctorCheckStatus::Warn => {
                warn += 1;
                "warn"
            }
            DoctorCheckStatus::Fail => {
                fail += 1;
                "FAIL"
            }
        };
        out.push_str(&format!(
            "{mark}  {:width$}  {}\n",
            check.name, check.detail
        ));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("      {:width$}  fix: {fix}\n", ""));
        }
    }
    out.push_str(&match (fail, warn) {
        (0, 0) => "\nEverything banger needs is in place.\n".to_owned(),
        (0, w) => format!("\n{w} warning(s); banger works, with the limits above.\n"),
        (f, _) => format!("\n{f} check(s) failed; apply the fixes above.\n"),
    });
    out
}

fn memory(mib: u32) -> String {
    format_size(u64::from(mib) * MIB)
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

fn file(f: &ImageFile) -> String {
    format!(
        "{} ({}, {} allocated)",
        f.path,
        format_size(f.bytes),
        format_size(f.allocated_bytes)
    )
}

/// Bytes an image occupies on disk: what the disk accounting of the architecture counts.
fn allocated(image: &Image) -> u64 {
    let files = &image.files;
    files.kernel.allocated_bytes
        + files.rootfs.allocated_bytes
        + files.initrd.as_ref().map_or(0, |f| f.allocated_bytes)
}

/// `350ms`, `4.7s`: [`format_duration`] of milliseconds.
pub fn duration_ms(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

fn dated(t: Timestamp, now: Timestamp) -> String {
    format!("{t} ({})", age(t, now))
}

/// How long ago `then` was, e.g. `3m ago`; old enough instants show their date instead.
pub fn age(then: Timestamp, now: Timestamp) -> String {
    let secs = then.until(now).as_secs();
    match secs {
        0..5 => "just now".into(),
        5..60 => format!("{secs}s ago"),
        60..3_600 => format!("{}m ago", secs / 60),
        3_600..172_800 => format!("{}h ago", secs / 3_600),
        172_800..5_184_000 => format!("{}d ago", secs / 86_400),
        _ => then.to_string().chars().take(10).collect(),
    }
}

pub use banger_api::time::format_duration;

/// `text` cut to `width` terminal columns, with an ellipsis when it was longer. Columns, not
/// characters: a CJK character takes two, a combining mark none.
pub fn fit(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let mut cut = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        used += w;
        cut.push(c);
    }
    cut.push('…');
    cut
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Columns separated by two spaces, each as wide as its widest cell, no trailing spaces.
struct Table<const N: usize> {
    columns: [(&'static str, Align); N],
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    fn new(columns: [(&'static str, Align); N]) -> Self {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: [String; N]) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let header: [String; N] = self.columns.map(|(title, _)| title.to_string());
        let mut widths = [0; N];
        for row in std::iter::once(&header).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.width());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.width();
                match self.columns[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A `key: value` block with the values aligned.
#[derive(Default)]
struct KeyValues {
    pairs: Vec<(&'static str, String)>,
}

impl KeyValues {
    fn add(mut self, key: &'static str, value: impl std::fmt::Display) -> Self {
        self.pairs.push((key, value.to_string()));
        self
    }

    fn render(&self) -> String {
        let width = self
            .pairs
            .iter()
            .map(|(k, _)| k.len() + 1)
            .max()
            .unwrap_or(0);
        self.pairs
            .iter()
            .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;

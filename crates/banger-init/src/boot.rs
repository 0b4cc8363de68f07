//! The boot sequence, start to `exec` of the image's init, written against [`Sys`] so it can
//! be run on the host. In order:
//!
//! 1. mount `/proc`, `/sys`, `/dev` (devtmpfs) and `/run` (tmpfs);
//! 2. read the `banger.*` kernel parameters ([`crate::cmdline`]);
//! 3. load the modules listed in `/lib/modules/banger.load`, in that order;
//! 4. wait, up to the timeout each, for the base, overlay and work disks and the config drive;
//! 5. mount the base read-only at `/run/banger/base`, the overlay disk at
//!    `/run/banger/overlay`, copy the config drive's files into its upper directory
//!    ([`crate::config_drive`]), and mount overlayfs (lower = base, upper/work on the overlay disk) at
//!    `/newroot`; mount the work disk at `/newroot/root`;
//! 6. set the hostname from the new root's `/etc/hostname` and apply `/etc/banger/network`
//!    ([`crate::netconf`]) to `lo` and the VM's NIC over netlink;
//! 7. move `/proc`, `/sys`, `/dev`, `/run` into the new root, make it `/` and chroot into it;
//! 8. print the ready line and exec the image's init with the arguments the kernel gave us.
//!
//! Any failure is returned as a [`BootError`]; `main` prints it as one
//! `banger-init: FAILED: ...` line and powers the VM off ([`fail`]), so a broken VM stops
//! instead of hanging.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmdline::{self, CmdlineError, Config, DeviceSpec};
use crate::config_drive::{self, ConfigDriveError};
use crate::netconf::{self, NetConfig, NetConfigError};
use crate::sys::{Mount, Sys};

/// Where the init leaves its boot milestones for the guest agent (`/run` moves into the new
/// root with it). The agent's health answer starts with them.
pub use banger_guest_contract::paths::BOOT_STAGES_FILE;
/// Where the initramfs lists the modules to load (banger-image writes it).
pub use banger_guest_contract::paths::MODULE_LIST_ABS as MODULE_LIST;
pub use banger_guest_contract::paths::{BASE_MOUNT, OVERLAY_MOUNT};
pub const NEW_ROOT: &str = "/newroot";
/// Prefix of every line the init prints.
pub const PREFIX: &str = "banger-init:";

const POLL: Duration = Duration::from_millis(20);

/// What stopped the boot. Each message names the step and the thing that failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("`{mount}` failed: {source}")]
    Mount { mount: String, source: io::Error },

    #[error("creating {} failed: {source}", path.display())]
    Mkdir { path: PathBuf, source: io::Error },

    #[error("reading {} failed: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error(transparent)]
    Cmdline(#[from] CmdlineError),

    #[error("loading kernel module {} failed: {source}", path.display())]
    Module { path: PathBuf, source: io::Error },

    #[error(
        "the {what} ({spec}) did not appear within {} s; block devices present: {present}",
        timeout.as_secs()
    )]
    DeviceTimeout {
        what: &'static str,
        spec: String,
        timeout: Duration,
        present: String,
    },

    #[error("{device}: {source}")]
    ConfigDrive {
        device: String,
        source: ConfigDriveError,
    },

    #[error("applying the config drive failed writing {}: {source}", path.display())]
    ApplyConfig { path: PathBuf, source: io::Error },

    #[error(transparent)]
    NetConfig(#[from] NetConfigError),

    #[error(
        "no network interface {wanted} appeared within {} s; interfaces present: {present}",
        timeout.as_secs()
    )]
    InterfaceTimeout {
        wanted: String,
        timeout: Duration,
        present: String,
    },

    #[error("{what} failed: {source}")]
    Network { what: String, source: io::Error },

    #[error("setting the hostname to {name:?} failed: {source}")]
    Hostname { name: String, source: io::Error },

    #[error("switching to the new root failed at `{step}`: {source}")]
    SwitchRoot { step: String, source: io::Error },

    #[error("the image has no init at {path} (set banger.init= to run another program)")]
    NoInit { path: String },

    #[error("running the image's init {path} failed: {source}")]
    Exec { path: String, source: io::Error },
}

/// Runs the boot sequence. Returns only on failure: on success the process has become the
/// image's init. `args` are the arguments the kernel passed to `/init`, handed on to the
/// image's init.
pub fn run(sys: &mut dyn Sys, args: &[String]) -> BootError {
    match boot(sys, args) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Prints the failure as one line and ends the machine; returns only if that failed.
pub fn fail(sys: &mut dyn Sys, error: &BootError) {
    sys.console(&failure_line(&error.to_string()));
    let e = sys.end_machine();
    sys.console(&format!("{PREFIX} ending the machine failed: {e}"));
}

/// `banger-init: FAILED: <what>`, always a single line so a console scraper (or a human
/// scanning a boot log) sees the whole reason at once.
pub fn failure_line(what: &str) -> String {
    let what: Vec<&str> = what
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("{PREFIX} FAILED: {}", what.join("; "))
}

enum Never {}

/// Boot milestones, each at its uptime.
struct Stages(Vec<(&'static str, u128)>);

impl Stages {
    fn mark(&mut self, sys: &mut dyn Sys, name: &'static str) {
        self.0.push((name, sys.uptime().as_millis()));
    }

    fn text(&self) -> String {
        self.0.iter().map(|(n, ms)| format!("{n} {ms}\n")).collect()
    }
}

fn boot(sys: &mut dyn Sys, args: &[String]) -> Result<Never, BootError> {
    let mut stages = Stages(Vec::new());
    stages.mark(sys, "init_started");
    mount_basics(sys)?;
    let cmdline = read(sys, Path::new("/proc/cmdline"))?;
    let config = cmdline::parse(&cmdline)?;

    let loaded = load_modules(sys)?;
    stages.mark(sys, "init_modules_loaded");

    let base = wait_for_device(sys, "base image disk", &config.base, config.timeout)?;
    let overlay = wait_for_device(sys, "overlay disk", &config.overlay, config.timeout)?;
    let work = match &config.work {
        Some(spec) => Some(wait_for_device(sys, "work disk", spec, config.timeout)?),
        None => None,
    };
    let config_drive = match &config.config {
        Some(spec) => Some(wait_for_device(sys, "config drive", spec, config.timeout)?),
        None => None,
    };
    stages.mark(sys, "init_disks_found");

    let applied = mount_root(
        sys,
        &base,
        &overlay,
        work.as_deref(),
        config_drive.as_deref(),
    )?;
    stages.mark(sys, "init_root_mounted");

    let hostname = apply_hostname(sys)?;
    let network = apply_network(sys, &config)?;
    stages.mark(sys, "init_network_configured");

    sys.console(&format!(
        "{PREFIX} {loaded} modules loaded; root: {base} + overlay {overlay}; work: {}; \
         config: {applied}; hostname: {}; network: {}",
        work.as_deref().unwrap_or("none"),
        hostname.as_deref().unwrap_or("(unset)"),
        network.as_deref().unwrap_or("none"),
    ));

    switch_root(sys)?;

    if !sys.exists(Path::new(&config.init)) {
        return Err(BootError::NoInit { path: config.init });
    }
    stages.mark(sys, "init_switch_root");
    let ms = stages.0.last().map_or(0, |(_, ms)| *ms);
    // Only for the agent's health answer: a boot does not fail for it.
    if let Err(e) = sys.write_file(Path::new(BOOT_STAGES_FILE), stages.text().as_bytes()) {
        sys.console(&format!(
            "{PREFIX} cannot record the boot stages in {BOOT_STAGES_FILE}: {e}"
        ));
    }
    sys.console(&format!(
        "{PREFIX} switching root ({ms} ms since kernel start)"
    ));
    let source = sys.exec(&config.init, args);
    Err(BootError::Exec {
        path: config.init,
        source,
    })
}

fn mkdir(sys: &mut dyn Sys, path: &str) -> Result<(), BootError> {
    sys.mkdir_all(Path::new(path))
        .map_err(|source| BootError::Mkdir {
            path: path.into(),
            source,
        })
}

fn mount(sys: &mut dyn Sys, m: Mount) -> Result<(), BootError> {
    sys.mount(&m).map_err(|source| BootError::Mount {
        mount: m.to_string(),
        source,
    })
}

fn read(sys: &mut dyn Sys, path: &Path) -> Result<String, BootError> {
    sys.read_to_string(path).map_err(|source| BootError::Read {
        path: path.to_owned(),
        source,
    })
}

fn mount_basics(sys: &mut dyn Sys) -> Result<(), BootError> {
    for dir in ["/proc", "/sys", "/dev", "/run"] {
        mkdir(sys, dir)?;
    }
    mount(sys, Mount::new("proc", "/proc", "proc").restricted(true))?;
    mount(sys, Mount::new("sysfs", "/sys", "sysfs").restricted(true))?;
    mount(
        sys,
        Mount::new("devtmpfs", "/dev", "devtmpfs").data("mode=0755"),
    )?;
    sys.ensure_console();
    mount(
        sys,
        Mount::new("tmpfs", "/run", "tmpfs")
            .restricted(false)
            .data("mode=0755"),
    )
}

/// Loads the listed modules in order; returns how many. A module the kernel already has is
/// fine. The module files are removed afterwards: they would otherwise occupy memory for the
/// VM's whole life.
fn load_modules(sys: &mut dyn Sys) -> Result<usize, BootError> {
    let list_path = Path::new(MODULE_LIST);
    let list = match sys.read_to_string(list_path) {
        Ok(list) => list,
        // An initramfs for a kernel with everything built in has no list.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(BootError::Read {
                path: list_path.to_owned(),
                source,
            });
        }
    };
    let mut loaded = 0;
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new(line);
        match sys.load_module(path) {
            Ok(()) => loaded += 1,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(BootError::Module {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    let _ = sys.remove_tree(Path::new("/lib/modules"));
    Ok(loaded)
}

/// Waits until the device appears; returns its path.
fn wait_for_device(
    sys: &mut dyn Sys,
    what: &'static str,
    spec: &DeviceSpec,
    timeout: Duration,
) -> Result<String, BootError> {
    let deadline = sys.uptime() + timeout;
    loop {
        let found = match spec {
            DeviceSpec::Path(path) => sys
                .exists(path)
                .then(|| path.to_string_lossy().into_owned()),
            DeviceSpec::Label(label) => find_by_label(sys, label),
        };
        if let Some(path) = found {
            return Ok(path);
        }
        if sys.uptime() >= deadline {
            let present = sys
                .list_dir(Path::new("/sys/class/block"))
                .map(|names| names.join(" "))
                .unwrap_or_default();
            return Err(BootError::DeviceTimeout {
                what,
                spec: spec.to_string(),
                timeout,
                present: if present.is_empty() {
                    "none".to_owned()
                } else {
                    present
                },
            });
        }
        sys.sleep(POLL);
    }
}

/// The block device whose ext2/3/4 superblock carries `label`, or the config drive with it.
fn find_by_label(sys: &mut dyn Sys, label: &str) -> Option<String> {
    let names = sys.list_dir(Path::new("/sys/class/block")).ok()?;
    names.into_iter().find_map(|name| {
        let dev = format!("/dev/{name}");
        let head = sys.read_head(Path::new(&dev), 2048).ok()?;
        let found = ext_label(&head).or_else(|| config_drive::label(&head))?;
        (found == label).then_some(dev)
    })
}

/// The volume label of an ext2/3/4 filesystem, from the superblock at byte 1024.
pub use banger_guest_contract::ext::label as ext_label;

fn mount_root(
    sys: &mut dyn Sys,
    base: &str,
    overlay: &str,
    work: Option<&str>,
    config_drive: Option<&str>,
) -> Result<String, BootError> {
    for dir in [BASE_MOUNT, OVERLAY_MOUNT, NEW_ROOT] {
        mkdir(sys, dir)?;
    }
    mount(sys, Mount::new(base, BASE_MOUNT, "ext4").read_only())?;
    mount(sys, Mount::new(overlay, OVERLAY_MOUNT, "ext4"))?;
    // A blank overlay disk (no banger files) still boots: overlayfs just needs the two
    // directories.
    let upper = format!("{OVERLAY_MOUNT}/upper");
    let workdir = format!("{OVERLAY_MOUNT}/work");
    mkdir(sys, &upper)?;
    mkdir(sys, &workdir)?;
    // Into the upper directory before overlayfs is mounted over it: changing it afterwards is
    // not allowed.
    let applied = match config_drive {
        Some(device) => apply_config_drive(sys, device, Path::new(&upper))?,
        None => "none".to_owned(),
    };
    mount(
        sys,
        Mount::new("overlay", NEW_ROOT, "overlay").data(&format!(
            "lowerdir={BASE_MOUNT},upperdir={upper},workdir={workdir}"
        )),
    )?;
    if let Some(work) = work {
        let root_home = format!("{NEW_ROOT}/root");
        mkdir(sys, &root_home)?;
        mount(sys, Mount::new(work, &root_home, "ext4"))?;
    }
    Ok(applied)
}

/// Copies the config drive's files into `upper` unless this very drive was applied before
/// (see [`config_drive`]); says what it did.
fn apply_config_drive(sys: &mut dyn Sys, device: &str, upper: &Path) -> Result<String, BootError> {
    let bytes = sys
        .read_head(Path::new(device), config_drive::MAX_SIZE)
        .map_err(|source| BootError::Read {
            path: device.into(),
            source,
        })?;
    let entries = config_drive::parse(&bytes).map_err(|source| BootError::ConfigDrive {
        device: device.to_owned(),
        source,
    })?;
    let copy = upper.join(config_drive::APPLIED_COPY);
    if sys
        .read_head(&copy, config_drive::MAX_SIZE)
        .is_ok_and(|old| old == bytes)
    {
        return Ok(format!("{device} (applied before)"));
    }
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| BootError::ApplyConfig { path, source }
    };
    let mut files = 0;
    // The marker says what the drive is; it is not a file of the guest.
    for entry in entries.iter().skip(1) {
        match entry {
            config_drive::Entry::Dir { path, mode } => {
                let path = upper.join(path);
                sys.make_dir(&path, *mode).map_err(failed(&path))?;
            }
            config_drive::Entry::File { path, mode, data } => {
                let path = upper.join(path);
                if let Some(parent) = path.parent() {
                    sys.mkdir_all(parent).map_err(failed(parent))?;
                }
                sys.install_file(&path, data, *mode)
                    .map_err(failed(&path))?;
                files += 1;
            }
        }
    }
    // Last: a boot that stops half-way applies the drive again next time.
    if let Some(parent) = copy.parent() {
        sys.mkdir_all(parent).map_err(failed(parent))?;
    }
    sys.install_file(&copy, &bytes, 0o600)
        .map_err(failed(&copy))?;
    Ok(format!("{device} ({files} files applied)"))
}

/// Sets the hostname from the new root's `/etc/hostname`; returns it.
fn apply_hostname(sys: &mut dyn Sys) -> Result<Option<String>, BootError> {
    let path = PathBuf::from(format!("{NEW_ROOT}/etc/hostname"));
    let name = match sys.read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(BootError::Read { path, source }),
    };
    if name.is_empty() {
        return Ok(None);
    }
    sys.set_hostname(&name)
        .map_err(|source| BootError::Hostname {
            name: name.clone(),
            source,
        })?;
    Ok(Some(name))
}

/// Applies the new root's network file, if it has one; returns a summary for the console.
fn apply_network(sys: &mut dyn Sys, config: &Config) -> Result<Option<String>, BootError> {
    let path = PathBuf::from(format!("{NEW_ROOT}/{}", netconf::NETWORK_FILE));
    let text = match sys.read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(BootError::Read { path, source }),
    };
    let net = netconf::parse(&text)?;
    let network = |what: String| move |source| BootError::Network { what, source };

    let lo = interface_index(sys, "lo").map_err(network("reading the index of lo".into()))?;
    sys.link_up(lo).map_err(network("bringing up lo".into()))?;

    let (name, index) = wait_for_interface(sys, &net, config.timeout)?;
    sys.link_up(index)
        .map_err(network(format!("bringing up {name}")))?;
    sys.add_address(index, net.address, net.prefix_len, net.broadcast())
        .map_err(network(format!(
            "adding {}/{} to {name}",
            net.address, net.prefix_len
        )))?;
    let mut summary = format!("{name} {}/{}", net.address, net.prefix_len);
    if let Some(gateway) = net.gateway {
        sys.add_default_route(index, gateway)
            .map_err(network(format!("adding the default route via {gateway}")))?;
        summary.push_str(&format!(" via {gateway}"));
    }
    Ok(Some(summary))
}

fn interface_index(sys: &mut dyn Sys, name: &str) -> io::Result<u32> {
    let text = sys.read_to_string(&PathBuf::from(format!("/sys/class/net/{name}/ifindex")))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("ifindex {text:?}")))
}

/// The NIC to configure: the one with the configured MAC, or the first Ethernet NIC by name.
fn wait_for_interface(
    sys: &mut dyn Sys,
    net: &NetConfig,
    timeout: Duration,
) -> Result<(String, u32), BootError> {
    let deadline = sys.uptime() + timeout;
    loop {
        let names = sys
            .list_dir(Path::new("/sys/class/net"))
            .unwrap_or_default();
        for name in &names {
            let attr = |sys: &mut dyn Sys, a: &str| {
                sys.read_to_string(&PathBuf::from(format!("/sys/class/net/{name}/{a}")))
                    .map(|s| s.trim().to_ascii_lowercase())
                    .unwrap_or_default()
            };
            // type 1 is ARPHRD_ETHER; lo is 772.
            if attr(sys, "type") != "1" {
                continue;
            }
            if let Some(mac) = &net.mac
                && attr(sys, "address") != *mac
            {
                continue;
            }
            if let Ok(index) = interface_index(sys, name) {
                return Ok((name.clone(), index));
            }
        }
        if sys.uptime() >= deadline {
            return Err(BootError::InterfaceTimeout {
                wanted: match &net.mac {
                    Some(mac) => format!("with MAC {mac}"),
                    None => "of type Ethernet".to_owned(),
                },
                timeout,
                present: if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(" ")
                },
            });
        }
        sys.sleep(POLL);
    }
}

/// Moves the pseudo filesystems into the new root and makes it `/`, as `switch_root` does.
fn switch_root(sys: &mut dyn Sys) -> Result<(), BootError> {
    let step = |what: String| move |source| BootError::SwitchRoot { step: what, source };
    for dir in ["/proc", "/sys", "/dev", "/run"] {
        let target = PathBuf::from(format!("{NEW_ROOT}{dir}"));
        mkdir(sys, &target.to_string_lossy())?;
        sys.move_mount(Path::new(dir), &target)
            .map_err(step(format!("mount --move {dir} {}", target.display())))?;
    }
    sys.chdir(Path::new(NEW_ROOT))
        .map_err(step(format!("cd {NEW_ROOT}")))?;
    sys.move_mount(Path::new("."), Path::new("/"))
        .map_err(step(format!("mount --move {NEW_ROOT} /")))?;
    sys.chroot(Path::new("."))
        .map_err(step("chroot .".into()))?;
    sys.chdir(Path::new("/")).map_err(step("cd /".into()))?;
    Ok(())
}

#[cfg(test)]
mod tests;

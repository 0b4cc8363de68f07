//! What banger adds to a bootstrapped Debian root besides packages: the image's init and the
//! few files that make the root a banger guest, and the hook that installs the guest agent
//! (`banger-agent --listen-vm-ip`, respawned by init like sshd).
//!
//! The image's init is BusyBox's `init` (Debian's `busybox` package), not systemd. Under QEMU
//! TCG a light init reaches sshd in about 7.5 s from power-on against about 24 s with systemd
//! (docs/images.md has the figures), and a dev VM needs exactly two long-lived services,
//! sshd and the agent, both supervised by `inittab` `respawn` entries. `/etc/inittab`:
//!
//! - `sysinit` runs [`RC_BOOT`]: what `banger-init` does not already do (devpts, `/dev/shm`,
//!   sshd's runtime directory, a machine id per VM, a host key only when the VM has none, KVM
//!   and TUN modules for VMs inside this one);
//! - `respawn` keeps `sshd -D -e` running (its log goes to the console, which banger keeps);
//! - `ctrlaltdel` (Firecracker's `SendCtrlAltDel`) ends the VM cleanly through a reboot, and
//!   `shutdown` syncs on the way. In a banger VM a reboot *is* the end of the VM, on both
//!   backends: Firecracker on x86 has no power-off device (a guest that powers off only halts
//!   its vCPUs and the process lives on) but exits when the guest resets it (`reboot=k`), and
//!   banger runs QEMU with `-no-reboot`. So `poweroff` and `halt` are [`END_VM_SCRIPT`], which
//!   asks init for that reboot: whatever a user or a tool types to stop the machine ends it.
//!
//! An image may declare more long-running services: service `NAME` on TCP `PORT` is the script
//! `/etc/banger/services/NAME` ([`service_script`]), run by the generic runner
//! [`SERVICE_RUNNER`] ([`service_runner`]: `/root` as its directory and `HOME`, its output in
//! `/var/log/banger/NAME.log`) from a `respawn` entry ([`service_inittab_line`]). A start
//! waits for each declared service's port after the agent and sshd ([`services_in_inittab`]).
//!
//! sshd reads the VM's host key and root's authorized key from the overlay disk through the
//! drop-in [`crate::vmdisk::SSHD_DROP_IN`] written at VM creation; this module only adds the
//! image-wide policy (keys only, no passwords).

use std::path::Path;

use banger_api::ServiceCheck;
use banger_host::{CommandRunner, CommandSpec, Privilege, RunError};

/// The sysinit script, relative to the guest's root.
pub use banger_guest_contract::paths::RC_BOOT;
/// Where [`install_agent`] puts the guest agent, relative to the guest's root.
pub const AGENT_PATH: &str = "usr/local/sbin/banger-agent";
/// The image-wide sshd policy, read before the per-VM drop-in (`banger.conf`).
pub const SSHD_IMAGE_DROP_IN: &str = "etc/ssh/sshd_config.d/00-banger-image.conf";
/// What the console shows once sshd has been started; tests and humans look for it.
pub const SSHD_STARTED_LINE: &str = "banger: starting sshd";

/// One entry banger writes into the guest's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFile {
    File {
        path: &'static str,
        mode: u32,
        contents: String,
    },
    Symlink {
        path: &'static str,
        target: &'static str,
    },
}

impl GuestFile {
    pub fn path(&self) -> &'static str {
        match self {
            GuestFile::File { path, .. } | GuestFile::Symlink { path, .. } => path,
        }
    }
}

fn file(path: &'static str, mode: u32, contents: &str) -> GuestFile {
    GuestFile::File {
        path,
        mode,
        contents: contents.to_owned(),
    }
}

/// `/sbin/poweroff` and `/sbin/halt` of a bootstrapped root: they end the VM the one way both
/// backends notice, a reboot (BusyBox's `poweroff`, `halt` and `reboot` take the same options).
pub const END_VM_SCRIPT: &str = "#!/bin/sh\n\
# banger: powering off or halting ends this VM. Firecracker has no power-off device on x86\n\
# (the vCPUs would only halt, the VM would stay up), but it exits when the guest reboots,\n\
# and banger runs QEMU with -no-reboot: a reboot is how a banger VM ends.\n\
exec /bin/busybox reboot \"$@\"\n";

pub use banger_api::service::{AGENT_PORT, AGENT_SERVICE, SSH_SERVICE};

/// The services an image's `/etc/inittab` keeps running that a start can wait for, in the
/// order a start waits: banger's guest agent, then sshd, then each declared service
/// (`banger-service NAME PORT [TIMEOUT_SECS]`, see [`service_inittab_line`]) in inittab order.
/// Only `respawn` entries count (a `once` or `sysinit` program is not a service), a
/// commented-out line is not there, and a malformed `banger-service` entry is ignored.
pub fn services_in_inittab(inittab: &str) -> Vec<ServiceCheck> {
    let respawned: Vec<&str> = inittab
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            // id:runlevels:action:process
            let mut fields = l.splitn(4, ':');
            let (_, _, action, process) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            (action == "respawn").then_some(process)
        })
        .collect();
    let program = |p: &str| -> String {
        p.split_whitespace()
            .next()
            .and_then(|path| path.rsplit('/').next())
            .unwrap_or_default()
            .to_owned()
    };
    let mut services = Vec::new();
    if respawned.iter().any(|p| program(p) == "banger-agent") {
        services.push(ServiceCheck {
            name: AGENT_SERVICE.to_owned(),
            port: AGENT_PORT,
            timeout_secs: None,
            http: None,
        });
    }
    if respawned.iter().any(|p| program(p) == "sshd") {
        services.push(ServiceCheck {
            name: SSH_SERVICE.to_owned(),
            port: 22,
            timeout_secs: None,
            http: None,
        });
    }
    for declared in respawned.iter().filter_map(|p| declared_service(p)) {
        if !services.iter().any(|s| s.name == declared.name) {
            services.push(declared);
        }
    }
    services
}

/// The runner that starts an image's declared services, relative to the guest's root: init
/// runs `banger-service NAME PORT [TIMEOUT_SECS]` ([`service_inittab_line`]) and it runs
/// `/etc/banger/services/NAME` ([`SERVICES_DIR`]) with its output in [`service_log`].
pub const SERVICE_RUNNER: &str = "usr/local/sbin/banger-service";
/// Where each declared service's script lives, relative to the guest's root.
pub use banger_guest_contract::paths::SERVICES_DIR;
/// Where the runner keeps the services' logs, relative to the guest's root.
pub const SERVICE_LOG_DIR: &str = "var/log/banger";
/// The size past which a service's log is moved to `NAME.log.1` when it (re)starts.
pub const SERVICE_LOG_MAX_BYTES: u64 = 1024 * 1024;
pub use banger_api::service::{SERVICE_NAME_MAX, check as validate_service};
/// The longest readiness deadline a service may declare: a day, in seconds.
pub const SERVICE_TIMEOUT_MAX_SECS: u64 = 86_400;

/// Whether a manifest's `services` are ones banger can wait for: `agent` on port 1024, `ssh` on
/// 22, and declared services that pass [`validate_service`], none twice, and no deadline of
/// zero seconds. A manifest read from a file (an import) is checked with it before it is stored.
pub fn validate_services(services: &[ServiceCheck]) -> Result<(), String> {
    for (i, check) in services.iter().enumerate() {
        match (check.name.as_str(), check.port) {
            (AGENT_SERVICE, AGENT_PORT) | (SSH_SERVICE, 22) => {}
            (AGENT_SERVICE, port) | (SSH_SERVICE, port) => {
                return Err(format!(
                    "service {:?} has port {port}; banger's {} listens on {}",
                    check.name,
                    check.name,
                    if check.name == AGENT_SERVICE {
                        AGENT_PORT
                    } else {
                        22
                    }
                ));
            }
            (name, port) => validate_service(name, port)?,
        }
        if let Some(secs) = check.timeout_secs
            && !(1..=SERVICE_TIMEOUT_MAX_SECS).contains(&secs)
        {
            return Err(format!(
                "service {:?} has a readiness deadline of {secs} seconds; give 1 to \
                 {SERVICE_TIMEOUT_MAX_SECS}, or none for the configured one",
                check.name
            ));
        }
        if let Some(path) = &check.http {
            validate_http_path(path)?;
        }
        if services[..i].iter().any(|s| s.name == check.name) {
            return Err(format!("service {:?} is declared twice", check.name));
        }
    }
    Ok(())
}

/// The log a declared service's output goes to, relative to the guest's root.
pub fn service_log(name: &str) -> String {
    format!("{SERVICE_LOG_DIR}/{name}.log")
}

/// The inittab entry that keeps `check`'s service running, with its newline:
/// `::respawn:/usr/local/sbin/banger-service NAME PORT [TIMEOUT_SECS] [http=PATH]`. The port,
/// deadline and readiness path are not the runner's business; they are there so that [`services_in_inittab`] finds them
/// again when the image's root comes back through `image register`.
pub fn service_inittab_line(check: &ServiceCheck) -> String {
    let mut line = format!("::respawn:/{SERVICE_RUNNER} {} {}", check.name, check.port);
    if let Some(secs) = check.timeout_secs {
        line.push_str(&format!(" {secs}"));
    }
    if let Some(path) = &check.http {
        line.push_str(&format!(" http={path}"));
    }
    line.push('\n');
    line
}

/// An HTTP readiness path: absolute, without spaces or control characters (it goes into an
/// inittab line and a request line as is).
pub fn validate_http_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') && path.len() <= 256 && path.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "HTTP readiness path {path:?} must start with / and have no spaces (e.g. \"/health\")"
        ))
    }
}

/// The script of service `name` (for `/etc/banger/services/NAME`, mode 0755) running
/// `command`, one shell command line; `name` must pass [`validate_service`]. A simple command
/// runs with `exec` (after its leading `VAR=value` assignments, if any), so the process init
/// supervises is the service itself and a stop signal reaches it; a line with shell operators
/// (`cd /app && npm start`) runs as written, the shell waiting for it.
pub fn service_script(name: &str, command: &str) -> String {
    let command = command.trim();
    let compound = command.chars().any(|c| {
        matches!(
            c,
            ';' | '&' | '|' | '\n' | '(' | ')' | '`' | '<' | '>' | '{' | '}'
        )
    }) || command.starts_with("exec ")
        || command.contains("$(");
    // `exec A=1 prog` would look for a program called `A=1`: assignments go before `exec`.
    let mut assignments = Vec::new();
    let mut rest = command;
    let mut quoted_assignment = false;
    while let Some((word, after)) = rest.split_once(char::is_whitespace) {
        let Some((var, value)) = word.split_once('=') else {
            break;
        };
        let is_name = var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name {
            break;
        }
        if value.contains(['\'', '"', '\\']) {
            // Its value may hold spaces: only the shell can tell where it ends.
            quoted_assignment = true;
            break;
        }
        assignments.push(word);
        rest = after.trim_start();
    }
    let run = if compound || quoted_assignment {
        command.to_owned()
    } else {
        assignments.push("exec");
        format!("{} {rest}", assignments.join(" "))
    };
    format!(
        "#!/bin/sh\n\
         # The {name} service: started by /{SERVICE_RUNNER} (its output goes to\n\
         # /{log}) and restarted by init when it exits.\n\
         {run}\n",
        log = service_log(name),
    )
}

/// The runner for declared services ([`SERVICE_RUNNER`], mode 0755).
///
/// BusyBox init needs no delay here: after reaping an exited `respawn` child it sleeps a
/// second before starting it again, so a service that exits at once restarts about once a
/// second, and says so on the console ("process '…' exited. Scheduling for restart.").
pub fn service_runner() -> GuestFile {
    let contents = format!(
        "#!/bin/sh\n\
         # Written by banger: runs an image service for init.\n\
         # Usage: banger-service NAME PORT [TIMEOUT_SECS]\n\
         # Runs /{SERVICES_DIR}/NAME in /root with its output appended to\n\
         # /{SERVICE_LOG_DIR}/NAME.log, moved to NAME.log.1 once over {max} bytes. PORT and\n\
         # TIMEOUT_SECS are what banger waits for when a VM starts; the runner does not use them.\n\
         name=\"$1\"\n\
         case \"$name\" in\n\
         ''|-*|*[!a-z0-9-]*)\n\
         \techo \"banger-service: invalid service name '$name'\" >&2\n\
         \texit 2 ;;\n\
         esac\n\
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         HOME=/root\n\
         export PATH HOME\n\
         script=\"/{SERVICES_DIR}/$name\"\n\
         log=\"/{SERVICE_LOG_DIR}/$name.log\"\n\
         mkdir -p /{SERVICE_LOG_DIR}\n\
         if [ -f \"$log\" ] && [ \"$(wc -c <\"$log\")\" -gt {max} ]; then\n\
         \tmv -f \"$log\" \"$log.1\"\n\
         fi\n\
         exec >>\"$log\" 2>&1 </dev/null\n\
         echo \"banger-service: starting $name ($(date -u '+%Y-%m-%dT%H:%M:%SZ'))\"\n\
         if [ ! -x \"$script\" ]; then\n\
         \techo \"banger-service: $script is missing or not executable\"\n\
         \texit 1\n\
         fi\n\
         cd /root 2>/dev/null || cd /\n\
         exec \"$script\"\n",
        max = SERVICE_LOG_MAX_BYTES,
    );
    file(SERVICE_RUNNER, 0o755, &contents)
}

/// A declared service's `respawn` process, `banger-service NAME PORT [TIMEOUT_SECS]`, or
/// `None` when it is not one or is malformed (a bad name or port, a deadline that is not 1 to
/// [`SERVICE_TIMEOUT_MAX_SECS`], extra words).
fn declared_service(process: &str) -> Option<ServiceCheck> {
    let mut words = process.split_whitespace();
    if words.next()?.rsplit('/').next()? != "banger-service" {
        return None;
    }
    let name = words.next()?;
    let port: u16 = words.next()?.parse().ok()?;
    let mut next = words.next();
    let timeout_secs = match next {
        Some(t) if !t.starts_with("http=") => {
            next = words.next();
            Some(
                t.parse::<u64>()
                    .ok()
                    .filter(|t| (1..=SERVICE_TIMEOUT_MAX_SECS).contains(t))?,
            )
        }
        _ => None,
    };
    let http = match next {
        Some(token) => {
            let path = token.strip_prefix("http=")?;
            validate_http_path(path).ok()?;
            Some(path.to_owned())
        }
        None => None,
    };
    if words.next().is_some() || validate_service(name, port).is_err() {
        return None;
    }
    Some(ServiceCheck {
        name: name.to_owned(),
        port,
        timeout_secs,
        http,
    })
}

/// The inittab line that starts the agent; [`install_agent`] appends it. `--listen-vm-ip`
/// makes it serve on the VM's private IP too (read from the overlay's network file), the
/// channel banger uses where there is no vsock.
pub fn agent_inittab_line() -> String {
    format!("::respawn:/{AGENT_PATH} --listen-vm-ip\n")
}

/// Every file banger writes into a bootstrapped root, paths relative to it.
pub fn files() -> Vec<GuestFile> {
    let inittab = format!(
        "# banger's guest init: BusyBox init. banger-init has mounted /proc, /sys, /dev, /run,\n\
         # the overlay root and the work disk at /root, and configured the network.\n\
         ::sysinit:/{RC_BOOT}\n\
         ::respawn:/usr/sbin/sshd -D -e\n\
         ::ctrlaltdel:/bin/busybox reboot\n\
         ::shutdown:/bin/busybox sync\n"
    );
    let rc_boot = format!(
        "#!/bin/sh\n\
         # Run once at boot by /etc/inittab, before the services start.\n\
         PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         mkdir -p /dev/pts /dev/shm\n\
         mountpoint -q /dev/pts || mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /dev/pts\n\
         mountpoint -q /dev/shm || mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm\n\
         [ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd\n\
         mkdir -p /run/sshd && chmod 0755 /run/sshd\n\
         # Hardware virtualization for VMs inside this one (banger's lab runs Firecracker here)\n\
         # when the CPU offers it, and /dev/net/tun for their taps: in the background and at the\n\
         # lowest priority, so the services, which a start waits for, do not wait for it.\n\
         (if grep -qw svm /proc/cpuinfo; then nice -n 19 modprobe kvm_amd\n\
         \telif grep -qw vmx /proc/cpuinfo; then nice -n 19 modprobe kvm_intel; fi\n\
         \tnice -n 19 modprobe tun) >/dev/null 2>&1 &\n\
         # One machine id per VM, kept on its overlay disk.\n\
         if [ ! -s /etc/machine-id ]; then\n\
         \ttr -d - </proc/sys/kernel/random/uuid >/etc/machine-id\n\
         fi\n\
         # banger gives every VM its own host key; a root booted some other way gets fresh ones.\n\
         if ! ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1; then\n\
         \techo 'banger: this VM has no SSH host key; generating one'\n\
         \tssh-keygen -A\n\
         fi\n\
         echo '{SSHD_STARTED_LINE}'\n"
    );
    vec![
        file("etc/inittab", 0o644, &inittab),
        file(RC_BOOT, 0o755, &rc_boot),
        file(
            SSHD_IMAGE_DROP_IN,
            0o644,
            "# Written by banger: keys only. The VM's host key and root's authorized key come\n\
             # from banger.conf, written when the VM is created.\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n",
        ),
        // debootstrap copies the host's; each VM's overlay brings its own.
        file("etc/hostname", 0o644, "debian\n"),
        file(
            "etc/hosts",
            0o644,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        file("etc/resolv.conf", 0o644, ""),
        file(
            "etc/fstab",
            0o644,
            "# banger's /init mounts the root (overlayfs) and the work disk at /root.\n",
        ),
        // Empty: every VM makes its own at first boot (see rc.boot).
        file("etc/machine-id", 0o444, ""),
        GuestFile::Symlink {
            path: "sbin/init",
            target: "/bin/busybox",
        },
        file("sbin/poweroff", 0o755, END_VM_SCRIPT),
        GuestFile::Symlink {
            path: "sbin/reboot",
            target: "/bin/busybox",
        },
        file("sbin/halt", 0o755, END_VM_SCRIPT),
        // The module tools (the root has no kmod): the kernel's modules are in /lib/modules.
        GuestFile::Symlink {
            path: "sbin/modprobe",
            target: "/bin/busybox",
        },
        GuestFile::Symlink {
            path: "sbin/insmod",
            target: "/bin/busybox",
        },
        GuestFile::Symlink {
            path: "sbin/rmmod",
            target: "/bin/busybox",
        },
        GuestFile::Symlink {
            path: "sbin/lsmod",
            target: "/bin/busybox",
        },
        GuestFile::Symlink {
            path: "sbin/depmod",
            target: "/bin/busybox",
        },
    ]
}

/// Writes [`files`] under `dir` (a user-owned staging directory), ready to be copied into the
/// root with their modes. With `merged_usr` (the root's `/sbin` is a symlink to `usr/sbin`,
/// as in every Debian since bookworm) `sbin/` entries are staged under `usr/sbin/`, since a
/// copy must not replace the root's `/sbin` symlink with a directory.
pub fn stage(dir: &Path, merged_usr: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in files() {
        let relative = match entry.path().strip_prefix("sbin/") {
            Some(rest) if merged_usr => format!("usr/sbin/{rest}"),
            _ => entry.path().to_owned(),
        };
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match entry {
            GuestFile::File { mode, contents, .. } => {
                std::fs::write(&path, contents)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            }
            GuestFile::Symlink { target, .. } => std::os::unix::fs::symlink(target, &path)?,
        }
    }
    // Directories get the modes a root filesystem has, whatever the umask.
    for entry in walk_dirs(dir)? {
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn walk_dirs(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if std::fs::symlink_metadata(&path)?.is_dir() {
                pending.push(path.clone());
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// Installing the guest agent into a root failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the agent binary {} is not an executable file", path.display())]
    NotExecutable { path: std::path::PathBuf },

    #[error("installing the agent into the image failed")]
    Install(#[source] RunError),
}

/// The hook for the guest agent: when `agent` is given, copies it to [`AGENT_PATH`] in `root`
/// (mode 0755, root-owned) and appends its `respawn` entry to `/etc/inittab`, so BusyBox init
/// starts it at boot and restarts it when it exits. Returns whether an agent was installed.
/// Both steps run privileged: `root` belongs to root.
pub fn install_agent(
    runner: &dyn CommandRunner,
    privilege: Privilege,
    root: &Path,
    agent: Option<&Path>,
) -> Result<bool, AgentError> {
    let Some(agent) = agent else {
        return Ok(false);
    };
    if !banger_host::program::is_executable(agent) {
        return Err(AgentError::NotExecutable {
            path: agent.to_owned(),
        });
    }
    let dst = root.join(AGENT_PATH);
    runner
        .run(&privilege.command(
            "install",
            [
                "-D".to_owned(),
                "-m".to_owned(),
                "0755".to_owned(),
                agent.display().to_string(),
                dst.display().to_string(),
            ],
        ))
        .map_err(AgentError::Install)?;
    let inittab = root.join("etc/inittab");
    let append: CommandSpec = privilege
        .command("tee", ["-a".to_owned(), inittab.display().to_string()])
        .stdin(agent_inittab_line());
    runner.run(&append).map_err(AgentError::Install)?;
    Ok(true)
}

#[cfg(test)]
mod tests;

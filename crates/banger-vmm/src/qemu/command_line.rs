//! The QEMU command line a [`VmSpec`] becomes, and reading one back from `/proc/PID/cmdline`.
//! QEMU is configured entirely by its arguments (there is no configuration API to call before
//! boot), so the command line is the whole VM: machine and accelerator, kernel, disks in order,
//! the tap, the serial console appended to the console log, and the QMP socket banger drives it
//! through. It also identifies the process later: a restarted daemon finds a VM's QEMU by the
//! QMP socket named in its arguments, and its vsock context id there too.
//!
//! Values inside QEMU's `key=value,...` options escape a comma by doubling it; every path and
//! name banger puts there goes through [`opt`].

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::Accel;
use crate::VmSpec;

/// The device through which QEMU gives a guest a vsock QEMU need not relay (vhost-vsock).
pub const VHOST_VSOCK: &str = "/dev/vhost-vsock";

/// microvm under TCG has neither a PIT-calibrated TSC nor an HPET or PM timer: a kernel told
/// nothing hangs after "tsc: Marking TSC unstable". Given the TSC's frequency it boots; the
/// value only needs to be plausible. Under KVM the kernel uses kvmclock instead.
pub const TCG_TSC_ARG: &str = "tsc_early_khz=2000000";

const QMP_ID: &str = "qmp";
const CONSOLE_ID: &str = "console";
const NET_ID: &str = "net0";

/// The prefix of QEMU's system emulator programs, by which a process is recognised as a QEMU.
const PROGRAM_PREFIX: &str = "qemu-system";

/// The kernel command line the guest gets: the spec's, plus what the accelerator needs.
pub fn boot_args(spec: &VmSpec, accel: Accel) -> String {
    let tsc_given = spec
        .boot_args
        .split_whitespace()
        .any(|arg| arg.starts_with("tsc_early_khz="));
    if accel == Accel::Tcg && !tsc_given {
        format!("{} {TCG_TSC_ARG}", spec.boot_args)
            .trim()
            .to_owned()
    } else {
        spec.boot_args.clone()
    }
}

/// QEMU's seccomp sandbox: obsolete system calls, spawning processes (banger's taps need no
/// scripts) and changing resource limits, affinity or scheduling are refused. Raising
/// privileges is refused too when QEMU does not drop them itself ([`sandbox_arg`]).
const SANDBOX: &str = "on,obsolete=deny,spawn=deny,resourcecontrol=deny";

/// The `-sandbox` value. A QEMU that drops to another uid needs `setuid` for that, after the
/// filter is in place; once it has, no uid it holds is root's, and `NoNewPrivs` is set.
pub fn sandbox_arg(drops_to_uid: bool) -> String {
    if drops_to_uid {
        SANDBOX.to_owned()
    } else {
        format!("{SANDBOX},elevateprivileges=deny")
    }
}

/// How the process is confined: the uid (and gid) it drops to once started, and the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confined {
    pub uid: Option<u32>,
    pub sandbox: bool,
}

/// The arguments `qemu-system-x86_64` runs `spec` with. The VM starts paused (`-S`): the launch
/// connects to QMP first and then lets it run, so a VM never runs without a working QMP socket.
/// `vsock` attaches a vhost-vsock device (only possible where [`VHOST_VSOCK`] exists).
pub fn process_args(spec: &VmSpec, accel: Accel, vsock: bool, confined: Confined) -> Vec<OsString> {
    let mut args = Args::default();
    args.pair("-name", opt(spec.vm_id.as_ref()))
        .pair("-machine", "microvm,acpi=on")
        .pair("-accel", accel.as_str())
        .pair("-cpu", accel.cpu_model())
        .pair("-smp", spec.vcpus.to_string())
        .pair("-m", format!("{}M", spec.memory_mib))
        // Nothing banger did not ask for: no default NIC, serial, monitor, display or config
        // file; a guest reboot ends the process like a Firecracker guest's does.
        .flags(&[
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-display",
            "none",
            "-no-reboot",
            "-S",
        ])
        .pair("-kernel", spec.kernel.as_os_str());
    if let Some(initrd) = &spec.initrd {
        args.pair("-initrd", initrd.as_os_str());
    }
    args.pair("-append", boot_args(spec, accel));
    for drive in &spec.drives {
        let mut value = join(&["id=", &drive.id, ",file="]);
        value.push(opt(drive.path.as_os_str()));
        value.push(",format=raw,if=none");
        if drive.read_only {
            value.push(",readonly=on");
        }
        args.pair("-drive", value)
            .pair("-device", join(&["virtio-blk-device,drive=", &drive.id]));
    }
    if let Some(net) = &spec.net {
        let mut netdev = join(&["tap,id=", NET_ID, ",ifname="]);
        netdev.push(opt(net.tap.as_ref()));
        netdev.push(",script=no,downscript=no");
        args.pair("-netdev", netdev).pair(
            "-device",
            join(&["virtio-net-device,netdev=", NET_ID, ",mac=", &net.mac]),
        );
    }
    if let Some(v) = spec.vsock.as_ref().filter(|_| vsock) {
        args.pair("-device", format!("vhost-vsock-device,guest-cid={}", v.cid));
    }
    let mut console = join(&["file,id=", CONSOLE_ID, ",path="]);
    console.push(opt(spec.paths.console_log.as_os_str()));
    console.push(",append=on");
    args.pair("-chardev", console)
        .pair("-serial", join(&["chardev:", CONSOLE_ID]));
    let mut qmp = join(&["socket,id=", QMP_ID, ",path="]);
    qmp.push(opt(spec.paths.api_socket.as_os_str()));
    qmp.push(",server=on,wait=off");
    args.pair("-chardev", qmp)
        .pair("-mon", join(&["chardev=", QMP_ID, ",mode=control"]));
    if let Some(uid) = confined.uid {
        args.pair("-runas", format!("{uid}:{uid}"));
    }
    if confined.sandbox {
        args.pair("-sandbox", sandbox_arg(confined.uid.is_some()));
    }
    args.0
}

/// The uid a QEMU command line drops to (`-runas UID:GID`), when it is a QEMU's and names one
/// by number.
pub fn runas_uid(argv: &[OsString]) -> Option<u32> {
    let value = values_of(argv, "-runas")?.next()?.to_str()?;
    value.split(':').next()?.parse().ok()
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn pair(&mut self, flag: &str, value: impl Into<OsString>) -> &mut Self {
        self.0.push(flag.into());
        self.0.push(value.into());
        self
    }

    fn flags(&mut self, flags: &[&str]) -> &mut Self {
        self.0.extend(flags.iter().map(OsString::from));
        self
    }
}

fn join(parts: &[&str]) -> OsString {
    OsString::from(parts.concat())
}

/// `value` as one value inside a QEMU option list: commas doubled.
pub fn opt(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &byte in value.as_bytes() {
        out.push(byte);
        if byte == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// An option list split at single commas, doubled commas read back as one.
fn split_opts(list: &OsStr) -> Vec<OsString> {
    let bytes = list.as_bytes();
    let mut items = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b',' {
            if bytes.get(i + 1) == Some(&b',') {
                current.push(b',');
                i += 2;
                continue;
            }
            items.push(OsString::from_vec(std::mem::take(&mut current)));
        } else {
            current.push(bytes[i]);
        }
        i += 1;
    }
    items.push(OsString::from_vec(current));
    items
}

/// The value of `key=` in an option list.
fn opt_value(items: &[OsString], key: &str) -> Option<OsString> {
    items.iter().find_map(|item| {
        item.as_bytes()
            .strip_prefix(key.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
            .map(|value| OsString::from_vec(value.to_vec()))
    })
}

/// The values of every `flag VALUE` pair of a QEMU command line, when `argv` is a QEMU's (its
/// program's file name starts with `qemu-system`).
fn values_of<'a>(
    argv: &'a [OsString],
    flag: &'a str,
) -> Option<impl Iterator<Item = &'a OsString>> {
    let program = Path::new(argv.first()?).file_name()?.to_str()?;
    if !program.starts_with(PROGRAM_PREFIX) {
        return None;
    }
    Some(
        argv.windows(2)
            .skip(1)
            .filter(move |pair| pair[0] == flag)
            .map(|pair| &pair[1]),
    )
}

/// The QMP socket a QEMU command line serves, `None` when `argv` is not a QEMU's or has no
/// banger QMP socket.
pub fn qmp_socket(argv: &[OsString]) -> Option<PathBuf> {
    values_of(argv, "-chardev")?.find_map(|value| {
        let items = split_opts(value);
        let is_qmp = items.first().is_some_and(|kind| kind == "socket")
            && opt_value(&items, "id").is_some_and(|id| id == QMP_ID);
        is_qmp
            .then(|| opt_value(&items, "path"))
            .flatten()
            .map(PathBuf::from)
    })
}

/// The VM id a QEMU command line was started for (`-name ID`).
pub fn vm_name(argv: &[OsString]) -> Option<String> {
    let value = values_of(argv, "-name")?.next()?;
    let items = split_opts(value);
    let name = opt_value(&items, "guest").or_else(|| items.first().cloned())?;
    name.into_string().ok()
}

/// The guest's vsock context id when the command line attaches a vhost-vsock device.
pub fn guest_cid(argv: &[OsString]) -> Option<u32> {
    values_of(argv, "-device")?.find_map(|value| {
        let items = split_opts(value);
        if items
            .first()
            .is_some_and(|driver| driver == "vhost-vsock-device")
        {
            opt_value(&items, "guest-cid")?.to_str()?.parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn commas_are_doubled_and_read_back() {
        assert_eq!(opt(OsStr::new("/a,b/c,,d")), "/a,,b/c,,,,d");
        assert_eq!(
            split_opts(OsStr::new("socket,id=qmp,path=/a,,b,server=on")),
            argv(&["socket", "id=qmp", "path=/a,b", "server=on"])
        );
        assert_eq!(split_opts(OsStr::new("")), argv(&[""]));
    }

    #[test]
    fn the_qmp_socket_name_and_cid_are_read_from_a_qemu_command_line() {
        let line = argv(&[
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "vm-1",
            "-chardev",
            "file,id=console,path=/var/lib/banger/vms/vm-1/console.log,append=on",
            "-device",
            "virtio-blk-device,drive=rootfs",
            "-device",
            "vhost-vsock-device,guest-cid=7",
            "-chardev",
            "socket,id=qmp,path=/run/banger/vms/a,,b.sock,server=on,wait=off",
        ]);
        assert_eq!(
            qmp_socket(&line),
            Some(PathBuf::from("/run/banger/vms/a,b.sock"))
        );
        assert_eq!(vm_name(&line), Some("vm-1".into()));
        assert_eq!(guest_cid(&line), Some(7));

        let mut other = line.clone();
        other[0] = "/usr/bin/sleep".into();
        assert_eq!(qmp_socket(&other), None, "another program reusing the pid");
        assert_eq!(vm_name(&other), None);
        assert_eq!(
            qmp_socket(&argv(&[
                "qemu-system-aarch64",
                "-chardev",
                "socket,id=mon,path=/tmp/m.sock"
            ])),
            None,
            "a QEMU not started by banger"
        );
        assert_eq!(
            vm_name(&argv(&[
                "qemu-system-x86_64",
                "-name",
                "guest=dev,debug-threads=on"
            ])),
            Some("dev".into())
        );
        assert_eq!(guest_cid(&argv(&["qemu-system-x86_64"])), None);
        assert_eq!(qmp_socket(&[]), None);
    }
}

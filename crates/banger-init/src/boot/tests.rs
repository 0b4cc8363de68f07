//! The boot sequence run against [`FakeSys`], a recording in-memory host: the effects in order,
//! devices that appear late or never, the config drive, and failures that name what failed.

use super::*;
use banger_guest_contract::paths::OVERLAY_LABEL;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// A recording [`Sys`]: a tiny in-memory filesystem, devices that appear at a given
/// uptime, a clock that only sleeps move, and a log of every effect.
#[derive(Default)]
struct FakeSys {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
    /// path → uptime at which it appears.
    appears_at: BTreeMap<PathBuf, Duration>,
    now: Duration,
    log: Vec<String>,
    console: Vec<String>,
    /// Fail the effect whose log line starts with this.
    fail_on: Option<(String, io::ErrorKind)>,
    root: PathBuf,
}

impl FakeSys {
    fn file(&mut self, path: &str, contents: impl Into<Vec<u8>>) {
        self.files.insert(path.into(), contents.into());
    }

    fn effect(&mut self, line: String) -> io::Result<()> {
        let fail = matches!(&self.fail_on, Some((prefix, _)) if line.starts_with(prefix.as_str()));
        self.log.push(line);
        match &self.fail_on {
            Some((_, kind)) if fail => Err(io::Error::from(*kind)),
            _ => Ok(()),
        }
    }

    /// The path as seen after a chroot into /newroot.
    fn resolve(&self, path: &Path) -> PathBuf {
        if self.root.as_os_str().is_empty() || !path.is_absolute() {
            path.to_owned()
        } else {
            self.root.join(path.strip_prefix("/").unwrap())
        }
    }

    fn visible(&self, path: &Path) -> bool {
        let path = self.resolve(path);
        self.files.contains_key(&path)
            || self.dirs.contains(&path)
            || self.appears_at.get(&path).is_some_and(|t| *t <= self.now)
    }

    /// A VM as banger makes it: cmdline, modules, devices, overlay files.
    fn vm(cmdline: &str) -> FakeSys {
        let mut sys = FakeSys::default();
        sys.file("/proc/cmdline", format!("{cmdline}\n"));
        sys.file(
            MODULE_LIST,
            "/lib/modules/6.1/kernel/virtio.ko\n/lib/modules/6.1/kernel/virtio_blk.ko\n\
                 /lib/modules/6.1/kernel/virtio_net.ko\n",
        );
        for (i, dev) in ["vda", "vdb", "vdc"].iter().enumerate() {
            sys.appears_at.insert(
                format!("/dev/{dev}").into(),
                Duration::from_millis(300 + 100 * i as u64),
            );
        }
        sys.file("/newroot/etc/hostname", "dev\n");
        sys.file(
            "/newroot/etc/banger/network",
            "address=172.30.0.5/24\ngateway=172.30.0.1\nmac=52:54:00:ab:cd:ef\n",
        );
        sys.dirs.insert("/newroot/sbin/init".into());
        sys.file("/sys/class/net/lo/ifindex", "1\n");
        sys.file("/sys/class/net/lo/type", "772\n");
        sys.file("/sys/class/net/eth0/ifindex", "2\n");
        sys.file("/sys/class/net/eth0/type", "1\n");
        sys.file("/sys/class/net/eth0/address", "52:54:00:AB:CD:EF\n");
        sys.now = Duration::from_millis(250);
        sys
    }
}

impl Sys for FakeSys {
    fn mkdir_all(&mut self, path: &Path) -> io::Result<()> {
        self.dirs.insert(path.to_owned());
        Ok(())
    }
    fn make_dir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        self.effect(format!("mkdir -m {mode:o} {}", path.display()))?;
        self.dirs.insert(path.to_owned());
        Ok(())
    }
    fn install_file(&mut self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
        self.effect(format!("install -m {mode:o} {}", path.display()))?;
        self.files.insert(path.to_owned(), contents.to_owned());
        Ok(())
    }
    fn mount(&mut self, m: &Mount) -> io::Result<()> {
        self.effect(m.to_string())
    }
    fn move_mount(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.effect(format!("mount --move {} {}", from.display(), to.display()))
    }
    fn read_to_string(&mut self, path: &Path) -> io::Result<String> {
        let path = self.resolve(path);
        self.files
            .get(&path)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn read_head(&mut self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        let mut data = self
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        data.truncate(len);
        Ok(data)
    }
    fn exists(&mut self, path: &Path) -> bool {
        self.visible(path)
    }
    fn list_dir(&mut self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = BTreeSet::new();
        let visible: Vec<PathBuf> = self
            .files
            .keys()
            .chain(self.dirs.iter())
            .cloned()
            .chain(
                self.appears_at
                    .iter()
                    .filter(|(_, t)| **t <= self.now)
                    .map(|(p, _)| p.clone()),
            )
            .collect();
        for p in visible {
            if let Ok(rest) = p.strip_prefix(path)
                && let Some(first) = rest.components().next()
            {
                names.insert(first.as_os_str().to_string_lossy().into_owned());
            }
        }
        Ok(names.into_iter().collect())
    }
    fn remove_tree(&mut self, path: &Path) -> io::Result<()> {
        self.effect(format!("rm -r {}", path.display()))
    }
    fn load_module(&mut self, path: &Path) -> io::Result<()> {
        self.effect(format!("insmod {}", path.display()))
    }
    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        self.effect(format!("hostname {name}"))
    }
    fn write_file(&mut self, path: &Path, contents: &[u8]) -> io::Result<()> {
        self.effect(format!("write {}", path.display()))?;
        let path = self.resolve(path);
        self.files.insert(path, contents.to_owned());
        Ok(())
    }
    fn link_up(&mut self, ifindex: u32) -> io::Result<()> {
        self.effect(format!("ip link set {ifindex} up"))
    }
    fn add_address(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
        prefix_len: u8,
        broadcast: Ipv4Addr,
    ) -> io::Result<()> {
        self.effect(format!(
            "ip addr replace {address}/{prefix_len} broadcast {broadcast} dev {ifindex}"
        ))
    }
    fn add_default_route(&mut self, ifindex: u32, gateway: Ipv4Addr) -> io::Result<()> {
        self.effect(format!(
            "ip route replace default via {gateway} dev {ifindex}"
        ))
    }
    fn chdir(&mut self, path: &Path) -> io::Result<()> {
        self.effect(format!("cd {}", path.display()))
    }
    fn chroot(&mut self, path: &Path) -> io::Result<()> {
        self.effect(format!("chroot {}", path.display()))?;
        self.root = NEW_ROOT.into();
        Ok(())
    }
    fn ensure_console(&mut self) {}
    fn console(&mut self, line: &str) {
        self.console.push(line.to_owned());
    }
    fn uptime(&mut self) -> Duration {
        self.now
    }
    fn sleep(&mut self, duration: Duration) {
        self.now += duration;
    }
    fn exec(&mut self, path: &str, args: &[String]) -> io::Error {
        let line = format!("exec {path} {}", args.join(" "));
        match self.effect(line.trim_end().to_owned()) {
            Ok(()) => io::Error::other("(fake exec: the test ends here)"),
            Err(e) => e,
        }
    }
    fn end_machine(&mut self) -> io::Error {
        self.log.push("end machine".into());
        io::Error::other("fake")
    }
}

fn boot_error(sys: &mut FakeSys) -> BootError {
    run(sys, &["single".to_owned()])
}

#[test]
fn the_whole_sequence() {
    let mut sys = FakeSys::vm("console=ttyS0 panic=-1");
    let err = boot_error(&mut sys);
    // The fake exec "fails" after recording itself: that is the end of a good boot.
    assert!(
        matches!(&err, BootError::Exec { path, .. } if path == "/sbin/init"),
        "{err}"
    );
    assert_eq!(
        sys.log,
        [
            "mount -t proc -o nosuid,nodev,noexec proc /proc",
            "mount -t sysfs -o nosuid,nodev,noexec sysfs /sys",
            "mount -t devtmpfs -o mode=0755 devtmpfs /dev",
            "mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run",
            "insmod /lib/modules/6.1/kernel/virtio.ko",
            "insmod /lib/modules/6.1/kernel/virtio_blk.ko",
            "insmod /lib/modules/6.1/kernel/virtio_net.ko",
            "rm -r /lib/modules",
            "mount -t ext4 -o ro /dev/vda /run/banger/base",
            "mount -t ext4 /dev/vdb /run/banger/overlay",
            "mount -t overlay -o lowerdir=/run/banger/base,upperdir=/run/banger/overlay/upper,\
                 workdir=/run/banger/overlay/work overlay /newroot",
            "mount -t ext4 /dev/vdc /newroot/root",
            "hostname dev",
            "ip link set 1 up",
            "ip link set 2 up",
            "ip addr replace 172.30.0.5/24 broadcast 172.30.0.255 dev 2",
            "ip route replace default via 172.30.0.1 dev 2",
            "mount --move /proc /newroot/proc",
            "mount --move /sys /newroot/sys",
            "mount --move /dev /newroot/dev",
            "mount --move /run /newroot/run",
            "cd /newroot",
            "mount --move . /",
            "chroot .",
            "cd /",
            "write /run/banger/boot-stages",
            "exec /sbin/init single",
        ]
    );
    assert_eq!(
        String::from_utf8(sys.files[Path::new("/newroot/run/banger/boot-stages")].clone()).unwrap(),
        // The fake clock starts at 250 ms and moves only while waiting for devices.
        "init_started 250\ninit_modules_loaded 250\ninit_disks_found 510\n\
             init_root_mounted 510\ninit_network_configured 510\ninit_switch_root 510\n"
    );
    assert_eq!(
        sys.console,
        [
            "banger-init: 3 modules loaded; root: /dev/vda + overlay /dev/vdb; work: \
                 /dev/vdc; config: none; hostname: dev; network: eth0 172.30.0.5/24 via \
                 172.30.0.1",
            // The devices appeared at 300-500 ms, polled every 20 ms.
            "banger-init: switching root (510 ms since kernel start)",
        ]
    );
}

/// A VM whose files come on a config drive (vdd), found by its label.
fn vm_with_config_drive() -> (FakeSys, Vec<u8>) {
    use crate::config_drive::{MARKER_CONTENTS, MARKER_ENTRY, testing::drive};
    let mut sys = FakeSys::vm("banger.config=LABEL=banger-config");
    let bytes = drive(&[
        (MARKER_ENTRY, 0o100644, MARKER_CONTENTS.as_bytes()),
        ("etc", 0o040755, b""),
        ("etc/hostname", 0o100644, b"dev\n"),
        ("etc/banger", 0o040755, b""),
        ("etc/banger/agent-token", 0o100600, b"secret"),
    ]);
    sys.file("/dev/vdd", bytes.clone());
    for dev in ["vda", "vdb", "vdc", "vdd"] {
        sys.file(&format!("/sys/class/block/{dev}"), "");
    }
    (sys, bytes)
}

#[test]
fn the_config_drive_is_applied_to_the_upper_directory_once() {
    let (mut sys, bytes) = vm_with_config_drive();
    let err = boot_error(&mut sys);
    assert!(matches!(&err, BootError::Exec { .. }), "{err}");
    let applied: Vec<&str> = sys
        .log
        .iter()
        .map(String::as_str)
        .skip_while(|l| !l.starts_with("mount -t ext4 /dev/vdb"))
        .take_while(|l| !l.starts_with("mount -t overlay"))
        .collect();
    assert_eq!(
        applied,
        [
            "mount -t ext4 /dev/vdb /run/banger/overlay",
            "mkdir -m 755 /run/banger/overlay/upper/etc",
            "install -m 644 /run/banger/overlay/upper/etc/hostname",
            "mkdir -m 755 /run/banger/overlay/upper/etc/banger",
            "install -m 600 /run/banger/overlay/upper/etc/banger/agent-token",
            "install -m 600 /run/banger/overlay/upper/etc/banger/config-drive",
        ],
        "before overlayfs is mounted, the copy last"
    );
    assert_eq!(
        sys.files[Path::new("/run/banger/overlay/upper/etc/banger/agent-token")],
        b"secret"
    );
    assert_eq!(
        sys.files[Path::new("/run/banger/overlay/upper/etc/banger/config-drive")],
        bytes
    );
    assert!(
        sys.console[0].contains("config: /dev/vdd (2 files applied)"),
        "{}",
        sys.console[0]
    );

    // The next boot with the same drive leaves the VM's files alone.
    let (mut again, _) = vm_with_config_drive();
    again.files.insert(
        "/run/banger/overlay/upper/etc/banger/config-drive".into(),
        bytes,
    );
    again.file("/run/banger/overlay/upper/etc/hostname", "renamed\n");
    boot_error(&mut again);
    assert!(
        !again.log.iter().any(|l| l.starts_with("install")),
        "{:?}",
        again.log
    );
    assert_eq!(
        again.files[Path::new("/run/banger/overlay/upper/etc/hostname")],
        b"renamed\n"
    );
    assert!(again.console[0].contains("config: /dev/vdd (applied before)"));
}

#[test]
fn a_damaged_config_drive_stops_the_boot_naming_it() {
    let (mut sys, mut bytes) = vm_with_config_drive();
    bytes.truncate(200);
    sys.file("/dev/vdd", bytes);
    let err = boot_error(&mut sys);
    assert!(
        err.to_string()
            .starts_with("/dev/vdd: the config drive is damaged:"),
        "{err}"
    );
    assert!(!sys.log.iter().any(|l| l.starts_with("mount -t overlay")));

    let (mut sys, _) = vm_with_config_drive();
    sys.fail_on = Some((
        "install -m 600 /run/banger/overlay/upper/etc/banger/agent-token".into(),
        io::ErrorKind::StorageFull,
    ));
    let err = boot_error(&mut sys);
    assert!(
        err.to_string().starts_with(
            "applying the config drive failed writing \
                 /run/banger/overlay/upper/etc/banger/agent-token:"
        ),
        "{err}"
    );
    assert!(
        !sys.files.contains_key(Path::new(
            "/run/banger/overlay/upper/etc/banger/config-drive"
        )),
        "not recorded as applied"
    );
}

#[test]
fn a_boot_does_not_fail_for_its_stage_record() {
    let mut sys = FakeSys::vm("console=ttyS0");
    sys.fail_on = Some(("write".into(), io::ErrorKind::ReadOnlyFilesystem));
    let err = boot_error(&mut sys);
    assert!(matches!(&err, BootError::Exec { .. }), "{err}");
    assert!(
        sys.console
            .iter()
            .any(|l| l.starts_with("banger-init: cannot record the boot stages")),
        "{:?}",
        sys.console
    );
}

#[test]
fn parameters_change_devices_and_init() {
    let mut sys = FakeSys::vm(&format!(
        "banger.base=/dev/vdc banger.overlay=LABEL={OVERLAY_LABEL} banger.work=none \
         banger.init=/bin/sh",
    ));
    // vdb carries the overlay label.
    let mut sb = vec![0u8; 2048];
    sb[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
    sb[1024 + 0x78..1024 + 0x78 + OVERLAY_LABEL.len()].copy_from_slice(OVERLAY_LABEL.as_bytes());
    sys.file("/dev/vdb", sb);
    sys.file("/sys/class/block/vda", "");
    sys.file("/sys/class/block/vdb", "");
    sys.files.insert("/newroot/bin/sh".into(), vec![]);
    let err = boot_error(&mut sys);
    assert!(
        matches!(&err, BootError::Exec { path, .. } if path == "/bin/sh"),
        "{err}"
    );
    assert!(
        sys.log
            .contains(&"mount -t ext4 -o ro /dev/vdc /run/banger/base".to_owned())
    );
    assert!(
        sys.log
            .contains(&"mount -t ext4 /dev/vdb /run/banger/overlay".to_owned())
    );
    assert!(
        !sys.log.iter().any(|l| l.contains("/newroot/root")),
        "no work disk"
    );
    assert!(sys.console[0].contains("work: none"), "{}", sys.console[0]);
}

#[test]
fn a_missing_device_times_out_naming_it() {
    let mut sys = FakeSys::vm("banger.timeout=2");
    sys.appears_at.remove(Path::new("/dev/vdc"));
    let err = boot_error(&mut sys);
    assert_eq!(
        err.to_string(),
        "the work disk (/dev/vdc) did not appear within 2 s; block devices present: none"
    );
    // Waited about the timeout after the device was first looked for.
    assert!(sys.now >= Duration::from_millis(2400) && sys.now < Duration::from_millis(2600));
    assert!(!sys.log.iter().any(|l| l.starts_with("mount -t ext4")));

    let mut sys = FakeSys::vm("banger.overlay=LABEL=nope banger.timeout=1");
    sys.file("/sys/class/block/vda", "");
    sys.file("/sys/class/block/vdb", "");
    let err = boot_error(&mut sys);
    assert_eq!(
        err.to_string(),
        "the overlay disk (LABEL=nope) did not appear within 1 s; block devices present: vda vdb"
    );
}

#[test]
fn failures_name_what_failed() {
    let cases: [(&str, io::ErrorKind, &str); 6] = [
        (
            "insmod /lib/modules/6.1/kernel/virtio_blk.ko",
            io::ErrorKind::InvalidData,
            "loading kernel module /lib/modules/6.1/kernel/virtio_blk.ko failed",
        ),
        (
            "mount -t overlay",
            io::ErrorKind::InvalidInput,
            "`mount -t overlay -o lowerdir=/run/banger/base,",
        ),
        (
            "mount -t ext4 -o ro /dev/vda",
            io::ErrorKind::InvalidInput,
            "`mount -t ext4 -o ro /dev/vda /run/banger/base` failed",
        ),
        (
            "ip addr",
            io::ErrorKind::AddrNotAvailable,
            "adding 172.30.0.5/24 to eth0 failed",
        ),
        (
            "hostname",
            io::ErrorKind::PermissionDenied,
            "setting the hostname to \"dev\"",
        ),
        ("chroot", io::ErrorKind::PermissionDenied, "at `chroot .`"),
    ];
    for (effect, kind, message) in cases {
        let mut sys = FakeSys::vm("");
        sys.fail_on = Some((effect.to_owned(), kind));
        let err = boot_error(&mut sys);
        assert!(err.to_string().contains(message), "{effect}: {err}");
        assert!(!sys.log.iter().any(|l| l.starts_with("exec")), "{effect}");

        fail(&mut sys, &err);
        assert_eq!(
            sys.console.last().map(String::as_str),
            Some("banger-init: ending the machine failed: fake")
        );
        let failed = &sys.console[sys.console.len() - 2];
        assert!(failed.starts_with("banger-init: FAILED: "), "{failed}");
        assert_eq!(failed.lines().count(), 1, "one line: {failed}");
        assert_eq!(sys.log.last().map(String::as_str), Some("end machine"));
    }
}

#[test]
fn failure_lines_are_single_lines() {
    assert_eq!(
        failure_line("panicked at src/main.rs:3:5:\nboom\n"),
        "banger-init: FAILED: panicked at src/main.rs:3:5:; boom"
    );
}

#[test]
fn an_already_loaded_module_is_fine() {
    let mut sys = FakeSys::vm("");
    sys.fail_on = Some(("insmod".into(), io::ErrorKind::AlreadyExists));
    let err = boot_error(&mut sys);
    assert!(matches!(err, BootError::Exec { .. }), "{err}");
    assert!(sys.console[0].starts_with("banger-init: 0 modules loaded"));
}

#[test]
fn missing_init_and_bad_parameters() {
    let mut sys = FakeSys::vm("banger.init=/sbin/nothing");
    let err = boot_error(&mut sys);
    assert_eq!(
        err.to_string(),
        "the image has no init at /sbin/nothing (set banger.init= to run another program)"
    );
    let mut sys = FakeSys::vm("banger.wrok=/dev/vdc");
    assert_eq!(
        boot_error(&mut sys).to_string(),
        "unknown kernel parameter banger.wrok"
    );
}

#[test]
fn network_is_optional_but_must_be_valid_when_present() {
    let mut sys = FakeSys::vm("");
    sys.files.remove(Path::new("/newroot/etc/banger/network"));
    let err = boot_error(&mut sys);
    assert!(matches!(err, BootError::Exec { .. }), "{err}");
    assert!(!sys.log.iter().any(|l| l.starts_with("ip ")));
    assert!(sys.console[0].ends_with("network: none"));

    let mut sys = FakeSys::vm("");
    sys.file("/newroot/etc/banger/network", "address=172.30.0.5\n");
    let err = boot_error(&mut sys);
    assert!(err.to_string().contains("line 1"), "{err}");

    // The NIC with the configured MAC never shows up.
    let mut sys = FakeSys::vm("banger.timeout=1");
    sys.file("/sys/class/net/eth0/address", "52:54:00:00:00:01\n");
    let err = boot_error(&mut sys);
    assert_eq!(
        err.to_string(),
        "no network interface with MAC 52:54:00:ab:cd:ef appeared within 1 s; interfaces \
             present: eth0 lo"
    );
}

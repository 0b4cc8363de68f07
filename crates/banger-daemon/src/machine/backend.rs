//! Which VMM runs a VM. `vmm = "auto"` picks Firecracker when its binary is present and
//! `/dev/kvm` can run a stock guest kernel, QEMU otherwise (with KVM when it can, TCG when it
//! cannot), and says why; a VM created with an explicit backend gets that one or a clear error.
//! A running VM is always driven by the backend that started it (recorded in its runtime),
//! whatever the configuration says now.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::{ApiError, ErrorCode, VmmKind};
use banger_host::{CommandRunner, Kvm};
use banger_vmm::cgroup::Cgroups;
use banger_vmm::firecracker::{JailConfig, JailerBinary};
use banger_vmm::reconcile::{HostScan, Observation};
use banger_vmm::{
    Accel, Firecracker, FirecrackerBinary, MIN_VERSION, Qemu, QemuBinary, VmHandle, Vmm, VmmChoice,
};

use crate::config::{JailMode, JailSettings};

/// A backend able to drive VMs.
#[derive(Debug, Clone)]
pub enum Backend {
    Firecracker(Firecracker),
    Qemu(Qemu),
}

impl Backend {
    pub fn kind(&self) -> VmmKind {
        match self {
            Backend::Firecracker(_) => VmmKind::Firecracker,
            Backend::Qemu(_) => VmmKind::Qemu,
        }
    }

    pub fn vmm(&self) -> &dyn Vmm {
        match self {
            Backend::Firecracker(fc) => fc,
            Backend::Qemu(qemu) => qemu,
        }
    }

    /// What a restarting daemon needs to know about a recorded VMM process. A Firecracker
    /// that was writing a snapshot (`snapshotting`) is given time to finish before it is
    /// taken for one that does not answer.
    pub fn observe(&self, pid: u32, api_socket: &Path, snapshotting: bool) -> Observation {
        match self {
            Backend::Firecracker(fc) if snapshotting => {
                fc.observe_within(pid, api_socket, banger_vmm::firecracker::SNAPSHOT_PATIENCE)
            }
            Backend::Firecracker(fc) => fc.observe(pid, api_socket),
            Backend::Qemu(qemu) => qemu.observe(pid, api_socket),
        }
    }

    /// The sockets in `dir` and this backend's processes serving a socket there.
    pub fn scan(&self, dir: &Path) -> HostScan {
        match self {
            Backend::Firecracker(fc) => fc.scan(dir),
            Backend::Qemu(qemu) => qemu.scan(dir),
        }
    }

    /// Whether `pid` is this backend's process serving `api_socket`.
    pub fn owns(&self, pid: u32, api_socket: &Path) -> bool {
        match self {
            Backend::Firecracker(fc) => fc.owns(pid, api_socket),
            Backend::Qemu(qemu) => qemu.owns(pid, api_socket),
        }
    }

    /// The guest's vsock context id when the host can reach it over vsock (QEMU only attaches
    /// vsock where `/dev/vhost-vsock` exists); Firecracker's hybrid vsock is in the handle.
    pub fn vsock_cid(&self, vm: &VmHandle) -> Option<u32> {
        match self {
            Backend::Firecracker(_) => None,
            Backend::Qemu(qemu) => qemu.vsock_cid(vm),
        }
    }

    /// How a backend's process ended: `Some(0)` when the guest shut down, another code when
    /// the VMM says it failed, `None` when nothing says (killed or crashed). Firecracker logs
    /// its exit code; QEMU logs nothing when the guest ends, so the guest kernel's own last
    /// words on the console tell: `reboot: Restarting system` (a guest ends itself through a
    /// reboot, see `banger_image::bootstrap::guest::END_VM_SCRIPT`) or `reboot: Power down`.
    /// A panic's restart prints neither.
    pub fn exit_code(&self, vmm_log: &Path, console_log: &Path) -> Option<i32> {
        match self {
            Backend::Firecracker(_) => banger_vmm::exit_code_from_log(vmm_log),
            Backend::Qemu(_) => {
                let console = banger_vmm::console_tail(console_log, 5).unwrap_or_default();
                console
                    .iter()
                    .any(|line| guest_ended_cleanly(line))
                    .then_some(0)
            }
        }
    }
}

/// Whether a console line is the guest kernel's last word on a clean end: the restart a
/// guest's shutdown ends with (the VMM exits on it) or a power-off.
fn guest_ended_cleanly(line: &str) -> bool {
    line.contains("reboot: Restarting system") || line.contains("reboot: Power down")
}

/// Finds and checks backends.
#[derive(Debug, Clone)]
pub struct Backends {
    runner: Arc<dyn CommandRunner>,
    firecracker_bin: Option<PathBuf>,
    qemu_bin: Option<PathBuf>,
    /// Prepared backends (tests: ones on a fake host); `None` detects the binary.
    firecracker: Option<Firecracker>,
    qemu: Option<Qemu>,
    /// What `/dev/kvm` is, probed when the daemon started.
    kvm: Arc<Kvm>,
    /// The last Firecracker binary checked, with the identity of its file: a start does not
    /// run `firecracker --version` again unless the file changed.
    checked_firecracker: Arc<std::sync::Mutex<Option<(FileId, FirecrackerBinary)>>>,
    /// Whether and how Firecracker is jailed; `None` (tests on a fake host) never jails.
    jail: Option<(JailSettings, PathBuf)>,
    /// The last jail decision, for the Firecracker binary and jailer file it was made with.
    checked_jail: Arc<std::sync::Mutex<Option<JailCache>>>,
    /// How QEMUs are confined.
    qemu_settings: crate::config::QemuSettings,
}

#[derive(Debug, Clone)]
struct JailCache {
    firecracker: FirecrackerBinary,
    jailer: Option<FileId>,
    decision: JailDecision,
}

/// Whether VMs started now are jailed, and why not when they are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailDecision {
    Jailed(JailConfig),
    /// Firecracker runs directly, for this reason.
    Direct(String),
    /// `jailer = true`, and the jail cannot be built: starts are refused.
    Refused(String),
}

impl JailDecision {
    /// The decision for `settings` on a host where the daemon is root or not, with the jailer
    /// `jailer` found (or not) and cgroups as `cgroup` says.
    pub fn decide(
        settings: &JailSettings,
        chroot_base: &Path,
        root: bool,
        jailer: Result<JailerBinary, String>,
        cgroup: Cgroups,
        libraries: Vec<banger_vmm::firecracker::jail::JailFile>,
    ) -> JailDecision {
        let on = match settings.mode {
            JailMode::Off => return JailDecision::Direct("jailer = false in config.toml".into()),
            JailMode::On => true,
            JailMode::Auto => false,
        };
        if !root {
            let why = "bangerd does not run as root, and the jailer needs root".to_owned();
            return if on {
                JailDecision::Refused(format!("jailer = true, but {why}"))
            } else {
                JailDecision::Direct(why)
            };
        }
        match jailer {
            Ok(jailer) => JailDecision::Jailed(JailConfig {
                jailer,
                chroot_base: chroot_base.to_owned(),
                uids: settings.uids,
                cgroup,
                memory_overhead_mib: settings.memory_overhead_mib,
                libraries,
            }),
            Err(why) if on => JailDecision::Refused(format!("jailer = true, but {why}")),
            Err(why) => JailDecision::Direct(why),
        }
    }
}

/// What identifies a file's contents cheaply: where it is, its size, its change time, its inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    path: PathBuf,
    len: u64,
    ctime: (i64, i64),
    ino: u64,
}

impl FileId {
    fn of(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileId {
            path: path.to_owned(),
            len: meta.len(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
        })
    }
}

impl Backends {
    pub fn new(
        runner: Arc<dyn CommandRunner>,
        firecracker_bin: Option<PathBuf>,
        qemu_bin: Option<PathBuf>,
        firecracker: Option<Firecracker>,
        qemu: Option<Qemu>,
    ) -> Backends {
        Backends {
            runner,
            firecracker_bin,
            qemu_bin,
            firecracker,
            qemu,
            kvm: Arc::new(banger_host::probe_kvm(Path::new("/"))),
            checked_firecracker: Arc::default(),
            jail: None,
            checked_jail: Arc::default(),
            qemu_settings: crate::config::QemuSettings::default(),
        }
    }

    /// Confines QEMUs as `settings` say.
    pub fn with_qemu_settings(mut self, settings: crate::config::QemuSettings) -> Backends {
        self.qemu_settings = settings;
        self
    }

    pub fn qemu_settings(&self) -> crate::config::QemuSettings {
        self.qemu_settings
    }

    /// Jails Firecracker as `settings` say, in `default_dir` unless they name a directory.
    pub fn with_jail(mut self, settings: JailSettings, default_dir: PathBuf) -> Backends {
        let dir = settings.dir.clone().unwrap_or(default_dir);
        self.jail = Some((settings, dir));
        self
    }

    /// Where jails are built (also when jailing is off: VMs jailed before are found there).
    pub fn chroot_base(&self) -> Option<&Path> {
        self.jail.as_ref().map(|(_, dir)| dir.as_path())
    }

    /// Whether VMs of `firecracker` are jailed now; decided again when the jailer's file or the
    /// Firecracker binary changed.
    pub fn jail_decision(&self, firecracker: &FirecrackerBinary) -> Option<JailDecision> {
        let (settings, dir) = self.jail.as_ref()?;
        // Found as the jailer's launch finds it, so the cache below keys on that file.
        let jailer_path = settings.jailer_bin.clone().or_else(|| {
            banger_host::program::find_in_path(std::env::var_os("PATH").as_deref(), "jailer")
        });
        let jailer_id = jailer_path.as_deref().and_then(FileId::of);
        let mut cache = self.checked_jail.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache.as_ref()
            && cached.firecracker == *firecracker
            && cached.jailer == jailer_id
        {
            return Some(cached.decision.clone());
        }
        let root = rustix::process::geteuid().is_root();
        let wanted = settings.mode == JailMode::On || (settings.mode == JailMode::Auto && root);
        let (jailer, cgroup, libraries) = if wanted {
            (
                JailerBinary::detect(settings.jailer_bin.as_deref(), firecracker, &*self.runner)
                    .map_err(|e| banger_vmm::error_chain(&e)),
                Cgroups::detect(),
                banger_vmm::firecracker::jail::libraries_of(&firecracker.path, &*self.runner),
            )
        } else {
            (
                Err("not wanted".into()),
                Cgroups::Unusable("not asked".into()),
                Vec::new(),
            )
        };
        let decision = JailDecision::decide(settings, dir, root, jailer, cgroup, libraries);
        match &decision {
            JailDecision::Jailed(jail) => tracing::info!(
                jailer = %jail.jailer.path.display(),
                chroot_base = %jail.chroot_base.display(),
                cgroup = ?jail.cgroup,
                "Firecracker runs behind its jailer"
            ),
            JailDecision::Direct(why) => {
                tracing::info!(%why, "Firecracker runs without the jailer")
            }
            JailDecision::Refused(why) => tracing::warn!(%why, "Firecracker VMs cannot start"),
        }
        *cache = Some(JailCache {
            firecracker: firecracker.clone(),
            jailer: jailer_id,
            decision: decision.clone(),
        });
        Some(decision)
    }

    /// `fc` as configured: jailed when the decision says so, recognising jails either way.
    /// A prepared backend (a fake host's) is used as it was given.
    fn jailed(&self, fc: Firecracker) -> Result<Firecracker, String> {
        let Some(base) = self.chroot_base().filter(|_| self.firecracker.is_none()) else {
            return Ok(fc);
        };
        let fc = fc.with_chroot_base(base.to_owned());
        match self.jail_decision(fc.binary()) {
            Some(JailDecision::Jailed(jail)) => Ok(fc.with_jail(jail)),
            Some(JailDecision::Refused(why)) => Err(why),
            Some(JailDecision::Direct(_)) | None => Ok(fc),
        }
    }

    /// The backends of a host whose `/dev/kvm` is `kvm` instead of this one's.
    #[cfg(test)]
    fn with_kvm(mut self, kvm: Kvm) -> Backends {
        self.kvm = Arc::new(kvm);
        self
    }

    fn detect_firecracker(&self) -> Result<Firecracker, banger_vmm::BinaryError> {
        if let Some(fc) = &self.firecracker {
            return Ok(fc.clone());
        }
        let path_var = std::env::var_os("PATH");
        let path = banger_vmm::firecracker::binary::locate(
            self.firecracker_bin.as_deref(),
            path_var.as_deref(),
        )?;
        let id = FileId::of(&path);
        let mut cache = self
            .checked_firecracker
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let (Some(id), Some((cached_id, binary))) = (&id, cache.as_ref())
            && id == cached_id
        {
            return Ok(Firecracker::new(binary.clone()));
        }
        let binary = FirecrackerBinary::check(path, &*self.runner)?;
        *cache = id.map(|id| (id, binary.clone()));
        Ok(Firecracker::new(binary))
    }

    /// The Firecracker backend for launching: the binary checked now, so a binary installed
    /// or upgraded since the daemon started is used; jailed as configured.
    pub fn firecracker(&self) -> Result<Firecracker, ApiError> {
        let fc = self.unjailed_firecracker()?;
        self.jailed(fc).map_err(|why| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("Firecracker cannot run VMs here: {why}"),
            )
            .with_hint(
                "install the jailer of the same Firecracker release (or set jailer_bin), run                  bangerd as root, or set jailer = false in config.toml; `banger doctor` checks it",
            )
        })
    }

    fn unjailed_firecracker(&self) -> Result<Firecracker, ApiError> {
        self.detect_firecracker().map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "Firecracker cannot run VMs here: {}",
                    banger_vmm::error_chain(&e)
                ),
            )
            .with_hint(format!(
                "install Firecracker {MIN_VERSION} or newer and put it in PATH, or set \
                 firecracker_bin in config.toml; `banger doctor` checks it"
            ))
        })
    }

    /// The QEMU backend for launching with `accel`.
    pub fn qemu(&self, accel: Accel) -> Result<Qemu, ApiError> {
        if let Some(qemu) = &self.qemu {
            return Ok(qemu.clone());
        }
        let binary = QemuBinary::detect(self.qemu_bin.as_deref(), &*self.runner).map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("QEMU cannot run VMs here: {}", banger_vmm::error_chain(&e)),
            )
            .with_hint(
                "install it (sudo apt-get install qemu-system-x86) or set qemu_bin in \
                 config.toml; `banger doctor` checks it",
            )
        })?;
        Ok(self.confined(Qemu::new(binary, accel)))
    }

    /// `qemu` with the confinement the configuration asks for: the sandbox, and a uid and a
    /// cgroup of its own when bangerd runs as root (tests on a fake host keep theirs).
    fn confined(&self, qemu: Qemu) -> Qemu {
        let root = rustix::process::geteuid().is_root();
        let cgroups = match (root && self.qemu_settings.cgroups, self.qemu_cgroups()) {
            (true, Cgroups::Usable(hierarchy)) => Some(banger_vmm::qemu::QemuCgroups {
                hierarchy,
                memory_overhead_mib: self.qemu_settings.memory_overhead_mib,
            }),
            _ => None,
        };
        qemu.confined(banger_vmm::qemu::Confinement {
            uids: root.then_some(self.qemu_settings.uids),
            sandbox: self.qemu_settings.sandbox,
            cgroups,
        })
    }

    /// Where QEMUs' cgroups can go on this host (read once).
    fn qemu_cgroups(&self) -> Cgroups {
        static DETECTED: std::sync::OnceLock<Cgroups> = std::sync::OnceLock::new();
        DETECTED.get_or_init(Cgroups::detect).clone()
    }

    /// The backend for a VM to be started with `requested` (`auto` resolved), and a note for
    /// the user when the choice deserves one.
    pub fn for_start(&self, requested: VmmKind) -> Result<(Backend, Option<String>), ApiError> {
        match requested {
            VmmKind::Firecracker => {
                let fc = self.firecracker()?;
                let note = (!self.kvm.boots_stock_guests()).then(|| {
                    format!(
                        "Firecracker will start the instance, but {}: a stock guest kernel \
                         will not boot on this host",
                        Accel::for_kvm(&self.kvm).1
                    )
                });
                Ok((Backend::Firecracker(fc), note))
            }
            VmmKind::Qemu => {
                let (accel, why) = Accel::for_kvm(&self.kvm);
                Ok((Backend::Qemu(self.qemu(accel)?), Some(why)))
            }
            VmmKind::Auto => {
                let firecracker = self.detect_firecracker();
                let binary = firecracker.as_ref().map(|fc| fc.binary());
                let (choice, why) = banger_vmm::auto_choice(binary, &self.kvm);
                match choice {
                    VmmChoice::Firecracker => {
                        let fc = firecracker.map_err(|_| self.firecracker().unwrap_err())?;
                        let fc = self
                            .jailed(fc)
                            .map_err(|_| self.firecracker().unwrap_err())?;
                        Ok((Backend::Firecracker(fc), Some(why)))
                    }
                    VmmChoice::Qemu(accel) => Ok((
                        Backend::Qemu(self.qemu(accel)?),
                        Some(format!("vmm = auto: {why}")),
                    )),
                }
            }
        }
    }

    /// The backend that drives a VM `kind` started. Stopping and inspecting need no binary, so
    /// a VM keeps being manageable after its backend's binary was removed.
    pub fn for_running(&self, kind: VmmKind) -> Result<Backend, ApiError> {
        Ok(match kind {
            VmmKind::Firecracker | VmmKind::Auto => {
                let fc = self.firecracker.clone().unwrap_or_else(|| {
                    Firecracker::new(FirecrackerBinary {
                        path: self
                            .firecracker_bin
                            .clone()
                            .unwrap_or_else(|| PathBuf::from("firecracker")),
                        version: MIN_VERSION,
                    })
                });
                // A running VM is driven where it runs: in its jail, whatever the configuration
                // says now.
                Backend::Firecracker(match self.chroot_base() {
                    Some(base) if self.firecracker.is_none() => {
                        fc.with_chroot_base(base.to_owned())
                    }
                    _ => fc,
                })
            }
            // Confined as a start would: its stop removes the VM's cgroup.
            VmmKind::Qemu => Backend::Qemu(self.qemu.clone().unwrap_or_else(|| {
                self.confined(Qemu::new(
                    QemuBinary {
                        path: self
                            .qemu_bin
                            .clone()
                            .unwrap_or_else(|| PathBuf::from(banger_vmm::qemu::binary::PROGRAM)),
                        version: banger_vmm::qemu::binary::MIN_VERSION,
                    },
                    Accel::for_kvm(&self.kvm).0,
                ))
            })),
        })
    }

    /// Every backend that may have left processes behind, for reconcile.
    pub fn all(&self) -> Vec<Backend> {
        [VmmKind::Firecracker, VmmKind::Qemu]
            .into_iter()
            .filter_map(|kind| self.for_running(kind).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use banger_host::{CommandOutput, FakeRunner, KvmKind, Matcher};
    use banger_vmm::Availability;

    use super::*;

    fn answering(firecracker: &str) -> FakeRunner {
        let qemu = banger_vmm::qemu::binary::PROGRAM;
        FakeRunner::new()
            .respond(
                "firecracker",
                CommandOutput::with_stdout(format!("Firecracker {firecracker}\n")),
            )
            .respond(
                Matcher::prefix(qemu, ["--version"]),
                CommandOutput::with_stdout("QEMU emulator version 7.2.15 (Debian)\n"),
            )
            .respond(
                Matcher::prefix(qemu, ["-machine"]),
                CommandOutput::with_stdout("microvm  microvm (i386)\n"),
            )
    }

    #[test]
    fn a_guest_that_ends_itself_is_a_clean_end_and_a_panic_is_not() {
        assert!(guest_ended_cleanly(
            "[   12.345678] reboot: Restarting system"
        ));
        assert!(guest_ended_cleanly("[    3.1] reboot: Power down"));
        assert!(!guest_ended_cleanly(
            "[    3.1] Kernel panic - not syncing: Attempted to kill init!"
        ));
        assert!(!guest_ended_cleanly("[    3.2] Rebooting in 1 seconds.."));
        assert!(!guest_ended_cleanly("[    3.2] reboot: System halted"));
    }

    // Guards `banger doctor` against a second opinion on `vmm = auto`: its vmm line and a
    // start must name the same backend, here for a usable and for a too-old Firecracker.
    #[test]
    fn auto_starts_on_the_backend_the_doctor_names() {
        let dir = tempfile::tempdir().unwrap();
        let [fc_bin, qemu_bin] = ["firecracker", banger_vmm::qemu::binary::PROGRAM].map(|name| {
            let path = dir.path().join(name);
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        });
        let intel = || Kvm::Usable(KvmKind::Intel);
        for (firecracker, expected) in [
            ("v1.16.1", VmmKind::Firecracker),
            ("v1.10.0", VmmKind::Qemu),
        ] {
            let runner = Arc::new(answering(firecracker));
            let backends = Backends::new(
                runner.clone(),
                Some(fc_bin.clone()),
                Some(qemu_bin.clone()),
                None,
                None,
            )
            .with_kvm(intel());
            let (backend, _) = backends.for_start(VmmKind::Auto).unwrap();
            assert_eq!(backend.kind(), expected, "{firecracker}");

            let doctor = Availability::detect(Some(&fc_bin), Some(&qemu_bin), &*runner, intel());
            let checks = doctor.checks();
            let vmm = checks.iter().find(|c| c.name == "vmm").unwrap();
            let named = match expected {
                VmmKind::Firecracker => "vmm = \"auto\" uses Firecracker",
                _ => "vmm = \"auto\" uses QEMU with KVM",
            };
            assert!(vmm.detail.starts_with(named), "{firecracker}: {vmm:?}");
        }
    }

    #[test]
    fn jailing_follows_the_setting_the_daemons_user_and_the_jailer_found() {
        use banger_vmm::firecracker::jail::JailFile;
        let jailer = || {
            Ok(JailerBinary {
                path: "/usr/local/bin/jailer".into(),
                version: banger_vmm::Version::new(1, 16, 1),
            })
        };
        let missing = || Err::<JailerBinary, _>("jailer not found in PATH".to_owned());
        let cgroup = || Cgroups::Unusable("no cgroup v2 hierarchy is mounted".into());
        let base = Path::new("/var/lib/banger/jail");
        let libs = Vec::<JailFile>::new;
        let settings = |mode| JailSettings {
            mode,
            ..JailSettings::default()
        };
        let decide = |mode, root, found: Result<JailerBinary, String>| {
            JailDecision::decide(&settings(mode), base, root, found, cgroup(), libs())
        };
        match decide(JailMode::Auto, true, jailer()) {
            JailDecision::Jailed(jail) => {
                assert_eq!(jail.chroot_base, base);
                assert_eq!(jail.uids, crate::config::DEFAULT_JAIL_UIDS);
                assert_eq!(jail.memory_overhead_mib, 64);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(JailMode::Auto, false, jailer()),
            JailDecision::Direct("bangerd does not run as root, and the jailer needs root".into())
        );
        assert_eq!(
            decide(JailMode::On, false, jailer()),
            JailDecision::Refused(
                "jailer = true, but bangerd does not run as root, and the jailer needs root".into()
            )
        );
        assert_eq!(
            decide(JailMode::Auto, true, missing()),
            JailDecision::Direct("jailer not found in PATH".into())
        );
        assert_eq!(
            decide(JailMode::On, true, missing()),
            JailDecision::Refused("jailer = true, but jailer not found in PATH".into())
        );
        assert!(matches!(
            decide(JailMode::Off, true, jailer()),
            JailDecision::Direct(why) if why.contains("jailer = false")
        ));
    }
}

//! Launching one VM in a fresh Firecracker process: the configuration a [`VmSpec`] becomes, the
//! ordered steps that spawn, configure and start it, and the ledger of what each step acquired.
//! A step that fails releases the ledger newest first; a release that fails does not stop the
//! others, and all of their errors travel with the launch error. Stop and post-crash cleanup
//! release the same [`Resource`] values through the same [`release`], so there is one code path
//! that kills a VMM or removes its sockets.
//!
//! The order of the requests is Firecracker's own: logger and metrics first (so that the rest
//! is logged), then machine config, boot source, drives, network interfaces, vsock; these go
//! pipelined in one batch, and `InstanceStart` follows once every one of them was accepted.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::FirecrackerError;
use crate::escalate::{self, Stubborn};
use banger_host::ProcessError;

use super::Firecracker;
use super::actions::ActionType;
use super::boot_source::BootSource;
use super::client::{ApiClient, ApiRequest, Method, json_request};
use super::drive::Drive;
use super::jail::{self, JailFile, JailPlan};
use super::logger::{LogLevel, Logger};
use super::machine_config::MachineConfiguration;
use super::metrics::Metrics;
use super::network_interface::NetworkInterface;
use super::spare::{Spare, spare_resources};
use super::vm_config::FullVmConfiguration;
use super::vsock::Vsock;
use crate::host::{ProcessHost, SocketWaitError};
use crate::{VmHandle, VmSpec, VmmError, error_chain};

/// `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// How many console lines an error about a dead Firecracker carries.
const CONSOLE_LINES: usize = 20;

/// Firecracker's limit on `--id`.
const MAX_ID_LEN: usize = 64;

/// The interface id banger gives the VM's only network interface.
pub const IFACE_ID: &str = "eth0";

/// One thing a launch acquired that must be released when the VM goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// The Firecracker process.
    Process { pid: u32 },
    /// Its API socket file (Firecracker creates it; nobody removes it when Firecracker dies).
    ApiSocket { path: PathBuf },
    /// The vsock device's host socket file, bound by Firecracker when `PUT /vsock` succeeds.
    VsockSocket { path: PathBuf },
    /// A jail's directory (`<chroot base>/<exec file name>/<id>`), removed whole once nothing
    /// is mounted in it.
    JailDir { path: PathBuf },
    /// A VM's file placed in its chroot: a hard link, or a bind mount (`bind`); `owner` is the
    /// file's owner and group before it was given to the VM's uid.
    JailFile {
        path: PathBuf,
        bind: bool,
        owner: Option<(u32, u32)>,
    },
    /// A jailed VM's cgroup directory, created by the jailer.
    Cgroup { path: PathBuf },
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Process { pid } => write!(f, "Firecracker process {pid}"),
            Resource::ApiSocket { path } => write!(f, "API socket {}", path.display()),
            Resource::VsockSocket { path } => write!(f, "vsock socket {}", path.display()),
            Resource::JailDir { path } => write!(f, "jail {}", path.display()),
            Resource::JailFile { path, bind, .. } => write!(
                f,
                "jail {} {}",
                if *bind { "mount" } else { "link" },
                path.display()
            ),
            Resource::Cgroup { path } => write!(f, "cgroup {}", path.display()),
        }
    }
}

/// Releasing one [`Resource`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CleanupFailure {
    #[error("cannot remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },

    /// `vmm` names the process: `Firecracker` or `QEMU`.
    #[error("cannot kill {vmm} (pid {pid}): {}", error_chain(source))]
    Kill {
        vmm: &'static str,
        pid: u32,
        source: ProcessError,
    },

    #[error("{vmm} (pid {pid}) is still running after SIGKILL")]
    StillRunning { vmm: &'static str, pid: u32 },

    #[error("cannot give {} back to {uid}:{gid}: {source}", path.display())]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        source: io::Error,
    },

    #[error("cannot unmount {}: {source}", path.display())]
    Unmount { path: PathBuf, source: io::Error },

    #[error("jail {} still has {} mounted; not removing it", path.display(), mounts.join(", "))]
    JailMounted { path: PathBuf, mounts: Vec<String> },
}

/// Releases one resource. Releasing something already gone succeeds, so this is safe to repeat.
/// A process is killed outright: whoever releases it has given up on its guest (a graceful stop
/// is [`crate::Vmm::stop`]'s business, before it releases).
pub fn release(
    host: &dyn ProcessHost,
    resource: &Resource,
    kill_wait: Duration,
) -> Result<(), CleanupFailure> {
    tracing::debug!(%resource, "releasing");
    match resource {
        Resource::Process { pid } => escalate::kill(host, *pid, kill_wait).map_err(|e| match e {
            Stubborn::Signal(source) => CleanupFailure::Kill {
                vmm: "Firecracker",
                pid: *pid,
                source,
            },
            Stubborn::StillRunning => CleanupFailure::StillRunning {
                vmm: "Firecracker",
                pid: *pid,
            },
        }),
        Resource::ApiSocket { path } | Resource::VsockSocket { path } => host
            .remove_file(path)
            .map_err(|source| CleanupFailure::Remove {
                path: path.clone(),
                source,
            }),
        Resource::JailFile { path, bind, owner } => {
            let remove = |source| CleanupFailure::Remove {
                path: path.clone(),
                source,
            };
            if let Some((uid, gid)) = owner
                && host.exists(path)
            {
                host.chown(path, *uid, *gid)
                    .map_err(|source| CleanupFailure::Chown {
                        path: path.clone(),
                        uid: *uid,
                        gid: *gid,
                        source,
                    })?;
            }
            if *bind {
                host.unmount(path)
                    .map_err(|source| CleanupFailure::Unmount {
                        path: path.clone(),
                        source,
                    })?;
            }
            host.remove_file(path).map_err(remove)
        }
        Resource::Cgroup { path } => remove_cgroup(host, path, kill_wait),
        Resource::JailDir { path } => {
            // A bind mount still in place would have its source's contents removed with the
            // tree: the jail is kept instead.
            let mounts = host.mounts_under(path);
            if !mounts.is_empty() {
                return Err(CleanupFailure::JailMounted {
                    path: path.clone(),
                    mounts: mounts.iter().map(|m| m.display().to_string()).collect(),
                });
            }
            host.remove_dir_all(path)
                .map_err(|source| CleanupFailure::Remove {
                    path: path.clone(),
                    source,
                })
        }
    }
}

/// Removes a cgroup directory; the kernel refuses (`EBUSY`) while a process it held is still
/// exiting, so that is retried up to `wait`.
fn remove_cgroup(
    host: &dyn ProcessHost,
    path: &Path,
    wait: Duration,
) -> Result<(), CleanupFailure> {
    crate::cgroup::remove(host, std::slice::from_ref(&path.to_owned()), wait).map_err(|source| {
        CleanupFailure::Remove {
            path: path.to_owned(),
            source,
        }
    })
}

/// Releases `acquired` newest first, returning every failure.
pub fn release_all(
    host: &dyn ProcessHost,
    acquired: Vec<Resource>,
    kill_wait: Duration,
) -> Vec<CleanupFailure> {
    escalate::release_newest_first(acquired, |resource| release(host, resource, kill_wait))
}

/// The Firecracker configuration of `spec`: what a launch sends request by request, and what
/// `firecracker --config-file` would read in one document.
pub fn configuration(spec: &VmSpec, log_level: LogLevel) -> Result<FullVmConfiguration, VmmError> {
    validate(spec)?;
    let vcpu_count = u8::try_from(spec.vcpus)
        .map_err(|_| VmmError::InvalidSpec(format!("{} vCPUs is too many", spec.vcpus)))?;
    Ok(FullVmConfiguration {
        logger: Some(Logger::to_file(&spec.paths.vmm_log, log_level)),
        metrics: Some(Metrics {
            metrics_path: spec.paths.metrics.clone(),
        }),
        machine_config: Some(MachineConfiguration::new(
            vcpu_count,
            u64::from(spec.memory_mib),
        )),
        boot_source: Some(BootSource {
            kernel_image_path: spec.kernel.clone(),
            initrd_path: spec.initrd.clone(),
            boot_args: Some(spec.boot_args.clone()),
        }),
        drives: spec
            .drives
            .iter()
            .map(|d| Drive::file(&d.id, &d.path, d.read_only, d.is_root))
            .collect(),
        network_interfaces: spec
            .net
            .iter()
            .map(|net| NetworkInterface {
                iface_id: IFACE_ID.to_owned(),
                host_dev_name: net.tap.clone(),
                guest_mac: Some(net.mac.clone()),
                mtu: None,
                rx_rate_limiter: None,
                tx_rate_limiter: None,
            })
            .collect(),
        vsock: spec.vsock.as_ref().map(|v| Vsock {
            guest_cid: v.cid,
            uds_path: v.uds_path.clone(),
        }),
    })
}

/// What Firecracker would reject with a less helpful message, or would accept although banger
/// must not send it. The QEMU backend holds specs to the same rules, so that a VM can move
/// between backends.
pub(crate) fn validate(spec: &VmSpec) -> Result<(), VmmError> {
    let invalid = |message: String| Err(VmmError::InvalidSpec(message));
    let id = &spec.vm_id;
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return invalid(format!(
            "VM id {id:?} must be 1 to {MAX_ID_LEN} ASCII letters, digits or dashes"
        ));
    }
    if spec.vcpus == 0 {
        return invalid("a VM needs at least one vCPU".into());
    }
    if spec.memory_mib == 0 {
        return invalid("a VM needs memory".into());
    }
    if let Some(arg) = spec
        .boot_args
        .split_whitespace()
        .find(|arg| arg.starts_with("ip="))
    {
        return invalid(format!(
            "the kernel command line must not configure the network ({arg}); the guest does"
        ));
    }
    let sockets =
        std::iter::once(&spec.paths.api_socket).chain(spec.vsock.as_ref().map(|v| &v.uds_path));
    for socket in sockets {
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return invalid(format!(
                "socket path {} is {len} bytes; Unix sockets allow {MAX_SOCKET_PATH}",
                socket.display()
            ));
        }
    }
    Ok(())
}

/// The requests that configure a VM, in Firecracker's order, `InstanceStart` excluded.
pub fn configuration_requests(config: &FullVmConfiguration) -> Result<Vec<ApiRequest>, VmmError> {
    let mut requests = Vec::new();
    if let Some(logger) = &config.logger {
        requests.push(json_request(Method::Put, "/logger", logger)?);
    }
    if let Some(metrics) = &config.metrics {
        requests.push(json_request(Method::Put, "/metrics", metrics)?);
    }
    if let Some(machine) = &config.machine_config {
        requests.push(json_request(Method::Put, "/machine-config", machine)?);
    }
    if let Some(boot) = &config.boot_source {
        requests.push(json_request(Method::Put, "/boot-source", boot)?);
    }
    for drive in &config.drives {
        let path = format!("/drives/{}", drive.drive_id);
        requests.push(json_request(Method::Put, &path, drive)?);
    }
    for iface in &config.network_interfaces {
        let path = format!("/network-interfaces/{}", iface.iface_id);
        requests.push(json_request(Method::Put, &path, iface)?);
    }
    if let Some(vsock) = &config.vsock {
        requests.push(json_request(Method::Put, "/vsock", vsock)?);
    }
    Ok(requests)
}

/// The arguments Firecracker is started with. Logging and metrics are configured through the
/// API like everything else, so the process's command line is only what identifies it.
pub fn process_args(spec: &VmSpec) -> Vec<OsString> {
    vec![
        "--api-sock".into(),
        spec.paths.api_socket.clone().into(),
        "--id".into(),
        spec.vm_id.clone().into(),
    ]
}

/// The API socket a Firecracker command line serves (`--api-sock PATH`), `None` when `argv`
/// is not a Firecracker's: its program's file name must start with `firecracker`.
pub fn firecracker_api_socket(argv: &[OsString]) -> Option<PathBuf> {
    let program = Path::new(argv.first()?).file_name()?.to_str()?;
    if !program.starts_with("firecracker") {
        return None;
    }
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--api-sock" {
            return args.next().map(PathBuf::from);
        }
        if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--api-sock=")) {
            return Some(PathBuf::from(value));
        }
    }
    None
}

impl Firecracker {
    pub(crate) fn launch_vm(
        &self,
        spec: &VmSpec,
        spare: Option<Spare>,
        beside: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<VmHandle, VmmError> {
        let planned = self.jail_plan(spec, &[]).and_then(|plan| {
            Ok((
                configuration(plan.as_ref().map_or(spec, |p| &p.inner), self.log_level)?,
                plan,
            ))
        });
        let (config, plan) = match planned {
            Ok(planned) => planned,
            Err(error) => {
                if let Some(spare) = spare {
                    self.discard_spare(spare);
                }
                return Err(error);
            }
        };
        // A spare runs unjailed, as no VM yet: a jailed VM starts its own process.
        let spare = match (spare, &plan) {
            (Some(spare), Some(_)) => {
                self.discard_spare(spare);
                None
            }
            (spare, _) => spare,
        };
        let mut acquired = Vec::new();
        match self.launch_steps(spec, plan.as_ref(), &config, spare, &mut acquired, beside) {
            Ok(handle) => Ok(handle),
            Err(error) => {
                let error = self.explain(error, &acquired, &spec.paths.console_log);
                let cleanup = release_all(&*self.host, acquired, self.timeouts.kill_wait);
                Err(VmmError::Launch {
                    vm_id: spec.vm_id.clone(),
                    error: Box::new(error),
                    cleanup,
                })
            }
        }
    }

    /// The jail of `spec` when VMs are jailed; `extra` adds files to it.
    pub(crate) fn jail_plan(
        &self,
        spec: &VmSpec,
        extra: &[JailFile],
    ) -> Result<Option<JailPlan>, VmmError> {
        self.jail
            .as_ref()
            .map(|jail| jail.plan(spec, &self.binary, extra))
            .transpose()
    }

    fn launch_steps(
        &self,
        spec: &VmSpec,
        plan: Option<&JailPlan>,
        config: &FullVmConfiguration,
        spare: Option<Spare>,
        acquired: &mut Vec<Resource>,
        beside: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<VmHandle, VmmError> {
        let vsock_socket = match plan {
            Some(plan) => plan.vsock_socket.clone(),
            None => spec.vsock.as_ref().map(|v| v.uds_path.clone()),
        };
        let (pid, api_socket) = self.start_process(spec, plan, spare, acquired, beside)?;
        let api_socket = &api_socket;

        // The configuration goes in one pipelined batch: requests that may all be applied
        // whatever the others' fate, since a refusal rolls the whole process back anyway.
        // `InstanceStart` waits for every answer: a VM must not start half configured.
        let api = ApiClient::new(&*self.transport, api_socket);
        let batch = configuration_requests(config)?;
        if let Some(path) = &vsock_socket {
            // Bound by Firecracker as soon as it applies `PUT /vsock`, which it does even when an
            // earlier request of the batch was refused.
            record(acquired, Resource::VsockSocket { path: path.clone() });
        }
        api.send_all(&batch)?;
        api.action(ActionType::InstanceStart)?;
        tracing::info!(vm = %spec.vm_id, pid, jailed = plan.is_some(), "Firecracker instance started");

        Ok(VmHandle {
            vm_id: spec.vm_id.clone(),
            pid,
            api_socket: api_socket.clone(),
            vsock_socket,
        })
    }

    /// The first steps of every launch and restore: a Firecracker process for `spec` (`spare`
    /// taken over when it can be), its log files, `beside`, and the wait for its API socket.
    /// Returns its pid and API socket once it answers.
    pub(crate) fn start_process(
        &self,
        spec: &VmSpec,
        plan: Option<&JailPlan>,
        spare: Option<Spare>,
        acquired: &mut Vec<Resource>,
        beside: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(u32, PathBuf), VmmError> {
        let host = &*self.host;
        let (api_socket, vsock_socket) = match plan {
            Some(plan) => (plan.api_socket.clone(), plan.vsock_socket.clone()),
            None => (
                spec.paths.api_socket.clone(),
                spec.vsock.as_ref().map(|v| v.uds_path.clone()),
            ),
        };
        let spare = spare.and_then(|spare| self.adoptable(spare, &spec.paths.console_log));

        // A spare is the VM's from here on: a failure releases it with the rest.
        if let Some(spare) = &spare {
            tracing::debug!(pid = spare.pid, spare = %spare.id, vm = %spec.vm_id, "adopting a spare Firecracker");
            for resource in spare_resources(spare) {
                record(acquired, resource);
            }
        }
        // Sockets left by a VMM that died: Firecracker refuses to bind over them.
        let own_socket = spare.is_none().then_some(&api_socket);
        for socket in own_socket.into_iter().chain(vsock_socket.as_ref()) {
            escalate::clear_stale_socket(&*self.host, socket)?;
        }
        // Created here, mode 0600, so that they are the user's alone; Firecracker would create
        // them world-readable. They outlive the VM: they are how a failure is diagnosed.
        // (The console log is opened by the spawn, with the same mode.) Firecracker writes
        // them from their first byte, not at their end: a previous run's lines would be left
        // under this run's, and its last ones (its exit code) read as this run's. So each
        // run starts on new files, and the previous run's are kept as `NAME.1`.
        for file in [&spec.paths.vmm_log, &spec.paths.metrics] {
            let error = |source| VmmError::File {
                path: file.clone(),
                source,
            };
            if host.exists(file) {
                host.rename(file, &previous_run(file)).map_err(error)?;
            }
            host.create_file(file).map_err(error)?;
        }

        let (pid, api_socket) = match (spare, plan) {
            (Some(spare), _) => (spare.pid, spare.api_socket),
            (None, None) => {
                let pid = host
                    .spawn(
                        &self.binary.path,
                        &process_args(spec),
                        &spec.paths.console_log,
                    )
                    .map_err(FirecrackerError::Spawn)?;
                record(acquired, Resource::Process { pid });
                // The socket is Firecracker's from the moment it starts; recorded before the
                // wait so that a socket which appears late is still removed.
                record(
                    acquired,
                    Resource::ApiSocket {
                        path: api_socket.clone(),
                    },
                );
                (pid, api_socket)
            }
            (None, Some(plan)) => {
                let jail = self.jail.as_ref().ok_or_else(|| {
                    VmmError::InvalidSpec("a jail was planned without a jail configuration".into())
                })?;
                let uid = jail.build(host, plan, acquired)?;
                let args = jail.jailer_args(plan, &self.binary, uid);
                if let Some(limits) = &plan.cgroup {
                    // The jailer creates it; recorded first so that a jailer which fails after
                    // creating it still has it removed.
                    for path in limits.dirs() {
                        record(acquired, Resource::Cgroup { path });
                    }
                }
                let jailer = host
                    .spawn(&jail.jailer.path, &args, &spec.paths.console_log)
                    .map_err(FirecrackerError::Spawn)?;
                record(acquired, Resource::Process { pid: jailer });
                record(
                    acquired,
                    Resource::ApiSocket {
                        path: api_socket.clone(),
                    },
                );
                let besides = beside();
                // The jailer forks Firecracker into its own pid namespace and exits; the pid it
                // writes is the one to supervise, and to kill whatever fails from here on.
                let pid =
                    jail::wait_for_pid(host, &plan.pid_file, jailer, self.timeouts.api_socket)?;
                for resource in acquired.iter_mut() {
                    if *resource == (Resource::Process { pid: jailer }) {
                        *resource = Resource::Process { pid };
                    }
                }
                besides.map_err(VmmError::Beside)?;
                // The tap exists now (made beside the spawn); the jailed Firecracker opens it as
                // the VM's uid. It goes with the VM's network, the daemon's.
                if let Some(net) = &spec.net {
                    host.give_tap(&net.tap, uid)
                        .map_err(|source| VmmError::File {
                            path: PathBuf::from(format!("/sys/class/net/{}", net.tap)),
                            source,
                        })?;
                }
                tracing::debug!(vm = %spec.vm_id, pid, uid, "jailed Firecracker started");
                return self.wait_for_api(pid, api_socket);
            }
        };
        // Firecracker needs a few milliseconds before it answers: the caller's work fits in them.
        beside().map_err(VmmError::Beside)?;
        self.wait_for_api(pid, api_socket)
    }

    fn wait_for_api(&self, pid: u32, api_socket: PathBuf) -> Result<(u32, PathBuf), VmmError> {
        let api_socket = &api_socket;
        self.host
            .wait_for_socket(api_socket, pid, self.timeouts.api_socket)
            .map_err(|e| match e {
                SocketWaitError::Exited => FirecrackerError::Exited {
                    pid,
                    during: "before opening its API socket".into(),
                    console: Vec::new(),
                },
                SocketWaitError::TimedOut(timeout) => FirecrackerError::SocketTimeout {
                    socket: api_socket.clone(),
                    timeout,
                },
            })?;
        Ok((pid, api_socket.clone()))
    }

    /// `spare` if a launch can take it over, its console log moved to `console_log`; released
    /// otherwise (a launch then starts its own process).
    fn adoptable(&self, spare: Spare, console_log: &Path) -> Option<Spare> {
        if !self.can_adopt(&spare) {
            tracing::info!(pid = spare.pid, spare = %spare.id, "the spare Firecracker is gone or runs another binary; starting a new one");
            self.discard_spare(spare);
            return None;
        }
        // Renamed, not copied: the process keeps writing to the same open file.
        if let Err(error) = self.host.rename(&spare.console_log, console_log) {
            tracing::warn!(spare = %spare.id, %error, "cannot move the spare Firecracker's console log; starting a new one");
            self.discard_spare(spare);
            return None;
        }
        Some(Spare {
            console_log: console_log.to_owned(),
            ..spare
        })
    }

    /// Releases a spare a launch will not use, logging what could not be undone.
    fn discard_spare(&self, spare: Spare) {
        for failure in self.release_spare(spare) {
            tracing::warn!(error = %failure, "cannot release a spare Firecracker");
        }
    }

    /// A request that failed because Firecracker died says so, with Firecracker's last words.
    pub(crate) fn explain(
        &self,
        error: VmmError,
        acquired: &[Resource],
        console_log: &Path,
    ) -> VmmError {
        let Some(pid) = acquired.iter().find_map(|r| match r {
            Resource::Process { pid } => Some(*pid),
            _ => None,
        }) else {
            return error;
        };
        let console = || crate::console_tail(console_log, CONSOLE_LINES).unwrap_or_default();
        match error {
            VmmError::Firecracker(FirecrackerError::Exited { pid, during, .. }) => {
                FirecrackerError::Exited {
                    pid,
                    during,
                    console: console(),
                }
                .into()
            }
            VmmError::Firecracker(
                FirecrackerError::Transport { .. } | FirecrackerError::SocketTimeout { .. },
            ) if !self.host.pid_alive(pid) => FirecrackerError::Exited {
                pid,
                during: "while being configured".into(),
                console: console(),
            }
            .into(),
            other => other,
        }
    }
}

/// Where the log or metrics of a VM's previous Firecracker are kept when it starts again:
/// `vmm.log.1`, `metrics.json.1`.
pub fn previous_run(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

pub(crate) fn record(acquired: &mut Vec<Resource>, resource: Resource) {
    tracing::debug!(%resource, "acquired");
    acquired.push(resource);
}

//! Cgroups for the VMMs banger starts itself (QEMU's; a jailed Firecracker's are made by the
//! jailer, see [`crate::firecracker::jail`]): one cgroup per VM, `banger/<vm id>` below each
//! hierarchy that holds the memory and cpu controllers, with a memory limit (the guest's memory
//! plus the VMM's own overhead) and a CPU quota (as many CPUs' time as the VM has vCPUs).
//!
//! Both layouts a Linux host may have are served:
//! - **cgroup v2** (the unified hierarchy offers `memory` and `cpu`): one directory, with
//!   `memory.max`, `memory.swap.max` (0: the limit is not dodged through swap) and `cpu.max`;
//! - **cgroup v1** (`memory` and `cpu` mounted as v1 controllers, as on hosts with a hybrid
//!   layout whose unified hierarchy holds no controller): a directory under each, with
//!   `memory.limit_in_bytes` and `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
//!
//! The directories are made, and the limits written, before the VMM starts; its pid is written
//! to `cgroup.procs` while it is still paused (QEMU starts with `-S`, before the guest has
//! touched its memory), and the directories are removed once it has exited.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::firecracker::jail::{CONTROLLERS, CPU_PERIOD_US, CgroupSupport, PARENT_CGROUP};
use crate::host::ProcessHost;

/// How long a removal waits for an exited VMM to leave its cgroup (the kernel takes it out as
/// the process is reaped).
pub const LEAVE_WAIT: Duration = Duration::from_secs(2);

/// Where the memory and cpu controllers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The cgroup v2 hierarchy mounted here offers both.
    V2 { root: PathBuf },
    /// Both are mounted as cgroup v1 controllers, here (the same directory when they are
    /// mounted together).
    V1 { memory: PathBuf, cpu: PathBuf },
}

/// Whether VMMs can get cgroup limits here, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    Usable(Hierarchy),
    /// Why not: VMMs then run without cgroup limits.
    Unusable(String),
}

impl Cgroups {
    /// Reads `/proc/mounts` (and the v2 root's `cgroup.controllers`).
    pub fn detect() -> Cgroups {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        Cgroups::from_mounts(&mounts, |root| {
            std::fs::read_to_string(root.join("cgroup.controllers")).ok()
        })
    }

    /// The decision for a host whose mount table is `mounts`; `controllers` reads the
    /// `cgroup.controllers` of a cgroup v2 mount point. cgroup v2 is preferred; cgroup v1
    /// serves when v2 lacks the controllers and v1 has both.
    pub fn from_mounts(mounts: &str, controllers: impl Fn(&Path) -> Option<String>) -> Cgroups {
        let v2 = match CgroupSupport::from_mounts(mounts, controllers) {
            CgroupSupport::Usable(root) => return Cgroups::Usable(Hierarchy::V2 { root }),
            CgroupSupport::Unusable(reason) => reason,
        };
        let v1 = |controller: &str| {
            mounts.lines().find_map(|line| {
                let mut fields = line.split_whitespace();
                let point = fields.next().and(fields.next())?;
                let kind = fields.next()?;
                let options = fields.next()?;
                (kind == "cgroup" && options.split(',').any(|o| o == controller))
                    .then(|| PathBuf::from(point.replace("\\040", " ")))
            })
        };
        match (v1("memory"), v1("cpu")) {
            (Some(memory), Some(cpu)) => Cgroups::Usable(Hierarchy::V1 { memory, cpu }),
            _ => Cgroups::Unusable(format!(
                "{v2}, and cgroup v1 does not mount both {}",
                CONTROLLERS.join(" and ")
            )),
        }
    }
}

/// One VM's cgroup limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most memory its processes may use, bytes.
    pub memory_bytes: u64,
    /// How many CPUs' time it may use.
    pub cpus: u32,
}

impl Limits {
    /// `cpu.max` as cgroup v2 writes it: `QUOTA PERIOD`, microseconds.
    pub fn cpu_max(&self) -> String {
        format!("{} {CPU_PERIOD_US}", u64::from(self.cpus) * CPU_PERIOD_US)
    }
}

impl Hierarchy {
    /// The directories of VM `vm_id`'s cgroup: one under v2, the memory one then the cpu one
    /// under v1 (one when both controllers share a mount).
    pub fn dirs(&self, vm_id: &str) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2 { root } => vec![root.join(PARENT_CGROUP).join(vm_id)],
            Hierarchy::V1 { memory, cpu } => {
                let mut dirs = vec![memory.join(PARENT_CGROUP).join(vm_id)];
                if cpu != memory {
                    dirs.push(cpu.join(PARENT_CGROUP).join(vm_id));
                }
                dirs
            }
        }
    }

    /// The directories every VM's cgroup is made in (`banger` under each mount point).
    pub fn parents(&self) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2 { root } => vec![root.join(PARENT_CGROUP)],
            Hierarchy::V1 { memory, cpu } if memory == cpu => vec![memory.join(PARENT_CGROUP)],
            Hierarchy::V1 { memory, cpu } => {
                vec![memory.join(PARENT_CGROUP), cpu.join(PARENT_CGROUP)]
            }
        }
    }

    /// The directory whose files say how much memory the cgroup may use and used.
    pub fn memory_dir(&self, vm_id: &str) -> PathBuf {
        self.dirs(vm_id).swap_remove(0)
    }

    /// Makes VM `vm_id`'s cgroup with `limits`. On failure what was made is removed again.
    pub fn create(&self, host: &dyn ProcessHost, vm_id: &str, limits: Limits) -> io::Result<()> {
        let result = self.create_steps(host, vm_id, limits);
        if result.is_err()
            && let Err(e) = remove(host, &self.dirs(vm_id), Duration::ZERO)
        {
            tracing::error!(vm = vm_id, error = %e, "cannot remove a half-made cgroup");
        }
        result
    }

    fn create_steps(&self, host: &dyn ProcessHost, vm_id: &str, limits: Limits) -> io::Result<()> {
        let write = |path: PathBuf, value: String| {
            host.write_file(&path, value.as_bytes()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot write {value:?} to {}: {e}", path.display()),
                )
            })
        };
        match self {
            Hierarchy::V2 { root } => {
                let parent = root.join(PARENT_CGROUP);
                host.create_dir(&parent, 0o755)?;
                // The parent hands the controllers down to the VMs' cgroups (the root's are
                // enabled by whoever manages the hierarchy).
                write(parent.join("cgroup.subtree_control"), "+memory +cpu".into())?;
                let dir = parent.join(vm_id);
                host.create_dir(&dir, 0o755)?;
                write(dir.join("memory.max"), limits.memory_bytes.to_string())?;
                // Without swap a VMM cannot page its way past the limit (no such file where
                // the kernel has no swap accounting).
                let swap = dir.join("memory.swap.max");
                if host.read_file(&swap).is_ok() {
                    write(swap, "0".into())?;
                }
                write(dir.join("cpu.max"), limits.cpu_max())
            }
            Hierarchy::V1 { memory, cpu } => {
                let dirs = self.dirs(vm_id);
                for dir in &dirs {
                    host.create_dir(dir, 0o755)?;
                }
                let memory_dir = memory.join(PARENT_CGROUP).join(vm_id);
                let cpu_dir = cpu.join(PARENT_CGROUP).join(vm_id);
                write(
                    memory_dir.join("memory.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                )?;
                write(cpu_dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                write(
                    cpu_dir.join("cpu.cfs_quota_us"),
                    (u64::from(limits.cpus) * CPU_PERIOD_US).to_string(),
                )
            }
        }
    }

    /// Moves process `pid` (all its threads) into VM `vm_id`'s cgroup.
    pub fn enter(&self, host: &dyn ProcessHost, vm_id: &str, pid: u32) -> io::Result<()> {
        for dir in self.dirs(vm_id) {
            let procs = dir.join("cgroup.procs");
            host.write_file(&procs, pid.to_string().as_bytes())
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot move pid {pid} into {}: {e}", dir.display()),
                    )
                })?;
        }
        Ok(())
    }

    /// The limits VM `vm_id`'s cgroup holds, read back; `None` when it has none (it was
    /// started without, or is gone).
    pub fn limits_of(&self, host: &dyn ProcessHost, vm_id: &str) -> Option<(u64, String)> {
        let read = |path: PathBuf| -> Option<String> {
            let bytes = host.read_file(&path).ok()?;
            Some(String::from_utf8_lossy(&bytes).trim().to_owned())
        };
        match self {
            Hierarchy::V2 { root } => {
                let dir = root.join(PARENT_CGROUP).join(vm_id);
                Some((
                    read(dir.join("memory.max"))?.parse().ok()?,
                    read(dir.join("cpu.max"))?,
                ))
            }
            Hierarchy::V1 { memory, cpu } => {
                let memory = read(
                    memory
                        .join(PARENT_CGROUP)
                        .join(vm_id)
                        .join("memory.limit_in_bytes"),
                )?;
                let cpu = cpu.join(PARENT_CGROUP).join(vm_id);
                let quota = read(cpu.join("cpu.cfs_quota_us"))?;
                let period = read(cpu.join("cpu.cfs_period_us"))?;
                Some((memory.parse().ok()?, format!("{quota} {period}")))
            }
        }
    }
}

/// Removes the cgroup directories `dirs`, waiting (at most `wait`) for an exited process to
/// leave them; ones already gone are fine.
pub fn remove(host: &dyn ProcessHost, dirs: &[PathBuf], wait: Duration) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    for dir in dirs {
        loop {
            match host.remove_dir(dir) {
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot remove cgroup {}: {e}", dir.display()),
                    ));
                }
                Ok(()) => break,
            }
        }
    }
    Ok(())
}

/// How many times the kernel's OOM killer killed a process of the cgroup whose memory files
/// are in `memory_dir` (v2 `memory.events`, v1 `memory.oom_control`); `None` when neither can
/// be read.
pub fn oom_kills(memory_dir: &Path) -> Option<u64> {
    ["memory.events", "memory.oom_control"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(memory_dir.join(file)).ok())
        .find_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn v2_is_preferred_and_v1_serves_a_hybrid_host() {
        let v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        assert_eq!(
            Cgroups::from_mounts(v2, |_| Some("cpuset cpu io memory pids".into())),
            Cgroups::Usable(Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert_eq!(
            Cgroups::from_mounts(HYBRID, |_| Some("hugetlb".into())),
            Cgroups::Usable(Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                cpu: "/sys/fs/cgroup/cpu".into()
            })
        );
        // cpu and cpuacct mounted together count as cpu.
        let joint = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
                     cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        assert_eq!(
            Cgroups::from_mounts(joint, |_| None),
            Cgroups::Usable(Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into()
            })
        );
        // cpuacct alone is not cpu.
        let no_cpu = "cgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        match Cgroups::from_mounts(no_cpu, |_| None) {
            Cgroups::Unusable(why) => assert!(
                why.contains("no cgroup v2 hierarchy is mounted")
                    && why.contains("cgroup v1 does not mount both memory and cpu"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_vms_directories_and_limits() {
        let limits = Limits {
            memory_bytes: 576 << 20,
            cpus: 2,
        };
        assert_eq!(limits.cpu_max(), "200000 100000");
        let v1 = Hierarchy::V1 {
            memory: "/m".into(),
            cpu: "/c".into(),
        };
        assert_eq!(
            v1.dirs("vm1"),
            [
                PathBuf::from("/m/banger/vm1"),
                PathBuf::from("/c/banger/vm1")
            ]
        );
        let joint = Hierarchy::V1 {
            memory: "/j".into(),
            cpu: "/j".into(),
        };
        assert_eq!(joint.dirs("vm1"), [PathBuf::from("/j/banger/vm1")]);
        assert_eq!(
            Hierarchy::V2 { root: "/g".into() }.memory_dir("vm1"),
            PathBuf::from("/g/banger/vm1")
        );
    }

    #[test]
    fn oom_kills_are_read_from_either_version() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(oom_kills(dir.path()), None);
        std::fs::write(
            dir.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kills(dir.path()), Some(2));
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(oom_kills(dir.path()), Some(1));
    }
}

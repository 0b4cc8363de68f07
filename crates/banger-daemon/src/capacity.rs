//! `GET /v1/capacity`: how much of the host banger's VMs hold. CPU and memory count what VMs
//! that hold resources reserve; disk counts bytes actually allocated (`st_blocks`), not the
//! sparse files' apparent sizes, against the filesystem that holds the state directory.
//! Beside what is reserved stand admission control's limits, when it is on.

use banger_api::{Capacity, CpuCapacity, DiskCapacity, MemoryCapacity, Vm, validate};

use crate::admission::Limits;
use crate::host::HostFacts;

/// Measurements that come from the filesystem, taken by the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskFigures {
    pub fs_total_bytes: u64,
    pub fs_available_bytes: u64,
    pub vm_allocated_bytes: u64,
    pub image_allocated_bytes: u64,
    pub snapshot_allocated_bytes: u64,
}

/// Aggregates VM records and host measurements.
pub fn aggregate(
    vms: &[Vm],
    host: HostFacts,
    limits: Option<Limits>,
    memory_available_bytes: u64,
    disk_path: &str,
    disk: DiskFigures,
) -> Capacity {
    let holding: Vec<&Vm> = vms.iter().filter(|vm| vm.state.holds_resources()).collect();
    Capacity {
        cpu: CpuCapacity {
            host_cpus: host.cpus,
            reserved_vcpus: holding.iter().map(|vm| vm.vcpus).sum(),
            vcpu_limit: limits.map(|l| l.vcpus),
        },
        memory: MemoryCapacity {
            host_bytes: host.memory_bytes,
            available_bytes: memory_available_bytes,
            reserved_bytes: holding
                .iter()
                .map(|vm| u64::from(vm.memory_mib) * validate::MIB)
                .sum(),
            limit_bytes: limits.map(|l| l.memory_bytes),
        },
        disk: DiskCapacity {
            path: disk_path.to_owned(),
            fs_total_bytes: disk.fs_total_bytes,
            fs_available_bytes: disk.fs_available_bytes,
            vm_allocated_bytes: disk.vm_allocated_bytes,
            image_allocated_bytes: disk.image_allocated_bytes,
            snapshot_allocated_bytes: disk.snapshot_allocated_bytes,
        },
        vms_total: vms.len() as u32,
        vms_running: vms
            .iter()
            .filter(|vm| vm.state == banger_api::VmState::Running)
            .count() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::VmState;

    fn vm(name: &str, state: VmState, vcpus: u32, memory_mib: u32) -> Vm {
        Vm {
            id: name.into(),
            state,
            vcpus,
            memory_mib,
            ..banger_test_support::fixtures::vm(name)
        }
    }

    #[test]
    fn only_vms_holding_resources_are_reserved() {
        let vms = [
            vm("a", VmState::Running, 2, 1024),
            vm("b", VmState::Stopped, 4, 4096),
            vm("c", VmState::Paused, 1, 512),
            vm("d", VmState::Failed, 8, 8192),
        ];
        let host = HostFacts {
            cpus: 16,
            memory_bytes: 32 * validate::GIB,
        };
        let limits = Limits {
            vcpus: 64,
            memory_bytes: 31 * validate::GIB,
        };
        let cap = aggregate(
            &vms,
            host,
            Some(limits),
            10,
            "/state",
            DiskFigures::default(),
        );
        assert_eq!(cap.cpu.reserved_vcpus, 3);
        assert_eq!(cap.cpu.vcpu_limit, Some(64));
        assert_eq!(cap.memory.limit_bytes, Some(31 * validate::GIB));
        let off = aggregate(&vms, host, None, 10, "/state", DiskFigures::default());
        assert_eq!((off.cpu.vcpu_limit, off.memory.limit_bytes), (None, None));
        assert_eq!(cap.memory.reserved_bytes, 1536 * validate::MIB);
        assert_eq!(cap.vms_total, 4);
        assert_eq!(cap.vms_running, 1);
        assert_eq!(cap.cpu.host_cpus, 16);
    }

    #[test]
    fn disk_figures_pass_through_untouched() {
        let disk = DiskFigures {
            fs_total_bytes: 100,
            fs_available_bytes: 40,
            vm_allocated_bytes: 7,
            image_allocated_bytes: 9,
            snapshot_allocated_bytes: 11,
        };
        let cap = aggregate(
            &[],
            HostFacts {
                cpus: 1,
                memory_bytes: 1,
            },
            None,
            1,
            "/s",
            disk,
        );
        assert_eq!(cap.disk.vm_allocated_bytes, 7);
        assert_eq!(cap.disk.image_allocated_bytes, 9);
        assert_eq!(cap.disk.snapshot_allocated_bytes, 11);
        assert_eq!(cap.disk.fs_available_bytes, 40);
        assert_eq!(cap.disk.path, "/s");
    }
}

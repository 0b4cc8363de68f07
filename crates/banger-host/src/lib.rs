//! Every side effect banger has on the host, behind small synchronous functions and traits:
//! running commands ([`runner`]) and the e2fsprogs command lines among them ([`ext4`]),
//! starting and signalling long-lived processes ([`process`]), reading CPU and memory figures
//! ([`resources`]), measuring and copying disk files ([`disk`]), the bridge, taps and nftables
//! rules of banger's private network ([`network`]), where the programs it runs are
//! ([`program`]), and the host checks of `banger doctor` and of preflights ([`doctor`]).
//! Nothing here knows what a VM is beyond the id, tap and address its network needs; the daemon
//! calls these from `spawn_blocking`. This is the only crate of the workspace allowed to create
//! processes.

pub mod capabilities;
pub mod disk;
pub mod doctor;
pub mod ext4;
pub mod network;
pub mod process;
pub mod program;
pub mod resources;
pub mod runner;

pub use disk::{
    CopyError, CopyMethod, DiskError, FsUsage, SparseWriteError, allocated_bytes, copy_file,
    filesystem_usage, write_sparse,
};
pub use doctor::{
    Check, CheckStatus, Doctor, KVM_PVM_EXPLANATION, Kvm, KvmKind, Preflight, probe_kvm,
};
pub use network::{
    Acquired, IpLinks, Links, NetConfig, NetlinkLinks, NetworkError, Privilege, ReleaseError,
    Resource, VmNet, list_orphan_taps, rebuild_nat_table, release, setup_vm_network, tap_name,
    teardown_vm_network,
};
pub use process::{
    ProcessError, Signal, is_stopped, pid_alive, run_interactive, signal, signal_group,
    spawn_detached, wait_for_exit,
};
pub use resources::{MemInfo, ResourceError, host_cpus, meminfo};
pub use runner::{
    CommandOutput, CommandRunner, CommandSpec, FakeRunner, Matcher, RealRunner, RunError,
};

/// `error` and its sources joined by `: `, the way a user reads it on one line ("cannot write
/// X: No space left on device"): every crate of banger says errors this way.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

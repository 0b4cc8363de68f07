//! Every side effect banger has on the host, behind small synchronous functions and traits:
//! running commands ([`runner`]), starting and signalling long-lived processes ([`process`]),
//! reading CPU and memory figures ([`resources`]), and measuring and copying disk files
//! ([`disk`]). Nothing here knows what a VM is; the daemon calls these from `spawn_blocking`.
//! This is the only crate of the workspace allowed to create processes.

pub mod disk;
pub mod process;
pub mod resources;
pub mod runner;

pub use disk::{
    CopyError, CopyMethod, DiskError, FsUsage, allocated_bytes, copy_file, filesystem_usage,
};
pub use process::{
    ProcessError, Signal, pid_alive, signal, signal_group, spawn_detached, wait_for_exit,
};
pub use resources::{MemInfo, ResourceError, host_cpus, meminfo};
pub use runner::{
    CommandOutput, CommandRunner, CommandSpec, FakeRunner, Matcher, RealRunner, RunError,
};

//! The initramfs banger generates for its images: banger's own `/init` (the `banger-init`
//! binary), exactly the kernel modules the guest needs to reach its disks, network and agent,
//! and a list saying in which order to load them. Nothing else: no shell, no udev, no modprobe.
//!
//! Three concepts, three places:
//! - [`modules`]: [`ModuleTree`] reads a kernel's `lib/modules/<version>/` and resolves wanted
//!   module names to files in dependency order (from `modules.dep`, or, when the tree has not
//!   been through `depmod` — a kernel package unpacked with `dpkg-deb -x` has not — from each
//!   module's own `.modinfo` section). Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are
//!   read decompressed: `finit_module` in the guest then needs no decompressor, whatever the
//!   kernel's config.
//! - the newc cpio format itself, shared with the guest: [`banger_guest_contract::newc`].
//! - [`assemble`](mod@assemble): [`Initramfs`], a deterministic archive builder (entries
//!   sorted by path, owner root, a fixed mtime, inode numbers in order, so the same inputs
//!   give the same bytes), [`assemble()`] and [`build_initramfs`], which put banger's init and
//!   the resolved modules in one, and [`init_features`], which reads an initrd's init
//!   features back.

use std::io;
use std::path::PathBuf;

pub mod assemble;
pub mod modules;
#[cfg(test)]
mod tests;

pub use assemble::{
    Initramfs, InitramfsCompression, InitramfsReport, assemble, build_initramfs, init_features,
};
pub use modules::{Module, ModuleTree, Resolution, read_module};

/// The modules a banger guest needs: the virtio-mmio transport (devices are found through
/// ACPI or the kernel command line), block and network devices, the vsock transport the agent
/// listens on, overlayfs for the root, and ext4 for the disks. Modules built into the kernel
/// are skipped.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "vmw_vsock_virtio_transport",
    "overlay",
    "ext4",
];

/// Where the initramfs lists the init's features ([`banger_init::FEATURES`]), one a line.
pub use banger_guest_contract::paths::INIT_FEATURES as FEATURES_PATH;
/// Where the init binary goes.
pub use banger_guest_contract::paths::INITRAMFS_INIT as INIT_PATH;
/// Where the initramfs lists the modules to load, one absolute path a line, in load order.
/// `banger-init` reads this exact path.
pub use banger_guest_contract::paths::MODULE_LIST;

/// Building an initramfs or resolving its modules failed.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write {}", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("{} is not a kernel modules directory (no modules.dep and no kernel/ tree)", path.display())]
    NotAModulesTree { path: PathBuf },

    #[error("kernel module {name} is neither in {} nor built into the kernel", tree.display())]
    MissingModule { name: String, tree: PathBuf },

    #[error(
        "kernel module {name} (needed by {needed_by}) is neither in {} nor built into the kernel",
        tree.display()
    )]
    MissingDependency {
        name: String,
        needed_by: String,
        tree: PathBuf,
    },

    #[error("kernel modules depend on each other in a cycle: {0}")]
    DependencyCycle(String),

    #[error("cannot read the module information of {}: {problem}", path.display())]
    BadModule { path: PathBuf, problem: String },

    #[error("cannot decompress kernel module {}", path.display())]
    Decompress { path: PathBuf, source: io::Error },

    #[error("invalid initramfs path {0:?}")]
    BadPath(String),
}

//! The guest's on-disk contract: what banger's host side (the image builder and the daemon)
//! and its guest side (`banger-init`, `banger-agent`) agree on, written down once.
//!
//! - [`paths`]: the files banger writes into a guest and the files its guest programs read
//!   or leave behind (`/etc/banger/...`, `/run/banger/...`, the initramfs's own files).
//! - [`newc`]: the newc cpio format, in which banger writes initramfs archives and config
//!   drives, and in which the init reads its config drive.
//! - [`ext`]: the ext2/3/4 superblock, which the image builder checks a root filesystem by
//!   and the init finds disks by label with.
//! - [`endian`]: the little-endian integers of on-disk formats, for the superblock here and
//!   for the kernel and ELF headers the image builder reads.
//!
//! The crate depends on nothing beyond std, so the static guest binaries can use it.

pub mod endian;
pub mod ext;
pub mod newc;
pub mod paths;

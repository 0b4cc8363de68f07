//! banger's image store: [`format`] recognises and validates the kernel, rootfs and initrd
//! files a user registers as an image; [`register`] lays them out in the store
//! (`images/<id>/`) with their manifest, rolling back on failure.

pub mod format;
pub mod register;

pub use format::{
    FileKind, FileRole, FormatError, InitrdFormat, KernelInfo, RootfsInfo, check_initrd,
    check_kernel, check_rootfs,
};

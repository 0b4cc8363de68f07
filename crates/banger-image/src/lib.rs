//! banger's image store: [`format`] recognises and validates the kernel, rootfs and initrd
//! files a user registers as an image; [`register`] lays them out in the store
//! (`images/<id>/`) with their manifest, rolling back on failure. The boot set banger makes
//! itself comes from [`kernel`] (a distribution bzImage to an ELF vmlinux) and [`initramfs`]
//! (banger's guest init plus exactly the modules it needs); [`vmdisk`] makes each VM's
//! overlay and work disks; [`bootstrap`] makes a whole image from Debian packages; [`archive`]
//! packs an image into one file and unpacks it on another host (`image export`/`import`);
//! [`promote`] makes an image of a stopped VM's root (`image promote`, and `image build`).

pub mod archive;
pub mod bootstrap;
pub mod build;
pub mod format;
pub mod initramfs;
pub mod kernel;
pub mod promote;
pub mod register;
pub mod vmdisk;

pub use format::{
    FileKind, FileRole, FormatError, InitrdFormat, KernelInfo, RootfsInfo, check_initrd,
    check_kernel, check_rootfs,
};

pub(crate) use banger_host::error_chain;

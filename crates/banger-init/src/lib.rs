//! banger's guest `/init`, run by the kernel from the initramfs banger generates. It gets a
//! banger VM from kernel to the image's own init with no shell and no helpers: mount the
//! basics, load the modules the initramfs lists, wait for the disks, mount overlayfs (the
//! image's read-only base under the VM's overlay disk) as the new root and the work disk at
//! `/root`, apply the hostname and static network the overlay carries, switch root and exec
//! the image's init. On any failure it prints one `banger-init: FAILED: ...` line and powers
//! the VM off.
//!
//! [`boot`] is the sequence, [`cmdline`] its parameters, [`config_drive`] the VM's own files, [`netconf`] the network file,
//! [`netlink`] its rtnetlink requests (shared with the guest agent), [`sys`] every side effect behind a trait.

pub mod boot;
pub mod cmdline;
pub mod config_drive;
pub mod netconf;
pub mod netlink;
pub mod sys;

/// What this init understands beyond the basics, listed in the initramfs banger makes (one a
/// line, at `banger-init.features`) so the daemon knows what a VM of the image may rely on:
/// `config-drive` — a VM's own files may come on a config drive ([`config_drive`]).
pub const FEATURES: &[&str] = &["config-drive"];

/// The feature that lets a VM's files come on a config drive.
pub const FEATURE_CONFIG_DRIVE: &str = "config-drive";

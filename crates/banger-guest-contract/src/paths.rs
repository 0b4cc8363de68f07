//! Where banger's files are in a guest.
//!
//! Paths banger writes into a guest's disks are given relative to the guest's root, as the
//! image builder and the config drive store them (`etc/banger/network`); each has an absolute
//! twin for the running guest (`/etc/banger/network`). Paths that exist only while the guest
//! runs (`/run/banger/...`) are absolute.

/// Defines a path relative to the guest's root and its absolute twin, from one literal.
macro_rules! guest_files {
    ($( $(#[$doc:meta])* $relative:ident, $absolute:ident = $path:literal; )*) => {
        $(
            $(#[$doc])*
            pub const $relative: &str = $path;
            #[doc = concat!("[`", stringify!($relative), "`] in the running guest: `/", $path, "`.")]
            pub const $absolute: &str = concat!("/", $path);
        )*
    };
}

guest_files! {
    /// banger's directory of per-VM and per-image files.
    ETC_BANGER, ETC_BANGER_ABS = "etc/banger";
    /// The VM's static network (`key=value` lines): written when the VM is created, applied by
    /// `banger-init` over netlink before the image's init runs, read by the agent for the VM's
    /// address.
    NETWORK_FILE, NETWORK_FILE_ABS = "etc/banger/network";
    /// The SSH public keys allowed into the VM, written when the VM is created.
    AUTHORIZED_KEYS_FILE, AUTHORIZED_KEYS_FILE_ABS = "etc/banger/authorized_keys";
    /// The VM's agent token, mode 0600: every request to the guest agent carries it.
    AGENT_TOKEN_FILE, AGENT_TOKEN_FILE_ABS = "etc/banger/agent-token";
    /// The copy of the config drive `banger-init` applied last: a boot with the same drive
    /// leaves the VM's files alone.
    CONFIG_DRIVE_COPY, CONFIG_DRIVE_COPY_ABS = "etc/banger/config-drive";
    /// The script a bootstrapped image runs once its own init is up.
    RC_BOOT, RC_BOOT_ABS = "etc/banger/rc.boot";
    /// The directory of service scripts a bootstrapped image starts at boot.
    SERVICES_DIR, SERVICES_DIR_ABS = "etc/banger/services";
}

/// banger's runtime directory in the guest, created by `banger-init`; `/run` moves into the
/// new root with everything in it.
pub const RUN_DIR: &str = "/run/banger";
/// Where `banger-init` mounts the image's read-only base disk.
pub const BASE_MOUNT: &str = "/run/banger/base";
/// Where `banger-init` mounts the VM's overlay disk (its `upper` and `work` directories).
pub const OVERLAY_MOUNT: &str = "/run/banger/overlay";
/// Where `banger-init` leaves its boot milestones for the guest agent: one
/// `name milliseconds-since-kernel-start` line each, in order. The agent's health answer
/// starts with them.
pub const BOOT_STAGES_FILE: &str = "/run/banger/boot-stages";

/// In the initramfs: where the init binary goes (relative to the archive's root).
pub const INITRAMFS_INIT: &str = "init";
/// In the initramfs: the modules to load, one absolute path a line, in load order (relative
/// to the archive's root; [`MODULE_LIST_ABS`] is where `banger-init` reads it).
pub const MODULE_LIST: &str = "lib/modules/banger.load";
/// [`MODULE_LIST`] in the running initramfs.
pub const MODULE_LIST_ABS: &str = "/lib/modules/banger.load";
/// In the initramfs: the init's features, one a line, which is how an image's manifest
/// learns them from its initrd.
pub const INIT_FEATURES: &str = "banger-init.features";

/// The label the config drive is found by (`banger.config=LABEL=banger-config`): the name of
/// its first entry, [`CONFIG_DRIVE_MARKER`], without the dot.
pub const CONFIG_DRIVE_LABEL: &str = "banger-config";
/// The config drive's first entry.
pub const CONFIG_DRIVE_MARKER: &str = ".banger-config";
/// What the config drive's marker entry holds.
pub const CONFIG_DRIVE_MARKER_CONTENTS: &str = "banger config drive 1\n";

/// The ext4 label of a VM's overlay disk, by which `banger-init` finds it
/// (`banger.overlay=LABEL=banger-overlay`) when the VMM's device order is not the attach order.
pub const OVERLAY_LABEL: &str = "banger-overlay";
/// The ext4 label of a VM's work disk (`banger.work=LABEL=banger-work`).
pub const WORK_LABEL: &str = "banger-work";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_twins_and_labels_agree() {
        assert_eq!(NETWORK_FILE_ABS, "/etc/banger/network");
        assert_eq!(AGENT_TOKEN_FILE_ABS, format!("/{AGENT_TOKEN_FILE}"));
        assert_eq!(MODULE_LIST_ABS, format!("/{MODULE_LIST}"));
        assert_eq!(
            Some(CONFIG_DRIVE_LABEL),
            CONFIG_DRIVE_MARKER.strip_prefix('.')
        );
        for path in [
            NETWORK_FILE,
            AUTHORIZED_KEYS_FILE,
            AGENT_TOKEN_FILE,
            CONFIG_DRIVE_COPY,
            RC_BOOT,
            SERVICES_DIR,
        ] {
            assert!(path.starts_with(ETC_BANGER), "{path}");
        }
        for path in [BASE_MOUNT, OVERLAY_MOUNT, BOOT_STAGES_FILE] {
            assert!(path.starts_with(RUN_DIR), "{path}");
        }
        // An ext4 volume name holds at most 16 bytes.
        for label in [CONFIG_DRIVE_LABEL, OVERLAY_LABEL, WORK_LABEL] {
            assert!(label.len() <= 16, "{label}");
        }
    }
}

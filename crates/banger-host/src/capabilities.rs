//! `CAP_NET_ADMIN` for a daemon that is not root: whether `bangerd` holds it (given to its file
//! with `setcap cap_net_admin+ep`, or to the process by whatever starts it), and handing it to
//! the network commands it runs (`ip`, `nft`, `sysctl`) and to no other program.
//!
//! A capability in a process's effective set is not passed on to the programs it executes
//! (they are not capability-aware files). The Linux way to pass one on is the *ambient* set,
//! which needs the capability in the inheritable set first: both are raised in the child,
//! between fork and exec, of each network command only, so that a VMM, `mkfs.ext4` or
//! `debootstrap` never holds it.

use std::io;

use rustix::thread::{
    CapabilitySet, CapabilitySets, capabilities, configure_capability_in_ambient_set,
    set_capabilities,
};

/// Whether this process holds `CAP_NET_ADMIN` in its effective set.
pub fn holds_net_admin() -> bool {
    capabilities(None).is_ok_and(|sets| sets.effective.contains(CapabilitySet::NET_ADMIN))
}

/// This process's capability sets with `CAP_NET_ADMIN` added to the inheritable set (which
/// the kernel allows because it is in the permitted set), to be set in a child.
pub(crate) fn with_net_admin_inheritable() -> io::Result<CapabilitySets> {
    let mut sets = capabilities(None)?;
    if !sets.permitted.contains(CapabilitySet::NET_ADMIN) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "bangerd does not hold CAP_NET_ADMIN to hand on",
        ));
    }
    sets.inheritable |= CapabilitySet::NET_ADMIN;
    Ok(sets)
}

/// In a child between fork and exec: `sets` (from [`with_net_admin_inheritable`]), then
/// `CAP_NET_ADMIN` raised into the ambient set, which the program executed next keeps.
pub(crate) fn raise_net_admin_ambient(sets: CapabilitySets) -> io::Result<()> {
    set_capabilities(None, sets)?;
    configure_capability_in_ambient_set(CapabilitySet::NET_ADMIN, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::network::Privilege;
    use crate::runner::{CommandRunner, CommandSpec, RealRunner};

    /// The `CapAmb` and `CapEff` masks of a `grep` the runner starts.
    fn child_capabilities(cmd: CommandSpec) -> (u64, u64) {
        let out = RealRunner.run(&cmd).unwrap().stdout_lossy();
        let mask = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
                .unwrap()
        };
        (mask("CapAmb:"), mask("CapEff:"))
    }

    const NET_ADMIN: u64 = 1 << 12;

    /// A network command gets `CAP_NET_ADMIN` and only it, whatever else this process holds;
    /// other commands get nothing through the ambient set.
    #[test]
    fn only_commands_asked_for_get_net_admin() {
        if !super::holds_net_admin() {
            banger_test_support::skip!("this test process does not hold CAP_NET_ADMIN");
            return;
        }
        let grep = || CommandSpec::new("grep").args(["-E", "^Cap(Amb|Eff):", "/proc/self/status"]);
        let (ambient, _) = child_capabilities(grep().with_net_admin());
        assert_eq!(ambient, NET_ADMIN);
        let (ambient, _) = child_capabilities(grep());
        assert_eq!(ambient, 0);
        if !rustix::process::geteuid().is_root() {
            // Not root: the capability reaches the child through the ambient set alone.
            let (_, effective) = child_capabilities(grep().with_net_admin());
            assert_eq!(effective, NET_ADMIN);
            let (_, effective) = child_capabilities(grep());
            assert_eq!(effective, 0);
        }
    }

    #[test]
    fn network_commands_by_privilege() {
        let ip = |p: Privilege| p.net_command("ip", ["link", "show"]);
        assert_eq!(ip(Privilege::Root).to_string(), "ip link show");
        assert!(!ip(Privilege::Root).net_admin);
        assert_eq!(ip(Privilege::Sudo).to_string(), "sudo -n ip link show");
        let net_admin = ip(Privilege::NetAdmin);
        assert!(net_admin.net_admin);
        assert!(
            net_admin.program.ends_with("/ip") && net_admin.program.starts_with('/'),
            "found in PATH or the sbin directories: {}",
            net_admin.program
        );
        // What needs root itself goes through sudo for a daemon with CAP_NET_ADMIN too.
        let mount = Privilege::NetAdmin.command("mount", ["-o", "loop"]);
        assert_eq!(mount.to_string(), "sudo -n mount -o loop");
        assert!(!mount.net_admin);
        assert!(Privilege::NetAdmin.manages_network() && Privilege::Root.manages_network());
        assert!(!Privilege::Sudo.manages_network());
    }
}

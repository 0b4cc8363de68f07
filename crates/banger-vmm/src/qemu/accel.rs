//! How QEMU executes the guest's instructions: with KVM when `/dev/kvm` can run a stock guest
//! kernel, with TCG (QEMU's own translator, several times slower) otherwise. Whether it can is
//! banger-host's [`probe_kvm`], the same probe `banger doctor` reports: a paravirtual
//! `kvm_pvm` opens and accepts a VM but crashes a stock kernel, so it counts as no KVM here.

use std::fmt;
use std::path::Path;

use banger_host::{Kvm, KvmKind, probe_kvm};
use serde::{Deserialize, Serialize};

/// QEMU's accelerator for a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// Software emulation: runs anywhere, slowly.
    Tcg,
}

impl Accel {
    /// The accelerator for this host and why, e.g. `(Tcg, "kvm_pvm cannot boot a stock guest
    /// kernel; using QEMU with TCG")`.
    pub fn detect() -> (Accel, String) {
        Accel::for_kvm(&probe_kvm(Path::new("/")))
    }

    /// The accelerator for a host whose `/dev/kvm` is `kvm`, and why.
    pub fn for_kvm(kvm: &Kvm) -> (Accel, String) {
        match kvm {
            Kvm::Usable(KvmKind::Pvm) | Kvm::NoAccess(KvmKind::Pvm, _) => (
                Accel::Tcg,
                "kvm_pvm cannot boot a stock guest kernel; using QEMU with TCG".to_owned(),
            ),
            Kvm::Usable(kind) => (
                Accel::Kvm,
                format!(
                    "{}: /dev/kvm can boot a stock guest kernel; using QEMU with KVM",
                    kind.module()
                ),
            ),
            Kvm::Missing => (
                Accel::Tcg,
                "/dev/kvm does not exist; using QEMU with TCG (software emulation)".to_owned(),
            ),
            Kvm::NoAccess(kind, error) => (
                Accel::Tcg,
                format!(
                    "{}: cannot open /dev/kvm read-write ({error}); using QEMU with TCG \
                     (`sudo usermod -aG kvm \"$USER\"` and a new login give it KVM)",
                    kind.module()
                ),
            ),
        }
    }

    /// QEMU's name for it (`-accel NAME`).
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The CPU model the guest sees: the host's own under KVM; under TCG the richest model
    /// QEMU can emulate, so a distribution kernel finds the features it expects.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn only_hardware_kvm_gets_kvm() {
        let (accel, why) = Accel::for_kvm(&Kvm::Usable(KvmKind::Intel));
        assert_eq!(accel, Accel::Kvm);
        assert_eq!(
            why,
            "kvm_intel: /dev/kvm can boot a stock guest kernel; using QEMU with KVM"
        );
        assert_eq!(Accel::for_kvm(&Kvm::Usable(KvmKind::Unknown)).0, Accel::Kvm);

        let (accel, why) = Accel::for_kvm(&Kvm::Usable(KvmKind::Pvm));
        assert_eq!(accel, Accel::Tcg);
        assert_eq!(
            why,
            "kvm_pvm cannot boot a stock guest kernel; using QEMU with TCG"
        );
        let (accel, why) = Accel::for_kvm(&Kvm::Missing);
        assert_eq!(accel, Accel::Tcg);
        assert!(why.starts_with("/dev/kvm does not exist"), "{why}");
        let denied = Kvm::NoAccess(
            KvmKind::Amd,
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let (accel, why) = Accel::for_kvm(&denied);
        assert_eq!(accel, Accel::Tcg);
        assert!(
            why.starts_with("kvm_amd: cannot open /dev/kvm read-write") && why.contains("usermod"),
            "{why}"
        );
    }

    #[test]
    fn detection_on_this_host_agrees_with_the_probe() {
        let probed = probe_kvm(Path::new("/"));
        let (accel, why) = Accel::detect();
        assert_eq!(accel == Accel::Kvm, probed.boots_stock_guests(), "{why}");
        println!("this host: {accel} ({why})");
    }
}

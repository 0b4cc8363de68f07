//! What `vmm = "auto"` picks on a host, and the sentence that says why: Firecracker when its
//! binary is usable and `/dev/kvm` can boot a stock guest kernel, QEMU otherwise (with KVM when
//! only Firecracker is missing, with TCG when KVM cannot run the guest). The daemon shows the
//! reason with the VM, so a user who expected Firecracker learns what to change.

use std::fmt;

use banger_host::Kvm;
use serde::{Deserialize, Serialize};

use crate::firecracker::{BinaryError, FirecrackerBinary};
use crate::qemu::Accel;

/// The backend a VM runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "vmm", content = "accel", rename_all = "snake_case")]
pub enum VmmChoice {
    Firecracker,
    Qemu(Accel),
}

impl fmt::Display for VmmChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmmChoice::Firecracker => f.write_str("Firecracker"),
            VmmChoice::Qemu(accel) => write!(f, "QEMU with {accel}"),
        }
    }
}

/// The backend `vmm = "auto"` runs a VM on, given what detecting Firecracker found and what
/// [`banger_host::probe_kvm`] says about `/dev/kvm`, with the reason in a sentence.
pub fn auto_choice(
    firecracker: Result<&FirecrackerBinary, &BinaryError>,
    kvm: &Kvm,
) -> (VmmChoice, String) {
    let (accel, accel_reason) = Accel::for_kvm(kvm);
    match (firecracker, accel) {
        (Ok(binary), Accel::Kvm) => (
            VmmChoice::Firecracker,
            format!(
                "Firecracker {} ({}) and /dev/kvm can boot a stock guest kernel",
                binary.version,
                binary.path.display()
            ),
        ),
        (Err(error), Accel::Kvm) => (
            VmmChoice::Qemu(Accel::Kvm),
            format!("Firecracker is not usable ({error}); using QEMU with KVM"),
        ),
        // Whether Firecracker is there does not matter: it could not boot the guest either.
        (_, Accel::Tcg) => (VmmChoice::Qemu(Accel::Tcg), accel_reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firecracker::Version;
    use banger_host::KvmKind;

    fn firecracker() -> FirecrackerBinary {
        FirecrackerBinary {
            path: "/usr/local/bin/firecracker".into(),
            version: Version::new(1, 16, 1),
        }
    }

    #[test]
    fn firecracker_only_where_it_can_boot_a_stock_guest() {
        let fc = firecracker();
        let missing = BinaryError::NotInPath;
        let intel = Kvm::Usable(KvmKind::Intel);
        let pvm = Kvm::Usable(KvmKind::Pvm);

        assert_eq!(
            auto_choice(Ok(&fc), &intel),
            (
                VmmChoice::Firecracker,
                "Firecracker 1.16.1 (/usr/local/bin/firecracker) and /dev/kvm can boot a stock \
                 guest kernel"
                    .to_owned()
            )
        );
        let (choice, why) = auto_choice(Err(&missing), &intel);
        assert_eq!(choice, VmmChoice::Qemu(Accel::Kvm));
        assert!(
            why.starts_with("Firecracker is not usable (firecracker not found in PATH")
                && why.ends_with("; using QEMU with KVM"),
            "{why}"
        );
        let pvm_reason = "kvm_pvm cannot boot a stock guest kernel; using QEMU with TCG";
        assert_eq!(
            auto_choice(Ok(&fc), &pvm),
            (VmmChoice::Qemu(Accel::Tcg), pvm_reason.to_owned())
        );
        assert_eq!(
            auto_choice(Err(&missing), &pvm),
            (VmmChoice::Qemu(Accel::Tcg), pvm_reason.to_owned())
        );
        assert_eq!(
            auto_choice(Ok(&fc), &Kvm::Missing).0,
            VmmChoice::Qemu(Accel::Tcg)
        );
        assert_eq!(VmmChoice::Qemu(Accel::Tcg).to_string(), "QEMU with TCG");
        assert_eq!(
            serde_json::to_value(VmmChoice::Qemu(Accel::Tcg)).unwrap(),
            serde_json::json!({"vmm": "qemu", "accel": "tcg"})
        );
    }
}

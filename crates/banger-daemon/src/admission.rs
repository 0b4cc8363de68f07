//! Admission control: a start that would make the VMs holding host resources (starting,
//! running, paused, stopping) reserve more vCPUs or more guest memory than the configured
//! limits is refused, with the figures and what to do about it.
//!
//! The limits follow from `[admission]` in config.toml and the host, read once at daemon
//! start: memory is `memory_ratio × (host memory − memory_reserve)`, vCPUs
//! `vcpu_ratio × host CPUs`, both rounded down. The check itself runs inside the store
//! transaction that records a VM as holding resources ([`banger_store::Admit`]), so two starts
//! racing for the last room cannot both pass. A `vm create` also learns before anything is
//! recorded when its VM could never fit, even on an idle host.
//!
//! Neither the spare Firecracker (a process with no guest configured) nor the disk pool
//! reserves CPU or guest memory: only VMs do.

use banger_api::{ApiError, ErrorCode, validate};
use banger_store::{Demand, Reserved};

use crate::config::AdmissionConfig;
use crate::host::HostFacts;

/// What all VMs holding resources may reserve together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub vcpus: u32,
    pub memory_bytes: u64,
}

impl Limits {
    /// The limits `config` puts on `host`.
    pub fn new(config: &AdmissionConfig, host: HostFacts) -> Limits {
        let memory = host
            .memory_bytes
            .saturating_sub(config.memory_reserve_bytes) as f64
            * config.memory_ratio.get();
        // A tiny allowance so that e.g. 0.3 × 10 CPUs (2.9999…) gives 3, not 2.
        let vcpus = f64::from(host.cpus) * config.vcpu_ratio.get() + 1e-9;
        Limits {
            vcpus: vcpus.floor().min(f64::from(u32::MAX)) as u32,
            // `as` saturates at u64::MAX: a ratio of 1000 on a huge host cannot wrap.
            memory_bytes: memory.floor() as u64,
        }
    }
}

/// Which request asks: it shapes the advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `vm create` (and `vm clone`, a create from a snapshot): sizes are flags.
    Create,
    /// `vm start`, `vm restart`: sizes change with `vm set`.
    Start,
    /// `vm set`: the new sizes of a stopped VM.
    Set,
}

/// The daemon's admission control.
#[derive(Debug, Clone)]
pub struct Admission {
    config: AdmissionConfig,
    host: HostFacts,
    limits: Limits,
    /// Named in advice: where the keys are changed.
    config_file: String,
}

impl Admission {
    pub fn new(config: AdmissionConfig, host: HostFacts, config_file: &std::path::Path) -> Self {
        Admission {
            config,
            host,
            limits: Limits::new(&config, host),
            config_file: config_file.display().to_string(),
        }
    }

    /// The limits, `None` when admission control is off.
    pub fn limits(&self) -> Option<Limits> {
        self.config.enabled.then_some(self.limits)
    }

    /// Refuses sizes that could never start here, even with no other VM up.
    pub fn check_fits_idle(
        &self,
        vm: Option<&str>,
        vcpus: u32,
        memory_mib: u32,
        ask: Ask,
    ) -> Result<(), ApiError> {
        let Some(limits) = self.limits() else {
            return Ok(());
        };
        let memory = u64::from(memory_mib) * validate::MIB;
        let mut over = Vec::new();
        if memory > limits.memory_bytes {
            over.push(format!(
                "its {} of guest memory is more than the {} all running VMs may reserve \
                 together ({})",
                mib(memory_mib.into()),
                mib(limits.memory_bytes / validate::MIB),
                self.memory_formula()
            ));
        }
        if vcpus > limits.vcpus {
            over.push(format!(
                "its {vcpus} vCPUs are more than the {} all running VMs may reserve together \
                 ({})",
                limits.vcpus,
                self.vcpu_formula()
            ));
        }
        if over.is_empty() {
            return Ok(());
        }
        let who = match vm {
            Some(name) => format!("VM {name:?}"),
            None => "this VM".to_owned(),
        };
        Err(ApiError::new(
            ErrorCode::OverCapacity,
            format!("{who} could never start on this host: {}", over.join("; ")),
        )
        .with_hint(format!(
            "{}; {}",
            smaller(ask, vm.unwrap_or("NAME")),
            self.raise()
        )))
    }

    /// Refuses `demand` when, next to what the other VMs holding resources `reserved`, it
    /// would go beyond a limit. The store runs this inside its transaction.
    pub fn check(&self, ask: Ask, demand: &Demand<'_>, reserved: Reserved) -> Result<(), ApiError> {
        let Some(limits) = self.limits() else {
            return Ok(());
        };
        let need_memory = u64::from(demand.memory_mib) * validate::MIB;
        let held_memory = reserved.memory_mib * validate::MIB;
        let need_vcpus = u64::from(demand.vcpus);
        let held = match reserved.vms {
            0 => "no VM holds any".to_owned(),
            1 => "1 VM up holds".to_owned(),
            n => format!("{n} VMs up hold"),
        };
        let mut over = Vec::new();
        if held_memory.saturating_add(need_memory) > limits.memory_bytes {
            over.push(format!(
                "it needs {} of guest memory, {held} {}, and the limit is {} ({})",
                mib(demand.memory_mib.into()),
                mib(reserved.memory_mib),
                mib(limits.memory_bytes / validate::MIB),
                self.memory_formula()
            ));
        }
        if reserved.vcpus.saturating_add(need_vcpus) > u64::from(limits.vcpus) {
            over.push(format!(
                "it needs {need_vcpus} vCPU{}, {held} {}, and the limit is {} ({})",
                if need_vcpus == 1 { "" } else { "s" },
                reserved.vcpus,
                limits.vcpus,
                self.vcpu_formula()
            ));
        }
        if over.is_empty() {
            return Ok(());
        }
        let verb = match ask {
            Ask::Create => "create and start",
            Ask::Start | Ask::Set => "start",
        };
        Err(ApiError::new(
            ErrorCode::OverCapacity,
            format!(
                "not enough room to {verb} VM {:?}: {}",
                demand.vm,
                over.join("; ")
            ),
        )
        .with_hint(format!(
            "stop a VM to make room; {}; {}",
            smaller(ask, demand.vm),
            self.raise()
        )))
    }

    /// The last part of every refusal's hint. Hints are `; `-separated parts so that the web
    /// console can keep those that make sense without the CLI: this one does.
    fn raise(&self) -> String {
        format!(
            "or raise the limits in [admission] of {} (`memory_ratio`, `vcpu_ratio` or \
             `memory_reserve`, or `enabled = false` to turn the check off) and restart the daemon",
            self.config_file
        )
    }

    fn memory_formula(&self) -> String {
        format!(
            "memory_ratio {} × ({} host memory − {} memory_reserve)",
            self.config.memory_ratio,
            mib(self.host.memory_bytes / validate::MIB),
            mib(self.config.memory_reserve_bytes / validate::MIB)
        )
    }

    fn vcpu_formula(&self) -> String {
        format!(
            "vcpu_ratio {} × {} host CPU{}",
            self.config.vcpu_ratio,
            self.host.cpus,
            if self.host.cpus == 1 { "" } else { "s" }
        )
    }
}

/// How to ask for less, in the words of the request that asked.
fn smaller(ask: Ask, vm: &str) -> String {
    match ask {
        Ask::Create | Ask::Set => "pass a smaller --memory or --vcpus".to_owned(),
        Ask::Start => format!(
            "make this VM smaller while it is stopped: `banger vm set {vm} --memory MIB --vcpus N`"
        ),
    }
}

/// A memory size as `--memory` takes it.
fn mib(mib: u64) -> String {
    format!("{mib} MiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ratio;

    fn config(memory_ratio: f64, reserve_gib: u64, vcpu_ratio: f64) -> AdmissionConfig {
        AdmissionConfig {
            enabled: true,
            memory_ratio: Ratio::new(memory_ratio).unwrap(),
            memory_reserve_bytes: reserve_gib * validate::GIB,
            vcpu_ratio: Ratio::new(vcpu_ratio).unwrap(),
        }
    }

    fn host(cpus: u32, memory_gib: u64) -> HostFacts {
        HostFacts {
            cpus,
            memory_bytes: memory_gib * validate::GIB,
        }
    }

    fn admission(config: AdmissionConfig, host: HostFacts) -> Admission {
        Admission::new(
            config,
            host,
            std::path::Path::new("/home/u/.config/banger/config.toml"),
        )
    }

    fn demand(vcpus: u32, memory_mib: u32) -> Demand<'static> {
        Demand {
            vm: "dev",
            vcpus,
            memory_mib,
        }
    }

    fn reserved(vcpus: u64, memory_mib: u64, vms: u32) -> Reserved {
        Reserved {
            vcpus,
            memory_mib,
            vms,
        }
    }

    #[test]
    fn limits_follow_ratio_reserve_and_host() {
        let l = Limits::new(&AdmissionConfig::default(), host(4, 16));
        assert_eq!(l.vcpus, 16);
        assert_eq!(l.memory_bytes, 15 * validate::GIB);
        let l = Limits::new(&config(1.5, 2, 0.5), host(3, 10));
        assert_eq!(l.vcpus, 1, "1.5 rounds down");
        assert_eq!(l.memory_bytes, 12 * validate::GIB);
        // 0.3 × 10 is 2.9999… in binary: still 3.
        assert_eq!(Limits::new(&config(1.0, 0, 0.3), host(10, 1)).vcpus, 3);
        // A reserve larger than the host leaves nothing, without wrapping.
        assert_eq!(
            Limits::new(&config(1.0, 64, 1.0), host(1, 8)).memory_bytes,
            0
        );
        // No overflow at the extremes.
        let huge = HostFacts {
            cpus: u32::MAX,
            memory_bytes: u64::MAX,
        };
        let l = Limits::new(&config(1000.0, 0, 1000.0), huge);
        assert_eq!(l.vcpus, u32::MAX);
        assert_eq!(l.memory_bytes, u64::MAX);
    }

    #[test]
    fn a_laptop_takes_a_third_2_vcpu_vm_by_default() {
        let a = admission(AdmissionConfig::default(), host(4, 16));
        assert!(
            a.check(Ask::Start, &demand(2, 1024), reserved(4, 2048, 2))
                .is_ok()
        );
        // Up to the limit exactly, not one more.
        assert!(
            a.check(Ask::Start, &demand(2, 1024), reserved(14, 2048, 7))
                .is_ok()
        );
        assert!(
            a.check(Ask::Start, &demand(2, 1024), reserved(15, 2048, 8))
                .is_err()
        );
    }

    #[test]
    fn memory_is_refused_with_the_figures_and_the_way_out() {
        let a = admission(config(1.0, 1, 4.0), host(2, 8));
        // 7 GiB limit: 6 GiB held, 1 GiB fits, 1 GiB + 1 MiB does not.
        assert!(
            a.check(Ask::Start, &demand(1, 1024), reserved(1, 6144, 3))
                .is_ok()
        );
        let err = a
            .check(Ask::Start, &demand(1, 1025), reserved(1, 6144, 3))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::OverCapacity);
        assert_eq!(
            err.message,
            "not enough room to start VM \"dev\": it needs 1025 MiB of guest memory, 3 VMs up \
             hold 6144 MiB, and the limit is 7168 MiB (memory_ratio 1.0 × (8192 MiB host \
             memory − 1024 MiB memory_reserve))"
        );
        assert_eq!(
            err.hint.as_deref(),
            Some(
                "stop a VM to make room; make this VM smaller while it is stopped: `banger vm \
                 set dev --memory MIB --vcpus N`; or raise the limits in [admission] of \
                 /home/u/.config/banger/config.toml (`memory_ratio`, `vcpu_ratio` or \
                 `memory_reserve`, or `enabled = false` to turn the check off) and restart the \
                 daemon"
            )
        );
        // The web console keeps the parts a browser user can follow.
        assert_eq!(
            crate::web::views::console_hint(err.hint.as_deref()).as_deref(),
            Some(
                "stop a VM to make room; or raise the limits in [admission] of \
                 /home/u/.config/banger/config.toml (`memory_ratio`, `vcpu_ratio` or \
                 `memory_reserve`, or `enabled = false` to turn the check off) and restart the \
                 daemon"
            )
        );
        let err = a
            .check(Ask::Create, &demand(1, 2048), reserved(1, 6144, 1))
            .unwrap_err();
        assert!(
            err.message
                .starts_with("not enough room to create and start VM \"dev\": "),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("1 VM up holds 6144 MiB"),
            "{}",
            err.message
        );
        assert!(
            err.hint
                .unwrap()
                .contains("pass a smaller --memory or --vcpus"),
            "create advice is about flags"
        );
    }

    #[test]
    fn vcpus_and_memory_are_both_named_when_both_are_short() {
        let a = admission(config(1.0, 0, 1.0), host(2, 4));
        let err = a
            .check(Ask::Start, &demand(2, 4096), reserved(1, 1, 1))
            .unwrap_err();
        assert!(
            err.message.contains("4096 MiB of guest memory"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains(
                "it needs 2 vCPUs, 1 VM up holds 1, and the limit is 2 (vcpu_ratio 1.0 × 2 host \
                 CPUs)"
            ),
            "{}",
            err.message
        );
        let err = a
            .check(Ask::Start, &demand(1, 128), reserved(2, 0, 0))
            .unwrap_err();
        assert!(err.message.contains("it needs 1 vCPU,"), "{}", err.message);
        assert!(!err.message.contains("memory"), "{}", err.message);
    }

    #[test]
    fn disabled_admits_everything() {
        let mut off = config(1.0, 1, 1.0);
        off.enabled = false;
        let a = admission(off, host(1, 2));
        assert_eq!(a.limits(), None);
        assert!(
            a.check(
                Ask::Start,
                &demand(64, 1 << 20),
                reserved(u64::MAX, u64::MAX, 9)
            )
            .is_ok()
        );
        assert!(
            a.check_fits_idle(Some("dev"), 64, 1 << 20, Ask::Create)
                .is_ok()
        );
    }

    #[test]
    fn sizes_beyond_the_limit_could_never_start() {
        let a = admission(AdmissionConfig::default(), host(2, 8));
        assert!(a.check_fits_idle(Some("dev"), 8, 7168, Ask::Create).is_ok());
        let err = a
            .check_fits_idle(Some("dev"), 2, 7169, Ask::Create)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::OverCapacity);
        assert_eq!(
            err.message,
            "VM \"dev\" could never start on this host: its 7169 MiB of guest memory is more \
             than the 7168 MiB all running VMs may reserve together (memory_ratio 1.0 × (8192 \
             MiB host memory − 1024 MiB memory_reserve))"
        );
        assert!(
            err.hint
                .as_deref()
                .unwrap()
                .starts_with("pass a smaller --memory or --vcpus; or raise the limits"),
            "{:?}",
            err.hint
        );
        let err = a.check_fits_idle(None, 9, 512, Ask::Create).unwrap_err();
        assert!(
            err.message.starts_with(
                "this VM could never start on this host: its 9 vCPUs are more than the 8"
            ),
            "{}",
            err.message
        );
        let err = a
            .check_fits_idle(Some("dev"), 9, 512, Ask::Start)
            .unwrap_err();
        assert!(
            err.hint
                .unwrap()
                .starts_with("make this VM smaller while it is stopped: `banger vm set dev "),
            "start advice is about vm set"
        );
    }
}

//! What the daemon knows about the host it runs on: CPU count and memory, read once at start
//! (they do not change under a running daemon), and the limits they put on a VM's request.

use banger_api::{ApiError, validate};

/// Host facts captured at daemon start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: u32,
    pub memory_bytes: u64,
}

impl HostFacts {
    pub fn read() -> Result<HostFacts, String> {
        let cpus = banger_host::resources::host_cpus().map_err(|e| e.to_string())?;
        let memory_bytes = banger_host::resources::meminfo()
            .map_err(|e| e.to_string())?
            .total_bytes;
        Ok(HostFacts { cpus, memory_bytes })
    }

    pub fn check_vcpus(&self, vcpus: u32) -> Result<(), ApiError> {
        if vcpus > self.cpus {
            return Err(ApiError::invalid(format!(
                "vCPUs must be at most {}, the number of CPUs on this host (got {vcpus})",
                self.cpus
            ))
            .with_hint(format!("pass --vcpus with a value from 1 to {}", self.cpus)));
        }
        Ok(())
    }

    pub fn check_memory(&self, memory_mib: u32) -> Result<(), ApiError> {
        let host_mib = self.memory_bytes / validate::MIB;
        if u64::from(memory_mib) > host_mib {
            return Err(ApiError::invalid(format!(
                "memory must be at most {host_mib} MiB, this host's RAM (got {memory_mib})"
            ))
            .with_hint(format!(
                "pass --memory with a value from {} to {host_mib}",
                validate::MIN_MEMORY_MIB
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_host() {
        let host = HostFacts {
            cpus: 2,
            memory_bytes: 4 * validate::GIB,
        };
        assert!(host.check_vcpus(2).is_ok());
        let err = host.check_vcpus(3).unwrap_err();
        assert_eq!(
            err.message,
            "vCPUs must be at most 2, the number of CPUs on this host (got 3)"
        );
        assert!(host.check_memory(4096).is_ok());
        assert!(
            host.check_memory(4097)
                .unwrap_err()
                .message
                .contains("4096 MiB")
        );
    }

    #[test]
    fn reads_this_host() {
        let host = HostFacts::read().unwrap();
        assert!(host.cpus >= 1);
        assert!(host.memory_bytes > 64 * validate::MIB);
    }
}

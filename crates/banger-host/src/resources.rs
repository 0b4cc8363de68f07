//! The host's CPU and memory figures, read from `/sys/devices/system/cpu/online` and
//! `/proc/meminfo`: what capacity checks compare a VM's vCPUs and memory against. The parsers are
//! pure functions over the files' text.

use std::io;
use std::path::{Path, PathBuf};

const CPU_ONLINE: &str = "/sys/devices/system/cpu/online";
const MEMINFO: &str = "/proc/meminfo";

/// Reading the host's CPU or memory figures failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("malformed CPU list {text:?}")]
    CpuList { text: String },

    #[error("malformed /proc/meminfo: {reason}")]
    Meminfo { reason: String },
}

/// The host's memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total_bytes: u64,
    /// What the kernel estimates can be allocated without swapping (`MemAvailable`).
    pub available_bytes: u64,
}

/// How many CPUs are online. Falls back to [`std::thread::available_parallelism`] when the
/// sysfs list cannot be read or understood (e.g. sysfs not mounted in a container).
pub fn host_cpus() -> Result<u32, ResourceError> {
    let from_sysfs = read(Path::new(CPU_ONLINE)).and_then(|text| parse_cpu_list(&text));
    match from_sysfs {
        Ok(n) => Ok(n),
        Err(error) => {
            tracing::warn!(%error, "falling back to available_parallelism for the CPU count");
            std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .map_err(|source| ResourceError::Read {
                    path: PathBuf::from(CPU_ONLINE),
                    source,
                })
        }
    }
}

/// The host's total and available memory, from `/proc/meminfo`.
pub fn meminfo() -> Result<MemInfo, ResourceError> {
    parse_meminfo(&read(Path::new(MEMINFO))?)
}

fn read(path: &Path) -> Result<String, ResourceError> {
    std::fs::read_to_string(path).map_err(|source| ResourceError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Counts the CPUs in a kernel CPU list such as `0-1,4` (→ 3).
pub fn parse_cpu_list(text: &str) -> Result<u32, ResourceError> {
    let malformed = || ResourceError::CpuList {
        text: text.to_owned(),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(malformed());
    }
    let mut count: u32 = 0;
    for part in trimmed.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let first: u32 = first.parse().map_err(|_| malformed())?;
        let last: u32 = last.parse().map_err(|_| malformed())?;
        if last < first {
            return Err(malformed());
        }
        count = (last - first)
            .checked_add(1)
            .and_then(|n| count.checked_add(n))
            .ok_or_else(malformed)?;
    }
    Ok(count)
}

/// Reads `MemTotal` and `MemAvailable` (in kB) out of `/proc/meminfo` text. Kernels older than
/// 3.14 lack `MemAvailable`; there `MemFree + Buffers + Cached` stands in for it.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ResourceError> {
    let field = |name: &str| -> Result<Option<u64>, ResourceError> {
        let Some(line) = text.lines().find(|l| l.split(':').next() == Some(name)) else {
            return Ok(None);
        };
        let malformed = || ResourceError::Meminfo {
            reason: format!("cannot parse line {line:?}"),
        };
        let value = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
        let (number, unit) = match value.split_once(char::is_whitespace) {
            Some((n, u)) => (n, u.trim()),
            None => (value, ""),
        };
        let number: u64 = number.parse().map_err(|_| malformed())?;
        let multiplier = match unit {
            "kB" => 1024,
            "" => 1,
            _ => return Err(malformed()),
        };
        number
            .checked_mul(multiplier)
            .map(Some)
            .ok_or_else(malformed)
    };
    let missing = |name: &str| ResourceError::Meminfo {
        reason: format!("no {name} line"),
    };

    let total_bytes = field("MemTotal")?.ok_or_else(|| missing("MemTotal"))?;
    let available_bytes = match field("MemAvailable")? {
        Some(available) => available,
        None => {
            let free = field("MemFree")?.ok_or_else(|| missing("MemAvailable or MemFree"))?;
            let buffers = field("Buffers")?.unwrap_or(0);
            let cached = field("Cached")?.unwrap_or(0);
            free.saturating_add(buffers).saturating_add(cached)
        }
    };
    Ok(MemInfo {
        total_bytes,
        available_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n").unwrap(), 1);
        assert_eq!(parse_cpu_list("0-1\n").unwrap(), 2);
        assert_eq!(parse_cpu_list("0-1,4").unwrap(), 3);
        assert_eq!(parse_cpu_list("0-3,8-11,16").unwrap(), 9);
    }

    #[test]
    fn malformed_cpu_lists_are_errors() {
        for bad in [
            "",
            "\n",
            "a",
            "0-",
            "-1",
            "3-1",
            "0,,1",
            "0-1-2",
            "0-4294967295,0-1",
        ] {
            assert!(
                matches!(parse_cpu_list(bad), Err(ResourceError::CpuList { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    const SAMPLE: &str = "\
MemTotal:       24576000 kB
MemFree:         1000000 kB
MemAvailable:   20000000 kB
Buffers:          100000 kB
Cached:          2000000 kB
HugePages_Total:       0
";

    #[test]
    fn meminfo_sample() {
        let info = parse_meminfo(SAMPLE).unwrap();
        assert_eq!(info.total_bytes, 24_576_000 * 1024);
        assert_eq!(info.available_bytes, 20_000_000 * 1024);
    }

    #[test]
    fn meminfo_without_memavailable_estimates_it() {
        let old = SAMPLE.replace("MemAvailable:   20000000 kB\n", "");
        let info = parse_meminfo(&old).unwrap();
        assert_eq!(info.available_bytes, 3_100_000 * 1024);
    }

    #[test]
    fn malformed_meminfo_is_an_error() {
        for bad in [
            "",
            "garbage",
            "MemAvailable: 1 kB\n",
            "MemTotal: lots kB\nMemAvailable: 1 kB\n",
            "MemTotal: 1 MB\nMemAvailable: 1 kB\n",
            "MemTotal: 18446744073709551615 kB\nMemAvailable: 1 kB\n",
        ] {
            assert!(
                matches!(parse_meminfo(bad), Err(ResourceError::Meminfo { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn this_host_has_cpus_and_memory() {
        assert!(host_cpus().unwrap() >= 1);
        let info = meminfo().unwrap();
        assert!(info.total_bytes > 0);
        assert!(info.available_bytes <= info.total_bytes);
    }
}

//! `GET /v1/stats` and the clock of `GET /v1/healthz`: memory from `/proc/meminfo`, load from
//! `/proc/loadavg`, uptime from `/proc/uptime`, disk use of `/` and `/root` from `statvfs`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use banger_agent_protocol::protocol::{DiskUsage, Memory, Stats};

/// The filesystems reported: the VM's root and its work disk.
pub const DISKS: [&str; 2] = ["/", "/root"];

/// Reading the guest's figures failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} has an unexpected format: {text:?}")]
    Format { path: String, text: String },
}

fn read(proc_root: &Path, name: &str) -> Result<(String, String), StatsError> {
    let path = proc_root.join(name);
    let shown = path.display().to_string();
    fs::read_to_string(&path)
        .map(|text| (shown.clone(), text))
        .map_err(|source| StatsError::Read {
            path: shown,
            source,
        })
}

/// Everything `GET /v1/stats` reports.
pub fn collect(proc_root: &Path) -> Result<Stats, StatsError> {
    let (_, meminfo) = read(proc_root, "meminfo")?;
    let (path, loadavg) = read(proc_root, "loadavg")?;
    let load = parse_loadavg(&loadavg).ok_or_else(|| StatsError::Format {
        path,
        text: loadavg.clone(),
    })?;
    Ok(Stats {
        uptime_ms: uptime(proc_root)?.as_millis() as u64,
        load,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory: parse_meminfo(&meminfo),
        disks: DISKS.iter().filter_map(|p| disk_usage(p)).collect(),
    })
}

/// Time since the kernel started.
pub fn uptime(proc_root: &Path) -> Result<Duration, StatsError> {
    let (path, text) = read(proc_root, "uptime")?;
    parse_uptime(&text).ok_or(StatsError::Format { path, text })
}

/// The first field of `/proc/uptime`: seconds with two decimals.
pub fn parse_uptime(text: &str) -> Option<Duration> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// The fields banger reports, converted from kB; absent fields stay 0.
pub fn parse_meminfo(text: &str) -> Memory {
    let mut memory = Memory::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(kib) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = kib * 1024;
        match key {
            "MemTotal" => memory.total_bytes = bytes,
            "MemAvailable" => memory.available_bytes = bytes,
            "MemFree" => memory.free_bytes = bytes,
            "SwapTotal" => memory.swap_total_bytes = bytes,
            "SwapFree" => memory.swap_free_bytes = bytes,
            _ => {}
        }
    }
    memory
}

/// Use of the filesystem holding `path`; `None` when it cannot be read (no work disk).
pub fn disk_usage(path: &str) -> Option<DiskUsage> {
    let st = rustix::fs::statvfs(path).ok()?;
    let unit = st.f_frsize;
    let total = st.f_blocks * unit;
    Some(DiskUsage {
        path: path.to_owned(),
        total_bytes: total,
        used_bytes: total.saturating_sub(st.f_bfree * unit),
        available_bytes: st.f_bavail * unit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_in_bytes() {
        let text = "MemTotal:        2014124 kB\nMemFree:         1523456 kB\n\
                    MemAvailable:    1800000 kB\nBuffers:           12345 kB\n\
                    SwapTotal:             0 kB\nSwapFree:              0 kB\nHugePages_Total:       0\n";
        let m = parse_meminfo(text);
        assert_eq!(m.total_bytes, 2014124 * 1024);
        assert_eq!(m.free_bytes, 1523456 * 1024);
        assert_eq!(m.available_bytes, 1800000 * 1024);
        assert_eq!(m.swap_total_bytes, 0);
    }

    #[test]
    fn loadavg_and_uptime() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/345 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.52 x"), None);
        assert_eq!(
            parse_uptime("2.47 3.90\n"),
            Some(Duration::from_millis(2470))
        );
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("-1 0"), None);
    }

    #[test]
    fn collects_from_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("meminfo"), "MemTotal: 1024 kB\n").unwrap();
        fs::write(dir.path().join("loadavg"), "1.00 0.50 0.25 1/80 99\n").unwrap();
        fs::write(dir.path().join("uptime"), "12.50 20.00\n").unwrap();
        let stats = collect(dir.path()).unwrap();
        assert_eq!(stats.uptime_ms, 12_500);
        assert_eq!(stats.load, [1.0, 0.5, 0.25]);
        assert_eq!(stats.memory.total_bytes, 1024 * 1024);
        let root = stats.disks.iter().find(|d| d.path == "/").unwrap();
        assert!(root.total_bytes >= root.used_bytes);

        fs::write(dir.path().join("loadavg"), "nonsense\n").unwrap();
        let err = collect(dir.path()).unwrap_err();
        assert!(err.to_string().contains("unexpected format"), "{err}");
    }
}

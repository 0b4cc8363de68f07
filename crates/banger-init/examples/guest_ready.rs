//! A stand-in for an image's init, used by banger-image's QEMU boot test: run as PID 1 after
//! banger-init's root switch, it prints one line describing what the VM looks like from
//! inside —
//!
//! `BANGER-READY hostname=dev ip=172.30.0.5 root=overlay work=/dev/vdc rw=yes`
//!
//! — and powers the VM off. Built static, like banger-init, so the test's root filesystem
//! needs nothing else.

use std::collections::BTreeSet;
use std::io::Write;

fn main() {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("?({e})"));
    let ips = std::fs::read_to_string("/proc/net/fib_trie")
        .map(|t| local_addresses(&t).join(","))
        .unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    // The last mount on a point is the visible one.
    let mounted = |point: &str| {
        mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(1) == Some(&point)).then(|| (f[0].to_owned(), f[2].to_owned()))
            })
            .next_back()
    };
    let root = mounted("/").map(|(_, fstype)| fstype).unwrap_or_default();
    let work = mounted("/root")
        .map(|(dev, _)| dev)
        .unwrap_or("none".into());
    let rw = if std::fs::write("/banger-ready-probe", "written by the guest\n").is_ok() {
        "yes"
    } else {
        "no"
    };
    let line = format!(
        "BANGER-READY hostname={hostname} ip={} root={root} work={work} rw={rw}\n",
        if ips.is_empty() { "none" } else { &ips }
    );
    let _ = std::io::stdout().write_all(line.as_bytes());
    let _ = std::io::stdout().flush();

    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// The non-loopback IPv4 addresses in `/proc/net/fib_trie`: each `|-- ADDRESS` line followed
/// by a `/32 host LOCAL` line.
fn local_addresses(fib_trie: &str) -> Vec<String> {
    let mut found = BTreeSet::new();
    let mut last = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = Some(addr.to_owned());
        } else if line.starts_with("/32 host LOCAL")
            && let Some(addr) = last.take()
            && !addr.starts_with("127.")
        {
            found.insert(addr);
        }
    }
    found.into_iter().collect()
}

//! `GET /v1/ports`: the guest's listening TCP sockets and bound UDP sockets, read from
//! `/proc/net/{tcp,tcp6,udp,udp6}`, each tied to the process holding it by matching socket
//! inodes against the links in `/proc/<pid>/fd`.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use banger_agent_protocol::protocol::{ListeningPort, Transport};

/// `st` of a listening TCP socket (`TCP_LISTEN`).
const TCP_LISTEN: u8 = 0x0A;
/// `st` of a UDP socket that is bound but not connected (`TCP_CLOSE`, reused by UDP).
const UDP_UNCONNECTED: u8 = 0x07;

/// Reading the socket tables failed.
#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// All listening sockets under the proc filesystem mounted at `proc_root`, sorted by
/// protocol, port and address.
pub fn listening(proc_root: &Path) -> Result<Vec<ListeningPort>, PortsError> {
    let mut ports = Vec::new();
    for (file, protocol) in [
        ("tcp", Transport::Tcp),
        ("tcp6", Transport::Tcp),
        ("udp", Transport::Udp),
        ("udp6", Transport::Udp),
    ] {
        let path = proc_root.join("net").join(file);
        match fs::read_to_string(&path) {
            Ok(text) => ports.extend(parse_table(&text, protocol)),
            // A kernel without IPv6 has no tcp6/udp6.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PortsError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
    }
    let owners = socket_owners(proc_root);
    for port in &mut ports {
        if let Some((pid, name)) = owners.get(&port.inode) {
            port.pid = Some(*pid);
            port.process = name.clone();
        }
    }
    ports.sort_by_key(|p| (p.protocol, p.port, p.address));
    Ok(ports)
}

/// The listening entries of one `/proc/net/{tcp,udp}[6]` table. Lines that do not parse are
/// skipped: one odd line must not hide every other port.
pub fn parse_table(text: &str, protocol: Transport) -> Vec<ListeningPort> {
    text.lines()
        .skip(1)
        .filter_map(|line| parse_line(line, protocol))
        .collect()
}

fn parse_line(line: &str, protocol: Transport) -> Option<ListeningPort> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, remote, state, inode) = (
        fields.get(1)?,
        fields.get(2)?,
        fields.get(3)?,
        fields.get(9)?,
    );
    let state = u8::from_str_radix(state, 16).ok()?;
    let (address, port) = parse_endpoint(local)?;
    let (_, remote_port) = parse_endpoint(remote)?;
    let listening = match protocol {
        Transport::Tcp => state == TCP_LISTEN,
        Transport::Udp => state == UDP_UNCONNECTED && remote_port == 0 && port != 0,
    };
    if !listening {
        return None;
    }
    Some(ListeningPort {
        protocol,
        address,
        port,
        inode: inode.parse().ok()?,
        pid: None,
        process: None,
    })
}

/// `0100007F:0016` or the 32-digit IPv6 form. The kernel prints each 32-bit word of the
/// address as a number in the machine's byte order, so the word's native bytes are the
/// address bytes; the port is printed as a plain number.
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let address = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((address, port))
}

/// Socket inode -> (lowest pid holding it, that process's name). Processes that vanish or
/// cannot be read while we look are skipped.
fn socket_owners(proc_root: &Path) -> HashMap<u64, (u32, Option<String>)> {
    let mut owners = HashMap::new();
    let Ok(entries) = fs::read_dir(proc_root) else {
        return owners;
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let proc_dir = proc_root.join(pid.to_string());
        let Ok(fds) = fs::read_dir(proc_dir.join("fd")) else {
            continue;
        };
        let mut name = None;
        for fd in fds.flatten() {
            let Ok(link) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&link.to_string_lossy()) else {
                continue;
            };
            if owners.contains_key(&inode) {
                continue;
            }
            let name = name
                .get_or_insert_with(|| {
                    fs::read_to_string(proc_dir.join("comm"))
                        .ok()
                        .map(|c| c.trim_end().to_owned())
                })
                .clone();
            owners.insert(inode, (pid, name));
        }
    }
    owners
}

/// The inode of an fd link `socket:[12345]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20713 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 31337 1 0000000000000000 100 0 0 10 0
   2: 0200A8C0:0016 0100A8C0:D431 01 00000000:00000000 02:0009A25C 00000000     0        0 40000 2 0000000000000000 20 4 29 10 -1
   3: garbage
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1000 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22000 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22001 1 0000000000000000 100 0 0 10 0
";

    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 15000 2 0000000000000000 0
  101: 0500A8C0:9C40 0100A8C0:0035 01 00000000:00000000 00:00000000 00000000     0        0 15001 2 0000000000000000 0
";

    #[test]
    fn tcp_listeners_only() {
        let ports = parse_table(TCP, Transport::Tcp);
        let got: Vec<(String, u16, u64)> = ports
            .iter()
            .map(|p| (p.address.to_string(), p.port, p.inode))
            .collect();
        assert_eq!(
            got,
            [
                ("0.0.0.0".to_owned(), 22, 20713),
                ("127.0.0.1".to_owned(), 8080, 31337)
            ]
        );
    }

    #[test]
    fn ipv6_addresses_decode_word_by_word() {
        let ports = parse_table(TCP6, Transport::Tcp);
        let got: Vec<(String, u16)> = ports
            .iter()
            .map(|p| (p.address.to_string(), p.port))
            .collect();
        assert_eq!(got, [("::".to_owned(), 4096), ("::1".to_owned(), 631)]);
    }

    #[test]
    fn udp_bound_but_unconnected() {
        let ports = parse_table(UDP, Transport::Udp);
        assert_eq!(ports.len(), 1);
        assert_eq!((ports[0].port, ports[0].inode), (68, 15000));
        assert_eq!(ports[0].protocol, Transport::Udp);
    }

    #[test]
    fn owners_come_from_fd_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("net")).unwrap();
        fs::write(root.join("net/tcp"), TCP).unwrap();
        fs::write(root.join("net/udp"), UDP).unwrap();
        for (pid, comm, links) in [
            ("412", "sshd\n", vec!["socket:[20713]", "/dev/null"]),
            ("77", "dhclient\n", vec!["socket:[15000]"]),
            ("900", "sshd\n", vec!["socket:[20713]"]),
        ] {
            let fd = root.join(pid).join("fd");
            fs::create_dir_all(&fd).unwrap();
            fs::write(root.join(pid).join("comm"), comm).unwrap();
            for (i, link) in links.iter().enumerate() {
                std::os::unix::fs::symlink(link, fd.join(i.to_string())).unwrap();
            }
        }
        let ports = listening(root).unwrap();
        let got: Vec<(Transport, u16, Option<u32>, Option<&str>)> = ports
            .iter()
            .map(|p| (p.protocol, p.port, p.pid, p.process.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (Transport::Tcp, 22, Some(412), Some("sshd")),
                (Transport::Tcp, 8080, None, None),
                (Transport::Udp, 68, Some(77), Some("dhclient")),
            ]
        );
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[42]"), Some(42));
        assert_eq!(socket_inode("pipe:[42]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }
}

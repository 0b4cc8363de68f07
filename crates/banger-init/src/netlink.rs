//! The few rtnetlink requests banger's guest programs need — set a link up or down, set its
//! MAC, add or delete an IPv4 address, add a default route — built by hand, and the
//! [`Socket`] that sends them. The init uses them at boot; the guest agent uses them again
//! when a restored clone takes on its own identity. A handful of fixed-shape messages do not
//! justify a netlink library in binaries that must stay small and static; building them as
//! plain bytes also lets the host tests check them field by field.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;

const IFLA_ADDRESS: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

/// A request being built: header placeholder, then the family-specific struct, then
/// attributes; [`Message::finish`] fills in the length.
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        Message(buf)
    }

    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len() + (4 - len % 4) % 4, 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// struct ifinfomsg: family, pad, type, index, flags, change mask.
fn ifinfo(ifindex: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut ifinfo = vec![AF_UNSPEC, 0, 0, 0];
    ifinfo.extend_from_slice(&ifindex.to_ne_bytes());
    ifinfo.extend_from_slice(&flags.to_ne_bytes());
    ifinfo.extend_from_slice(&change.to_ne_bytes());
    ifinfo
}

/// `ip link set dev <ifindex> up`.
pub fn link_up(seq: u32, ifindex: u32) -> Vec<u8> {
    Message::new(RTM_NEWLINK, 0, seq)
        .bytes(&ifinfo(ifindex, IFF_UP, IFF_UP))
        .finish()
}

/// `ip link set dev <ifindex> down`.
pub fn link_down(seq: u32, ifindex: u32) -> Vec<u8> {
    Message::new(RTM_NEWLINK, 0, seq)
        .bytes(&ifinfo(ifindex, 0, IFF_UP))
        .finish()
}

/// `ip link set dev <ifindex> address <mac>`; the link's flags are left as they are (an
/// empty change mask).
pub fn set_mac(seq: u32, ifindex: u32, mac: [u8; 6]) -> Vec<u8> {
    Message::new(RTM_NEWLINK, 0, seq)
        .bytes(&ifinfo(ifindex, 0, 0))
        .attr(IFLA_ADDRESS, &mac)
        .finish()
}

/// Deletes the first IPv4 address of link `ifindex`: an `RTM_DELADDR` that names only the
/// link matches whatever address comes first on it (deleting a primary address takes its
/// secondaries along). Sent until the kernel answers `EADDRNOTAVAIL`, it empties the link
/// of IPv4 addresses without having to read them first.
pub fn delete_first_address(seq: u32, ifindex: u32) -> Vec<u8> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut ifaddr = vec![AF_INET, 0, 0, RT_SCOPE_UNIVERSE];
    ifaddr.extend_from_slice(&ifindex.to_ne_bytes());
    Message::new(RTM_DELADDR, 0, seq).bytes(&ifaddr).finish()
}

/// `ip addr replace <address>/<prefix> broadcast <broadcast> dev <ifindex>`.
pub fn add_address(
    seq: u32,
    ifindex: u32,
    address: Ipv4Addr,
    prefix_len: u8,
    broadcast: Ipv4Addr,
) -> Vec<u8> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut ifaddr = vec![AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE];
    ifaddr.extend_from_slice(&ifindex.to_ne_bytes());
    Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq)
        .bytes(&ifaddr)
        .attr(IFA_LOCAL, &address.octets())
        .attr(IFA_ADDRESS, &address.octets())
        .attr(IFA_BROADCAST, &broadcast.octets())
        .finish()
}

/// `ip route replace default via <gateway> dev <ifindex>`.
pub fn add_default_route(seq: u32, ifindex: u32, gateway: Ipv4Addr) -> Vec<u8> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut rtmsg = vec![
        AF_INET,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ];
    rtmsg.extend_from_slice(&0u32.to_ne_bytes());
    Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq)
        .bytes(&rtmsg)
        .attr(RTA_GATEWAY, &gateway.octets())
        .attr(RTA_OIF, &ifindex.to_ne_bytes())
        .finish()
}

/// Reads the kernel's answer to request `seq`: `Ok` for an acknowledgement, the errno it
/// reported otherwise. Messages for other sequence numbers are skipped.
pub fn check_ack(reply: &[u8], seq: u32) -> io::Result<Option<()>> {
    let mut rest = reply;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed netlink reply",
            ));
        }
        let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
        let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
        if kind == NLMSG_ERROR && msg_seq == seq {
            let code = rest
                .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "short netlink error message")
                })?;
            return if code == 0 {
                Ok(Some(()))
            } else {
                Err(io::Error::from_raw_os_error(-code))
            };
        }
        let next = (len.div_ceil(4) * 4).min(rest.len());
        rest = &rest[next..];
    }
    Ok(None)
}

/// A `NETLINK_ROUTE` socket that sends one request at a time and waits for its
/// acknowledgement.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        use rustix::net::{AddressFamily, SocketType};
        let fd = rustix::net::socket(
            AddressFamily::NETLINK,
            SocketType::RAW,
            None, // NETLINK_ROUTE
        )?;
        Ok(Socket { fd, seq: 0 })
    }

    /// Sends the message `build` makes for the next sequence number; `Ok` once the kernel
    /// acknowledges it, the errno it answered otherwise.
    pub fn request(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        use rustix::net::{RecvFlags, SendFlags};
        self.seq += 1;
        let seq = self.seq;
        let request = build(seq);
        // An unconnected netlink socket sends to the kernel.
        rustix::net::send(self.fd.as_fd(), &request, SendFlags::empty())?;
        let mut buf = vec![0u8; 8192];
        loop {
            let (_, n) = rustix::net::recv(self.fd.as_fd(), &mut buf[..], RecvFlags::empty())?;
            if let Some(()) = check_ack(&buf[..n.min(buf.len())], seq)? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn link_up_message() {
        let m = link_up(7, 2);
        assert_eq!(m.len(), 32);
        assert_eq!(u32_at(&m, 0), 32);
        assert_eq!(u16_at(&m, 4), RTM_NEWLINK);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&m, 8), 7);
        assert_eq!(u32_at(&m, 20), 2, "ifindex");
        assert_eq!(u32_at(&m, 24), IFF_UP, "flags");
        assert_eq!(u32_at(&m, 28), IFF_UP, "change mask");
    }

    #[test]
    fn link_down_message() {
        let m = link_down(8, 3);
        assert_eq!(m.len(), 32);
        assert_eq!(u32_at(&m, 0), 32);
        assert_eq!(u16_at(&m, 4), RTM_NEWLINK);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&m, 8), 8);
        assert_eq!(u32_at(&m, 20), 3, "ifindex");
        assert_eq!(u32_at(&m, 24), 0, "flags: not up");
        assert_eq!(u32_at(&m, 28), IFF_UP, "change mask: only IFF_UP");
    }

    #[test]
    fn mac_message() {
        let m = set_mac(9, 2, [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        // Header, ifinfomsg, then IFLA_ADDRESS: 4 + 6 bytes padded to 12.
        assert_eq!(m.len(), 16 + 16 + 12);
        assert_eq!(u32_at(&m, 0) as usize, m.len());
        assert_eq!(u16_at(&m, 4), RTM_NEWLINK);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&m, 8), 9);
        assert_eq!(m[16], AF_UNSPEC);
        assert_eq!(u32_at(&m, 20), 2, "ifindex");
        assert_eq!((u32_at(&m, 24), u32_at(&m, 28)), (0, 0), "flags untouched");
        assert_eq!((u16_at(&m, 32), u16_at(&m, 34)), (10, IFLA_ADDRESS));
        assert_eq!(&m[36..42], &[0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        assert_eq!(&m[42..44], &[0, 0], "padding");
    }

    #[test]
    fn delete_address_message() {
        let m = delete_first_address(10, 4);
        assert_eq!(m.len(), 16 + 8);
        assert_eq!(u32_at(&m, 0), 24);
        assert_eq!(u16_at(&m, 4), RTM_DELADDR);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&m, 8), 10);
        assert_eq!(&m[16..20], &[AF_INET, 0, 0, 0]);
        assert_eq!(u32_at(&m, 20), 4, "ifindex");
    }

    #[test]
    fn address_message() {
        let m = add_address(
            3,
            2,
            Ipv4Addr::new(172, 30, 0, 5),
            24,
            Ipv4Addr::new(172, 30, 0, 255),
        );
        assert_eq!(u32_at(&m, 0) as usize, m.len());
        assert_eq!(m.len(), 16 + 8 + 3 * 8);
        assert_eq!(u16_at(&m, 4), RTM_NEWADDR);
        assert_eq!(
            u16_at(&m, 6),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        );
        assert_eq!(&m[16..20], &[AF_INET, 24, 0, 0]);
        assert_eq!(u32_at(&m, 20), 2);
        // IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST: 8 bytes each.
        assert_eq!((u16_at(&m, 24), u16_at(&m, 26)), (8, IFA_LOCAL));
        assert_eq!(&m[28..32], &[172, 30, 0, 5]);
        assert_eq!((u16_at(&m, 32), u16_at(&m, 34)), (8, IFA_ADDRESS));
        assert_eq!((u16_at(&m, 40), u16_at(&m, 42)), (8, IFA_BROADCAST));
        assert_eq!(&m[44..48], &[172, 30, 0, 255]);
    }

    #[test]
    fn route_message() {
        let m = add_default_route(4, 2, Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(u32_at(&m, 0) as usize, m.len());
        assert_eq!(m.len(), 16 + 12 + 8 + 8);
        assert_eq!(u16_at(&m, 4), RTM_NEWROUTE);
        assert_eq!(
            &m[16..24],
            &[
                AF_INET,
                0,
                0,
                0,
                RT_TABLE_MAIN,
                RTPROT_STATIC,
                0,
                RTN_UNICAST
            ]
        );
        assert_eq!((u16_at(&m, 28), u16_at(&m, 30)), (8, RTA_GATEWAY));
        assert_eq!(&m[32..36], &[172, 30, 0, 1]);
        assert_eq!((u16_at(&m, 36), u16_at(&m, 38)), (8, RTA_OIF));
        assert_eq!(u32_at(&m, 40), 2);
    }

    fn error_reply(seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&link_up(seq, 1)[..16]); // the echoed request header
        m
    }

    #[test]
    fn acks_and_errors() {
        assert!(matches!(check_ack(&error_reply(5, 0), 5), Ok(Some(()))));
        let err = check_ack(&error_reply(5, -17), 5).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(17), "EEXIST");
        // Another request's answer is skipped.
        assert!(matches!(check_ack(&error_reply(4, -1), 5), Ok(None)));
        let mut two = error_reply(4, -1);
        two.extend_from_slice(&error_reply(5, 0));
        assert!(matches!(check_ack(&two, 5), Ok(Some(()))));
        assert!(check_ack(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 5).is_err());
    }
}

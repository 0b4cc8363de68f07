//! The host's links read and changed in-process through rtnetlink (`NETLINK_ROUTE`), for a
//! daemon that is root: listing links with their kind, state, master and IPv4 addresses
//! (`RTM_GETLINK` and `RTM_GETADDR` dumps), making a link a port of a bridge and bringing it up
//! in one `RTM_NEWLINK`, and deleting a link (`RTM_DELLINK`). Each call costs microseconds where
//! an `ip` process costs milliseconds, which is most of what a VM start spends on the host.
//!
//! A netlink socket talks to the network namespace of the thread that opened it (as an `ip`
//! process works in the namespace of the thread that started it), so every call opens its own
//! socket on the calling thread and closes it before returning.
//!
//! Only the few messages banger needs are encoded here; the numbers are the kernel's stable UAPI
//! (`linux/netlink.h`, `linux/rtnetlink.h`, `linux/if_link.h`, `linux/if_addr.h`).

use std::io;
use std::net::Ipv4Addr;

use rustix::fd::OwnedFd;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::HostLink;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// The dump changed while it was read (a link came or went): read it again.
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x100 | 0x200;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;

/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
/// `struct ifaddrmsg`: family, prefix length, flags, scope, index.
const IFADDRMSG_LEN: usize = 8;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// Attribute types carry two flag bits (nested, network byte order) above the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;

/// How often a dump the kernel marks interrupted is read again before giving up.
const DUMP_ATTEMPTS: usize = 5;
/// Large enough for any one datagram of a dump (the kernel fills at most a few pages).
const RECV_BUFFER: usize = 64 * 1024;

/// One request message being built: header, family header, attributes.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    buf: Vec<u8>,
}

impl Request {
    pub(crate) fn new(kind: u16, flags: u16) -> Request {
        let mut buf = vec![0; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Request { buf }
    }

    /// `struct ifinfomsg` for link requests; `flags` under `change` are set or cleared.
    pub(crate) fn ifinfo(mut self, index: i32, flags: u32, change: u32) -> Request {
        let mut msg = [0u8; IFINFOMSG_LEN];
        msg[0] = AF_UNSPEC;
        msg[4..8].copy_from_slice(&index.to_ne_bytes());
        msg[8..12].copy_from_slice(&flags.to_ne_bytes());
        msg[12..16].copy_from_slice(&change.to_ne_bytes());
        self.buf.extend_from_slice(&msg);
        self
    }

    /// `struct ifaddrmsg` for address requests of `family`.
    pub(crate) fn ifaddr(mut self, family: u8) -> Request {
        let mut msg = [0u8; IFADDRMSG_LEN];
        msg[0] = family;
        self.buf.extend_from_slice(&msg);
        self
    }

    pub(crate) fn attr(mut self, kind: u16, data: &[u8]) -> Request {
        let len = u16::try_from(4 + data.len()).expect("attributes banger sends are small");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string attribute (interface names).
    pub(crate) fn attr_str(self, kind: u16, value: &str) -> Request {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    /// The bytes to send, with the total length and sequence number filled in.
    pub(crate) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("requests banger sends are small");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// One message of a datagram the kernel sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages in one datagram; a length that does not fit is an error, not a guess.
pub(crate) fn messages(mut buf: &[u8]) -> io::Result<Vec<Message<'_>>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(invalid(format!(
                "a netlink message claims {len} bytes of the {} received",
                buf.len()
            )));
        }
        out.push(Message {
            kind: u16_at(buf, 4),
            flags: u16_at(buf, 6),
            seq: u32_at(buf, 8),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(out)
}

/// The attributes in `buf` (type without its flag bits, data); stops at the first malformed one.
pub(crate) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16_at(buf, 0) as usize;
        if len < 4 || len > buf.len() {
            return None;
        }
        let item = (u16_at(buf, 2) & NLA_TYPE_MASK, &buf[4..len]);
        buf = &buf[align(len).min(buf.len())..];
        Some(item)
    })
}

/// The error code an `NLMSG_ERROR` (or `NLMSG_DONE`) payload starts with: 0 or `-errno`.
fn error_code(payload: &[u8]) -> io::Result<i32> {
    let bytes: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("a netlink error message without its code"))?;
    Ok(i32::from_ne_bytes(bytes))
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code.saturating_neg())
}

/// A `NETLINK_ROUTE` socket of the calling thread's network namespace.
#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    pub(crate) fn open() -> io::Result<Socket> {
        // No protocol is NETLINK_ROUTE; the kernel binds the socket on its first send.
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    fn send(&mut self, request: Request) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = request.finish(self.seq);
        rustix::net::send(&self.fd, &bytes, SendFlags::empty())?;
        Ok(self.seq)
    }

    /// Reads datagrams and hands each message answering `seq` to `each` until it says `Done`.
    fn receive(
        &mut self,
        seq: u32,
        mut each: impl FnMut(Message<'_>) -> io::Result<Flow>,
    ) -> io::Result<()> {
        loop {
            let (_, len) = rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::TRUNC)?;
            if len > self.buf.len() {
                return Err(invalid(format!(
                    "a netlink answer of {len} bytes does not fit in {}",
                    self.buf.len()
                )));
            }
            for message in messages(&self.buf[..len])? {
                if message.seq != seq {
                    continue;
                }
                if let Flow::Done = each(message)? {
                    return Ok(());
                }
            }
        }
    }

    /// Sends `request` asking for an acknowledgement and waits for it: `Ok` when the kernel
    /// did what was asked, the kernel's errno otherwise.
    pub(crate) fn execute(&mut self, request: Request) -> io::Result<()> {
        let seq = self.send(request)?;
        self.receive(seq, |message| match message.kind {
            NLMSG_ERROR => match error_code(message.payload)? {
                0 => Ok(Flow::Done),
                code => Err(os_error(code)),
            },
            _ => Ok(Flow::More),
        })
    }

    /// The payload of the one message of type `kind` that answers `request`.
    pub(crate) fn get(&mut self, request: Request, kind: u16) -> io::Result<Vec<u8>> {
        let seq = self.send(request)?;
        let mut answer = None;
        self.receive(seq, |message| match message.kind {
            NLMSG_ERROR => match error_code(message.payload)? {
                0 => Ok(Flow::More),
                code => Err(os_error(code)),
            },
            k if k == kind => {
                answer = Some(message.payload.to_vec());
                Ok(Flow::Done)
            }
            _ => Ok(Flow::More),
        })?;
        answer.ok_or_else(|| invalid("the kernel answered without the requested message"))
    }

    /// The payloads of every message of type `kind` a dump `request` returns, read again when
    /// the kernel says the dump was interrupted by a change.
    pub(crate) fn dump(&mut self, request: &Request, kind: u16) -> io::Result<Vec<Vec<u8>>> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.send(request.clone())?;
            let mut payloads = Vec::new();
            let mut interrupted = false;
            self.receive(seq, |message| {
                interrupted |= message.flags & NLM_F_DUMP_INTR != 0;
                match message.kind {
                    NLMSG_DONE => {
                        // Recent kernels end a dump with its error code; older ones send none.
                        let code = match message.payload.len() {
                            0..4 => 0,
                            _ => error_code(message.payload)?,
                        };
                        if code < 0 {
                            Err(os_error(code))
                        } else {
                            Ok(Flow::Done)
                        }
                    }
                    NLMSG_ERROR => match error_code(message.payload)? {
                        0 => Ok(Flow::Done),
                        code => Err(os_error(code)),
                    },
                    k if k == kind => {
                        payloads.push(message.payload.to_vec());
                        Ok(Flow::More)
                    }
                    _ => Ok(Flow::More),
                }
            })?;
            if !interrupted {
                return Ok(payloads);
            }
        }
        Err(io::Error::other(
            "the links kept changing while they were listed",
        ))
    }
}

/// Whether [`Socket::receive`] reads on.
enum Flow {
    More,
    Done,
}

/// One link as the `RTM_NEWLINK` payload of a dump describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawLink {
    index: i32,
    name: String,
    up: bool,
    mac: Option<String>,
    master: Option<i32>,
    kind: Option<String>,
}

fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn parse_link(payload: &[u8]) -> io::Result<RawLink> {
    if payload.len() < IFINFOMSG_LEN {
        return Err(invalid("a link message shorter than its header"));
    }
    let index = u32_at(payload, 4) as i32;
    let flags = u32_at(payload, 8);
    let mut link = RawLink {
        index,
        name: String::new(),
        up: flags & IFF_UP != 0,
        mac: None,
        master: None,
        kind: None,
    };
    for (kind, data) in attrs(&payload[IFINFOMSG_LEN..]) {
        match kind {
            IFLA_IFNAME => link.name = c_string(data),
            IFLA_ADDRESS if !data.is_empty() => {
                let hex: Vec<String> = data.iter().map(|b| format!("{b:02x}")).collect();
                link.mac = Some(hex.join(":"));
            }
            IFLA_MASTER if data.len() >= 4 => link.master = Some(u32_at(data, 0) as i32),
            IFLA_LINKINFO => {
                link.kind = attrs(data)
                    .find(|(k, _)| *k == IFLA_INFO_KIND)
                    .map(|(_, d)| c_string(d));
            }
            _ => {}
        }
    }
    if link.name.is_empty() {
        return Err(invalid(format!("link {index} has no name")));
    }
    Ok(link)
}

/// The link index and IPv4 address with prefix of an `RTM_NEWADDR` payload (`None` for
/// another family).
fn parse_address(payload: &[u8]) -> io::Result<Option<(i32, Ipv4Addr, u8)>> {
    if payload.len() < IFADDRMSG_LEN {
        return Err(invalid("an address message shorter than its header"));
    }
    if payload[0] != AF_INET {
        return Ok(None);
    }
    let prefix_len = payload[1];
    let index = u32_at(payload, 4) as i32;
    let (mut local, mut address) = (None, None);
    for (kind, data) in attrs(&payload[IFADDRMSG_LEN..]) {
        let Ok(octets) = <[u8; 4]>::try_from(data) else {
            continue;
        };
        match kind {
            IFA_LOCAL => local = Some(Ipv4Addr::from(octets)),
            IFA_ADDRESS => address = Some(Ipv4Addr::from(octets)),
            _ => {}
        }
    }
    // As `ip` shows it: the local address, or the address of a link without a peer.
    Ok(local.or(address).map(|ip| (index, ip, prefix_len)))
}

/// The links of dumps `links` (`RTM_NEWLINK` payloads) and `addresses` (`RTM_NEWADDR`), in
/// the kernel's order, masters by name.
pub(crate) fn host_links(links: &[Vec<u8>], addresses: &[Vec<u8>]) -> io::Result<Vec<HostLink>> {
    let raw: Vec<RawLink> = links
        .iter()
        .map(|p| parse_link(p))
        .collect::<io::Result<_>>()?;
    let mut ipv4: Vec<(i32, Ipv4Addr, u8)> = Vec::new();
    for payload in addresses {
        ipv4.extend(parse_address(payload)?);
    }
    let name_of = |index: i32| {
        raw.iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone())
    };
    Ok(raw
        .iter()
        .map(|l| HostLink {
            name: l.name.clone(),
            kind: l.kind.clone(),
            up: l.up,
            mac: l.mac.clone(),
            master: l.master.and_then(name_of),
            ipv4: ipv4
                .iter()
                .filter(|(index, ..)| *index == l.index)
                .map(|&(_, ip, len)| (ip, len))
                .collect(),
        })
        .collect())
}

/// Every link of the calling thread's network namespace with its IPv4 addresses.
pub(crate) fn list_links() -> io::Result<Vec<HostLink>> {
    let mut socket = Socket::open()?;
    let links = socket.dump(
        &Request::new(RTM_GETLINK, NLM_F_DUMP).ifinfo(0, 0, 0),
        RTM_NEWLINK,
    )?;
    let addresses = socket.dump(
        &Request::new(RTM_GETADDR, NLM_F_DUMP).ifaddr(AF_INET),
        RTM_NEWADDR,
    )?;
    host_links(&links, &addresses)
}

/// The index of link `name`.
fn index_of(socket: &mut Socket, name: &str) -> io::Result<i32> {
    let payload = socket.get(
        Request::new(RTM_GETLINK, 0)
            .ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, name),
        RTM_NEWLINK,
    )?;
    Ok(parse_link(&payload)?.index)
}

/// The request that makes link `name` a port of the link with index `master` and brings it up.
pub(crate) fn attach_up_request(name: &str, master: i32) -> Request {
    Request::new(RTM_NEWLINK, NLM_F_ACK)
        .ifinfo(0, IFF_UP, IFF_UP)
        .attr_str(IFLA_IFNAME, name)
        .attr(IFLA_MASTER, &master.to_ne_bytes())
}

/// Makes link `name` a port of bridge `master` and brings it up, in one message.
pub(crate) fn attach_up(name: &str, master: &str) -> io::Result<()> {
    let mut socket = Socket::open()?;
    let master = index_of(&mut socket, master)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot find {master}: {e}")))?;
    socket.execute(attach_up_request(name, master))
}

/// Deletes link `name`. `Ok(false)` when there was no such link.
pub(crate) fn delete_link(name: &str) -> io::Result<bool> {
    let mut socket = Socket::open()?;
    let request = Request::new(RTM_DELLINK, NLM_F_ACK)
        .ifinfo(0, 0, 0)
        .attr_str(IFLA_IFNAME, name);
    match socket.execute(request) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODEV.raw_os_error()) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload as the kernel would send it: a family header, then attributes.
    fn payload(header: &[u8], attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut request = Request { buf: Vec::new() };
        request.buf.extend_from_slice(header);
        for (kind, data) in attributes {
            request = request.attr(*kind, data);
        }
        request.buf
    }

    fn ifinfo(index: i32, flags: u32) -> Vec<u8> {
        let mut header = vec![0u8; IFINFOMSG_LEN];
        header[4..8].copy_from_slice(&index.to_ne_bytes());
        header[8..12].copy_from_slice(&flags.to_ne_bytes());
        header
    }

    fn ifaddr(family: u8, prefix_len: u8, index: i32) -> Vec<u8> {
        let mut header = vec![family, prefix_len, 0, 0];
        header.extend_from_slice(&index.to_ne_bytes());
        header
    }

    #[test]
    fn attach_request_is_one_newlink_with_the_master_and_up() {
        let bytes = attach_up_request("bt-0123456789ab", 7).finish(42);
        assert_eq!(bytes.len() % 4, 0);
        let parsed = messages(&bytes).unwrap();
        assert_eq!(parsed.len(), 1);
        let message = parsed[0];
        assert_eq!(message.kind, RTM_NEWLINK);
        assert_eq!(message.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(message.seq, 42);
        let header = &message.payload[..IFINFOMSG_LEN];
        assert_eq!(header[0], AF_UNSPEC);
        assert_eq!(u32_at(header, 4), 0, "found by name, not index");
        assert_eq!(u32_at(header, 8), IFF_UP, "flags");
        assert_eq!(u32_at(header, 12), IFF_UP, "change: only IFF_UP");
        let attributes: Vec<(u16, &[u8])> = attrs(&message.payload[IFINFOMSG_LEN..]).collect();
        assert_eq!(
            attributes,
            [
                (IFLA_IFNAME, &b"bt-0123456789ab\0"[..]),
                (IFLA_MASTER, &7u32.to_ne_bytes()[..]),
            ]
        );
    }

    #[test]
    fn messages_and_attributes_follow_the_alignment_and_reject_bad_lengths() {
        let mut datagram = Request::new(RTM_NEWLINK, 0)
            .ifinfo(3, 0, 0)
            .attr_str(IFLA_IFNAME, "a")
            .finish(1);
        let second = Request::new(NLMSG_DONE, 0).finish(1);
        datagram.extend_from_slice(&second);
        let parsed = messages(&datagram).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].kind, NLMSG_DONE);
        assert!(parsed[1].payload.is_empty());

        let mut broken = second.clone();
        broken[0..4].copy_from_slice(&64u32.to_ne_bytes());
        assert_eq!(
            messages(&broken).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );

        // The nested flag bit is not part of the type; a truncated attribute ends the list.
        let nested = payload(
            &[],
            &[(IFLA_LINKINFO | 0x8000, b"xyzw"), (IFLA_IFNAME, b"n\0")],
        );
        let mut truncated = nested.clone();
        truncated.extend_from_slice(&[40, 0, 3, 0]);
        let types: Vec<u16> = attrs(&truncated).map(|(k, _)| k).collect();
        assert_eq!(types, [IFLA_LINKINFO, IFLA_IFNAME]);
    }

    #[test]
    fn dumps_become_links_with_kind_state_master_and_ipv4() {
        let info_kind =
            |kind: &str| payload(&[], &[(IFLA_INFO_KIND, format!("{kind}\0").as_bytes())]);
        let links = [
            payload(
                &ifinfo(1, IFF_UP | 0x8),
                &[(IFLA_IFNAME, b"lo\0"), (IFLA_ADDRESS, &[0; 6])],
            ),
            payload(
                &ifinfo(4, IFF_UP),
                &[
                    (IFLA_ADDRESS, &[0x06, 0, 0xac, 0x1e, 0, 1]),
                    (IFLA_IFNAME, b"banger0\0"),
                    (IFLA_LINKINFO | 0x8000, &info_kind("bridge")),
                ],
            ),
            payload(
                &ifinfo(9, 0),
                &[
                    (IFLA_IFNAME, b"bt-0123456789ab\0"),
                    (IFLA_MASTER, &4u32.to_ne_bytes()),
                    (IFLA_LINKINFO, &info_kind("tun")),
                ],
            ),
        ];
        let addresses = [
            payload(
                &ifaddr(AF_INET, 8, 1),
                &[(IFA_ADDRESS, &[127, 0, 0, 1]), (IFA_LOCAL, &[127, 0, 0, 1])],
            ),
            // A point-to-point address: the local one is the link's own.
            payload(
                &ifaddr(AF_INET, 24, 4),
                &[(IFA_ADDRESS, &[10, 0, 0, 9]), (IFA_LOCAL, &[172, 30, 0, 1])],
            ),
            payload(&ifaddr(AF_INET, 16, 4), &[(IFA_ADDRESS, &[10, 1, 0, 1])]),
            payload(&ifaddr(10, 64, 4), &[(IFA_ADDRESS, &[0xfe; 16])]),
        ];
        let parsed = host_links(&links, &addresses).unwrap();
        assert_eq!(
            parsed,
            [
                HostLink {
                    name: "lo".into(),
                    kind: None,
                    up: true,
                    mac: Some("00:00:00:00:00:00".into()),
                    master: None,
                    ipv4: vec![(Ipv4Addr::new(127, 0, 0, 1), 8)],
                },
                HostLink {
                    name: "banger0".into(),
                    kind: Some("bridge".into()),
                    up: true,
                    mac: Some("06:00:ac:1e:00:01".into()),
                    master: None,
                    ipv4: vec![
                        (Ipv4Addr::new(172, 30, 0, 1), 24),
                        (Ipv4Addr::new(10, 1, 0, 1), 16)
                    ],
                },
                HostLink {
                    name: "bt-0123456789ab".into(),
                    kind: Some("tun".into()),
                    up: false,
                    mac: None,
                    master: Some("banger0".into()),
                    ipv4: vec![],
                },
            ]
        );

        let nameless = [payload(&ifinfo(2, 0), &[])];
        assert!(host_links(&nameless, &[]).is_err());
        assert!(host_links(&[vec![0; 3]], &[]).is_err());
    }

    #[test]
    fn errors_carry_the_kernels_errno() {
        let error = os_error(-19);
        assert_eq!(error.raw_os_error(), Some(19));
        assert_eq!(error_code(&(-1i32).to_ne_bytes()).unwrap(), -1);
        assert!(error_code(&[0, 0]).is_err());
    }
}

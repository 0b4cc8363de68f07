//! What bangerd's DNS server answers: `NAME.DOMAIN` gets the VM's address (A; any other type
//! of a VM's name is an empty NOERROR), the reverse name of a VM's address its PTR, an unknown
//! name in the domain NXDOMAIN, and anything else is forwarded to the host's resolvers (read
//! from `/etc/resolv.conf` at each forward, without the bridge address) or REFUSED when the
//! host has none. Names come from a [`VmNames`] asked at each query, so they follow creates and
//! deletes at once; answers carry a TTL of 0 so that no resolver keeps a deleted VM's address.
//! The wire format is hickory-proto's; [`Handler`] plugs [`Responder`] into hickory-server.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The TTL of every local answer: none, so a deleted VM's name is gone at once.
pub const LOCAL_TTL: u32 = 0;
/// How long one upstream resolver gets to answer a forwarded query.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The EDNS payload size bangerd advertises (the common safe size, no fragmentation).
const EDNS_PAYLOAD: u16 = 1232;

/// Where the names come from: the daemon's store in bangerd, a table in tests.
pub trait VmNames: Send + Sync + 'static {
    /// The address of the VM called `name` (lower-case), if there is one.
    fn address_of(&self, name: &str) -> Option<Ipv4Addr>;
    /// The name of the VM holding `ip`, if any.
    fn name_of(&self, ip: Ipv4Addr) -> Option<String>;
}

/// Where forwarded queries go.
pub trait Upstreams: Send + Sync + 'static {
    fn servers(&self) -> Vec<SocketAddr>;
}

/// The nameservers of a `resolv.conf`, read at every forward (the host's may change under a
/// running daemon, e.g. with DHCP), less the bridge address, which is bangerd itself.
#[derive(Debug, Clone)]
pub struct ResolvConf {
    pub path: PathBuf,
    pub exclude: Ipv4Addr,
}

impl Upstreams for ResolvConf {
    fn servers(&self) -> Vec<SocketAddr> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        nameservers(&text, self.exclude)
    }
}

/// A fixed list (tests, benchmarks).
impl Upstreams for Vec<SocketAddr> {
    fn servers(&self) -> Vec<SocketAddr> {
        self.clone()
    }
}

/// The `nameserver` lines of a `resolv.conf`, in order, as port-53 addresses, without
/// `exclude` and without the unspecified address.
pub fn nameservers(resolv_conf: &str, exclude: Ipv4Addr) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A scoped IPv6 address (`fe80::1%eth0`) names an interface the daemon may not share.
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| *ip != IpAddr::V4(exclude) && !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// banger's names: the domain and the subnet whose reverse names are answered locally.
#[derive(Debug, Clone)]
pub struct Zone {
    domain: Name,
    network: u32,
    prefix_len: u8,
}

/// What the zone says about one question.
#[derive(Debug, PartialEq)]
enum Local {
    /// The records answering it.
    Records(Vec<Record>),
    /// The name exists but has nothing of that type.
    Empty,
    NxDomain,
    /// Not banger's: forward it.
    Elsewhere,
}

impl Zone {
    /// `domain` as config.toml has it (`vm`); `subnet`'s reverse names are answered locally.
    pub fn new(domain: &str, host_address: Ipv4Addr, prefix_len: u8) -> Result<Zone, String> {
        let mut domain = Name::from_ascii(domain)
            .map_err(|e| format!("domain {domain:?}: {e}"))?
            .to_lowercase();
        domain.set_fqdn(true);
        let mask = banger_host_mask(prefix_len);
        Ok(Zone {
            domain,
            network: u32::from(host_address) & mask,
            prefix_len,
        })
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & banger_host_mask(self.prefix_len) == self.network
    }

    fn lookup(&self, names: &dyn VmNames, query: &Query) -> Local {
        let name = query.name().to_lowercase();
        if self.domain.zone_of(&name) {
            return self.lookup_in_domain(names, &name, query.query_type());
        }
        match reverse_v4(&name) {
            Some(ip) if self.contains(ip) => match names.name_of(ip) {
                Some(vm) if query.query_type() == RecordType::PTR => {
                    match Name::from_ascii(&vm).and_then(|n| n.append_domain(&self.domain)) {
                        Ok(target) => Local::Records(vec![Record::from_rdata(
                            query.name().clone(),
                            LOCAL_TTL,
                            RData::PTR(PTR(target)),
                        )]),
                        Err(_) => Local::NxDomain,
                    }
                }
                Some(_) => Local::Empty,
                None => Local::NxDomain,
            },
            _ => Local::Elsewhere,
        }
    }

    fn lookup_in_domain(&self, names: &dyn VmNames, name: &Name, kind: RecordType) -> Local {
        let depth = usize::from(name.num_labels()) - usize::from(self.domain.num_labels());
        match depth {
            // The domain itself exists (it holds the VMs) but has no records.
            0 => Local::Empty,
            1 => {
                let label = name.iter().next().unwrap_or_default();
                let Some(ip) = std::str::from_utf8(label)
                    .ok()
                    .and_then(|vm| names.address_of(vm))
                else {
                    return Local::NxDomain;
                };
                if kind == RecordType::A || kind == RecordType::ANY {
                    Local::Records(vec![Record::from_rdata(
                        name.clone(),
                        LOCAL_TTL,
                        RData::A(A(ip)),
                    )])
                } else {
                    Local::Empty
                }
            }
            _ => Local::NxDomain,
        }
    }
}

fn banger_host_mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// The address of a full IPv4 reverse name (`4.3.2.1.in-addr.arpa.`).
fn reverse_v4(name: &Name) -> Option<Ipv4Addr> {
    match name.parse_arpa_name().ok()? {
        ipnet::IpNet::V4(net) if net.prefix_len() == 32 => Some(net.addr()),
        _ => None,
    }
}

/// Answers queries: locally for banger's names, through the upstreams for the rest.
pub struct Responder {
    pub zone: Zone,
    pub names: Arc<dyn VmNames>,
    pub upstreams: Arc<dyn Upstreams>,
    pub timeout: Duration,
}

impl Responder {
    /// The response to `request`, its id and question copied.
    pub async fn respond(&self, request: &Message) -> Message {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.add_queries(request.queries.iter().cloned());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            response.set_edns(edns);
        }
        if request.metadata.message_type != MessageType::Query {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return response;
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        match self.zone.lookup(&*self.names, query) {
            Local::Records(records) => {
                response.metadata.authoritative = true;
                response.add_answers(records);
            }
            Local::Empty => response.metadata.authoritative = true,
            Local::NxDomain => {
                response.metadata.authoritative = true;
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            Local::Elsewhere => self.forward(query, &mut response).await,
        }
        response
    }

    /// Asks the upstreams in turn, the first answer wins; REFUSED without any, SERVFAIL when
    /// none answers.
    async fn forward(&self, query: &Query, response: &mut Message) {
        let servers = self.upstreams.servers();
        if servers.is_empty() {
            response.metadata.response_code = ResponseCode::Refused;
            return;
        }
        for server in servers {
            match tokio::time::timeout(self.timeout, exchange(server, query)).await {
                Ok(Ok(reply)) => {
                    response.metadata.response_code = reply.metadata.response_code;
                    response.metadata.truncation = reply.metadata.truncation;
                    response.metadata.authentic_data = reply.metadata.authentic_data;
                    response.insert_answers(reply.answers);
                    response.insert_authorities(reply.authorities);
                    response.insert_additionals(reply.additionals);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%server, error = %e, "upstream resolver failed");
                }
                Err(_) => tracing::debug!(%server, "upstream resolver timed out"),
            }
        }
        response.metadata.response_code = ResponseCode::ServFail;
    }
}

/// One question to one upstream: over UDP, and again over TCP when the answer was truncated.
async fn exchange(server: SocketAddr, query: &Query) -> io::Result<Message> {
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    request.set_edns(edns);
    let bytes = request
        .to_vec()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let reply = exchange_udp(server, &bytes, &request).await?;
    if reply.metadata.truncation {
        return exchange_tcp(server, &bytes, &request).await;
    }
    Ok(reply)
}

fn decode(bytes: &[u8]) -> io::Result<Message> {
    Message::from_vec(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Whether `reply` answers `request` (same id, same question), so that a stray datagram is
/// never taken for the answer.
fn answers(reply: &Message, request: &Message) -> bool {
    reply.metadata.id == request.metadata.id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries == request.queries
}

async fn exchange_udp(server: SocketAddr, bytes: &[u8], request: &Message) -> io::Result<Message> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Ok(reply) = decode(&buf[..n])
            && answers(&reply, request)
        {
            return Ok(reply);
        }
    }
}

async fn exchange_tcp(server: SocketAddr, bytes: &[u8], request: &Message) -> io::Result<Message> {
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let len = u16::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    let reply = decode(&buf)?;
    if answers(&reply, request) {
        Ok(reply)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the answer is not for the question asked",
        ))
    }
}

/// [`Responder`] as hickory-server's request handler.
pub struct Handler(pub Arc<Responder>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let response = match decode(request.as_slice()) {
            Ok(message) => self.0.respond(&message).await,
            Err(_) => Message::error_msg(
                request.metadata.id,
                request.metadata.op_code,
                ResponseCode::FormErr,
            ),
        };
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &response.edns {
            builder.edns(edns);
        }
        let reply = builder.build(
            response.metadata,
            response.answers.iter(),
            response.authorities.iter(),
            std::iter::empty(),
            response.additionals.iter(),
        );
        match response_handle.send_response(reply).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a DNS response");
                let mut failed = Message::error_msg(
                    request.metadata.id,
                    request.metadata.op_code,
                    ResponseCode::ServFail,
                );
                failed.metadata.message_type = MessageType::Response;
                ResponseInfo::from(hickory_proto::op::Header {
                    metadata: failed.metadata,
                    counts: Default::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;

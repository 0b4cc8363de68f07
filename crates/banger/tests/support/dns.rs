//! DNS inside a test's network namespace: the namespace's own `/etc/resolv.conf` (which
//! `ip netns exec` mounts over the host's for the daemon it starts), a fake upstream resolver on
//! the namespace's loopback, and questions asked from inside the namespace. Nothing here sends a
//! packet outside the namespace.

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// What the fake upstream answers for every name but `missing.*`.
pub const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

/// `/etc/netns/<ns>/resolv.conf` with `text`, removed (with its directory) when dropped.
/// Processes started with `ip netns exec <ns>` afterwards see it as `/etc/resolv.conf`.
pub struct NetnsResolvConf(PathBuf);

impl NetnsResolvConf {
    pub fn write(netns: &str, text: &str) -> NetnsResolvConf {
        let dir = PathBuf::from(format!("/etc/netns/{netns}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
        NetnsResolvConf(dir)
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // `/etc/netns` itself too when this made it (it is left when anything else is in it).
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// Runs `f` on a thread that entered network namespace `netns`: the sockets it opens live
/// there.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        banger_host::network::netns::enter(&netns).expect("enter the test's namespace");
        f()
    })
    .join()
    .unwrap()
}

/// A resolver on UDP `127.0.0.1:53` inside a namespace: `missing.*` does not exist, any other
/// name is [`UPSTREAM_ANSWER`]. Counts the questions; stops when dropped.
pub struct FakeUpstream {
    pub asked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    pub fn start(netns: &str) -> FakeUpstream {
        let asked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let netns = netns.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (count, stopping) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            banger_host::network::netns::enter(&netns).expect("enter the test's namespace");
            let socket = UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53");
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = vec![0; 4096];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.metadata.recursion_available = true;
                reply.add_queries(query.queries.iter().cloned());
                if let Some(q) = query.queries.first() {
                    if q.name().to_ascii().starts_with("missing.") {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                    } else if q.query_type() == RecordType::A {
                        reply.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::A(A(UPSTREAM_ANSWER)),
                        ));
                    }
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), from);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the fake upstream to bind 127.0.0.1:53 in the namespace");
        FakeUpstream {
            asked,
            stop,
            thread: Some(thread),
        }
    }

    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::Relaxed)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A question for `name` of type `kind`, recursion desired (as a stub resolver asks).
pub fn question(name: &str, kind: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    m
}

/// Asks `server` over UDP from a socket already in the namespace; gives up after 5 s.
pub fn ask_udp(socket: &UdpSocket, server: SocketAddr, q: &Message) -> Message {
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&q.to_vec().unwrap(), server).unwrap();
    let mut buf = vec![0; 4096];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no answer from {server} within 5 s: {e}"));
        let reply = Message::from_vec(&buf[..n]).unwrap();
        if reply.metadata.id == q.metadata.id {
            return reply;
        }
    }
}

/// Asks `server` over TCP (a new connection); gives up after 5 s.
pub fn ask_tcp(server: SocketAddr, q: &Message) -> Message {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let bytes = q.to_vec().unwrap();
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend(bytes);
    stream.write_all(&framed).unwrap();
    let mut len = [0; 2];
    stream.read_exact(&mut len).unwrap();
    let mut buf = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

/// A question asked once from inside `netns`, over UDP or TCP.
pub fn ask(netns: &str, server: SocketAddr, name: &str, kind: RecordType, tcp: bool) -> Message {
    let q = question(name, kind);
    in_netns(netns, move || {
        if tcp {
            ask_tcp(server, &q)
        } else {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            ask_udp(&socket, server, &q)
        }
    })
}

/// The answers' data as text (`172.30.0.2`, `b.vm.`).
pub fn rdata(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

//! The answers, against a table of VMs and fake upstream resolvers on loopback.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;

const HOST: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);

#[derive(Default)]
struct Table(Mutex<HashMap<String, Ipv4Addr>>);

impl Table {
    fn with(vms: &[(&str, [u8; 4])]) -> Arc<Table> {
        let t = Table::default();
        for (name, ip) in vms {
            t.0.lock()
                .unwrap()
                .insert((*name).into(), Ipv4Addr::from(*ip));
        }
        Arc::new(t)
    }
}

impl VmNames for Table {
    fn address_of(&self, name: &str) -> Option<Ipv4Addr> {
        self.0.lock().unwrap().get(name).copied()
    }
    fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
        let t = self.0.lock().unwrap();
        t.iter().find(|(_, a)| **a == ip).map(|(n, _)| n.clone())
    }
}

fn responder(names: Arc<Table>, upstreams: Vec<SocketAddr>) -> Responder {
    Responder {
        zone: Zone::new("vm", HOST, 24).unwrap(),
        names,
        upstreams: Arc::new(upstreams),
        timeout: Duration::from_millis(300),
    }
}

fn question(name: &str, kind: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    m
}

async fn ask(r: &Responder, name: &str, kind: RecordType) -> Message {
    let q = question(name, kind);
    let a = r.respond(&q).await;
    assert_eq!(a.metadata.id, q.metadata.id);
    assert_eq!(a.metadata.message_type, MessageType::Response);
    assert_eq!(a.queries, q.queries);
    a
}

fn rdata(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

#[tokio::test]
async fn a_vm_name_has_its_address_whatever_the_case() {
    let r = responder(Table::with(&[("dev", [172, 30, 0, 2])]), vec![]);
    for name in ["dev.vm.", "DEV.Vm.", "dev.vm"] {
        let a = ask(&r, name, RecordType::A).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative);
        assert_eq!(rdata(&a), ["172.30.0.2"], "{name}");
        assert_eq!(a.answers[0].ttl, LOCAL_TTL);
    }
}

/// `[dns] domain`: names live under the configured domain, and `vm` is then just another
/// domain, asked of the upstreams.
#[tokio::test]
async fn another_domain_holds_the_names_and_vm_is_forwarded() {
    let (upstream, asked) = fake_upstream(Behaviour::Answer).await;
    let r = Responder {
        zone: Zone::new("dev.internal", HOST, 24).unwrap(),
        ..responder(Table::with(&[("dev", [172, 30, 0, 2])]), vec![upstream])
    };
    let a = ask(&r, "dev.dev.internal.", RecordType::A).await;
    assert!(a.metadata.authoritative);
    assert_eq!(rdata(&a), ["172.30.0.2"]);
    assert_eq!(
        rdata(&ask(&r, "2.0.30.172.in-addr.arpa.", RecordType::PTR).await),
        ["dev.dev.internal."]
    );
    let nx = ask(&r, "nope.dev.internal.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(*asked.lock().unwrap(), 0);
    let other = ask(&r, "dev.vm.", RecordType::A).await;
    assert!(!other.metadata.authoritative);
    assert_eq!(*asked.lock().unwrap(), 1, "dev.vm. went to the upstream");
}

#[tokio::test]
async fn other_types_of_a_vm_name_are_empty_not_missing() {
    let r = responder(Table::with(&[("dev", [172, 30, 0, 2])]), vec![]);
    for kind in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let a = ask(&r, "dev.vm.", kind).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError, "{kind}");
        assert!(a.answers.is_empty(), "{kind}");
    }
    let apex = ask(&r, "vm.", RecordType::A).await;
    assert_eq!(apex.metadata.response_code, ResponseCode::NoError);
    assert!(apex.answers.is_empty());
}

#[tokio::test]
async fn unknown_names_in_the_domain_do_not_exist_and_are_never_forwarded() {
    // An upstream that would answer anything: it must not be asked.
    let (upstream, asked) = fake_upstream(Behaviour::Answer).await;
    let r = responder(Table::with(&[("dev", [172, 30, 0, 2])]), vec![upstream]);
    for name in ["nope.vm.", "a.dev.vm."] {
        let a = ask(&r, name, RecordType::A).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(a.metadata.authoritative);
    }
    assert_eq!(*asked.lock().unwrap(), 0);
}

#[tokio::test]
async fn names_follow_creates_and_deletes() {
    let table = Table::with(&[]);
    let r = responder(table.clone(), vec![]);
    assert_eq!(
        ask(&r, "new.vm.", RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
    table
        .0
        .lock()
        .unwrap()
        .insert("new".into(), Ipv4Addr::new(172, 30, 0, 9));
    assert_eq!(
        rdata(&ask(&r, "new.vm.", RecordType::A).await),
        ["172.30.0.9"]
    );
    assert_eq!(
        rdata(&ask(&r, "9.0.30.172.in-addr.arpa.", RecordType::PTR).await),
        ["new.vm."]
    );
    table.0.lock().unwrap().remove("new");
    assert_eq!(
        ask(&r, "new.vm.", RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(&r, "9.0.30.172.in-addr.arpa.", RecordType::PTR)
            .await
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
}

#[tokio::test]
async fn reverse_names_of_the_subnet_are_answered_here_and_others_forwarded() {
    let (upstream, asked) = fake_upstream(Behaviour::Answer).await;
    let r = responder(Table::with(&[("dev", [172, 30, 0, 2])]), vec![upstream]);
    let ptr = ask(&r, "2.0.30.172.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rdata(&ptr), ["dev.vm."]);
    assert!(ptr.metadata.authoritative);
    let a = ask(&r, "2.0.30.172.in-addr.arpa.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.answers.is_empty());
    let free = ask(&r, "77.0.30.172.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(free.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(*asked.lock().unwrap(), 0);

    let outside = ask(&r, "1.2.0.192.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::NoError);
    assert_eq!(*asked.lock().unwrap(), 1);
}

#[tokio::test]
async fn other_names_go_to_the_first_upstream_that_answers() {
    // The first upstream is a closed port: refused at once, the next one is asked.
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let (upstream, asked) = fake_upstream(Behaviour::Answer).await;
    let r = responder(Table::with(&[]), vec![closed, upstream]);
    let a = ask(&r, "example.test.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(!a.metadata.authoritative);
    assert!(a.metadata.recursion_available);
    assert_eq!(rdata(&a), ["192.0.2.7"]);
    assert_eq!(*asked.lock().unwrap(), 1);

    // An upstream's NXDOMAIN is passed on as it is.
    let nx = ask(&r, "missing.test.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn no_upstream_is_refused_and_silent_ones_are_a_server_failure() {
    let r = responder(Table::with(&[]), vec![]);
    let a = ask(&r, "example.test.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::Refused);

    let (silent, asked) = fake_upstream(Behaviour::Silent).await;
    let r = responder(Table::with(&[]), vec![silent]);
    let a = ask(&r, "example.test.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(*asked.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_truncated_upstream_answer_is_fetched_again_over_tcp() {
    let (upstream, asked) = fake_upstream(Behaviour::TruncatedOverUdp).await;
    let r = responder(Table::with(&[]), vec![upstream]);
    let a = ask(&r, "big.test.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(!a.metadata.truncation);
    assert_eq!(rdata(&a), ["192.0.2.7"]);
    assert_eq!(*asked.lock().unwrap(), 2, "once over UDP, once over TCP");
}

#[tokio::test]
async fn malformed_questions_are_refused_as_such() {
    let r = responder(Table::with(&[("dev", [172, 30, 0, 2])]), vec![]);
    let mut two = question("dev.vm.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("x.vm.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        r.respond(&two).await.metadata.response_code,
        ResponseCode::FormErr
    );
    let mut none = question("dev.vm.", RecordType::A);
    none.queries.clear();
    assert_eq!(
        r.respond(&none).await.metadata.response_code,
        ResponseCode::FormErr
    );
    let mut update = question("dev.vm.", RecordType::A);
    update.metadata.op_code = OpCode::Update;
    assert_eq!(
        r.respond(&update).await.metadata.response_code,
        ResponseCode::NotImp
    );
}

#[test]
fn upstreams_are_resolv_confs_nameservers_less_the_bridge() {
    let text = "# generated\nsearch example.com\nnameserver 172.30.0.1\nnameserver 10.0.0.53\n\
                nameserver  127.0.0.53 \nnameserver 2001:db8::1\nnameserver fe80::1%eth0\n\
                nameserver 0.0.0.0\noptions edns0\nnameserver\n";
    assert_eq!(
        nameservers(text, HOST),
        [
            "10.0.0.53:53".parse::<SocketAddr>().unwrap(),
            "127.0.0.53:53".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
        ]
    );
    assert!(nameservers("", HOST).is_empty());
}

#[test]
fn a_domain_that_is_not_a_name_is_refused() {
    assert!(Zone::new("vm", HOST, 24).is_ok());
    assert!(Zone::new("dev.internal", HOST, 24).is_ok());
    assert!(Zone::new("a..b", HOST, 24).is_err());
}

/// What a fake upstream does with each question.
#[derive(Clone, Copy)]
enum Behaviour {
    /// `missing.*` does not exist; any other name is 192.0.2.7.
    Answer,
    /// Never answers.
    Silent,
    /// Answers over UDP with the truncation bit and no records, fully over TCP.
    TruncatedOverUdp,
}

fn upstream_reply(query: &Message, truncated: bool) -> Vec<u8> {
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.iter().cloned());
    let name = query.queries[0].name().clone();
    if truncated {
        reply.metadata.truncation = true;
    } else if name.to_ascii().starts_with("missing.") {
        reply.metadata.response_code = ResponseCode::NXDomain;
    } else {
        reply.add_answer(Record::from_rdata(
            name,
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
        ));
    }
    reply.to_vec().unwrap()
}

/// A resolver on loopback (UDP and TCP on one port) and how many questions it was asked.
async fn fake_upstream(behaviour: Behaviour) -> (SocketAddr, Arc<Mutex<usize>>) {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let asked = Arc::new(Mutex::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0; 4096];
        loop {
            let (n, from) = udp.recv_from(&mut buf).await.unwrap();
            *count.lock().unwrap() += 1;
            let query = Message::from_vec(&buf[..n]).unwrap();
            match behaviour {
                Behaviour::Silent => {}
                Behaviour::Answer => {
                    udp.send_to(&upstream_reply(&query, false), from)
                        .await
                        .unwrap();
                }
                Behaviour::TruncatedOverUdp => {
                    udp.send_to(&upstream_reply(&query, true), from)
                        .await
                        .unwrap();
                }
            }
        }
    });
    let count = asked.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tcp.accept().await.unwrap();
            *count.lock().unwrap() += 1;
            let len = stream.read_u16().await.unwrap();
            let mut buf = vec![0; usize::from(len)];
            stream.read_exact(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf).unwrap();
            let reply = upstream_reply(&query, false);
            let mut framed = u16::try_from(reply.len()).unwrap().to_be_bytes().to_vec();
            framed.extend(reply);
            stream.write_all(&framed).await.unwrap();
        }
    });
    (addr, asked)
}

/// The responder behind hickory-server's UDP and TCP listeners, asked over the wire.
#[tokio::test]
async fn served_over_udp_and_tcp() {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let mut server = hickory_server::Server::new(Handler(Arc::new(responder(
        Table::with(&[("dev", [172, 30, 0, 2])]),
        vec![],
    ))));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);

    let q = question("dev.vm.", RecordType::A);
    let bytes = q.to_vec().unwrap();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&bytes, addr).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .expect("an answer over UDP")
        .unwrap();
    let a = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(a.metadata.id, q.metadata.id);
    assert!(a.metadata.authoritative);
    assert_eq!(rdata(&a), ["172.30.0.2"]);

    let q = question("gone.vm.", RecordType::A);
    let bytes = q.to_vec().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend(bytes);
    stream.write_all(&framed).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .expect("an answer over TCP")
        .unwrap();
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    let a = Message::from_vec(&buf).unwrap();
    assert_eq!(a.metadata.id, q.metadata.id);
    assert_eq!(a.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown_gracefully().await.unwrap();
}

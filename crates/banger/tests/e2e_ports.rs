//! Published ports end to end, through real components only: one QEMU guest from the
//! bootstrapped Debian image (cached like `e2e_qemu.rs`'s) serves HTTP with BusyBox's `httpd`,
//! and a client on the loopback of the test's network namespace reaches it through the host
//! port bangerd forwards. Also: bad specs and taken ports refused with their messages and
//! nothing stored, a port added to and removed from the running VM, the forward coming back
//! after the daemon is killed (the next command's daemon adopts the VM and reopens it), and
//! the port free once the VM is deleted.
//!
//! The daemon and the guest live in a network namespace the test creates and removes; the
//! test's own sockets are made inside it ([`support::netns::Netns::enter`]). Needs root, QEMU
//! and debootstrap; prints `SKIP:` and passes without them.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::netns::E2e;

/// The host port of the service, in the namespace.
const HOST_PORT: u16 = 18080;
/// The port BusyBox's httpd listens on in the guest.
const GUEST_PORT: u16 = 8000;

/// `GET path` over HTTP/1.0 to `127.0.0.1:port` of the namespace: the status line and body.
fn http_get(t: &E2e, port: u16, path: &str) -> std::io::Result<(String, Vec<u8>)> {
    let mut stream = t.netns.enter(|| {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header in {answer:?}")))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, answer[split + 4..].to_vec()))
}

/// Whether something accepts connections on `127.0.0.1:port` of the namespace.
fn accepts(t: &E2e, port: u16) -> bool {
    t.netns.enter(|| {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(5),
        )
        .is_ok()
    })
}

/// The exact bytes `banger vm exec VM -- ARGS` writes to stdout.
fn exec_bytes(t: &E2e, vm: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new("ip")
        .args(["netns", "exec", &t.netns.0, env!("CARGO_BIN_EXE_banger")])
        .args(["vm", "exec", vm, "--"])
        .args(args)
        .envs(t.sandbox.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_published_port_carries_tcp_to_the_guest_across_a_daemon_restart() {
    let Some(t) = E2e::with_debian_image(&[
        ("debootstrap", "--version"),
        ("qemu-system-x86_64", "--version"),
    ]) else {
        return;
    };
    let started = Instant::now();

    // Bad specs are refused by the CLI with what was wrong, exit 3, nothing asked of bangerd.
    let (code, _, err) = t.banger(&[
        "vm",
        "create",
        "--name",
        "web",
        "--publish",
        "18080:8000/udp",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("banger forwards TCP ports only, not UDP"),
        "{err}"
    );
    let (code, _, err) = t.banger(&["vm", "create", "--name", "web", "-p", "0:8000"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("host port must be from 1 to 65535 (got 0)"),
        "{err}"
    );

    // A host port another VM publishes (that VM is never started: no guest) is refused by
    // bangerd naming it; one a program holds is refused naming the port.
    t.ok(&[
        "vm",
        "create",
        "--name",
        "holder",
        "--no-start",
        "-p",
        "18082:80",
    ]);
    let (code, _, err) = t.banger(&["vm", "create", "--name", "web", "-p", "18082:80"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("host port 18082 is already published by VM \"holder\""),
        "{err}"
    );
    assert!(err.contains("banger vm port rm holder 18082"), "{err}");
    let held = t
        .netns
        .enter(|| TcpListener::bind("127.0.0.1:18083"))
        .unwrap();
    let (code, _, err) = t.banger(&["vm", "create", "--name", "web", "-p", "18083:80"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("host port 18083 (127.0.0.1:18083) is already in use on this host"),
        "{err}"
    );
    let names: Vec<String> = t
        .json(&["vm", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["holder"], "a refused create stores nothing");
    t.ok(&["vm", "delete", "holder"]);

    // The VM, with the port published at create; a service in the guest.
    let publish = format!("{HOST_PORT}:{GUEST_PORT}");
    t.ok(&["vm", "create", "--name", "web", "--publish", &publish]);
    let vm = t.vm("web");
    assert_eq!(
        vm["published_ports"],
        serde_json::json!([{"address": "127.0.0.1", "host_port": HOST_PORT, "guest_port": GUEST_PORT}])
    );
    assert!(
        t.ok(&["vm", "show", "web"])
            .contains("published: http://127.0.0.1:18080 -> guest port 8000"),
    );
    let guest_ip = vm["network"]["ip"].as_str().unwrap().to_owned();
    t.ok(&[
        "vm",
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "mkdir -p /root/www && echo 'hello through banger' > /root/www/hello.txt && \
         head -c 1048576 /dev/urandom > /root/www/blob && \
         setsid busybox httpd -p 8000 -h /root/www </dev/null >/dev/null 2>&1",
    ]);
    let blob = exec_bytes(&t, "web", &["cat", "/root/www/blob"]);
    assert_eq!(blob.len(), 1 << 20);

    // A real exchange from the namespace's loopback to the guest's service.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, body) = loop {
        match http_get(&t, HOST_PORT, "/hello.txt") {
            Ok(answer) => break answer,
            Err(e) if Instant::now() < deadline => {
                println!("waiting for httpd through the forward: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("no answer through 127.0.0.1:{HOST_PORT} within 60 s: {e}"),
        }
    };
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, b"hello through banger\n");
    let (status, body) = http_get(&t, HOST_PORT, "/blob").unwrap();
    assert!(status.contains(" 200 "), "{status}");
    assert!(body == blob, "1 MiB came through changed");

    // Added to the running VM: refused while a program holds the port, open at once after.
    let (code, _, err) = t.banger(&["vm", "port", "add", "web", "18083:8000"]);
    assert_ne!(code, 0);
    assert!(err.contains("host port 18083"), "{err}");
    drop(held);
    let added = t.ok(&["vm", "port", "add", "web", "18083:8000"]);
    assert!(
        added.contains("Published 127.0.0.1:18083 to port 8000 of VM web."),
        "{added}"
    );
    let (status, _) = http_get(&t, 18083, "/hello.txt").unwrap();
    assert!(status.contains(" 200 "), "{status}");
    let list = t.ok(&["vm", "port", "list", "web"]);
    assert!(list.contains("http://127.0.0.1:18083"), "{list}");
    t.ok(&["vm", "port", "rm", "web", "18083"]);
    assert!(!accepts(&t, 18083), "a removed port still listens");
    let (code, _, err) = t.banger(&["vm", "port", "rm", "web", "18083"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not publish host port 18083"), "{err}");

    // kill -9 of the daemon closes its listeners with it; the next command's daemon adopts
    // the VM and reopens them.
    let daemon_pid = t.json(&["daemon", "status"])["pid"].as_u64().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon_pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    t.wait_for("the daemon to die", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{daemon_pid}")).exists()
    });
    assert!(!accepts(&t, HOST_PORT), "the forward outlived its daemon");
    assert_eq!(t.vm("web")["state"], "running", "adopted");
    let (status, body) = http_get(&t, HOST_PORT, "/hello.txt").unwrap();
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, b"hello through banger\n");

    // The same service straight at the guest's address answers too (what the forward joins).
    let direct = t.netns.enter(|| {
        TcpStream::connect_timeout(
            &SocketAddr::from((guest_ip.parse::<std::net::Ipv4Addr>().unwrap(), GUEST_PORT)),
            Duration::from_secs(10),
        )
    });
    assert!(direct.is_ok(), "{direct:?}");

    // Deleted: the port is free.
    t.ok(&["vm", "delete", "web"]);
    assert!(!accepts(&t, HOST_PORT));
    t.netns
        .enter(|| TcpListener::bind(("127.0.0.1", HOST_PORT)))
        .expect("the host port is free after delete");
    println!(
        "e2e_ports: {:.1}s after the image was ready",
        started.elapsed().as_secs_f64()
    );
}

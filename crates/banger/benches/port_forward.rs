//! What a published port costs: throughput and latency through bangerd's forward
//! (`127.0.0.1:HOSTPORT` → the guest's port) against a direct connection to the guest's
//! address, on the same guest and service (BusyBox's `httpd`). Throughput is an HTTP GET of
//! `BENCH_MIB` MiB (default 64) from the guest's page cache, counted byte for byte, best of
//! `BENCH_RUNS` (default 3); latency is the median and 90th percentile over 50 tries of a TCP
//! connect, and of a whole small request (connect, GET of a 3-byte file, answer read to its
//! end). Runs the CLI and its daemon inside a throw-away network namespace like the end-to-end
//! tests, with the bootstrapped Debian image (cached in `$BANGER_TEST_CACHE`, default
//! `/var/cache/banger-test`). Needs root, debootstrap and QEMU; prints `SKIP:` otherwise.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::netns::E2e;

const HOST_PORT: u16 = 18080;
const GUEST_PORT: u16 = 8000;
const TRIES: usize = 50;

/// GET `path` at `addr` (from inside the namespace); returns the bytes of the answer.
fn get(t: &E2e, addr: SocketAddr, path: &str) -> u64 {
    let mut stream = t
        .netns
        .enter(|| TcpStream::connect_timeout(&addr, Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").unwrap();
    std::io::copy(&mut stream, &mut std::io::sink()).unwrap()
}

fn connect(t: &E2e, addr: SocketAddr) -> Duration {
    t.netns.enter(|| {
        let started = Instant::now();
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        let took = started.elapsed();
        drop(stream);
        took
    })
}

fn request(t: &E2e, addr: SocketAddr) -> Duration {
    t.netns.enter(|| {
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        stream
            .write_all(b"GET /hi HTTP/1.0\r\nHost: bench\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        assert!(answer.ends_with(b"hi\n"), "{answer:?}");
        started.elapsed()
    })
}

/// (median, p90) of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.9))
}

fn main() {
    let Some(t) = E2e::with_debian_image(&[
        ("debootstrap", "--version"),
        ("qemu-system-x86_64", "--version"),
    ]) else {
        return;
    };
    let mib = banger_test_support::bench_setting("BENCH_MIB", 64);
    let runs = banger_test_support::bench_runs(3);
    let publish = format!("{HOST_PORT}:{GUEST_PORT}");
    t.ok(&["vm", "create", "--name", "bench", "--publish", &publish]);
    let guest: Ipv4Addr = t.vm("bench")["network"]["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    t.ok(&[
        "vm",
        "exec",
        "bench",
        "--",
        "sh",
        "-c",
        &format!(
            "mkdir -p /root/www && echo hi > /root/www/hi && \
             head -c {mib}M /dev/zero > /root/www/big && \
             setsid busybox httpd -p {GUEST_PORT} -h /root/www </dev/null >/dev/null 2>&1"
        ),
    ]);
    let forward = SocketAddr::from(([127, 0, 0, 1], HOST_PORT));
    let direct = SocketAddr::from((guest, GUEST_PORT));
    let deadline = Instant::now() + Duration::from_secs(60);
    while t
        .netns
        .enter(|| TcpStream::connect_timeout(&direct, Duration::from_secs(2)))
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "httpd did not start in the guest"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Warm the guest's page cache and both paths.
    get(&t, direct, "/big");
    get(&t, forward, "/big");

    let bytes = (mib as u64) << 20;
    println!(
        "port_forward: {mib} MiB GET from the guest, best of {runs}; latency over {TRIES} tries"
    );
    for (label, addr) in [("direct to guest", direct), ("published port", forward)] {
        let mut best = f64::MAX;
        for _ in 0..runs {
            let started = Instant::now();
            let got = get(&t, addr, "/big");
            let secs = started.elapsed().as_secs_f64();
            assert!(got >= bytes, "{label}: {got} bytes");
            best = best.min(secs);
        }
        let (connect_med, connect_p90) =
            percentiles((0..TRIES).map(|_| connect(&t, addr)).collect());
        let (req_med, req_p90) = percentiles((0..TRIES).map(|_| request(&t, addr)).collect());
        println!(
            "  {label:<16} {:>7.1} MB/s   connect {connect_med:.2} ms (p90 {connect_p90:.2})   \
             small request {req_med:.2} ms (p90 {req_p90:.2})",
            bytes as f64 / 1e6 / best
        );
    }
    t.ok(&["vm", "delete", "bench"]);
}

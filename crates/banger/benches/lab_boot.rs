//! Firecracker guests in the lab (docs/lab.md): `banger vm start` to the guest agent healthy,
//! stage by stage, next to the raw boot of the same kernel, initrd and disks with
//! `firecracker --no-api --config-file` until the same agent answers over the hybrid vsock, the
//! two alternating on one VM in one lab; and the first `banger vm create` of that VM. The raw
//! boot's configuration is the one Firecracker reports for banger's VM (`GET /vm/config`), with
//! its own tap and vsock socket, so both boot exactly the same machine. Everything is timed
//! inside the lab (`date +%s%N` around each command), so the lab's own `vm exec` round trip is
//! not counted; the tap the raw boot needs is made before its clock starts (banger's start
//! makes its tap inside its `network` stage).
//!
//! `BENCH_RUNS` sets the rounds (default 3). Needs root, QEMU, debootstrap and Firecracker, like
//! the lab test; prints `SKIP:` otherwise.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use support::lab::{self, Lab, median, stage_ms as stages, timed};

/// Reads one HTTP answer's body from a Unix socket (`GET PATH`), with perl's core modules: the
/// lab's image has no curl or socat.
const HTTP_GET: &str = r#"use IO::Socket::UNIX;
my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!";
print $s "GET $ARGV[1] HTTP/1.1\r\nHost: localhost\r\n\r\n";
my $len = 0;
while (defined(my $line = <$s>)) {
  last if $line eq "\r\n";
  $len = $1 if $line =~ /^Content-Length:\s*(\d+)/i;
}
read($s, my $body, $len);
print $body;"#;

/// Waits until the guest agent behind a hybrid-vsock socket answers `GET /v1/healthz` with 200
/// (what banger's `agent` stage waits for); exits 1 after 300 s. Each attempt has 3 s (a guest
/// that accepts nothing can leave Firecracker silent on a `CONNECT`), and attempts are 200 ms
/// apart, as banger's: every attempt is work for the booting guest, and polling every 20 ms
/// made the raw boot seconds slower under emulation.
const AGENT_WAIT: &str = r#"use IO::Socket::UNIX;
my ($sock, $token) = @ARGV;
my $deadline = time + 300;
$SIG{ALRM} = sub { die "timeout\n" };
while (time < $deadline) {
  my $answered = eval {
    alarm 3;
    my $ok = 0;
    if (my $s = IO::Socket::UNIX->new(Peer => $sock)) {
      print $s "CONNECT 1024\n";
      my $line = <$s>;
      if (defined $line && $line =~ /^OK/) {
        print $s "GET /v1/healthz HTTP/1.1\r\nHost: banger-agent\r\nAuthorization: Bearer $token\r\n\r\n";
        my $status = <$s>;
        $ok = defined $status && $status =~ m{^HTTP/1\.1 200};
      }
    }
    alarm 0;
    $ok;
  };
  exit 0 if $answered;
  select(undef, undef, undef, 0.2);
}
exit 1;"#;

/// Asks the guest agent behind a hybrid-vsock socket to power the guest off (`POST
/// /v1/shutdown`), as banger's stop does, so the next boot finds clean filesystems.
const AGENT_SHUTDOWN: &str = r#"use IO::Socket::UNIX;
my ($sock, $token) = @ARGV;
my $s = IO::Socket::UNIX->new(Peer => $sock) or die "connect: $!";
print $s "CONNECT 1024\n";
my $ok = <$s>;
print $s "POST /v1/shutdown HTTP/1.1\r\nHost: banger-agent\r\nAuthorization: Bearer $token\r\nContent-Length: 0\r\n\r\n";
my $status = <$s>;
exit(defined $status && $status =~ m{^HTTP/1\.1 2} ? 0 : 1);"#;

/// What the guest itself says of its boot in console log `path`: milliseconds from kernel start
/// to banger's `/init` switching to the real root, a figure neither host-side timing nor polling
/// can skew.
fn switch_root_ms(lab: &Lab<'_>, path: &str) -> f64 {
    let line = lab.sh_ok(&format!(
        "grep -o 'switching root ([0-9]* ms' {path} | tail -n 1"
    ));
    line.trim()
        .trim_start_matches("switching root (")
        .trim_end_matches(" ms")
        .parse()
        .unwrap_or_else(|_| panic!("no switch_root line in {path}: {line:?}"))
}

fn main() {
    let runs = banger_test_support::bench_runs(3);
    let Some(t) = lab::open_for_bench(&[]) else {
        return;
    };
    let lab = Lab { t: &t };
    lab.sh_ok(&format!(
        "cat > /root/http-get.pl <<'EOF'\n{HTTP_GET}\nEOF\ncat > /root/agent-wait.pl <<'EOF'\n{AGENT_WAIT}\nEOF\n\
         cat > /root/agent-shutdown.pl <<'EOF'\n{AGENT_SHUTDOWN}\nEOF"
    ));

    // The first create, then Firecracker's own account of the VM it runs.
    let create_ms = timed(&lab, "banger vm create --name fc");
    let vm = lab.vm("fc");
    let create_stages = stages(&vm);
    let id = vm["id"].as_str().unwrap().to_owned();
    let api = vm["runtime"]["api_socket"].as_str().unwrap().to_owned();
    let config = lab.sh_ok(&format!("perl /root/http-get.pl {api} /vm/config"));
    let mut config: Value =
        serde_json::from_str(&config).unwrap_or_else(|e| panic!("{e}: {config}"));
    lab.ok(&["vm", "stop", "fc"]);
    // The raw boot: the same machine on a tap and a vsock socket of its own, no logger.
    let object = config.as_object_mut().unwrap();
    object.remove("logger");
    object.remove("metrics");
    config["vsock"]["uds_path"] = "/root/raw.vsock".into();
    // Firecracker lists the drives in an order of its own; the guest finds them by position
    // (vda the image's root, then overlay, work and config drive), as banger attached them.
    let position = |d: &Value| {
        ["rootfs", "overlay", "work", "config"]
            .iter()
            .position(|id| d["drive_id"] == *id)
            .unwrap_or(usize::MAX)
    };
    config["drives"]
        .as_array_mut()
        .unwrap()
        .sort_by_key(|d| position(d));
    for iface in config["network-interfaces"].as_array_mut().unwrap() {
        iface["host_dev_name"] = "rawtap0".into();
    }
    let raw_json: PathBuf = t.sandbox.root().join("raw.json");
    std::fs::write(&raw_json, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    lab.t
        .banger(&["vm", "cp", raw_json.to_str().unwrap(), "lab:/root"]);
    let token = lab.sh_ok(&format!(
        "cat /root/.local/state/banger/vms/{id}/agent-token"
    ));
    let raw = format!(
        "firecracker --no-api --config-file /root/raw.json --id raw >/root/raw.console 2>&1 & \
         fc=$!; perl /root/agent-wait.pl /root/raw.vsock {token}; r=$?; echo $fc > /root/raw.pid; \
         exit $r",
        token = token.trim()
    );

    let console = format!("/root/.local/state/banger/vms/{id}/console.log");
    let (mut banger_switch, mut raw_switch) = (Vec::new(), Vec::new());
    let mut banger_to_agent = Vec::new();
    let mut banger_total = Vec::new();
    let mut raw_to_agent = Vec::new();
    let mut per_stage: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..runs {
        let total = timed(&lab, "banger vm start fc");
        let vm = lab.vm("fc");
        let stages = stages(&vm);
        let to_agent: f64 = stages
            .iter()
            .take_while(|(name, _)| name != "ssh")
            .map(|(_, ms)| ms)
            .sum();
        for (name, ms) in &stages {
            per_stage.entry(name.clone()).or_default().push(*ms);
        }
        banger_switch.push(switch_root_ms(&lab, &console));
        lab.ok(&["vm", "stop", "fc"]);

        lab.sh_ok("ip tuntap add rawtap0 mode tap && ip link set rawtap0 up");
        let raw_ms = timed(&lab, &raw);
        raw_switch.push(switch_root_ms(&lab, "/root/raw.console"));
        // A clean power-off (the guest syncs), as banger's stop gives its VM; SIGKILL only if
        // the guest does not go within 60 s.
        lab.sh_ok(&format!(
            "perl /root/agent-shutdown.pl /root/raw.vsock {token}; p=$(cat /root/raw.pid); i=0; \
             while [ -e /proc/$p ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done; \
             kill -9 $p 2>/dev/null; while [ -e /proc/$p ]; do sleep 0.05; done; \
             rm -f /root/raw.vsock /root/raw.pid; ip link del rawtap0",
            token = token.trim()
        ));
        println!(
            "round {}: banger vm start {total:.0} ms (agent {to_agent:.0} ms), raw firecracker to agent {raw_ms:.0} ms",
            round + 1
        );
        banger_total.push(total);
        banger_to_agent.push(to_agent);
        raw_to_agent.push(raw_ms);
    }
    lab.ok(&["vm", "delete", "fc"]);

    println!(
        "\nFirecracker in the lab (nested under QEMU TCG), {runs} alternating rounds, medians:"
    );
    println!("| | ms |\n|---|---|");
    println!(
        "| `vm create` (first boot), to ssh | {create_ms:.0} ({}) |",
        create_stages
            .iter()
            .map(|(n, ms)| format!("{n} {ms:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, ms) in &per_stage {
        println!("| `vm start` stage `{name}` | {:.0} |", median(ms.clone()));
    }
    let (agent, raw) = (median(banger_to_agent), median(raw_to_agent));
    println!("| **`vm start` to agent healthy** | **{agent:.0}** |");
    println!(
        "| `vm start` to ssh (the command's wall time) | {:.0} |",
        median(banger_total)
    );
    println!("| **raw `firecracker --config-file` to agent healthy** | **{raw:.0}** |");
    println!(
        "| banger's share (start to agent minus raw) | {:.0} ({:.2}×) |",
        agent - raw,
        agent / raw
    );
    println!(
        "| the guest's own clock, kernel start to switch_root: banger / raw | {:.0} / {:.0} |",
        median(banger_switch),
        median(raw_switch)
    );
}

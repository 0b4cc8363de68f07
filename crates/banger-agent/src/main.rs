//! The `banger-agent` binary, started early in every banger guest. All the work is in the
//! library's [`banger_agent::guest`]; this parses the few flags, reads the token and runs the
//! server on a small tokio runtime.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use banger_agent::guest::{self, Config, Token, shutdown};
use banger_agent_protocol::protocol::{self, INIT_STAGES_FILE, TCP_PORT, TOKEN_FILE, VSOCK_PORT};

const USAGE: &str = "\
usage: banger-agent [--listen IP:PORT]... [--listen-vm-ip] [--vsock-port N | --no-vsock]
                    [--token-file PATH] [--shutdown-command PATH] [--boot-stages-file PATH]
                    [--heartbeat SECONDS]

banger's guest agent: HTTP/1.1 on vsock port 1024 and on each --listen address. Every request
must carry `Authorization: Bearer <token>` with the token from --token-file.

  --listen IP:PORT          also listen on TCP (the VM's private IP, e.g. 172.30.0.2:1024)
  --listen-vm-ip            also listen on TCP port 1024 of the address in /etc/banger/network
                            (the VM's private IP, as banger configured it); nothing when the
                            VM has no network file
  --vsock-port N            vsock port (default 1024)
  --no-vsock                do not listen on vsock
  --token-file PATH         the VM's token (default /etc/banger/agent-token, mode 0600)
  --shutdown-command PATH   run PATH on POST /v1/shutdown instead of powering off
  --boot-stages-file PATH   the boot milestones banger's /init recorded, shown first in
                            /v1/health (default /run/banger/boot-stages; absent is fine)
  --heartbeat SECONDS       how often a running exec's stream says the command is still
                            there when it prints nothing (default 5; 1 to 60)
";

/// Parsed command line.
#[derive(Debug, PartialEq)]
struct Args {
    listen: Vec<SocketAddr>,
    listen_vm_ip: bool,
    vsock_port: Option<u32>,
    token_file: PathBuf,
    shutdown_command: Option<PathBuf>,
    boot_stages_file: PathBuf,
    heartbeat: std::time::Duration,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        listen: Vec::new(),
        listen_vm_ip: false,
        vsock_port: Some(VSOCK_PORT),
        token_file: PathBuf::from(TOKEN_FILE),
        shutdown_command: None,
        boot_stages_file: PathBuf::from(INIT_STAGES_FILE),
        heartbeat: protocol::HEARTBEAT_EVERY,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs {what}"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value("an address, e.g. 172.30.0.2:1024")?;
                parsed.listen.push(
                    v.parse()
                        .map_err(|_| format!("--listen {v:?} is not IP:PORT"))?,
                );
            }
            "--vsock-port" => {
                let v = value("a port number")?;
                parsed.vsock_port = Some(
                    v.parse()
                        .map_err(|_| format!("--vsock-port {v:?} is not a port"))?,
                );
            }
            "--listen-vm-ip" => parsed.listen_vm_ip = true,
            "--no-vsock" => parsed.vsock_port = None,
            "--token-file" => parsed.token_file = value("a path")?.into(),
            "--shutdown-command" => parsed.shutdown_command = Some(value("a path")?.into()),
            "--boot-stages-file" => parsed.boot_stages_file = value("a path")?.into(),
            "--heartbeat" => {
                let v = value("seconds")?;
                parsed.heartbeat = v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=60).contains(s))
                    .map(std::time::Duration::from_secs)
                    .ok_or_else(|| {
                        format!("--heartbeat {v:?} is not a number of seconds from 1 to 60")
                    })?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

// The VM's network file, written by banger into the overlay disk and applied by its /init.
use banger_guest_contract::paths::NETWORK_FILE_ABS as NETWORK_FILE;

/// The IP of the `address=IP/PREFIX` line of the network file.
fn vm_address(text: &str) -> Option<IpAddr> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix("address="))
        .and_then(|value| value.split('/').next())
        .and_then(|ip| ip.trim().parse().ok())
}

fn main() -> ExitCode {
    let started_at = guest::stats::uptime("/proc".as_ref()).unwrap_or_default();
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("banger-agent: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut listen = args.listen;
    if args.listen_vm_ip {
        match std::fs::read_to_string(NETWORK_FILE) {
            Ok(text) => match vm_address(&text) {
                Some(ip) => listen.push(SocketAddr::new(ip, TCP_PORT)),
                None => {
                    eprintln!(
                        "banger-agent: {NETWORK_FILE} has no valid address= line; cannot --listen-vm-ip"
                    );
                    return ExitCode::FAILURE;
                }
            },
            Err(e) => {
                eprintln!("banger-agent: no TCP listener for --listen-vm-ip: {NETWORK_FILE}: {e}")
            }
        }
    }
    let token = match Token::from_file(&args.token_file) {
        Ok(token) => token,
        Err(e) => {
            eprintln!(
                "banger-agent: {e}\nbanger writes the token into the VM when it creates it; \
                 pass --token-file to read it from elsewhere"
            );
            return ExitCode::FAILURE;
        }
    };
    let shutdown = match args.shutdown_command {
        Some(program) => shutdown::Method::Custom(program),
        None => shutdown::Method::detect("/proc".as_ref(), "/".as_ref()),
    };
    let config = Config {
        token,
        tcp: listen,
        vsock_port: args.vsock_port,
        shutdown,
        proc_root: "/proc".into(),
        started_at,
        // Absent when the image brings its own initramfs: then health starts with the agent.
        boot_stages: std::fs::read_to_string(&args.boot_stages_file)
            .map(|text| guest::parse_boot_stages(&text))
            .unwrap_or_default(),
        heartbeat: args.heartbeat,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("banger-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(guest::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("banger-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let a = args(&[
            "--listen",
            "172.30.0.2:1024",
            "--listen=127.0.0.1:9",
            "--no-vsock",
            "--token-file",
            "/t",
        ])
        .unwrap();
        assert_eq!(a.listen.len(), 2);
        assert_eq!(a.vsock_port, None);
        assert_eq!(a.token_file, PathBuf::from("/t"));

        let d = args(&[]).unwrap();
        assert_eq!(d.vsock_port, Some(1024));
        assert_eq!(d.token_file, PathBuf::from("/etc/banger/agent-token"));

        assert_eq!(
            args(&["--listen", "nope"]).unwrap_err(),
            "--listen \"nope\" is not IP:PORT"
        );
        assert_eq!(
            args(&["--listen"]).unwrap_err(),
            "--listen needs an address, e.g. 172.30.0.2:1024"
        );
        assert_eq!(
            args(&["--bogus"]).unwrap_err(),
            "unknown argument \"--bogus\""
        );
        assert_eq!(args(&["--help"]).unwrap_err(), "");
        assert!(args(&["--listen-vm-ip"]).unwrap().listen_vm_ip);
    }

    #[test]
    fn the_vm_address_comes_from_the_network_file() {
        let text = "# Written by banger\naddress=172.30.0.5/24\ngateway=172.30.0.1\n";
        assert_eq!(vm_address(text), Some("172.30.0.5".parse().unwrap()));
        assert_eq!(vm_address("gateway=172.30.0.1\n"), None);
        assert_eq!(vm_address("address=nonsense/24\n"), None);
    }
}

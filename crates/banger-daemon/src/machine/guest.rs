//! Reaching a running VM's guest: the agent (over Firecracker's hybrid vsock when the VM has
//! it, over TCP to the VM's private address otherwise, always with the VM's token) and the
//! readiness checks a start waits for: the agent healthy, then each service the image declares
//! accepting connections.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use banger_agent::client::{AgentClient, Connect};
use banger_api::{ApiError, ErrorCode, ServiceCheck, Vm};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::disks;
use crate::Daemon;

pub use banger_image::bootstrap::guest::AGENT_SERVICE;

/// How the host reaches a guest's agent.
#[derive(Debug, Clone)]
pub enum GuestLink {
    Tcp(SocketAddr),
    /// Firecracker's vsock socket: `CONNECT <port>` through it.
    HybridVsock(PathBuf),
}

/// Either kind of connection.
pub enum GuestStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for GuestStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GuestStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            GuestStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            GuestStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            GuestStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GuestStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            GuestStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GuestStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            GuestStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Connect for GuestLink {
    type Stream = GuestStream;

    async fn connect(&self) -> io::Result<GuestStream> {
        match self {
            GuestLink::Tcp(addr) => TcpStream::connect(addr).await.map(GuestStream::Tcp),
            GuestLink::HybridVsock(socket) => banger_vmm::firecracker::hybrid_vsock::connect(
                socket,
                banger_agent::protocol::VSOCK_PORT,
            )
            .await
            .map(GuestStream::Unix)
            .map_err(io::Error::other),
        }
    }

    fn describe(&self) -> String {
        match self {
            GuestLink::Tcp(addr) => format!("tcp {addr}"),
            GuestLink::HybridVsock(socket) => format!("vsock through {}", socket.display()),
        }
    }
}

fn vm_ip(vm: &Vm) -> Result<Ipv4Addr, ApiError> {
    vm.network
        .ip
        .parse()
        .map_err(|_| ApiError::internal(format!("VM {} has an invalid IP", vm.name)))
}

/// A client of `vm`'s agent. The VM must be running.
pub fn agent(d: &Daemon, vm: &Vm) -> Result<AgentClient<GuestLink>, ApiError> {
    let Some(runtime) = &vm.runtime else {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "VM {:?} is {}; its guest agent answers only while it runs",
                vm.name, vm.state
            ),
        )
        .with_hint(format!("start it with `banger vm start {}`", vm.name)));
    };
    if vm.state == banger_api::VmState::Paused {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("VM {:?} is paused; its guest agent cannot answer", vm.name),
        )
        .with_hint(format!("resume it with `banger vm resume {}`", vm.name)));
    }
    let token_file = d.paths.vm_dir(&vm.id).join(disks::AGENT_TOKEN);
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", token_file.display())))?;
    let link = match &runtime.vsock_socket {
        Some(socket) if runtime.vmm == banger_api::VmmKind::Firecracker => {
            GuestLink::HybridVsock(socket.into())
        }
        _ => GuestLink::Tcp(SocketAddr::new(
            vm_ip(vm)?.into(),
            banger_agent::protocol::TCP_PORT,
        )),
    };
    Ok(AgentClient::new(link, token.trim().to_owned()))
}

/// What the last attempt of a check saw, for the diagnosis.
pub type Attempt = Result<(), String>;

/// One attempt at `check` against `vm`, bounded by `timeout`.
pub async fn probe(
    agent: &AgentClient<GuestLink>,
    vm_ip: Ipv4Addr,
    check: &ServiceCheck,
    timeout: Duration,
) -> Attempt {
    let attempt = async {
        if check.name == AGENT_SERVICE {
            let health = agent.health().await.map_err(|e| e.to_string())?;
            return if health.ready {
                Ok(())
            } else {
                Err("the agent answers but says it is not ready".to_owned())
            };
        }
        let mut stream = TcpStream::connect((vm_ip, check.port))
            .await
            .map_err(|e| format!("{}:{}: {e}", vm_ip, check.port))?;
        if check.port == 22 {
            // An sshd that accepts but cannot serve (no host key) closes without a banner.
            let mut banner = [0u8; 4];
            stream
                .read_exact(&mut banner)
                .await
                .map_err(|e| format!("{}:22 accepted but sent no SSH banner: {e}", vm_ip))?;
            if &banner != b"SSH-" {
                return Err(format!("{vm_ip}:22 answered something other than SSH"));
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Waits until every check passes, in order, reporting each as a stage; gives up at
/// `deadline`, or as soon as `alive` says the VMM is gone. Returns each check's duration.
pub fn wait_ready(
    d: &Daemon,
    vm: &Vm,
    checks: &[ServiceCheck],
    deadline: Instant,
    mut begin: impl FnMut(&str),
    mut cancelled: impl FnMut() -> bool,
    mut alive: impl FnMut() -> bool,
) -> Result<Vec<(String, Duration)>, ReadyError> {
    let agent = agent(d, vm).map_err(ReadyError::Setup)?;
    let ip = vm_ip(vm).map_err(ReadyError::Setup)?;
    let mut took = Vec::new();
    for check in checks {
        begin(&check.name);
        let started = Instant::now();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt =
                d.machines
                    .block_on(probe(&agent, ip, check, left.min(Duration::from_secs(3))));
            match attempt {
                Ok(()) => break,
                Err(seen) => {
                    if cancelled() {
                        return Err(ReadyError::Cancelled);
                    }
                    if !alive() {
                        return Err(ReadyError::Died {
                            check: check.clone(),
                            seen,
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(ReadyError::Timeout {
                            check: check.clone(),
                            seen,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        took.push((check.name.clone(), started.elapsed()));
    }
    Ok(took)
}

/// Why a VM did not become ready.
#[derive(Debug)]
pub enum ReadyError {
    Setup(ApiError),
    Cancelled,
    /// The VMM exited while banger waited.
    Died {
        check: ServiceCheck,
        seen: String,
    },
    Timeout {
        check: ServiceCheck,
        seen: String,
    },
}

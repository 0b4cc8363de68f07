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

use banger_agent_protocol::client::{AgentClient, Connect};
use banger_api::{ApiError, ErrorCode, ServiceCheck, Vm};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::disks;
use crate::Daemon;

use banger_image::bootstrap::guest::service_log;
pub use banger_image::bootstrap::guest::{AGENT_SERVICE, SSH_SERVICE};

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
                banger_agent_protocol::protocol::VSOCK_PORT,
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
            banger_agent_protocol::protocol::TCP_PORT,
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
        if let Some(path) = &check.http {
            // Any status line will do: the server reads requests and answers them.
            use tokio::io::AsyncWriteExt;
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: {vm_ip}:{}\r\nUser-Agent: bangerd\r\n\r\n",
                check.port
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("{vm_ip}:{}: {e}", check.port))?;
            let mut status = [0u8; 5];
            stream.read_exact(&mut status).await.map_err(|e| {
                format!(
                    "{vm_ip}:{} accepted but did not answer GET {path}: {e}",
                    check.port
                )
            })?;
            if &status != b"HTTP/" {
                return Err(format!(
                    "{vm_ip}:{} answered GET {path} with something other than HTTP",
                    check.port
                ));
            }
            return Ok(());
        }
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

/// How long a start waits for `check`, from the start of the wait: the configured
/// `ready_timeout`, or the service's own deadline when that is longer. The agent and sshd
/// always have the configured one.
pub fn check_timeout(check: &ServiceCheck, ready_timeout: Duration) -> Duration {
    if check.name == AGENT_SERVICE || check.name == SSH_SERVICE {
        return ready_timeout;
    }
    check.timeout_secs.map_or(ready_timeout, |secs| {
        ready_timeout.max(Duration::from_secs(secs))
    })
}

/// Waits until every check passes, in order, reporting each as a stage; gives up on a check
/// [`check_timeout`] after `started`, or as soon as `alive` says the VMM is gone. Returns
/// each check's duration.
#[allow(clippy::too_many_arguments)]
pub fn wait_ready(
    d: &Daemon,
    vm: &Vm,
    checks: &[ServiceCheck],
    started: Instant,
    ready_timeout: Duration,
    mut begin: impl FnMut(&str),
    mut cancelled: impl FnMut() -> bool,
    mut alive: impl FnMut() -> bool,
) -> Result<Vec<(String, Duration)>, ReadyError> {
    let agent = agent(d, vm).map_err(ReadyError::Setup)?;
    let ip = vm_ip(vm).map_err(ReadyError::Setup)?;
    let mut took = Vec::new();
    for check in checks {
        begin(&check.name);
        let waited = check_timeout(check, ready_timeout);
        // A deadline past what `Instant` can hold is no deadline short of the VMM dying.
        let deadline = started
            .checked_add(waited)
            .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400));
        let check_started = Instant::now();
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
                            waited,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        took.push((check.name.clone(), check_started.elapsed()));
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
    /// `check` did not answer within `waited` of the start of the wait.
    Timeout {
        check: ServiceCheck,
        seen: String,
        waited: Duration,
    },
}

/// How long banger waits for the guest agent to show a service's log in a diagnosis.
const SERVICE_LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// How many of a service's last log lines a diagnosis shows.
pub const SERVICE_LOG_LINES: usize = 15;

/// The last lines of declared service `name`'s log (`/var/log/banger/NAME.log`), read
/// through the guest agent with `tail`, for the diagnosis of a service that did not answer;
/// or why they cannot be shown.
pub async fn service_log_tail(
    agent: &AgentClient<GuestLink>,
    name: &str,
) -> Result<Vec<String>, String> {
    let log = format!("/{}", service_log(name));
    let request = banger_agent_protocol::protocol::ExecRequest::new([
        "tail".to_owned(),
        "-n".to_owned(),
        SERVICE_LOG_LINES.to_string(),
        log.clone(),
    ]);
    let output = tokio::time::timeout(SERVICE_LOG_TIMEOUT, agent.exec_output(&request, None))
        .await
        .map_err(|_| {
            format!(
                "the guest agent did not show {log} within {}",
                humantime::format_duration(SERVICE_LOG_TIMEOUT)
            )
        })?
        .map_err(|e| format!("the guest agent cannot be reached to show {log}: {e}"))?;
    if output.status.code != Some(0) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("cannot read {log}: {}", stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, port: u16, timeout_secs: Option<u64>) -> ServiceCheck {
        ServiceCheck {
            name: name.into(),
            port,
            timeout_secs,
            http: None,
        }
    }

    /// A server that accepts connections but answers nothing is not ready when the service
    /// declares an HTTP path; once it answers, it is. A TCP check takes the accept alone.
    #[tokio::test]
    async fn an_http_service_is_ready_only_once_it_answers() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let serving = answer.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                if serving.load(std::sync::atomic::Ordering::SeqCst) {
                    let mut buf = [0u8; 512];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n").await;
                } else {
                    held.push(conn);
                }
            }
        });
        // Never used: the checks below are not the agent's.
        let agent = AgentClient::new(GuestLink::Tcp("127.0.0.1:9".parse().unwrap()), "t");
        let ip = Ipv4Addr::LOCALHOST;
        let tcp = check("web", port, None);
        let http = ServiceCheck {
            http: Some("/health".into()),
            ..tcp.clone()
        };
        let short = Duration::from_millis(500);
        assert_eq!(probe(&agent, ip, &tcp, short).await, Ok(()));
        let silent = probe(&agent, ip, &http, short).await.unwrap_err();
        assert!(silent.contains("no answer within"), "{silent}");
        answer.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(probe(&agent, ip, &http, short).await, Ok(()));
    }

    #[test]
    fn a_service_waits_for_the_longer_of_its_deadline_and_the_configured_one() {
        let configured = Duration::from_secs(120);
        assert_eq!(
            check_timeout(&check("web", 80, None), configured),
            configured
        );
        assert_eq!(
            check_timeout(&check("web", 80, Some(300)), configured),
            Duration::from_secs(300)
        );
        // A shorter deadline does not shorten the configured one.
        assert_eq!(
            check_timeout(&check("web", 80, Some(5)), configured),
            configured
        );
        // The agent and sshd keep the configured deadline whatever a manifest says.
        assert_eq!(
            check_timeout(&check(AGENT_SERVICE, 1024, Some(600)), configured),
            configured
        );
        assert_eq!(
            check_timeout(&check(SSH_SERVICE, 22, Some(600)), configured),
            configured
        );
    }

    #[tokio::test]
    async fn a_service_log_without_an_agent_says_the_agent_cannot_be_reached() {
        // A port nothing listens on: bound, then closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let agent = AgentClient::new(GuestLink::Tcp(addr), "token")
            .with_timeouts(Duration::from_secs(1), Duration::from_secs(1));
        let err = service_log_tail(&agent, "web").await.unwrap_err();
        assert!(
            err.starts_with("the guest agent cannot be reached to show /var/log/banger/web.log: "),
            "{err}"
        );
    }
}

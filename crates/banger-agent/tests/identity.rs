//! `POST /v1/identity` through the real client and the real server on loopback TCP, with the
//! guest's effects recorded instead of applied (the host's clock, hostname and network stay
//! untouched): what bangerd relies on when it hands a restored clone its own identity.

use std::sync::Arc;
use std::time::Duration;

use banger_agent::guest::identity::{Effects, Recorder};
use banger_agent::guest::{self, Config, Token};
use banger_agent_protocol::client::{AgentClient, AgentError, Tcp};
use banger_agent_protocol::protocol::{IdentityFile, IdentityRequest};
use base64::Engine as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const OLD: &str = "source-token-0123456789";
const NEW: &str = "clone-token-abcdefghij";

/// An agent on loopback, each connection served in-process; stopped when dropped.
struct Agent {
    addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Agent {
    async fn start(effects: Option<Arc<dyn Effects>>) -> Agent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config {
            token: Token::new(OLD),
            tcp: Vec::new(),
            vsock_port: None,
            shutdown: guest::shutdown::Method::Kernel,
            proc_root: "/proc".into(),
            started_at: Duration::ZERO,
            boot_stages: Vec::new(),
            heartbeat: banger_agent_protocol::protocol::HEARTBEAT_EVERY,
        };
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let config = config.clone();
                match &effects {
                    Some(effects) => {
                        connections.spawn(guest::serve_stream_with(
                            stream,
                            config,
                            effects.clone(),
                        ));
                    }
                    None => {
                        connections.spawn(guest::serve_stream(stream, config));
                    }
                }
            }
        });
        Agent { addr, task }
    }

    fn client(&self, token: &str) -> AgentClient<Tcp> {
        AgentClient::new(Tcp(self.addr), token)
    }
}

fn request() -> IdentityRequest {
    IdentityRequest {
        files: vec![
            IdentityFile::new("etc/hostname", 0o644, b"clone-1\n"),
            IdentityFile::new(
                "etc/banger/network",
                0o644,
                b"address=172.30.0.7/24\ngateway=172.30.0.1\nmac=52:54:00:00:00:07\n",
            ),
            IdentityFile::new("etc/ssh/ssh_host_ed25519_key", 0o600, b"PRIVATE\n"),
            IdentityFile::new("etc/banger/agent-token", 0o600, NEW.as_bytes()),
        ],
        time_unix_ms: 1_790_000_000_000,
        entropy: base64::engine::general_purpose::STANDARD.encode([9u8; 48]),
    }
}

fn status(result: Result<impl std::fmt::Debug, AgentError>) -> (u16, String, String) {
    match result {
        Err(AgentError::Api { status, body }) => (status, body.code, body.message),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

#[tokio::test]
async fn a_clone_takes_its_identity_and_only_the_new_token_works_afterwards() {
    let effects = Arc::new(Recorder::new().with_sshd(4242));
    let agent = Agent::start(Some(effects.clone())).await;

    let applied = agent.client(OLD).apply_identity(&request()).await.unwrap();
    assert_eq!(applied.hostname.as_deref(), Some("clone-1"));
    let network = applied.network.unwrap();
    assert_eq!(
        (network.interface.as_str(), network.mac.as_deref()),
        ("eth0", Some("52:54:00:00:00:07"))
    );
    assert_eq!(network.address.to_string(), "172.30.0.7");
    assert_eq!(applied.sshd_reloaded, Some(4242));
    assert!(applied.host_key_changed && applied.token_changed && !applied.vmgenid);
    assert_eq!(
        effects.log(),
        [
            "entropy 48 bytes",
            "clock 1790000000000",
            "write etc/hostname 644",
            "write etc/banger/network 644",
            "write etc/ssh/ssh_host_ed25519_key 600",
            "write etc/banger/agent-token 600",
            "hostname clone-1",
            "find nic",
            "mac eth0 52:54:00:00:00:07",
            "flush eth0",
            "address eth0 172.30.0.7/24 broadcast 172.30.0.255",
            "route eth0 via 172.30.0.1",
            "announce eth0 172.30.0.7 at 52:54:00:00:00:07",
            "sshd reload",
        ]
    );

    // The next request, on a new connection: the source's token is refused, the clone's works.
    let (code, name, _) = status(agent.client(OLD).health().await);
    assert_eq!((code, name.as_str()), (401, "unauthorized"));
    assert!(agent.client(NEW).health().await.unwrap().ready);
}

#[tokio::test]
async fn the_identity_endpoint_is_authenticated() {
    let effects = Arc::new(Recorder::new());
    let agent = Agent::start(Some(effects.clone())).await;
    let (code, name, _) = status(agent.client("wrong").apply_identity(&request()).await);
    assert_eq!((code, name.as_str()), (401, "unauthorized"));
    assert!(effects.log().is_empty());
}

#[tokio::test]
async fn a_bad_request_is_refused_before_anything_changes() {
    let effects = Arc::new(Recorder::new());
    let agent = Agent::start(Some(effects.clone())).await;
    let mut bad = request();
    bad.files
        .push(IdentityFile::new("etc/../../host-file", 0o644, b"x"));
    let (code, name, message) = status(agent.client(OLD).apply_identity(&bad).await);
    assert_eq!((code, name.as_str()), (400, "bad_identity"));
    assert!(message.contains("etc/../../host-file"), "{message}");
    assert!(effects.log().is_empty(), "{:?}", effects.log());
    assert!(
        agent.client(OLD).health().await.is_ok(),
        "the token is unchanged"
    );
}

#[tokio::test]
async fn a_failing_step_is_named_and_the_old_token_stays() {
    let effects = Arc::new(Recorder::new().fail_at("address"));
    let agent = Agent::start(Some(effects.clone())).await;
    let (code, name, message) = status(agent.client(OLD).apply_identity(&request()).await);
    assert_eq!((code, name.as_str()), (500, "identity_failed"));
    assert!(
        message.contains("step 5 (network): adding 172.30.0.7/24 to eth0"),
        "{message}"
    );
    assert_eq!(
        effects.log().last().map(String::as_str),
        Some("address eth0 172.30.0.7/24 broadcast 172.30.0.255")
    );
    assert!(agent.client(OLD).health().await.is_ok());
    let (code, _, _) = status(agent.client(NEW).health().await);
    assert_eq!(code, 401);
}

#[tokio::test]
async fn an_agent_served_without_effects_refuses_identity() {
    let agent = Agent::start(None).await;
    let (code, name, _) = status(agent.client(OLD).apply_identity(&request()).await);
    assert_eq!((code, name.as_str()), (501, "not_supported"));
    assert!(agent.client(OLD).health().await.is_ok());
}

#[tokio::test]
async fn malformed_bodies_are_refused_naming_the_problem() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let effects = Arc::new(Recorder::new());
    let agent = Agent::start(Some(effects.clone())).await;
    for (body, needle) in [
        ("{not json", "not valid JSON"),
        (
            r#"{"files":[],"time_unix_ms":1,"entropy":"","hostname":"x"}"#,
            "unknown field `hostname`",
        ),
    ] {
        let mut raw = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
        let head = format!(
            "POST /v1/identity HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OLD}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        raw.write_all(head.as_bytes()).await.unwrap();
        raw.write_all(body.as_bytes()).await.unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("bad_identity"), "{answer}");
        assert!(answer.contains(needle), "{answer}");
    }
    assert!(effects.log().is_empty());
}

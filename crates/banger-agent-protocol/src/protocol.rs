//! The agent's wire types, shared by the guest side and the host client. Every endpoint lives
//! under `/v1`; JSON bodies except exec (framed, see [`crate::frame`]) and file copies (tar).
//! Input the agent receives is parsed with `deny_unknown_fields`, so a client written against
//! a newer protocol gets a clear 400 instead of silently ignored options.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// The guest vsock port the agent listens on.
pub const VSOCK_PORT: u32 = 1024;

/// The TCP port the agent listens on at the VM's private IP (`--listen-vm-ip`).
pub const TCP_PORT: u16 = 1024;

/// Where the VM's token sits in the guest: banger writes it into the overlay disk (or config
/// drive) when the VM is created.
pub use banger_guest_contract::paths::AGENT_TOKEN_FILE_ABS as TOKEN_FILE;

/// Where banger's guest `/init` leaves its boot milestones: one
/// `name milliseconds-since-kernel-start` line each. The health answer starts with them.
pub use banger_guest_contract::paths::BOOT_STAGES_FILE as INIT_STAGES_FILE;

/// Header carrying the bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// The exec answer's header by which an agent says it sends an alive frame (`0x15`) at least
/// every so many seconds while the command runs: a client can then tell a command that is
/// quiet from a guest that stopped answering. Agents of older images do not send it, and
/// their streams are not held to a silence limit.
pub const HEARTBEAT_HEADER: &str = "banger-heartbeat";

/// How often the agent sends its alive frame during an exec.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The error body of every 4xx/5xx answer, the same shape as bangerd's API errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unauthorized`, `not_found`, `unsafe_archive`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `GET /v1/healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Health {
    pub ready: bool,
    /// The agent's version (the banger workspace version it was built from).
    pub version: String,
    pub hostname: String,
    /// Time since the guest kernel started, from `/proc/uptime`.
    pub uptime_ms: u64,
    /// Boot milestones as the guest saw them, in order, each measured from kernel start.
    pub boot: Vec<BootStage>,
    /// Where the agent listens, e.g. `vsock:1024`, `tcp:172.30.0.2:1024`.
    pub listeners: Vec<String>,
}

/// One boot milestone: `at_ms` after the kernel started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct BootStage {
    pub name: String,
    pub at_ms: u64,
}

/// The start frame of `POST /v1/exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Added to (or replacing entries of) the agent's environment: `PATH`, `HOME=/root`,
    /// `LANG=C.UTF-8`, plus `TERM` for a TTY.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory; when absent, the user's home directory if it exists (`/root`, the
    /// VM's work disk, for root), else `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Run as this user (a name or a numeric uid from the guest's `/etc/passwd`), with its
    /// primary group, supplementary groups, `HOME`, `USER`, `LOGNAME` and `SHELL`; root when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether standard input comes from stdin frames; otherwise it is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Run on a pseudo-terminal of this size: output arrives as stdout frames only, and the
    /// command is a session leader with the terminal as its controlling terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
}

impl ExecRequest {
    /// A request running `argv` with the defaults.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            ..ExecRequest::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// How a command ended: exactly one of the two is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ExitStatus {
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// The exit code a shell would report: the code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// What a guest path is, as `GET /v1/stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Nothing is there (or a component on the way is not a directory).
    Missing,
    File,
    Directory,
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// `GET /v1/stat?path=P`: what `P` is, without following a final symlink, and what a
/// symlink leads to. `vm cp` decides where a copy lands from this (docker cp's rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PathStat {
    pub kind: PathKind,
    /// For a symlink: the kind of what it points at (`missing` when it dangles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathKind>,
    /// Permission bits (`0o7777` of `st_mode`); 0 when missing.
    #[serde(default)]
    pub mode: u32,
}

impl PathStat {
    /// The kind with a symlink followed: what writing to the path would meet.
    pub fn followed(&self) -> PathKind {
        match (self.kind, self.target) {
            (PathKind::Symlink, Some(target)) => target,
            (kind, _) => kind,
        }
    }
}

/// `GET /v1/files?path=P&name=N`: the archive's top entry is called `N` instead of `P`'s own
/// name; `N` = `.` sends a directory's contents without the directory itself.
pub const NAME_PARAM: &str = "name";
/// `PUT /v1/files?path=DIR&owners=archive`: keep the uids and gids recorded in the archive
/// (`vm cp -a`); by default extracted files belong to root, the agent's user.
pub const OWNERS_PARAM: &str = "owners";

/// `PUT /v1/files?path=DIR`: what was extracted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CopyInSummary {
    pub entries: u64,
    pub bytes: u64,
}

/// Transport protocol of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

/// `GET /v1/ports`: one listening TCP socket or bound, unconnected UDP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ListeningPort {
    pub protocol: Transport,
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub address: IpAddr,
    pub port: u16,
    /// The socket's inode, which ties it to the processes holding it.
    pub inode: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The owning process's name (`/proc/<pid>/comm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Stats {
    pub uptime_ms: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    pub cpus: u32,
    pub memory: Memory,
    /// `/` and `/root` (the work disk), when they can be read.
    pub disks: Vec<DiskUsage>,
}

/// From `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub free_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

/// Use of one mounted filesystem, in bytes (`statvfs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DiskUsage {
    pub path: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

/// `POST /v1/shutdown` (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownAccepted {
    /// How the agent asks the guest to end (a reboot, which ends the VMM), e.g.
    /// `systemd (SIGRTMIN+5 to PID 1)`.
    pub method: String,
}

/// `POST /v1/identity`: what a VM restored from another VM's memory snapshot (a clone) must
/// change to become itself. Right after the restore its guest still has the source's hostname,
/// address, MAC, SSH host key, agent token, wall clock and kernel RNG state; the host sends
/// this, authenticated with the source's token, before it reports the clone ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityRequest {
    /// The clone's own files (`banger_image::vmdisk::VmFiles::files`): written as given, then
    /// acted on — `etc/hostname`, `etc/banger/network`, `etc/ssh/ssh_host_*_key`,
    /// `etc/banger/agent-token`.
    pub files: Vec<IdentityFile>,
    /// The host's wall clock, milliseconds since the Unix epoch: a restored guest's clock is
    /// the snapshot's.
    pub time_unix_ms: u64,
    /// Base64 of at least [`IDENTITY_MIN_ENTROPY`] random bytes from the host, mixed into the
    /// guest kernel's RNG before it is forced to reseed.
    pub entropy: String,
}

/// The fewest random bytes an [`IdentityRequest`] carries.
pub const IDENTITY_MIN_ENTROPY: usize = 32;

/// One file of an [`IdentityRequest`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    /// Relative to the guest's root, plain components only, e.g. `etc/hostname`.
    pub path: String,
    /// Permission bits (at most `0o7777`).
    pub mode: u32,
    /// Base64 (standard alphabet, padded) of the contents.
    pub data: String,
}

/// Private keys and tokens travel in `data`: keep them out of logs.
impl std::fmt::Debug for IdentityFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("data", &format_args!("({} base64 chars)", self.data.len()))
            .finish()
    }
}

impl IdentityFile {
    /// A file with `contents`, encoded.
    pub fn new(path: impl Into<String>, mode: u32, contents: &[u8]) -> Self {
        use base64::Engine as _;
        IdentityFile {
            path: path.into(),
            mode,
            data: base64::engine::general_purpose::STANDARD.encode(contents),
        }
    }
}

/// The answer to `POST /v1/identity` (200): what the guest did, every step having succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityApplied {
    /// The files written, in the request's order.
    pub files: Vec<String>,
    /// The hostname set, when the request carried `etc/hostname`.
    pub hostname: Option<String>,
    /// The network applied, when the request carried `etc/banger/network`.
    pub network: Option<NetworkApplied>,
    /// Whether the request replaced an SSH host key (`etc/ssh/ssh_host_*_key`).
    pub host_key_changed: bool,
    /// The sshd that was sent SIGHUP to re-read its host keys; `None` when the host key did
    /// not change or sshd is not running (no `/run/sshd.pid`, or it names no sshd).
    pub sshd_reloaded: Option<u32>,
    /// Whether the agent's token changed: later requests must carry the new one.
    pub token_changed: bool,
    /// Whether the guest kernel has a VM generation ID device bound (the `vmgenid` driver),
    /// which reseeds its RNG by itself on a restore. The agent reseeds either way.
    pub vmgenid: bool,
}

/// What `POST /v1/identity` did to the VM's NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkApplied {
    /// The NIC, e.g. `eth0`.
    pub interface: String,
    /// The new MAC, when the network file has a `mac=` line.
    pub mac: Option<String>,
    /// The IPv4 addresses removed from the NIC before the new one was added.
    pub removed_addresses: u32,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Whether a gratuitous ARP announced the address at the new MAC (sent only with a new
    /// MAC; a failure to send is not an error, neighbours find out by themselves).
    pub announced: bool,
}

/// The query string `path=<percent-encoded path>` of the file endpoints.
pub fn path_query(path: &str) -> String {
    param("path", path)
}

/// What stays as it is in a query value: RFC 3986's unreserved characters and `/`, so that a
/// path reads as one in a request line and a log.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `key=value`, the value percent-encoded (UTF-8, upper-case hex).
pub fn param(key: &str, value: &str) -> String {
    format!(
        "{key}={}",
        percent_encoding::utf8_percent_encode(value, QUERY_VALUE)
    )
}

/// The `path` parameter of a query string, percent-decoded; `None` when absent or malformed.
pub fn query_path(query: Option<&str>) -> Option<String> {
    query_param(query, "path")
}

/// The `key` parameter of a query string, percent-decoded; `None` when absent or malformed.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    let value = query?.split('&').find_map(|pair| {
        pair.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
    })?;
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_survive_the_query_string() {
        for path in ["/root/my dir/ü&x=1%", "/", "/a+b"] {
            let query = path_query(path);
            assert!(!query[5..].contains(['&', ' ', '+']), "{query}");
            assert_eq!(query_path(Some(&query)).as_deref(), Some(path));
        }
        assert_eq!(query_path(Some("x=1&path=/tmp")).as_deref(), Some("/tmp"));
        assert_eq!(query_path(Some("path=%zz")), None);
        assert_eq!(query_path(Some("other=1")), None);
        assert_eq!(query_path(None), None);
    }

    #[test]
    fn a_path_with_spaces_and_unicode_is_escaped_byte_by_byte_and_keeps_its_slashes() {
        let path = "/root/Jürgen's notes/日記 2024.txt";
        let query = path_query(path);
        assert_eq!(
            query,
            "path=/root/J%C3%BCrgen%27s%20notes/%E6%97%A5%E8%A8%98%202024.txt"
        );
        assert_eq!(query_path(Some(&query)).as_deref(), Some(path));
        assert_eq!(param("cwd", "/a b/~x-y_z.q"), "cwd=/a%20b/~x-y_z.q");
    }

    #[test]
    fn exec_requests_refuse_unknown_fields() {
        let err =
            serde_json::from_str::<ExecRequest>(r#"{"argv":["ls"],"tyy":{"rows":1}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `tyy`"), "{err}");
        let ok: ExecRequest = serde_json::from_str(r#"{"argv":["ls","-l"]}"#).unwrap();
        assert_eq!(ok, ExecRequest::new(["ls", "-l"]));
    }

    /// The daemon and CLI read these names; renaming a field is a protocol change.
    #[test]
    fn wire_names() {
        let port = ListeningPort {
            protocol: Transport::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port: 22,
            inode: 7,
            pid: Some(40),
            process: Some("sshd".into()),
        };
        assert_eq!(
            serde_json::to_string(&port).unwrap(),
            r#"{"protocol":"tcp","address":"0.0.0.0","port":22,"inode":7,"pid":40,"process":"sshd"}"#
        );
        let mut request = ExecRequest::new(["sh"]);
        request.stdin = true;
        request.tty = Some(TtySize { rows: 24, cols: 80 });
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"argv":["sh"],"stdin":true,"tty":{"rows":24,"cols":80}}"#
        );
        let error = ErrorBody {
            code: "unauthorized".into(),
            message: "m".into(),
            hint: None,
        };
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"code":"unauthorized","message":"m"}"#
        );
    }

    /// bangerd sends and reads these names; renaming a field is a protocol change.
    #[test]
    fn identity_wire_names() {
        let request = IdentityRequest {
            files: vec![IdentityFile::new("etc/hostname", 0o644, b"vm\n")],
            time_unix_ms: 5,
            entropy: "AAAA".into(),
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"files":[{"path":"etc/hostname","mode":420,"data":"dm0K"}],"time_unix_ms":5,"entropy":"AAAA"}"#
        );
        assert!(
            !format!("{:?}", request.files[0]).contains("dm0K"),
            "contents stay out of logs"
        );
        let applied = IdentityApplied {
            files: vec!["etc/hostname".into()],
            hostname: Some("vm".into()),
            network: Some(NetworkApplied {
                interface: "eth0".into(),
                mac: None,
                removed_addresses: 1,
                address: Ipv4Addr::new(10, 0, 0, 2),
                prefix_len: 24,
                gateway: None,
                announced: false,
            }),
            host_key_changed: false,
            sshd_reloaded: None,
            token_changed: true,
            vmgenid: false,
        };
        assert_eq!(
            serde_json::to_string(&applied).unwrap(),
            r#"{"files":["etc/hostname"],"hostname":"vm","network":{"interface":"eth0","mac":null,"removed_addresses":1,"address":"10.0.0.2","prefix_len":24,"gateway":null,"announced":false},"host_key_changed":false,"sshd_reloaded":null,"token_changed":true,"vmgenid":false}"#
        );
    }

    #[test]
    fn shell_codes() {
        let exited = ExitStatus {
            code: Some(3),
            signal: None,
        };
        let killed = ExitStatus {
            code: None,
            signal: Some(9),
        };
        assert_eq!((exited.shell_code(), killed.shell_code()), (3, 137));
        assert!(!exited.success());
    }
}

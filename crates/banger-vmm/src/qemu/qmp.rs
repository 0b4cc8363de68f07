//! A small typed client of QMP, the QEMU Machine Protocol, over the VM's QMP Unix socket. One
//! connection per command: read the greeting, leave capabilities negotiation mode with
//! `qmp_capabilities`, send the command with an id, and read until the answer carrying that id,
//! skipping the asynchronous events (`STOP`, `RESUME`, `POWERDOWN`, ...) QEMU may send in
//! between. Every read and write has a deadline, so a hung QEMU costs a timeout, not a hang.
//!
//! QEMU serves one QMP client at a time on a socket; holding no connection between commands
//! means a daemon restart, a second banger process or a user's `socat` never finds it taken.
//!
//! The [`QmpTransport`] trait is what the backend talks to; [`UnixQmp`] is the real one and
//! `FakeQemu` (in `qemu::fake`, built for tests) answers like QEMU does.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::InstanceState;

/// How much of one QMP message banger reads before giving up on it: answers to the commands
/// banger sends are a few hundred bytes.
const MAX_MESSAGE: u64 = 1 << 20;

/// A QMP command: `{"execute": ..., "arguments": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QmpCommand {
    pub execute: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

impl QmpCommand {
    pub fn named(execute: &str) -> Self {
        QmpCommand {
            execute: execute.to_owned(),
            arguments: None,
        }
    }
}

/// A QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),

    #[error("{0}")]
    Io(#[source] io::Error),

    #[error("no answer within {0:?}")]
    Timeout(Duration),

    #[error("QEMU closed the connection")]
    Closed,

    /// QEMU refused the command; `class` and `desc` are its own words.
    #[error("QEMU answered {class}: {desc}")]
    Refused { class: String, desc: String },

    #[error("QEMU sent something banger cannot read: {0}")]
    Protocol(String),
}

/// One message from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The first message on a connection.
    Greeting { version: Value },
    /// Something happened (`STOP`, `RESUME`, `SHUTDOWN`, ...); not an answer to anything.
    Event { event: String },
    /// A command succeeded.
    Return { id: Option<Value>, value: Value },
    /// A command failed.
    Error {
        id: Option<Value>,
        class: String,
        desc: String,
    },
}

/// Reads one line QEMU sent.
pub fn parse_message(line: &str) -> Result<Message, QmpError> {
    let bad = |detail: String| QmpError::Protocol(detail);
    let value: Value =
        serde_json::from_str(line).map_err(|e| bad(format!("{e} in {:?}", line.trim())))?;
    let Value::Object(mut map) = value else {
        return Err(bad(format!("not a JSON object: {}", line.trim())));
    };
    let id = map.remove("id");
    if let Some(qmp) = map.remove("QMP") {
        return Ok(Message::Greeting {
            version: qmp.get("version").cloned().unwrap_or(Value::Null),
        });
    }
    if let Some(event) = map.remove("event") {
        return Ok(Message::Event {
            event: event.as_str().unwrap_or_default().to_owned(),
        });
    }
    if let Some(value) = map.remove("return") {
        return Ok(Message::Return { id, value });
    }
    if let Some(error) = map.remove("error") {
        let field = |name: &str| {
            error
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        return Ok(Message::Error {
            id,
            class: field("class"),
            desc: field("desc"),
        });
    }
    Err(bad(format!(
        "neither an answer nor an event: {}",
        line.trim()
    )))
}

/// One QMP conversation over a byte stream.
pub struct Session<R, W> {
    reader: R,
    writer: W,
    next_id: u64,
}

impl<R: BufRead, W: Write> Session<R, W> {
    /// Reads the greeting and negotiates capabilities (banger asks for none).
    pub fn open(reader: R, writer: W) -> Result<Self, QmpError> {
        let mut session = Session {
            reader,
            writer,
            next_id: 0,
        };
        match session.read_message()? {
            Message::Greeting { .. } => {}
            other => {
                return Err(QmpError::Protocol(format!(
                    "expected a greeting, got {other:?}"
                )));
            }
        }
        session.execute(&QmpCommand::named("qmp_capabilities"))?;
        Ok(session)
    }

    /// Runs `command` and returns what its `return` holds.
    pub fn execute(&mut self, command: &QmpCommand) -> Result<Value, QmpError> {
        self.next_id += 1;
        let id = Value::String(format!("banger-{}", self.next_id));
        let mut request = serde_json::to_value(command)
            .map_err(|e| QmpError::Protocol(format!("cannot encode {}: {e}", command.execute)))?;
        request["id"] = id.clone();
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(io_error)?;
        loop {
            match self.read_message()? {
                Message::Event { event } => {
                    tracing::debug!(event, command = %command.execute, "QMP event while waiting");
                }
                Message::Return {
                    id: Some(got),
                    value,
                } if got == id => return Ok(value),
                Message::Error {
                    id: Some(got),
                    class,
                    desc,
                } if got == id => return Err(QmpError::Refused { class, desc }),
                // An answer to someone else's command (or to none): not ours, keep reading.
                other => tracing::debug!(?other, "unexpected QMP message skipped"),
            }
        }
    }

    fn read_message(&mut self) -> Result<Message, QmpError> {
        let mut line = String::new();
        let read = (&mut self.reader)
            .take(MAX_MESSAGE)
            .read_line(&mut line)
            .map_err(io_error)?;
        if read == 0 {
            return Err(QmpError::Closed);
        }
        if !line.ends_with('\n') && read as u64 == MAX_MESSAGE {
            return Err(QmpError::Protocol(format!(
                "a message longer than {MAX_MESSAGE} bytes"
            )));
        }
        parse_message(&line)
    }
}

/// A read or write that hit the socket's timeout is reported as a timeout; the caller knows
/// which one it set.
fn io_error(error: io::Error) -> QmpError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => QmpError::Timeout(Duration::ZERO),
        _ => QmpError::Io(error),
    }
}

/// How banger reaches a QEMU's QMP socket.
pub trait QmpTransport: Send + Sync + fmt::Debug {
    /// Connects to `socket`, negotiates, runs `command` and returns its `return` value, all
    /// within `timeout`.
    fn execute(
        &self,
        socket: &Path,
        command: &QmpCommand,
        timeout: Duration,
    ) -> Result<Value, QmpError>;
}

/// QMP over the real Unix socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixQmp;

impl QmpTransport for UnixQmp {
    fn execute(
        &self,
        socket: &Path,
        command: &QmpCommand,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = UnixStream::connect(socket).map_err(QmpError::Connect)?;
        let run = || -> Result<Value, QmpError> {
            let reader = DeadlineReader {
                stream: stream.try_clone().map_err(QmpError::Io)?,
                deadline,
            };
            stream
                .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
                .map_err(QmpError::Io)?;
            let mut session = Session::open(BufReader::new(reader), &stream)?;
            session.execute(command)
        };
        run().map_err(|error| match error {
            QmpError::Timeout(_) => QmpError::Timeout(timeout),
            other => other,
        })
    }
}

/// A socket reader whose every read ends at one deadline for the whole exchange (a socket
/// timeout alone would restart with each event QEMU trickles in).
struct DeadlineReader {
    stream: UnixStream,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// The typed commands banger sends to one QEMU.
pub struct QmpClient<'a> {
    transport: &'a dyn QmpTransport,
    socket: &'a Path,
    timeout: Duration,
}

/// `query-status`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// QEMU's run state (`running`, `paused`, `prelaunch`, `internal-error`, ...).
    pub status: String,
    pub running: bool,
}

impl<'a> QmpClient<'a> {
    pub fn new(transport: &'a dyn QmpTransport, socket: &'a Path, timeout: Duration) -> Self {
        QmpClient {
            transport,
            socket,
            timeout,
        }
    }

    fn execute(&self, command: &str) -> Result<Value, crate::VmmError> {
        self.transport
            .execute(self.socket, &QmpCommand::named(command), self.timeout)
            .map_err(|source| {
                crate::QemuError::Qmp {
                    socket: self.socket.to_owned(),
                    command: command.to_owned(),
                    source,
                }
                .into()
            })
    }

    pub fn query_status(&self) -> Result<StatusInfo, crate::VmmError> {
        let value = self.execute("query-status")?;
        serde_json::from_value(value.clone()).map_err(|e| {
            crate::QemuError::Qmp {
                socket: self.socket.to_owned(),
                command: "query-status".into(),
                source: QmpError::Protocol(format!("{e} in {value}")),
            }
            .into()
        })
    }

    /// The guest's state, or [`crate::VmmError::GuestStopped`] when it cannot run again.
    pub fn state(&self) -> Result<InstanceState, crate::VmmError> {
        let info = self.query_status()?;
        instance_state(&info.status).ok_or(crate::VmmError::GuestStopped {
            status: info.status,
        })
    }

    /// Pauses the vCPUs.
    pub fn stop(&self) -> Result<(), crate::VmmError> {
        self.execute("stop").map(drop)
    }

    /// Starts or resumes the vCPUs.
    pub fn cont(&self) -> Result<(), crate::VmmError> {
        self.execute("cont").map(drop)
    }

    /// Presses the ACPI power button.
    pub fn system_powerdown(&self) -> Result<(), crate::VmmError> {
        self.execute("system_powerdown").map(drop)
    }
}

/// QEMU's run state as banger's [`InstanceState`]; `None` for states the guest does not come
/// back from (it crashed, panicked, or QEMU could not emulate it; `shutdown` only lasts as
/// long as QEMU takes to exit).
pub fn instance_state(status: &str) -> Option<InstanceState> {
    match status {
        "prelaunch" | "preconfig" | "inmigrate" => Some(InstanceState::NotStarted),
        "running" => Some(InstanceState::Running),
        // The vCPUs are stopped and `cont` (or a wakeup) runs them again.
        "paused" | "suspended" | "debug" | "io-error" | "watchdog" | "postmigrate"
        | "finish-migrate" | "save-vm" | "restore-vm" | "colo" => Some(InstanceState::Paused),
        // "internal-error", "guest-panicked", "shutdown" and whatever a newer QEMU adds.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::os::unix::net::UnixListener;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#;

    fn event(name: &str) -> String {
        format!(
            r#"{{"timestamp": {{"seconds": 1795451770, "microseconds": 768321}}, "event": "{name}"}}"#
        )
    }

    #[test]
    fn messages_parse() {
        assert!(matches!(
            parse_message(GREETING).unwrap(),
            Message::Greeting { version } if version["qemu"]["major"] == 7
        ));
        assert_eq!(
            parse_message(&event("STOP")).unwrap(),
            Message::Event {
                event: "STOP".into()
            }
        );
        assert_eq!(
            parse_message(r#"{"return": {}, "id": "banger-1"}"#).unwrap(),
            Message::Return {
                id: Some("banger-1".into()),
                value: serde_json::json!({})
            }
        );
        assert_eq!(
            parse_message(
                r#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": "banger-2"}"#
            )
            .unwrap(),
            Message::Error {
                id: Some("banger-2".into()),
                class: "CommandNotFound".into(),
                desc: "The command nope has not been found".into()
            }
        );
        for bad in ["", "[]", "{\"x\": 1}", "not json"] {
            assert!(
                matches!(parse_message(bad), Err(QmpError::Protocol(_))),
                "{bad:?}"
            );
        }
    }

    /// A session over a script of QEMU's lines; returns what banger wrote too.
    fn scripted(lines: &[&str], command: &str) -> (Result<Value, QmpError>, String) {
        let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        let mut written = Vec::new();
        let result = Session::open(Cursor::new(input), &mut written)
            .and_then(|mut session| session.execute(&QmpCommand::named(command)));
        (result, String::from_utf8(written).unwrap())
    }

    #[test]
    fn events_and_foreign_answers_between_a_command_and_its_answer_are_skipped() {
        let stop = event("STOP");
        let resume = event("RESUME");
        let (result, written) = scripted(
            &[
                GREETING,
                &resume,
                r#"{"return": {}, "id": "banger-1"}"#,
                &stop,
                r#"{"return": {"status": "paused"}, "id": "someone-else"}"#,
                &resume,
                r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": "banger-2"}"#,
            ],
            "query-status",
        );
        assert_eq!(
            result.unwrap(),
            serde_json::json!({"status": "running", "singlestep": false, "running": true})
        );
        assert_eq!(
            written,
            "{\"execute\":\"qmp_capabilities\",\"id\":\"banger-1\"}\n\
             {\"execute\":\"query-status\",\"id\":\"banger-2\"}\n"
        );
    }

    #[test]
    fn refusals_closed_connections_and_garbage_are_errors() {
        let (result, _) = scripted(
            &[
                GREETING,
                r#"{"return": {}, "id": "banger-1"}"#,
                r#"{"error": {"class": "GenericError", "desc": "no"}, "id": "banger-2"}"#,
            ],
            "cont",
        );
        let err = result.unwrap_err();
        assert_eq!(err.to_string(), "QEMU answered GenericError: no");

        let (result, _) = scripted(&[GREETING, r#"{"return": {}, "id": "banger-1"}"#], "cont");
        assert!(matches!(result, Err(QmpError::Closed)), "{result:?}");

        let (result, written) = scripted(&[r#"{"return": {}}"#], "cont");
        assert!(matches!(result, Err(QmpError::Protocol(_))), "{result:?}");
        assert!(written.is_empty(), "nothing sent before a greeting");
    }

    #[test]
    fn run_states_map_to_instance_states() {
        use InstanceState::*;
        for (status, state) in [
            ("prelaunch", Some(NotStarted)),
            ("inmigrate", Some(NotStarted)),
            ("running", Some(Running)),
            ("paused", Some(Paused)),
            ("suspended", Some(Paused)),
            ("io-error", Some(Paused)),
            ("internal-error", None),
            ("guest-panicked", None),
            ("shutdown", None),
            ("something-new", None),
        ] {
            assert_eq!(instance_state(status), state, "{status}");
        }
    }

    /// A QMP server on a real socket that greets, then answers each line with what `answer`
    /// says (events first), until the client hangs up.
    fn serve(
        socket: &Path,
        answer: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> std::thread::JoinHandle<Vec<Value>> {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            writeln!(writer, "{GREETING}").unwrap();
            let mut received = Vec::new();
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let request: Value = serde_json::from_str(&line).unwrap();
                for reply in answer(&request) {
                    writeln!(writer, "{reply}").unwrap();
                }
                received.push(request);
            }
            received
        })
    }

    #[test]
    fn the_unix_transport_talks_qmp_with_deadlines() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let server = serve(&socket, |request| {
            let id = &request["id"];
            match request["execute"].as_str() {
                Some("stop") => vec![
                    event("STOP"),
                    serde_json::json!({"return": {}, "id": id}).to_string(),
                ],
                _ => vec![serde_json::json!({"return": {}, "id": id}).to_string()],
            }
        });
        let value = UnixQmp
            .execute(&socket, &QmpCommand::named("stop"), Duration::from_secs(5))
            .unwrap();
        assert_eq!(value, serde_json::json!({}));
        let received = server.join().unwrap();
        assert_eq!(received.len(), 2);
        assert_eq!(received[1]["execute"], "stop");

        // A QEMU that greets but never answers costs the timeout, no more.
        let silent = dir.path().join("silent.sock");
        let _server = serve(&silent, |_| Vec::new());
        let started = Instant::now();
        let err = UnixQmp
            .execute(
                &silent,
                &QmpCommand::named("query-status"),
                Duration::from_millis(300),
            )
            .unwrap_err();
        assert!(
            matches!(err, QmpError::Timeout(t) if t == Duration::from_millis(300)),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));

        let err = UnixQmp
            .execute(
                &dir.path().join("none.sock"),
                &QmpCommand::named("cont"),
                Duration::from_secs(1),
            )
            .unwrap_err();
        assert!(matches!(err, QmpError::Connect(_)), "{err:?}");
    }
}

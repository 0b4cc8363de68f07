//! The exec stream's framing, used in both directions of `POST /v1/exec`: each frame is one
//! byte of kind, a big-endian `u32` payload length, then the payload. Binary rather than
//! NDJSON+base64 because exec output is arbitrary bytes and a large build log should not
//! grow by a third on the wire; the header is five bytes, so a frame boundary never depends on
//! how HTTP chunks happen to be cut.
//!
//! | kind | direction | payload |
//! |---|---|---|
//! | `0x01` start | request | the [`ExecRequest`](crate::protocol::ExecRequest) as JSON; always the first frame |
//! | `0x02` stdin | request | bytes for the command's standard input (or the terminal) |
//! | `0x03` stdin EOF | request | empty; closes standard input |
//! | `0x04` resize | request | rows then columns, two big-endian `u16` (TTY sessions) |
//! | `0x05` signal | request | a signal's name, e.g. `INT`, `TERM` (see [`SIGNALS`]); for the command's process group |
//! | `0x11` stdout | response | bytes the command wrote to standard output (everything, with a TTY) |
//! | `0x12` stderr | response | bytes the command wrote to standard error |
//! | `0x13` exit | response | the [`ExitStatus`](crate::protocol::ExitStatus) as JSON; always the last frame |
//! | `0x14` error | response | an [`ErrorBody`](crate::protocol::ErrorBody) as JSON when the agent itself failed mid-stream |
//! | `0x15` alive | response | empty; the agent is there and the command still runs (see [`HEARTBEAT_HEADER`](crate::protocol::HEARTBEAT_HEADER)) |

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Frames larger than this are refused: no legitimate sender needs them (the agent sends at
/// most 64 KiB per frame) and a bogus length must not make the reader allocate gigabytes.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Size of a frame header: kind and length.
pub const HEADER_LEN: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Start,
    Stdin,
    StdinEof,
    Resize,
    Signal,
    Stdout,
    Stderr,
    Exit,
    Error,
    Alive,
}

impl FrameKind {
    pub fn byte(self) -> u8 {
        match self {
            FrameKind::Start => 0x01,
            FrameKind::Stdin => 0x02,
            FrameKind::StdinEof => 0x03,
            FrameKind::Resize => 0x04,
            FrameKind::Signal => 0x05,
            FrameKind::Stdout => 0x11,
            FrameKind::Stderr => 0x12,
            FrameKind::Exit => 0x13,
            FrameKind::Error => 0x14,
            FrameKind::Alive => 0x15,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => FrameKind::Start,
            0x02 => FrameKind::Stdin,
            0x03 => FrameKind::StdinEof,
            0x04 => FrameKind::Resize,
            0x05 => FrameKind::Signal,
            0x11 => FrameKind::Stdout,
            0x12 => FrameKind::Stderr,
            0x13 => FrameKind::Exit,
            0x14 => FrameKind::Error,
            0x15 => FrameKind::Alive,
            _ => return None,
        })
    }
}

/// The signals a signal frame may name, with their Linux numbers: what a terminal or a
/// supervisor sends to a foreground command. By name on the wire, so the number is the
/// guest's business, not the client's.
pub const SIGNALS: [(&str, i32); 8] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
    ("WINCH", 28),
];

/// The number of the signal a signal frame names (`INT` or `SIGINT`).
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, num)| *num)
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(kind: FrameKind, payload: impl Into<Bytes>) -> Self {
        Frame {
            kind,
            payload: payload.into(),
        }
    }

    /// A resize frame for a terminal of `rows` x `cols`.
    pub fn resize(rows: u16, cols: u16) -> Self {
        let mut payload = BytesMut::with_capacity(4);
        payload.put_u16(rows);
        payload.put_u16(cols);
        Frame::new(FrameKind::Resize, payload.freeze())
    }

    /// A signal frame asking for signal `name` (`INT`, `TERM`, ...).
    pub fn signal(name: &str) -> Self {
        Frame::new(FrameKind::Signal, Bytes::copy_from_slice(name.as_bytes()))
    }

    /// The signal number a signal frame asks for.
    pub fn signal_number(&self) -> Result<i32, FrameError> {
        std::str::from_utf8(&self.payload)
            .ok()
            .and_then(signal_number)
            .ok_or_else(|| {
                FrameError::BadSignal(String::from_utf8_lossy(&self.payload).into_owned())
            })
    }

    /// The terminal size of a resize frame.
    pub fn resize_size(&self) -> Result<(u16, u16), FrameError> {
        match &self.payload[..] {
            [r0, r1, c0, c1] => Ok((
                u16::from_be_bytes([*r0, *r1]),
                u16::from_be_bytes([*c0, *c1]),
            )),
            _ => Err(FrameError::BadResize {
                len: self.payload.len(),
            }),
        }
    }

    /// Header and payload, ready to send.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.payload.len());
        out.put_u8(self.kind.byte());
        // Payloads are built by this crate and bounded well below 4 GiB.
        out.put_u32(u32::try_from(self.payload.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&self.payload);
        out.freeze()
    }
}

/// The byte stream does not follow the framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unknown exec frame kind 0x{0:02x}")]
    UnknownKind(u8),

    #[error("a {0:?} frame is not allowed in this direction or position")]
    Unexpected(FrameKind),

    #[error("exec frame of {len} bytes is larger than the limit of {MAX_PAYLOAD}")]
    TooLarge { len: usize },

    #[error("resize frame must carry 4 bytes (rows, columns), not {len}")]
    BadResize { len: usize },

    #[error("signal frame names {0:?}, which is not one of HUP INT QUIT KILL USR1 USR2 TERM WINCH")]
    BadSignal(String),

    #[error("the exec stream ended inside a frame ({pending} bytes left over)")]
    Truncated { pending: usize },
}

/// Reassembles frames from chunks cut anywhere.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, if the buffered bytes hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(self.buf[0]).ok_or(FrameError::UnknownKind(self.buf[0]))?;
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge { len });
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { kind, payload }))
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                pending: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_chunking() {
        let frames = [
            Frame::new(FrameKind::Start, &b"{\"argv\":[\"true\"]}"[..]),
            Frame::new(FrameKind::Stdout, vec![0u8, 255, 10, 13]),
            Frame::new(FrameKind::StdinEof, Bytes::new()),
            Frame::resize(24, 80),
            Frame::signal("INT"),
            Frame::new(FrameKind::Alive, Bytes::new()),
            Frame::new(FrameKind::Exit, &b"{\"code\":3}"[..]),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.encode()).collect();
        for chunk in [1, 2, 3, 5, 7, wire.len()] {
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                dec.push(piece);
                while let Some(f) = dec.next_frame().unwrap() {
                    got.push(f);
                }
            }
            dec.finish().unwrap();
            assert_eq!(got, frames, "chunks of {chunk}");
        }
    }

    #[test]
    fn the_header_is_kind_then_big_endian_length() {
        let wire = Frame::new(FrameKind::Stderr, &b"hi"[..]).encode();
        assert_eq!(&wire[..], &[0x12, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(Frame::resize(0x0102, 0x0304).encode()[5..], [1, 2, 3, 4]);
        assert_eq!(Frame::resize(50, 132).resize_size(), Ok((50, 132)));
    }

    #[test]
    fn bad_streams_are_refused() {
        let mut dec = FrameDecoder::new();
        dec.push(&[0x7f, 0, 0, 0, 0]);
        assert_eq!(dec.next_frame(), Err(FrameError::UnknownKind(0x7f)));

        let mut dec = FrameDecoder::new();
        dec.push(&[0x11, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge { .. })));

        let mut dec = FrameDecoder::new();
        dec.push(&[0x11, 0, 0, 0, 9, b'x']);
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.finish(), Err(FrameError::Truncated { pending: 6 }));

        assert_eq!(Frame::signal("INT").signal_number(), Ok(2));
        assert_eq!(Frame::signal("SIGTERM").signal_number(), Ok(15));
        assert_eq!(
            Frame::signal("STOP").signal_number(),
            Err(FrameError::BadSignal("STOP".into()))
        );

        let odd = Frame::new(FrameKind::Resize, &b"abc"[..]);
        assert_eq!(odd.resize_size(), Err(FrameError::BadResize { len: 3 }));
    }
}

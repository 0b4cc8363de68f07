//! A streaming HTTP body fed from a channel, used on both sides: the agent's streamed answers
//! (exec frames, tar archives) and the client's streamed requests (exec input, tar uploads).
//! Whoever holds the [`Sender`](tokio::sync::mpsc::Sender) learns that the other end went
//! away when sending fails or `closed()` resolves: hyper drops the body with the connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Chunks in flight per stream: enough to keep the pipe busy, small enough that a slow reader
/// pushes back on the producer (a command writing gigabytes waits instead of filling memory).
pub const CHANNEL_DEPTH: usize = 16;

/// A body whose chunks come from a channel; an `Err` item aborts the body (the peer sees a
/// broken chunked stream, not a clean end).
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl ChannelBody {
    /// A body and the sender that feeds it. Dropping the sender ends the body cleanly.
    pub fn channel() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, ChannelBody) {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

//! The protocol of banger's guest agent, shared by both ends of the conversation.
//!
//! The agent (the `banger-agent` crate) runs inside every banger VM and answers HTTP/1.1 on
//! vsock port 1024 and, where vsock is unavailable, on the VM's private IP; every request
//! carries the VM's token. This crate holds what the guest and the host must agree on:
//! [`protocol`] (the endpoints' JSON types and constants), [`frame`] (the framing of exec's
//! streamed input and output), [`archive`] (the tar archives of file copies, with the checks
//! that make extracting them safe) and [`body`] (streamed HTTP bodies and their bridges to
//! the synchronous tar code).
//!
//! The host side ([`client`]) speaks to the agent over any byte stream: a Firecracker
//! hybrid-vsock connection, TCP, or anything else that is `AsyncRead + AsyncWrite`. It never
//! creates processes. bangerd and the CLI depend on this crate only, never on the guest
//! program. See `docs/guest-agent.md`.

pub mod archive;
pub mod body;
pub mod client;
pub mod frame;
pub mod protocol;

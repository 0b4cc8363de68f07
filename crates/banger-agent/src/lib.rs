//! banger's guest agent and the host's client for it.
//!
//! The agent (`banger-agent`, [`guest`]) runs inside every banger VM and answers HTTP/1.1 on
//! vsock port 1024 and, where vsock is unavailable, on the VM's private IP; every request
//! carries the VM's token. It reports health and boot timings, runs commands with streamed
//! input and output ([`frame`]), copies files in and out as tar archives ([`archive`]), lists
//! listening ports and reports guest stats, powers the guest off, and gives a VM restored from
//! another VM's snapshot its own identity ([`guest::identity`]).
//!
//! The host side ([`client`]) speaks to it over any byte stream: a Firecracker hybrid-vsock
//! connection, TCP, or anything else that is `AsyncRead + AsyncWrite`. It never creates
//! processes. [`protocol`] holds the wire types both sides share. See `docs/guest-agent.md`.

pub mod archive;
pub mod body;
pub mod client;
pub mod frame;
pub mod guest;
pub mod protocol;

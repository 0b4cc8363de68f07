//! banger's guest agent, the program that runs inside every banger VM.
//!
//! The agent (`banger-agent`, [`guest`]) answers HTTP/1.1 on vsock port 1024 and, where vsock
//! is unavailable, on the VM's private IP; every request carries the VM's token. It reports
//! health and boot timings, runs commands with streamed input and output, copies files in and
//! out as tar archives, lists listening ports and reports guest stats, powers the guest off,
//! and gives a VM restored from another VM's snapshot its own identity
//! ([`guest::identity`]).
//!
//! What both ends share (the wire types, exec frames, tar archives and the host's client) is
//! the `banger-agent-protocol` crate; the host depends on that alone. See
//! `docs/guest-agent.md`.

pub mod guest;

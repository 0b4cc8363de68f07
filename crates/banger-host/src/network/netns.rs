//! Throw-away network namespaces for tests that touch real links and rules: a [`Netns`] is
//! created with a random name and deleted when dropped (also when the test panics), and a
//! [`NetnsRunner`] runs every command inside it with `ip netns exec`, so banger's real network
//! code can be exercised without touching the host's own network. Needs root.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{NetworkError, run};
use crate::runner::{CommandOutput, CommandRunner, CommandSpec, RealRunner, RunError};

/// Moves the calling thread (only it) into the network namespace `name` (`/run/netns/<name>`):
/// the sockets it opens and the processes it starts from then on live there, while the rest of
/// the process stays where it was. Needs root.
pub fn enter(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let file = std::fs::File::open(format!("/run/netns/{name}"))?;
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    Ok(())
}

/// A network namespace that exists until this value is dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `<prefix><random hex>`, e.g. `banger-test-1a2b3c4d`. Namespace names become
    /// file names under `/run/netns`; keep `prefix` short and plain.
    pub fn create(prefix: &str) -> Result<Netns, NetworkError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let salt = std::process::id()
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(nanos)
            .wrapping_add(
                COUNTER
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x85eb_ca6b),
            );
        let name = format!("{prefix}{salt:08x}");
        run(
            &RealRunner,
            &CommandSpec::new("ip").args(["netns", "add", &name]),
            format!("create network namespace {name}"),
        )?;
        Ok(Netns { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into this namespace (see [`enter`]).
    pub fn enter(&self) -> std::io::Result<()> {
        enter(&self.name)
    }

    /// A runner whose commands run inside this namespace.
    pub fn runner(&self) -> NetnsRunner<RealRunner> {
        NetnsRunner::new(&self.name, RealRunner)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Links inside the namespace (bridge, taps) go with it; its nftables tables too.
        let cmd = CommandSpec::new("ip").args(["netns", "del", &self.name]);
        if let Err(error) = RealRunner.run(&cmd) {
            tracing::warn!(netns = %self.name, %error, "cannot delete network namespace");
            eprintln!(
                "warning: cannot delete network namespace {}: {error}",
                self.name
            );
        }
    }
}

/// Runs each command as `ip netns exec <netns> <command>` through `inner`.
#[derive(Debug, Clone)]
pub struct NetnsRunner<R> {
    netns: String,
    inner: R,
}

impl<R: CommandRunner> NetnsRunner<R> {
    pub fn new(netns: impl Into<String>, inner: R) -> Self {
        NetnsRunner {
            netns: netns.into(),
            inner,
        }
    }

    /// `cmd` as it runs inside the namespace.
    pub fn wrap(&self, cmd: &CommandSpec) -> CommandSpec {
        CommandSpec {
            program: "ip".into(),
            args: ["netns", "exec", &self.netns, &cmd.program]
                .into_iter()
                .map(String::from)
                .chain(cmd.args.iter().cloned())
                .collect(),
            stdin: cmd.stdin.clone(),
            env: cmd.env.clone(),
            net_admin: cmd.net_admin,
        }
    }
}

impl<R: CommandRunner> CommandRunner for NetnsRunner<R> {
    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError> {
        self.inner.run(&self.wrap(cmd))
    }
}

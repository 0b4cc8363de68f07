//! A banger whose daemon, bridge, taps and guests live in a network namespace the test makes
//! (the network rule for tests: no guest traffic outside it), driven through the real CLI.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use super::{Sandbox, deadline};

/// `banger ARGS` as a test's notes and failures name it.
fn describe(args: &[&str]) -> String {
    format!("banger {}", args.join(" "))
}

/// Whether `program arg` runs and succeeds (a prerequisite check before a SKIP).
pub fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A network namespace that is removed (with everything in it) when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn create() -> Option<Netns> {
        // Tests of one binary run in parallel: each gets its own namespace.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("banger-test-e2e-{}-{n}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let _ = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status();
        Some(Netns(name))
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Netns {
    /// Runs `f` on a thread inside the namespace: the sockets it makes belong to the
    /// namespace (its loopback, its routes) and stay usable from any thread afterwards.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(format!("/run/netns/{}", self.0))
            .unwrap_or_else(|e| panic!("cannot open namespace {}: {e}", self.0));
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&file),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .unwrap_or_else(|e| panic!("cannot enter namespace {}: {e}", self.0));
                    f()
                })
                .join()
                .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A sandboxed banger whose commands run inside `netns`; dropping it deletes its VMs and stops
/// its daemon, before the namespace goes.
pub struct E2e {
    pub sandbox: Sandbox,
    pub netns: Netns,
    /// The shell commands that mount the host's cgroup hierarchies again inside each command's
    /// mount namespace (see [`E2e::with_host_cgroups`]); empty for none.
    pub cgroup_mounts: String,
}

impl E2e {
    /// What a test with real guests starts from, or `None` after a `SKIP:` line naming what is
    /// missing (root, one of `programs` — each run with the flag given — or a network
    /// namespace): a sandboxed banger whose daemon and guests live in a namespace of its own
    /// (`config("300s")`), with the Debian image bootstrapped (fast when
    /// `$BANGER_TEST_CACHE` has its inputs). The bootstrap downloads, so a daemon outside the
    /// namespace runs it and is stopped; the one the next command starts runs inside.
    pub fn with_debian_image(programs: &[(&str, &str)]) -> Option<E2e> {
        if !rustix::process::geteuid().is_root() {
            banger_test_support::skip!(
                "root not available (debootstrap, taps and the bridge need it)"
            );
            return None;
        }
        for (program, arg) in programs {
            if !have(program, arg) {
                banger_test_support::skip!("{program} not found");
                return None;
            }
        }
        let Some(netns) = Netns::create() else {
            banger_test_support::skip!("cannot create a network namespace");
            return None;
        };
        let t = E2e {
            sandbox: Sandbox::new(),
            netns,
            cgroup_mounts: String::new(),
        };
        t.config("300s");
        t.sandbox.ok(&["image", "bootstrap", "debian"]);
        t.sandbox.ok(&["daemon", "stop"]);
        Some(t)
    }

    /// `banger ARGS` inside the namespace; returns (exit code, stdout, stderr). Killed, failing
    /// the test, when it outlives [`deadline::default_limit`].
    pub fn banger(&self, args: &[&str]) -> (i32, String, String) {
        self.banger_within(args, deadline::default_limit())
    }

    /// [`E2e::banger`] with a deadline of its own.
    pub fn banger_within(&self, args: &[&str], limit: Duration) -> (i32, String, String) {
        let out = deadline::run(self.command(args), None, &describe(args), limit);
        (
            out.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`E2e::banger`] for clean-up: `None` when it failed to finish within `limit` (it was
    /// killed), never a panic.
    pub fn banger_cleanup(&self, args: &[&str], limit: Duration) -> Option<(i32, String, String)> {
        let out = deadline::try_run(self.command(args), None, &describe(args), limit)
            .inspect_err(|e| deadline::note(e))
            .ok()?;
        Some((
            out.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `banger ARGS` inside the namespace with `input` on its standard input; returns (exit
    /// code, stdout bytes, stderr).
    pub fn banger_stdin(&self, args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
        let out = deadline::run(
            self.command(args),
            Some(input),
            &describe(args),
            deadline::default_limit(),
        );
        (
            out.code(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Gives the daemon the host's cgroup hierarchies, as a daemon outside a namespace has
    /// them: `ip netns exec` gives each command a mount namespace with a fresh `/sys`, without
    /// `/sys/fs/cgroup`'s mounts, so they are mounted again there (the same hierarchies: a
    /// cgroup made inside is the host's) before banger runs; the daemon a command starts
    /// inherits them. Returns `false` when the host mounts none.
    pub fn with_host_cgroups(&mut self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut script = String::new();
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, point, kind, options, ..] = fields[..] else {
                continue;
            };
            if !point.starts_with("/sys/fs/cgroup") {
                continue;
            }
            let mount = match kind {
                "tmpfs" => format!("mount -t tmpfs -o mode=755 tmpfs {point}"),
                "cgroup" | "cgroup2" => format!("mount -t {kind} -o {options} {kind} {point}"),
                _ => continue,
            };
            script.push_str(&format!("mkdir -p {point} && {mount} && "));
        }
        self.cgroup_mounts = script;
        !self.cgroup_mounts.is_empty()
    }

    /// `banger ARGS` inside the namespace, to run with [`deadline::run`].
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns.0]);
        if !self.cgroup_mounts.is_empty() {
            cmd.args([
                "sh",
                "-c",
                &format!("{}exec \"$0\" \"$@\"", self.cgroup_mounts),
            ]);
        }
        cmd.arg(env!("CARGO_BIN_EXE_banger"))
            .args(args)
            .current_dir(self.sandbox.root())
            .envs(self.sandbox.env());
        cmd
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.banger(args);
        assert_eq!(
            code, 0,
            "banger {args:?}\n--- stdout\n{out}\n--- stderr\n{err}"
        );
        out
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    pub fn vm(&self, name: &str) -> Value {
        self.json(&["vm", "show", name])
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, check: impl FnMut() -> bool) {
        banger_test_support::wait_for(what, timeout, Duration::from_millis(200), check);
    }

    pub fn taps(&self) -> Vec<String> {
        let out = self.netns.run("ip", &["-br", "link"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| name.starts_with("bt-"))
            .map(str::to_owned)
            .collect()
    }

    pub fn nat_comments(&self) -> String {
        let out = self
            .netns
            .run("nft", &["-j", "list", "table", "inet", "banger"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn config(&self, ready_timeout: &str) {
        self.config_with(ready_timeout, "");
    }

    /// [`E2e::config`] with `top_level` keys of its own (lines before the tables).
    pub fn config_with(&self, ready_timeout: &str, top_level: &str) {
        self.config_on("qemu", ready_timeout, top_level);
    }

    /// [`E2e::config_with`] on the VMM `vmm` (`qemu`, `firecracker`, `auto`).
    pub fn config_on(&self, vmm: &str, ready_timeout: &str, top_level: &str) {
        let cache = std::env::var_os("BANGER_TEST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/banger-test"));
        self.sandbox.config(&format!(
            "vmm = \"{vmm}\"\ncache_dir = \"{}\"\n{top_level}[defaults]\nvcpus = 1\n\
             memory_mib = 1024\ndisk = \"2G\"\nwork_disk = \"1G\"\n\
             ready_timeout = \"{ready_timeout}\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
            cache.display()
        ));
    }
}

impl Drop for E2e {
    fn drop(&mut self) {
        // VMs first (their QEMU processes), then the daemon; the namespace goes last.
        // Each call is bounded: a hung one is killed and the rest still run (the sandbox's
        // own drop ends a daemon that did not stop).
        let limit = Duration::from_secs(180);
        if let Some((0, out, _)) = self.banger_cleanup(&["vm", "list", "-o", "json"], limit)
            && let Ok(Value::Array(vms)) = serde_json::from_str::<Value>(&out)
        {
            for vm in vms {
                if let Some(name) = vm["name"].as_str() {
                    let _ = self.banger_cleanup(&["vm", "delete", name], limit);
                }
            }
        }
        let _ = self.banger_cleanup(&["daemon", "stop"], limit);
    }
}

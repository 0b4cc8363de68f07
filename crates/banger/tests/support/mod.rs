//! What every end-to-end test and benchmark of the `banger` binaries needs: an isolated banger
//! installation (its own home and XDG directories, so tests run in parallel without seeing each
//! other or the user's banger) whose daemon is stopped when it goes out of scope, and the
//! smallest boot files bangerd accepts.
//!
//! Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use banger_host::runner::{CommandRunner, CommandSpec, RealRunner};
use serde_json::Value;

pub mod deadline;
pub mod dns;
pub mod lab;
pub mod netns;

/// The arguments of `banger vm create` for a VM `name` of `image` that is not started, then
/// `more` of them.
pub fn create_stopped<'a>(name: &'a str, image: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "vm",
        "create",
        "--no-start",
        "--name",
        name,
        "--image",
        image,
    ];
    args.extend(more);
    args
}

/// An isolated banger installation; dropping it stops its daemon.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let sandbox = Sandbox {
            dir: tempfile::Builder::new()
                .prefix("banger-e2e")
                .tempdir()
                .unwrap(),
        };
        // Test daemons serve their web console on a free port, never the default 7878 that
        // the developer's own banger (or another test) may hold.
        sandbox.config("[web]\nlisten = \"127.0.0.1:0\"\n");
        sandbox
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The environment of every banger in this sandbox, starting `daemon_bin`.
    pub fn env_with(&self, daemon_bin: &Path) -> Vec<(&'static str, PathBuf)> {
        let root = self.root();
        vec![
            ("HOME", root.join("home")),
            ("XDG_CONFIG_HOME", root.join("config")),
            ("XDG_STATE_HOME", root.join("state")),
            ("XDG_RUNTIME_DIR", root.join("run")),
            ("BANGER_DAEMON_BIN", daemon_bin.to_owned()),
        ]
    }

    /// The environment of every banger in this sandbox.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        self.env_with(Path::new(env!("CARGO_BIN_EXE_bangerd")))
    }

    /// Writes `config.toml`.
    pub fn config(&self, text: &str) {
        let dir = self.root().join("config/banger");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), text).unwrap();
    }

    /// A `banger` invocation in this sandbox.
    pub fn banger<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.banger_with(Path::new(env!("CARGO_BIN_EXE_bangerd")), args)
    }

    /// A `banger` invocation that would start the daemon binary `daemon_bin`.
    pub fn banger_with<I, S>(&self, daemon_bin: &Path, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_banger"));
        cmd.args(args)
            .current_dir(self.root())
            .envs(self.env_with(daemon_bin))
            .timeout(Duration::from_secs(60));
        cmd
    }

    /// Runs banger, expecting `code`; returns stdout and stderr.
    pub fn run(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.banger(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "banger {args:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        (stdout, stderr)
    }

    /// Runs banger expecting success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args, 0).0
    }

    /// Runs banger with `-o json`, expecting success; returns the parsed value.
    pub fn json(&self, args: &[&str]) -> Value {
        let stdout = self.json_text(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Runs banger with `-o json`, expecting success; returns the JSON as printed.
    pub fn json_text(&self, args: &[&str]) -> String {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        self.ok(&args)
    }

    pub fn daemon_pid(&self) -> u32 {
        self.json(&["daemon", "status"])["pid"].as_u64().unwrap() as u32
    }

    /// Writes a kernel and an ext4 rootfs that bangerd accepts and returns their paths.
    pub fn boot_files(&self) -> (PathBuf, PathBuf) {
        let kernel = self.root().join("vmlinux");
        std::fs::write(&kernel, tiny_elf_kernel()).unwrap();
        let rootfs = self.root().join("rootfs.ext4");
        let mkfs = CommandSpec::new("mkfs.ext4").args([
            "-q".into(),
            "-F".into(),
            rootfs.display().to_string(),
            "16M".into(),
        ]);
        RealRunner
            .run(&mkfs)
            .expect("mkfs.ext4 (e2fsprogs) is needed");
        (kernel, rootfs)
    }

    /// Registers an image named `name` and returns banger's stdout and stderr.
    pub fn register(&self, name: &str) -> (String, String) {
        let (kernel, rootfs) = self.boot_files();
        self.run(
            &[
                "image",
                "register",
                "--name",
                name,
                "--kernel",
                kernel.to_str().unwrap(),
                "--rootfs",
                rootfs.to_str().unwrap(),
            ],
            0,
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // No daemon may outlive its test (it would hold the sandbox's files open).
        let _ = self.banger(["daemon", "stop"]).output();
    }
}

/// The check called `name` of a `banger doctor -o json` report.
pub fn doctor_check(report: &Value, name: &str) -> Value {
    report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("not a doctor report: {report}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
        .clone()
}

/// The smallest file bangerd takes for a kernel: an ELF64 x86_64 executable header, followed
/// by a version banner like the one a real vmlinux carries.
pub fn tiny_elf_kernel() -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // ELFCLASS64
    elf[5] = 1; // little-endian
    elf[6] = 1; // EV_CURRENT
    elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[0x12..0x14].copy_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf[0x14..0x18].copy_from_slice(&1u32.to_le_bytes()); // e_version
    elf[0x18..0x20].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
    elf[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(b"Linux version 6.1.0-test (builder@banger) #1 SMP\n\0");
    elf
}

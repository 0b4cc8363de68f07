//! One guest under QEMU microvm with TCG, the way banger-image's boot tests and the
//! `boot_compare` benchmark run them: a kernel, an optional initrd, raw virtio-blk drives in
//! order, one virtio-net NIC and the serial console on stdout, read line by line with the host
//! time each line arrived (benchmarks time the guest by its console).
//!
//! The NIC is either attached to a QEMU hub port with nothing else on it (configured, but no
//! packet leaves the VM) or QEMU user networking with `restrict=on` and forwards from loopback
//! ports to guest ports: traffic to loopback only, as the test network rule asks.
//!
//! Shared through `#[path]` by `tests/boot_qemu.rs`, `tests/bootstrap_debian.rs` and
//! `benches/boot_compare.rs`; each uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The kernel command line the tests boot with. microvm has no PIT-calibrated TSC under TCG
/// and no HPET or PM timer: without a given TSC frequency the kernel hangs after
/// "tsc: Marking TSC unstable".
pub const TCG_APPEND: &str = "console=ttyS0 panic=-1 tsc_early_khz=2000000";

/// The kernel command line bangerd gives a VM with an initrd under QEMU with TCG
/// (`banger-daemon`'s machine spec plus `banger-vmm`'s TCG argument).
pub const BANGERD_APPEND: &str = "console=ttyS0 reboot=k panic=1 pci=off tsc_early_khz=2000000";

/// The address QEMU user networking gives the guest, as banger's tests configure it statically.
pub const USER_NET_GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// A raw disk image attached as `virtio-blk-device`, in order (`/dev/vda`, `/dev/vdb`, ...).
#[derive(Debug, Clone)]
pub struct Drive {
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
}

impl Drive {
    pub fn new(id: &str, path: &Path, read_only: bool) -> Drive {
        Drive {
            id: id.to_owned(),
            path: path.to_owned(),
            read_only,
        }
    }
}

/// Where the guest's NIC goes.
#[derive(Debug, Clone)]
pub enum Nic {
    /// A hub port with nothing else on the hub.
    Isolated,
    /// QEMU user networking, `restrict=on`, forwarding `127.0.0.1:host` to
    /// [`USER_NET_GUEST_IP`]`:guest` for each `(host, guest)` pair.
    User { forwards: Vec<(u16, u16)> },
}

/// A guest to boot.
#[derive(Debug, Clone)]
pub struct Machine {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: String,
    pub drives: Vec<Drive>,
    pub nic: Nic,
    pub mac: String,
    pub memory_mib: u32,
}

impl Machine {
    /// A 1-vCPU, 512 MiB guest with [`TCG_APPEND`], no drives and an isolated NIC.
    pub fn new(kernel: &Path, initrd: Option<&Path>) -> Machine {
        Machine {
            kernel: kernel.to_owned(),
            initrd: initrd.map(Path::to_owned),
            append: TCG_APPEND.to_owned(),
            drives: Vec::new(),
            nic: Nic::Isolated,
            mac: "52:54:00:12:34:56".to_owned(),
            memory_mib: 512,
        }
    }

    /// The banger layout: the read-only base image, the VM's overlay disk, its work disk.
    pub fn banger_disks(mut self, base: &Path, overlay: &Path, work: &Path) -> Machine {
        self.drives = vec![
            Drive::new("base", base, true),
            Drive::new("overlay", overlay, false),
            Drive::new("work", work, false),
        ];
        self
    }

    /// The `qemu-system-x86_64` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-M",
            "microvm,acpi=on",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-no-user-config",
            "-serial",
            "stdio",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(["-m".to_owned(), self.memory_mib.to_string()]);
        args.extend(["-kernel".to_owned(), self.kernel.display().to_string()]);
        if let Some(initrd) = &self.initrd {
            args.extend(["-initrd".to_owned(), initrd.display().to_string()]);
        }
        args.extend(["-append".to_owned(), self.append.clone()]);
        for drive in &self.drives {
            args.extend([
                "-drive".to_owned(),
                format!(
                    "id={},file={},format=raw,if=none{}",
                    drive.id,
                    drive.path.display().to_string().replace(',', ",,"),
                    if drive.read_only { ",readonly=on" } else { "" }
                ),
                "-device".to_owned(),
                format!("virtio-blk-device,drive={}", drive.id),
            ]);
        }
        let netdev = match &self.nic {
            Nic::Isolated => "hubport,id=net0,hubid=0".to_owned(),
            Nic::User { forwards } => {
                let mut netdev = "user,id=net0,restrict=on".to_owned();
                for (host, guest) in forwards {
                    netdev.push_str(&format!(
                        ",hostfwd=tcp:127.0.0.1:{host}-{USER_NET_GUEST_IP}:{guest}"
                    ));
                }
                netdev
            }
        };
        args.extend([
            "-netdev".to_owned(),
            netdev,
            "-device".to_owned(),
            format!("virtio-net-device,netdev=net0,mac={}", self.mac),
        ]);
        args
    }

    /// Starts QEMU; the guest runs until it powers off or the [`Guest`] is dropped.
    pub fn boot(&self) -> Guest {
        let mut command = std::process::Command::new("qemu-system-x86_64");
        command
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("start qemu-system-x86_64");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = line.trim_end_matches('\r').to_owned();
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send((Instant::now(), format!("[qemu stderr] {line}")));
            }
        });
        Guest {
            child,
            console: rx,
            lines: Vec::new(),
            started,
        }
    }
}

/// A running guest and the console lines read so far, each with the host time it arrived.
pub struct Guest {
    pub child: Child,
    console: mpsc::Receiver<(Instant, String)>,
    pub lines: Vec<(Instant, String)>,
    /// When QEMU was spawned.
    pub started: Instant,
}

impl Guest {
    /// Reads console lines until one satisfies `wanted`; returns it with its arrival time, or
    /// `None` at `deadline` or when QEMU has exited and its output is drained.
    pub fn wait_until(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        deadline: Instant,
    ) -> Option<(Instant, String)> {
        while Instant::now() < deadline {
            match self.console.recv_timeout(Duration::from_millis(200)) {
                Ok((at, line)) => {
                    let found = wanted(&line);
                    self.lines.push((at, line.clone()));
                    if found {
                        return Some((at, line));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        // Lines still in the pipe arrive before the channel disconnects.
                        continue;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }

    /// [`Guest::wait_until`] a line containing `needle`.
    pub fn wait_for(&mut self, needle: &str, deadline: Instant) -> Option<(Instant, String)> {
        self.wait_until(|line| line.contains(needle), deadline)
    }

    /// The first line read so far that contains `needle`.
    pub fn seen(&self, needle: &str) -> Option<&(Instant, String)> {
        self.lines.iter().find(|(_, line)| line.contains(needle))
    }

    /// Waits up to `timeout` for QEMU to exit by itself (the guest powered off); kills it
    /// otherwise. Returns its status when it exited by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// The whole console so far, for a failure message.
    pub fn log(&mut self) -> String {
        while let Ok(line) = self.console.try_recv() {
            self.lines.push(line);
        }
        self.lines
            .iter()
            .map(|(_, line)| line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The banner sshd sends first, read through a forwarded loopback port, polling every `poll`.
/// QEMU accepts on the forwarded port before the guest listens and then closes the
/// connection, so an empty read means "not yet".
pub fn ssh_banner(port: u16, deadline: Instant, poll: Duration) -> Option<(Instant, String)> {
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = stream.read(&mut buf)
                && n > 0
            {
                return Some((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).trim().to_owned(),
                ));
            }
        }
        std::thread::sleep(poll);
    }
    None
}

/// Prints each bootstrap stage with the time since `started`, as the CLI would; for the tests
/// and the benchmark that bootstrap the image they boot.
pub struct StagePrinter {
    pub started: Instant,
}

impl banger_image::register::Reporter for StagePrinter {
    fn begin(&self, stage: &str) {
        println!(
            "[{:6.1} s] {stage} ...",
            self.started.elapsed().as_secs_f64()
        );
    }
    fn progress(&self, _stage: &str, _done: u64, _total: u64) {}
    fn done(&self, stage: &str, note: Option<String>) {
        println!(
            "[{:6.1} s] {stage}: done {}",
            self.started.elapsed().as_secs_f64(),
            note.unwrap_or_default()
        );
    }
    fn skip(&self, stage: &str, reason: &str) {
        println!("{stage}: skipped ({reason})");
    }
    fn cancelled(&self) -> bool {
        false
    }
}

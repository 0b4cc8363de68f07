//! The QEMU backend against the real `qemu-system-x86_64` with TCG: real process, real QMP
//! socket, real signals. Without the binary each test prints a visible `SKIP:` line and passes.
//!
//! The guest is a tiny PVH kernel made here: QEMU boots an ELF `-kernel` only when it carries
//! the PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`), and enters it in 32-bit protected mode. It
//! writes one line to the serial port and halts with interrupts off, so the instance stays
//! `running` without using the CPU until it is stopped, and ignores the ACPI power button (a
//! graceful stop escalates to SIGTERM). Its source, for the record:
//!
//! ```text
//!   mov dx, 0x3f8        ; COM1
//!   mov esi, msg         ; absolute: the segment is loaded where it is linked
//! next: lodsb
//!   test al, al
//!   jz done
//!   out dx, al
//!   jmp next
//! done: hlt
//!   jmp done
//! msg: .asciz "banger-test-guest: hello from the tiny PVH kernel\n"
//! ```
//!
//! One more test boots the Debian cloud kernel that banger-image's boot test caches (skipped
//! when the cache is empty): it reaches the kernel's own messages under microvm and TCG, which
//! is what the command line's `tsc_early_khz` is for, and panics for want of a root file system,
//! which with `-no-reboot` ends QEMU by itself.

use banger_test_support::wait_until;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_host::{RealRunner, Signal};
use banger_vmm::QemuError;
use banger_vmm::qemu::binary::PROGRAM;
use banger_vmm::reconcile::{self, Action, Record, StopReason};
use banger_vmm::testing::{
    self, Fixture, GRACEFUL, KillOnDrop, Segment, console_has, is_socket, mode,
};
use banger_vmm::{
    Accel, InstanceState, Qemu, QemuBinary, QemuBinaryError, StopOutcome, VmSpec, Vmm, VmmError,
    console_tail, watch_exit,
};

/// The line the tiny PVH kernel prints on its console.
const GUEST_HELLO: &str = "banger-test-guest: hello from the tiny PVH kernel";

/// Where the segment is loaded and entered.
const LOAD_ADDRESS: u32 = 0x10_0000;

fn qemu_or_skip() -> Option<QemuBinary> {
    let configured = std::env::var_os("QEMU_BIN").map(PathBuf::from);
    match QemuBinary::detect(configured.as_deref(), &RealRunner) {
        Ok(binary) => Some(binary),
        Err(QemuBinaryError::NotInPath | QemuBinaryError::Missing { .. }) => {
            banger_test_support::skip!("{PROGRAM} not found (Debian package qemu-system-x86)");
            None
        }
        Err(error) => panic!("QEMU is unusable: {error}"),
    }
}

macro_rules! require_qemu {
    () => {
        match qemu_or_skip() {
            // Tests use TCG whatever the host has: it is the backend's slow, always-there path.
            Some(binary) => Qemu::new(binary, Accel::Tcg),
            None => return,
        }
    };
}

/// The tiny kernel as an ELF64 executable with a PVH entry note.
fn pvh_kernel() -> Vec<u8> {
    let msg_address = LOAD_ADDRESS + 20;
    let mut payload = vec![0x66, 0xba, 0xf8, 0x03, 0xbe]; // mov dx, 0x3f8; mov esi, imm32
    payload.extend_from_slice(&msg_address.to_le_bytes());
    payload.extend_from_slice(&testing::PRINT_AND_HALT);
    assert_eq!(payload.len(), 20);
    payload.extend_from_slice(GUEST_HELLO.as_bytes());
    payload.extend_from_slice(b"\n\0");

    // namesz, descsz, type (XEN_ELFNOTE_PHYS32_ENTRY = 18), "Xen\0", the 32-bit entry.
    let mut note = Vec::new();
    for word in [4u32, 4, 18] {
        note.extend_from_slice(&word.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&LOAD_ADDRESS.to_le_bytes());

    let load = u64::from(LOAD_ADDRESS);
    testing::elf_executable(
        load,
        &[
            Segment {
                kind: 1,  // PT_LOAD
                flags: 5, // R + X
                address: load,
                align: 0x1000,
                bytes: &payload,
            },
            Segment {
                kind: 4,  // PT_NOTE
                flags: 4, // R
                address: 0,
                align: 4,
                bytes: &note,
            },
        ],
    )
}

/// A VM `id` of the fixture booting the tiny PVH kernel, with QEMU's own log file.
fn spec(fx: &Fixture, id: &str) -> VmSpec {
    let kernel = fx.path().join("vmlinux-pvh");
    if !kernel.exists() {
        std::fs::write(&kernel, pvh_kernel()).unwrap();
    }
    let mut spec = fx.spec(id, None);
    spec.kernel = kernel;
    spec.paths.vmm_log = fx.path().join(id).join("qemu.log");
    spec
}

#[test]
fn launch_pause_resume_and_stop() {
    let qemu = require_qemu!();
    let fx = Fixture::new();
    let spec = spec(&fx, "life");

    let vm = qemu.launch(&spec).unwrap();
    let _guard = KillOnDrop(vm.pid);
    assert!(banger_host::pid_alive(vm.pid));
    assert_eq!(vm.vm_id, "life");
    assert!(is_socket(&vm.api_socket));
    let status = qemu
        .qmp(&vm.api_socket, Duration::from_secs(5))
        .query_status()
        .unwrap();
    assert_eq!((status.status.as_str(), status.running), ("running", true));
    assert_eq!(qemu.state(&vm).unwrap(), InstanceState::Running);
    assert_eq!(vm.vsock_socket, None);
    assert_eq!(
        qemu.vsock_cid(&vm).is_some(),
        Path::new("/dev/vhost-vsock").exists(),
        "vsock only where the host has vhost-vsock"
    );
    assert!(
        wait_until(Duration::from_secs(10), || console_has(&spec, GUEST_HELLO)),
        "the guest's serial output reaches the console log: {:?}",
        console_tail(&spec.paths.console_log, 50)
    );
    for file in [&spec.paths.console_log, &spec.paths.vmm_log] {
        assert_eq!(mode(file), 0o600, "{} is the user's alone", file.display());
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", vm.pid)).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("-accel tcg"), "{cmdline}");

    qemu.pause(&vm).unwrap();
    assert_eq!(qemu.state(&vm).unwrap(), InstanceState::Paused);
    qemu.resume(&vm).unwrap();
    assert_eq!(qemu.state(&vm).unwrap(), InstanceState::Running);

    let started = Instant::now();
    let outcome = qemu.stop(&vm, GRACEFUL).unwrap();
    assert_eq!(
        outcome,
        StopOutcome::Terminated,
        "the tiny guest has no ACPI: the power button goes unheard"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!banger_host::pid_alive(vm.pid), "no process left");
    assert!(!vm.api_socket.exists(), "no socket left");
    assert!(
        console_tail(&spec.paths.vmm_log, 5)
            .unwrap()
            .iter()
            .any(|l| l.contains("terminating on signal 15")),
        "QEMU's own words are in its log"
    );
    assert_eq!(
        qemu.stop(&vm, GRACEFUL).unwrap(),
        StopOutcome::AlreadyExited,
        "stopping twice is harmless"
    );
}

#[tokio::test]
async fn a_killed_qemu_is_noticed_and_its_socket_released() {
    let qemu = require_qemu!();
    let fx = Fixture::new();
    let spec = spec(&fx, "crash");
    let vm = qemu.launch(&spec).unwrap();
    let _guard = KillOnDrop(vm.pid);

    let watch = tokio::spawn(watch_exit(vm.pid));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!watch.is_finished());
    banger_host::signal(vm.pid, Signal::Kill).unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch_exit noticed the kill")
        .unwrap();

    assert!(is_socket(&vm.api_socket), "a killed QEMU leaves its socket");
    let seen = qemu.observe(vm.pid, &vm.api_socket);
    assert!(!seen.alive && seen.socket_exists && seen.answer.is_none());
    let err = qemu.pause(&vm).unwrap_err();
    assert!(matches!(err, VmmError::NotRunning { .. }), "{err:?}");
    assert_eq!(
        qemu.stop(&vm, GRACEFUL).unwrap(),
        StopOutcome::AlreadyExited
    );
    assert!(!vm.api_socket.exists());
}

#[test]
fn a_fresh_backend_adopts_a_running_qemu_and_reconciles() {
    let qemu = require_qemu!();
    let fx = Fixture::new();
    let spec = spec(&fx, "keep");
    let vm = qemu.launch(&spec).unwrap();
    let _guard = KillOnDrop(vm.pid);
    qemu.pause(&vm).unwrap();

    // A restarted daemon: a new backend that knows only the recorded pid and socket.
    let next = require_qemu!();
    assert_eq!(next.adopt(vm.pid, &vm.api_socket), Some(vm.clone()));
    assert_eq!(next.adopt(std::process::id(), &vm.api_socket), None);
    assert_eq!(next.adopt(vm.pid, &fx.path().join("other.sock")), None);

    let records = [Record {
        vm_id: "keep".into(),
        state: banger_api::VmState::Running,
        pid: Some(vm.pid),
        api_socket: Some(vm.api_socket.clone()),
        vsock_socket: None,
        identity_pending: false,
    }];
    let observations = [Some(next.observe(vm.pid, &vm.api_socket))];
    let scan = next.scan(fx.path());
    assert_eq!(
        reconcile::decide(&records, &observations, &scan),
        [Action::Adopt {
            vm_id: "keep".into(),
            pid: vm.pid,
            state: InstanceState::Paused
        }],
        "a paused VM stays paused: {scan:?}"
    );

    assert_eq!(
        next.stop(&vm, GRACEFUL).unwrap(),
        StopOutcome::Terminated,
        "paused: no power button, straight to SIGTERM"
    );
    let observations = [Some(next.observe(vm.pid, &vm.api_socket))];
    assert_eq!(
        reconcile::decide(&records, &observations, &next.scan(fx.path())),
        [Action::MarkStopped {
            vm_id: "keep".into(),
            reason: StopReason::ProcessGone
        }]
    );
}

#[test]
fn a_qemu_that_refuses_its_configuration_is_rolled_back_with_its_words() {
    let qemu = require_qemu!();
    let fx = Fixture::new();
    let mut spec = spec(&fx, "broken");
    spec.drives[2].path = fx.path().join("no-such-disk.ext4");
    let err = qemu.launch(&spec).unwrap_err();
    let message = banger_vmm::error_chain(&err);
    println!("{message}");
    assert!(
        message.starts_with("cannot launch VM broken: QEMU (pid ") && message.contains(" exited "),
        "{message}"
    );
    let VmmError::Launch { error, cleanup, .. } = &err else {
        panic!("expected a launch error, got {err:?}");
    };
    assert!(cleanup.is_empty(), "{cleanup:?}");
    let VmmError::Qemu(QemuError::Exited { log, .. }) = &**error else {
        panic!("expected QEMU's exit, got {error:?}");
    };
    assert!(
        log.iter().any(|l| l.contains("no-such-disk.ext4")),
        "QEMU says which file: {log:?}"
    );
    assert!(!spec.paths.api_socket.exists(), "no socket left");
    let stray = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(&*spec.paths.api_socket.to_string_lossy()));
    assert!(!stray, "no QEMU left running");
}

/// The cached Debian cloud kernel's `vmlinuz`, when banger-image's boot test fetched it.
fn cached_debian_kernel() -> Option<PathBuf> {
    let cache = std::env::var_os("BANGER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger-test"));
    std::fs::read_dir(&cache)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("linux-image-"))
        .filter_map(|e| std::fs::read_dir(e.path().join("root/boot")).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

#[tokio::test]
async fn a_stock_kernel_boots_under_tcg_and_its_panic_ends_qemu() {
    let qemu = require_qemu!();
    let Some(vmlinuz) = cached_debian_kernel() else {
        println!(
            "SKIP: Debian cloud kernel not found (run banger-image's boot_qemu test to cache it)"
        );
        return;
    };
    let fx = Fixture::new();
    let mut spec = spec(&fx, "stock");
    spec.kernel = fx.path().join("vmlinux");
    banger_image::kernel::extract_vmlinux(&vmlinuz, &spec.kernel).unwrap();
    spec.initrd = None;
    spec.memory_mib = 256;
    // No root file system and no init: the kernel panics, and panic=1 with -no-reboot ends QEMU.
    spec.boot_args = "console=ttyS0 reboot=k panic=1 root=/dev/nonexistent".into();

    let started = Instant::now();
    let vm = qemu.launch(&spec).unwrap();
    let _guard = KillOnDrop(vm.pid);
    let exited = tokio::time::timeout(Duration::from_secs(60), watch_exit(vm.pid)).await;
    let console = console_tail(&spec.paths.console_log, 400).unwrap();
    assert!(
        exited.is_ok(),
        "QEMU still runs after 60 s; console:\n{}",
        console.join("\n")
    );
    println!(
        "stock kernel: booted, panicked and QEMU exited in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let text = console.join("\n");
    assert!(text.contains("Linux version"), "{text}");
    assert!(text.contains("Kernel panic"), "{text}");
    assert_eq!(
        qemu.stop(&vm, GRACEFUL).unwrap(),
        StopOutcome::AlreadyExited
    );
    assert!(!vm.api_socket.exists());
}

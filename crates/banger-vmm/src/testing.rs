//! What the tests and benchmarks that run real VMMs share, here and in bangerd: the Firecracker
//! binary (or a visible `SKIP:` when it or `/dev/kvm` is missing), a VM small enough to start
//! anywhere, and the [`VmSpec`] banger's own tests describe VMs with ([`vm_spec`]). Compiled
//! for this crate's tests and, through the `fake` feature, for other crates' tests only.
//!
//! The kernel is not Linux: a stock guest kernel cannot boot under the paravirtual KVM
//! (`kvm_pvm`) of banger's build machines, and Firecracker's launch does not need one. It is a
//! 69-byte x86-64 program in a minimal ELF (one `PT_LOAD` segment at 1 MiB, entry there) that
//! Firecracker's loader accepts as a `vmlinux`; Firecracker enters it in 64-bit mode, it writes
//! one line to the serial port (so the console log can be checked) and halts forever, so the
//! instance stays `Running` until it is stopped. Its source, for the record:
//!
//! ```text
//!   mov dx, 0x3f8        ; COM1
//!   lea rsi, [rip+msg]
//! next: lodsb
//!   test al, al
//!   jz done
//!   out dx, al
//!   jmp next
//! done: hlt
//!   jmp done
//! msg: .asciz "banger-test-guest: hello from the tiny kernel\n"
//! ```

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_host::{CommandRunner, CommandSpec, RealRunner};

use crate::{BinaryError, DriveSpec, FirecrackerBinary, NetSpec, VmPaths, VmSpec, VsockSpec};

/// The line the tiny kernel prints on its console.
pub const GUEST_HELLO: &str = "banger-test-guest: hello from the tiny kernel";

/// The tiny guests never answer Ctrl-Alt-Del or the power button; a short graceful wait keeps
/// their stops quick.
pub const GRACEFUL: Duration = Duration::from_millis(300);

/// Where the ELF segment is loaded and entered: Firecracker's lowest kernel address.
const LOAD_ADDRESS: u64 = 0x10_0000;

/// What both tiny kernels run once `dx` names the serial port and `rsi` (or `esi`) the string:
/// write the NUL-terminated string to the port, then halt forever. The same bytes in 32-bit
/// and 64-bit mode.
pub const PRINT_AND_HALT: [u8; 11] = [
    0xac, // next: lodsb
    0x84, 0xc0, // test al, al
    0x74, 0x03, // jz done
    0xee, // out dx, al
    0xeb, 0xf8, // jmp next
    0xf4, // done: hlt
    0xeb, 0xfd, // jmp done
];

/// The firecracker binary (`FIRECRACKER_BIN`, else `PATH`), or `None` after printing why these
/// tests cannot run here.
pub fn firecracker_or_skip() -> Option<FirecrackerBinary> {
    let configured = std::env::var_os("FIRECRACKER_BIN").map(PathBuf::from);
    let binary = match FirecrackerBinary::detect(configured.as_deref(), &RealRunner) {
        Ok(binary) => binary,
        Err(BinaryError::NotInPath | BinaryError::Missing { .. }) => {
            banger_test_support::skip_absent!("firecracker not found");
            return None;
        }
        Err(error) => panic!("firecracker is unusable: {error}"),
    };
    if let Err(error) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        banger_test_support::skip!("/dev/kvm is not accessible: {error}");
        return None;
    }
    Some(binary)
}

/// One program header of an [`elf_executable`] and the bytes it maps: loaded and found at
/// `address` (physical and virtual alike).
pub struct Segment<'a> {
    /// `PT_LOAD` is 1, `PT_NOTE` 4.
    pub kind: u32,
    /// `PF_X` 1, `PF_W` 2, `PF_R` 4.
    pub flags: u32,
    pub address: u64,
    pub align: u64,
    pub bytes: &'a [u8],
}

/// An x86-64 ELF64 executable entered at `entry`, with no section headers: the program
/// headers of `segments`, then their bytes one after the other, in that order.
pub fn elf_executable(entry: u64, segments: &[Segment<'_>]) -> Vec<u8> {
    const EHDR: u16 = 64;
    const PHDR: u16 = 56;
    let count = u16::try_from(segments.len()).unwrap();
    let mut offset = u64::from(EHDR + count * PHDR);

    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&entry.to_le_bytes()); // e_entry
    elf.extend_from_slice(&u64::from(EHDR).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&EHDR.to_le_bytes());
    elf.extend_from_slice(&PHDR.to_le_bytes());
    elf.extend_from_slice(&count.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // no section headers
    assert_eq!(elf.len(), usize::from(EHDR));

    for segment in segments {
        let size = segment.bytes.len() as u64;
        elf.extend_from_slice(&segment.kind.to_le_bytes());
        elf.extend_from_slice(&segment.flags.to_le_bytes());
        elf.extend_from_slice(&offset.to_le_bytes());
        elf.extend_from_slice(&segment.address.to_le_bytes()); // p_vaddr
        elf.extend_from_slice(&segment.address.to_le_bytes()); // p_paddr
        elf.extend_from_slice(&size.to_le_bytes()); // p_filesz
        elf.extend_from_slice(&size.to_le_bytes()); // p_memsz
        elf.extend_from_slice(&segment.align.to_le_bytes());
        offset += size;
    }
    for segment in segments {
        elf.extend_from_slice(segment.bytes);
    }
    elf
}

/// The tiny kernel as an ELF64 executable.
pub fn tiny_kernel() -> Vec<u8> {
    let mut payload = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x48, 0x8d, 0x35, 0x0b, 0x00, 0x00, 0x00, // lea rsi, [rip+11]
    ];
    payload.extend_from_slice(&PRINT_AND_HALT);
    payload.extend_from_slice(GUEST_HELLO.as_bytes());
    payload.extend_from_slice(b"\n\0");
    elf_executable(
        LOAD_ADDRESS,
        &[Segment {
            kind: 1,  // PT_LOAD
            flags: 5, // R + X
            address: LOAD_ADDRESS,
            align: 0x1000,
            bytes: &payload,
        }],
    )
}

/// A sparse ext4 image of `mib` MiB made by `mkfs.ext4`.
pub fn ext4(path: &Path, mib: u64) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(mib << 20).unwrap();
    drop(file);
    RealRunner
        .run(
            &CommandSpec::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(path.to_string_lossy()),
        )
        .unwrap();
}

/// A VM `id` laid out as banger lays one out: the boot set (`vmlinux`, `initrd` and the
/// read-only `rootfs.ext4`) in `image`; its overlay and work disks, console log, VMM log
/// (`firecracker.log`) and metrics in `vm_dir`; its API socket at `api_socket`. One vCPU,
/// 64 MiB and a serial console; no network, no vsock. Tests change what they are about.
pub fn vm_spec(id: &str, image: &Path, vm_dir: &Path, api_socket: PathBuf) -> VmSpec {
    VmSpec {
        vm_id: id.into(),
        vcpus: 1,
        memory_mib: 64,
        kernel: image.join("vmlinux"),
        initrd: Some(image.join("initrd")),
        boot_args: "console=ttyS0 reboot=k panic=1".into(),
        drives: vec![
            DriveSpec {
                id: "rootfs".into(),
                path: image.join("rootfs.ext4"),
                read_only: true,
                is_root: false,
            },
            DriveSpec {
                id: "overlay".into(),
                path: vm_dir.join("overlay.ext4"),
                read_only: false,
                is_root: false,
            },
            DriveSpec {
                id: "work".into(),
                path: vm_dir.join("work.ext4"),
                read_only: false,
                is_root: false,
            },
        ],
        net: None,
        vsock: None,
        paths: VmPaths {
            api_socket,
            console_log: vm_dir.join("console.log"),
            vmm_log: vm_dir.join("firecracker.log"),
            metrics: vm_dir.join("metrics.json"),
        },
    }
}

/// A directory with the boot set (kernel, initrd, read-only root, work disk) that VMs share.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Fixture {
        let dir = tempfile::Builder::new().prefix("bvmm").tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinux"), tiny_kernel()).unwrap();
        // Firecracker only loads the initrd into guest memory; any content will do.
        std::fs::write(dir.path().join("initrd"), vec![0u8; 4096]).unwrap();
        ext4(&dir.path().join("rootfs.ext4"), 16);
        Fixture { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A VM `id` with the shared boot set, its own overlay and work disks, a vsock device and,
    /// when given, a network interface. The sockets are in the fixture's directory, whose
    /// short path keeps them within a socket address's length.
    pub fn spec(&self, id: &str, net: Option<NetSpec>) -> VmSpec {
        let base = self.path();
        let vm = base.join(id);
        std::fs::create_dir_all(&vm).unwrap();
        for disk in ["overlay.ext4", "work.ext4"] {
            let path = vm.join(disk);
            if !path.exists() {
                let file = std::fs::File::create(&path).unwrap();
                file.set_len(8 << 20).unwrap();
            }
        }
        VmSpec {
            net,
            vsock: Some(VsockSpec {
                cid: 3,
                uds_path: base.join(format!("{id}.vsock")),
            }),
            ..vm_spec(id, base, &vm, base.join(format!("{id}.sock")))
        }
    }
}

/// Whether the last lines of `spec`'s console log hold `text`.
pub fn console_has(spec: &VmSpec, text: &str) -> bool {
    crate::console_tail(&spec.paths.console_log, 200)
        .unwrap()
        .iter()
        .any(|l| l.contains(text))
}

/// Whether `path` is a Unix socket (not following a symbolic link).
pub fn is_socket(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_socket())
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Kills a VMM when dropped, so that a failing test leaves no Firecracker behind.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if banger_host::pid_alive(self.0) {
            let _ = banger_host::signal(self.0, banger_host::Signal::Kill);
        }
    }
}

/// The benchmarks' raw launch: `firecracker --no-api --config-file` with banger's own
/// configuration of `spec` (written next to its VMM log), timed from the spawn until
/// Firecracker logs `Successfully started microvm` (right after starting the vCPUs, where it
/// would answer `InstanceStart`). The log is polled every 100 µs; the process is killed and its
/// vsock socket removed afterwards.
pub fn launch_raw(firecracker: &Path, spec: &VmSpec) -> Duration {
    let config = crate::firecracker::configuration(spec, crate::firecracker::LogLevel::Info)
        .expect("configuration");
    let config_file = spec.paths.vmm_log.with_extension("json");
    std::fs::write(&config_file, serde_json::to_vec(&config).unwrap()).unwrap();
    std::fs::File::create(&spec.paths.vmm_log).unwrap();
    std::fs::File::create(&spec.paths.console_log).unwrap();
    let args = [
        "--no-api".into(),
        "--config-file".into(),
        config_file.into_os_string(),
        "--id".into(),
        spec.vm_id.clone().into(),
    ];

    let started = Instant::now();
    let pid = banger_host::spawn_detached(firecracker, &args, &[], &spec.paths.console_log)
        .expect("spawn firecracker");
    let _kill = KillOnDrop(pid);
    let deadline = started + Duration::from_secs(10);
    let elapsed = loop {
        let log = std::fs::read_to_string(&spec.paths.vmm_log).unwrap_or_default();
        if log.contains("Successfully started microvm") {
            break started.elapsed();
        }
        if !banger_host::pid_alive(pid) {
            panic!(
                "raw firecracker exited: {:?}",
                crate::console_tail(&spec.paths.console_log, 20)
            );
        }
        assert!(Instant::now() < deadline, "raw firecracker never started");
        std::thread::sleep(Duration::from_micros(100));
    };
    banger_host::signal(pid, banger_host::Signal::Kill).unwrap();
    assert!(
        banger_host::wait_for_exit(pid, Duration::from_secs(10)),
        "raw firecracker outlived SIGKILL"
    );
    if let Some(vsock) = &spec.vsock {
        let _ = std::fs::remove_file(&vsock.uds_path);
    }
    elapsed
}

/// Sorts `samples` and returns the median.
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    let mid = samples.len() / 2;
    if samples.len().is_multiple_of(2) {
        (samples[mid - 1] + samples[mid]) / 2
    } else {
        samples[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny kernel is its 69-byte program behind one `PT_LOAD` header, entered where it
    /// is loaded: what Firecracker's loader accepts as a `vmlinux`.
    #[test]
    fn the_tiny_kernel_is_one_load_segment_entered_at_1_mib() {
        let elf = tiny_kernel();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf.len(), 64 + 56 + 69);
        assert_eq!(elf[24..32], LOAD_ADDRESS.to_le_bytes()); // e_entry
        assert_eq!(elf[56..58], 1u16.to_le_bytes()); // e_phnum
        assert_eq!(elf[64 + 8..64 + 16], 120u64.to_le_bytes()); // p_offset
        assert_eq!(elf[120..124], [0x66, 0xba, 0xf8, 0x03]);
        assert_eq!(elf[131..142], PRINT_AND_HALT);
    }
}

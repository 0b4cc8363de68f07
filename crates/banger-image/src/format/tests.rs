//! What the format checks accept and refuse, on ELF kernel fixtures, real ext2/3/4 filesystems
//! made by mkfs, and initrd headers; and the role, path and hint each refusal names.
use super::*;
use banger_host::runner::{CommandRunner, CommandSpec, RealRunner};
use std::os::unix::fs::PermissionsExt;

const MIB: u64 = 1 << 20;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn elf_header(class: u8, data: u8, e_type: u16, machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1;
    h[0x10..0x12].copy_from_slice(&e_type.to_le_bytes());
    h[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
    h[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    h
}

fn vmlinux() -> Vec<u8> {
    elf_header(2, 1, 2, 0x3E)
}

const DEBIAN_BANNER: &[u8] = b"Linux version 6.1.0-28-cloud-amd64 \
    (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP \
    PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)\n\0";

/// A vmlinux of `len` bytes with the banner at `at`.
fn vmlinux_with_banner(len: usize, at: usize) -> Vec<u8> {
    let mut bytes = vmlinux();
    bytes.resize(len, 0x90);
    // Decoys the scan must skip: no release token, and a format string.
    bytes[100..114].copy_from_slice(BANNER);
    bytes[200..216].copy_from_slice(b"Linux version %s");
    bytes[at..at + DEBIAN_BANNER.len()].copy_from_slice(DEBIAN_BANNER);
    bytes
}

/// `err` has a hint, and the hint says each of `words`.
fn assert_hint(err: &FormatError, words: &[&str]) {
    let hint = err.hint().unwrap_or_else(|| panic!("no hint for {err}"));
    for word in words {
        assert!(hint.contains(word), "{word:?} not in the hint {hint:?}");
    }
}

fn sbin(tool: &str) -> String {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| format!("{dir}/{tool}"))
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| tool.to_owned())
}

fn mkfs(dir: &Path, tool: &str, label: &str) -> PathBuf {
    let path = dir.join(format!("{tool}.img"));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    RealRunner
        .run(
            &CommandSpec::new(sbin(tool))
                .args(["-q", "-F", "-L", label])
                .arg(path.to_str().unwrap()),
        )
        .unwrap_or_else(|e| panic!("{tool} (e2fsprogs) is needed by this test: {e}"));
    path
}

#[test]
fn vmlinux_with_banner_has_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "vmlinux",
        &vmlinux_with_banner(3 * MIB as usize, 2_500_000),
    );
    let info = check_kernel(&path).unwrap();
    assert_eq!(info.version.as_deref(), Some("6.1.0-28-cloud-amd64"));
}

#[test]
fn banner_across_a_chunk_boundary_is_found() {
    let dir = tempfile::tempdir().unwrap();
    for at in [SCAN_CHUNK - 5, SCAN_CHUNK - 20, SCAN_CHUNK + 60] {
        let bytes = vmlinux_with_banner(2 * SCAN_CHUNK + 100, at);
        let path = write(dir.path(), "vmlinux", &bytes);
        assert_eq!(
            check_kernel(&path).unwrap().version.as_deref(),
            Some("6.1.0-28-cloud-amd64"),
            "banner at {at}"
        );
    }
}

#[test]
fn banner_at_the_very_end_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vmlinux();
    bytes.extend_from_slice(b"Linux version 6.12.3");
    let path = write(dir.path(), "vmlinux", &bytes);
    assert_eq!(
        check_kernel(&path).unwrap().version.as_deref(),
        Some("6.12.3")
    );
}

#[test]
fn vmlinux_without_banner_has_no_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vmlinux();
    bytes.resize(100_000, 0);
    let path = write(dir.path(), "vmlinux", &bytes);
    assert_eq!(check_kernel(&path).unwrap(), KernelInfo { version: None });
}

#[test]
fn bzimage_is_refused_with_extraction_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0u8; 4096];
    bytes[..2].copy_from_slice(b"MZ");
    bytes[0x202..0x206].copy_from_slice(b"HdrS");
    let path = write(dir.path(), "vmlinuz", &bytes);
    let err = check_kernel(&path).unwrap_err();
    assert!(matches!(err, FormatError::BzImage { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "kernel {} is a compressed bzImage, not an uncompressed ELF vmlinux",
            path.display()
        )
    );
    assert_hint(&err, &["extract-vmlinux", "banger image bootstrap"]);
}

#[test]
fn wrong_elves_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (elf_header(1, 1, 2, 0x03), "32-bit"),
        (elf_header(2, 2, 2, 0x3E), "big-endian"),
        (elf_header(2, 1, 2, 0xB7), "AArch64"),
        (elf_header(2, 1, 1, 0x3E), "kernel module"),
        (elf_header(2, 1, 3, 0x3E), "shared object"),
        (b"\x7fELF\x02\x01".to_vec(), "truncated"),
    ];
    for (bytes, says) in cases {
        let path = write(dir.path(), "elf", &bytes);
        let err = check_kernel(&path).unwrap_err();
        assert!(matches!(err, FormatError::WrongElf { .. }), "{err:?}");
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
}

#[test]
fn other_files_are_not_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let gz = write(dir.path(), "vmlinux.gz", &[0x1f, 0x8b, 8, 0, 0, 0]);
    let err = check_kernel(&gz).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::NotAKernel {
                found: FileKind::Gzip,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a kernel"), "{err}");
    assert_hint(&err, &["decompress"]);

    let cpio = write(dir.path(), "initrd", b"070701000000");
    let err = check_kernel(&cpio).unwrap_err();
    assert_hint(&err, &["swapped"]);

    let text = write(dir.path(), "notes.txt", b"hello");
    let err = check_kernel(&text).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "kernel {} is not a kernel (found unrecognised data)",
            text.display()
        )
    );
}

#[test]
fn real_ext4_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = mkfs(dir.path(), "mkfs.ext4", "banger-test");
    let info = check_rootfs(&path).unwrap();
    assert_eq!(info.label.as_deref(), Some("banger-test"));
    assert_eq!(info.size_bytes(), 8 * MIB);
    assert!([1024, 4096].contains(&info.block_size), "{info:?}");
    assert_eq!(info.uuid.len(), 36);

    let out = RealRunner
        .run(
            &CommandSpec::new(sbin("blkid"))
                .args(["-o", "value", "-s", "UUID"])
                .arg(path.to_str().unwrap()),
        )
        .unwrap();
    assert_eq!(out.stdout_lossy().trim(), info.uuid, "same UUID as blkid");
}

#[test]
fn ext4_without_label_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = mkfs(dir.path(), "mkfs.ext4", "");
    assert_eq!(check_rootfs(&path).unwrap().label, None);
}

#[test]
fn ext2_and_ext3_are_refused_with_conversion_hint() {
    let dir = tempfile::tempdir().unwrap();
    for (tool, fs) in [("mkfs.ext2", "ext2"), ("mkfs.ext3", "ext3")] {
        let path = mkfs(dir.path(), tool, "old");
        let err = check_rootfs(&path).unwrap_err();
        assert!(
            matches!(&err, FormatError::OldExt { fs: found, .. } if *found == fs),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "rootfs {} is an {fs} filesystem; banger needs ext4",
                path.display()
            )
        );
        assert_hint(&err, &["tune2fs -O", "mkfs.ext4 -d"]);
    }
}

#[test]
fn truncated_ext4_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = mkfs(dir.path(), "mkfs.ext4", "cut");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let err = check_rootfs(&path).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::Truncated { fs_bytes, file_bytes, .. }
                if fs_bytes == 8 * MIB && file_bytes == 4 * MIB
        ),
        "{err:?}"
    );
}

#[test]
fn partitioned_disks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut mbr = vec![0u8; 4096];
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let path = write(dir.path(), "disk.img", &mbr);
    let err = check_rootfs(&path).unwrap_err();
    assert!(
        matches!(err, FormatError::PartitionedDisk { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("not a bare filesystem image"),
        "{err}"
    );
    assert_hint(&err, &["partition"]);

    let mut gpt = mbr.clone();
    gpt[512..520].copy_from_slice(b"EFI PART");
    let path = write(dir.path(), "gpt.img", &gpt);
    let err = check_rootfs(&path).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::PartitionedDisk {
                found: FileKind::GptDisk,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn other_files_are_not_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "rootfs.ext4", &[0u8; 1500]);
    let err = check_rootfs(&path).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::NotExt4 {
                found: FileKind::Unknown,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("rootfs "), "{err}");

    let path = write(dir.path(), "vmlinux", &vmlinux());
    let err = check_rootfs(&path).unwrap_err();
    assert_hint(&err, &["swapped"]);
}

#[test]
fn corrupt_superblock_is_refused_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0u8; 2048];
    bytes[1024 + 0x38..1024 + 0x3A].copy_from_slice(&ext::MAGIC.to_le_bytes());
    bytes[1024 + 0x60..1024 + 0x64].copy_from_slice(&ext::INCOMPAT_EXTENTS.to_le_bytes());
    bytes[1024 + 0x18..1024 + 0x1C].copy_from_slice(&40u32.to_le_bytes());
    let path = write(dir.path(), "rootfs.ext4", &bytes);
    let err = check_rootfs(&path).unwrap_err();
    assert!(matches!(err, FormatError::CorruptExt4 { .. }), "{err:?}");
}

#[test]
fn initrd_formats_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[u8], InitrdFormat); 9] = [
        (b"07070100000001", InitrdFormat::Cpio),
        (b"07070200000001", InitrdFormat::Cpio),
        (&[0x1f, 0x8b, 0x08, 0x00], InitrdFormat::Gzip),
        (&[0x28, 0xb5, 0x2f, 0xfd, 0x00], InitrdFormat::Zstd),
        (
            &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00],
            InitrdFormat::Xz,
        ),
        (&[0x02, 0x21, 0x4c, 0x18, 0x00], InitrdFormat::Lz4),
        (&[0x04, 0x22, 0x4d, 0x18, 0x00], InitrdFormat::Lz4),
        (b"BZh91AY&SY", InitrdFormat::Bzip2),
        (&[0x5d, 0x00, 0x00, 0x80, 0x00], InitrdFormat::Lzma),
    ];
    for (bytes, format) in cases {
        let path = write(dir.path(), "initrd.img", bytes);
        assert_eq!(check_initrd(&path).unwrap(), format, "{bytes:x?}");
    }
}

#[test]
fn other_files_are_not_initrds() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "initrd.img", b"070707odc");
    let err = check_initrd(&path).unwrap_err();
    assert_hint(&err, &["newc"]);

    let path = write(dir.path(), "initrd.img", b"#!/bin/sh\n");
    let err = check_initrd(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "initrd {} is not an initramfs (found unrecognised data)",
            path.display()
        )
    );
    assert!(err.hint().is_some());
}

#[test]
fn common_failures_name_role_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let empty = write(dir.path(), "empty", b"");
    type Check = fn(&Path) -> Result<(), FormatError>;
    let checks: [(&str, Check); 3] = [
        ("kernel", |p| check_kernel(p).map(drop)),
        ("rootfs", |p| check_rootfs(p).map(drop)),
        ("initrd", |p| check_initrd(p).map(drop)),
    ];
    for (role, check) in checks {
        let err = check(&missing).unwrap_err();
        assert!(matches!(err, FormatError::Missing { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("{role} {}: no such file", missing.display())
        );
        assert_eq!(err.role().to_string(), role);
        assert_eq!(err.path(), missing);

        let err = check(&missing.join("below")).unwrap_err();
        assert!(matches!(err, FormatError::Missing { .. }), "{err:?}");

        let err = check(dir.path()).unwrap_err();
        assert!(matches!(err, FormatError::Directory { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("{role} {} is a directory, not a file", dir.path().display())
        );
        assert!(err.hint().is_some());

        let err = check(&empty).unwrap_err();
        assert!(matches!(err, FormatError::Empty { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("{role} {} is empty", empty.display())
        );

        let err = check(Path::new("/dev/null")).unwrap_err();
        assert!(matches!(err, FormatError::NotAFile { .. }), "{err:?}");
    }
}

#[test]
fn open_errors_are_classified() {
    let path = Path::new("/k");
    let denied = io::Error::from(io::ErrorKind::PermissionDenied);
    let err = open_error(FileRole::Kernel, path, denied);
    assert!(
        matches!(err, FormatError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "kernel /k: permission denied");
    assert_hint(&err, &["chmod a+r /k"]);
    let other = io::Error::other("EIO");
    let err = open_error(FileRole::Initrd, path, other);
    assert!(matches!(err, FormatError::Read { .. }), "{err:?}");
    assert_eq!(err.to_string(), "cannot read initrd /k");
}

#[test]
fn unreadable_file_is_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "vmlinux", &vmlinux());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if File::open(&path).is_ok() {
        eprintln!("SKIP: running as root, a mode-000 file is still readable");
        return;
    }
    let err = check_kernel(&path).unwrap_err();
    assert!(
        matches!(err, FormatError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("kernel {}: permission denied", path.display())
    );
    assert_hint(&err, &["chmod a+r"]);
}

#[test]
fn a_swapped_file_is_named_by_what_it_looks_like_and_both_options() {
    assert_eq!(
        swapped(FileRole::Kernel, FileRole::Initrd),
        "this looks like an initrd; were --kernel and --initrd swapped?"
    );
    assert_eq!(
        swapped(FileRole::Initrd, FileRole::Rootfs),
        "this looks like a root filesystem; were --initrd and --rootfs swapped?"
    );
    assert_eq!(
        swapped(FileRole::Rootfs, FileRole::Kernel),
        "this looks like a kernel; were --rootfs and --kernel swapped?"
    );
}

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::*;

/// One entry read back from a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CpioEntry {
    name: String,
    ino: u32,
    mode: u32,
    uid: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

/// The entries of a newc archive, read with the shared reader (whose own tests check it
/// against an archive written by hand), checking the trailer and the 512-byte padding.
fn read_newc(bytes: &[u8]) -> Vec<CpioEntry> {
    let mut reader = banger_guest_contract::newc::Reader::new(bytes);
    let mut out = Vec::new();
    while let Some(e) = reader.next_entry().expect("a well-formed newc archive") {
        out.push(CpioEntry {
            name: e.name.to_owned(),
            ino: e.metadata.ino,
            mode: e.metadata.mode,
            uid: e.metadata.uid,
            mtime: e.metadata.mtime,
            rdev: e.metadata.rdev,
            data: e.data.to_vec(),
        });
    }
    assert!(
        reader.rest().iter().all(|&b| b == 0),
        "only padding after the trailer"
    );
    assert_eq!(bytes.len() % 512, 0, "padded to 512-byte blocks");
    out
}

/// A fake module: an ELF with a `.modinfo` section declaring `depends`.
fn fake_ko(name: &str, depends: &[&str]) -> Vec<u8> {
    let modinfo = format!(
        "license=GPL\0depends={}\0name={name}\0vermagic=6.1.0 SMP mod_unload\0",
        depends.join(",")
    );
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[6] = 1;
    elf[0x10..0x12].copy_from_slice(&1u16.to_le_bytes()); // ET_REL, as modules are
    elf[0x12..0x14].copy_from_slice(&0x3Eu16.to_le_bytes());
    let modinfo_off = elf.len();
    elf.extend_from_slice(modinfo.as_bytes());
    let strtab_off = elf.len();
    elf.extend_from_slice(shstrtab);
    while !elf.len().is_multiple_of(8) {
        elf.push(0);
    }
    let shoff = elf.len();
    let section = |name: u32, off: usize, len: usize| {
        let mut sh = vec![0u8; 64];
        sh[0..4].copy_from_slice(&name.to_le_bytes());
        sh[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
        sh[0x20..0x28].copy_from_slice(&(len as u64).to_le_bytes());
        sh
    };
    elf.extend_from_slice(&[0u8; 64]); // the null section
    elf.extend_from_slice(&section(1, modinfo_off, modinfo.len()));
    elf.extend_from_slice(&section(10, strtab_off, shstrtab.len()));
    elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    elf
}

/// A modules tree shaped like Debian's cloud kernel: virtio core modular, ext4 and
/// crc32c built in, net_failover a dependency of virtio_net.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

const MODULES: &[(&str, &str, &[&str])] = &[
    ("kernel/drivers/virtio/virtio.ko", "virtio", &[]),
    ("kernel/drivers/virtio/virtio_ring.ko", "virtio_ring", &[]),
    (
        "kernel/drivers/virtio/virtio_mmio.ko",
        "virtio_mmio",
        &["virtio", "virtio_ring"],
    ),
    (
        "kernel/drivers/block/virtio_blk.ko",
        "virtio_blk",
        &["virtio", "virtio_ring"],
    ),
    ("kernel/net/core/failover.ko", "failover", &[]),
    (
        "kernel/drivers/net/net_failover.ko",
        "net_failover",
        &["failover"],
    ),
    (
        "kernel/drivers/net/virtio_net.ko",
        "virtio_net",
        &["virtio_ring", "virtio", "net_failover"],
    ),
    ("kernel/net/vmw_vsock/vsock.ko", "vsock", &[]),
    (
        "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
        "vmw_vsock_virtio_transport_common",
        &["vsock", "virtio", "virtio_ring"],
    ),
    (
        "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
        "vmw_vsock_virtio_transport",
        &[
            "virtio",
            "vmw_vsock_virtio_transport_common",
            "virtio_ring",
            "vsock",
        ],
    ),
    ("kernel/fs/overlayfs/overlay.ko", "overlay", &[]),
    ("kernel/drivers/hid/hid-generic.ko", "hid_generic", &[]),
];

fn tree(with_modules_dep: bool, compress: Option<&str>) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib/modules/6.1.0-99-cloud-amd64");
    let mut dep = String::new();
    for (path, name, deps) in MODULES {
        let mut bytes = fake_ko(name, deps);
        let mut path = path.to_string();
        match compress {
            Some("xz") if *name == "virtio_blk" => {
                let mut w =
                    lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(3))
                        .unwrap();
                w.write_all(&bytes).unwrap();
                bytes = w.finish().unwrap();
                path.push_str(".xz");
            }
            Some("zst") if *name == "overlay" => {
                bytes = zstd::encode_all(&bytes[..], 3).unwrap();
                path.push_str(".zst");
            }
            _ => {}
        }
        let full = root.join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, bytes).unwrap();
        // modules.dep lists dependency paths; use the tree's own paths for them.
        let dep_paths: Vec<String> = deps
            .iter()
            .map(|d| {
                MODULES
                    .iter()
                    .find(|(_, n, _)| n == d)
                    .map(|(p, _, _)| p.to_string())
                    .unwrap()
            })
            .collect();
        dep.push_str(&format!("{path}: {}\n", dep_paths.join(" ")));
    }
    if with_modules_dep {
        std::fs::write(root.join("modules.dep"), dep).unwrap();
    }
    std::fs::write(
        root.join("modules.builtin"),
        "kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\nkernel/crypto/crc32c_generic.ko\n\
         kernel/arch/x86/events/amd/amd-uncore.ko\n",
    )
    .unwrap();
    Tree { _dir: dir, root }
}

fn names(resolution: &Resolution) -> Vec<&str> {
    resolution.modules.iter().map(|m| m.name.as_str()).collect()
}

const EXPECTED_ORDER: [&str; 11] = [
    "virtio",
    "virtio_ring",
    "virtio_mmio",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "overlay",
];

#[test]
fn resolves_guest_modules_in_dependency_order_from_modules_dep() {
    let t = tree(true, None);
    let tree = ModuleTree::open(&t.root).unwrap();
    assert_eq!(tree.version(), "6.1.0-99-cloud-amd64");
    let r = tree.resolve(GUEST_MODULES).unwrap();
    assert_eq!(names(&r), EXPECTED_ORDER);
    assert_eq!(r.builtin, ["ext4"]);
    assert_eq!(
        r.modules[3].path,
        Path::new("kernel/drivers/block/virtio_blk.ko")
    );
    assert!(tree.is_builtin("amd-uncore") && tree.is_builtin("amd_uncore"));
}

#[test]
fn without_modules_dep_dependencies_come_from_modinfo() {
    // What `dpkg-deb -x` of a Debian kernel package gives: depmod never ran.
    let t = tree(false, None);
    let tree = ModuleTree::open(&t.root).unwrap();
    let r = tree.resolve(GUEST_MODULES).unwrap();
    assert_eq!(names(&r), EXPECTED_ORDER);
    assert_eq!(r.builtin, ["ext4"]);
}

#[test]
fn every_dependency_is_loaded_once_and_before_its_users() {
    let t = tree(true, None);
    let tree = ModuleTree::open(&t.root).unwrap();
    let r = tree
        .resolve(&[
            "vmw_vsock_virtio_transport",
            "virtio-blk",
            "virtio_blk",
            "vsock",
        ])
        .unwrap();
    assert_eq!(
        names(&r),
        [
            "virtio",
            "vsock",
            "virtio_ring",
            "vmw_vsock_virtio_transport_common",
            "vmw_vsock_virtio_transport",
            "virtio_blk",
        ]
    );
    let pos = |n: &str| names(&r).iter().position(|m| *m == n).unwrap();
    for (_, name, deps) in MODULES {
        if names(&r).contains(name) {
            for dep in *deps {
                assert!(pos(dep) < pos(name), "{dep} must come before {name}");
            }
        }
    }
    let unique: HashSet<_> = names(&r).into_iter().collect();
    assert_eq!(unique.len(), r.modules.len());
}

#[test]
fn missing_modules_are_named() {
    let t = tree(true, None);
    let tree = ModuleTree::open(&t.root).unwrap();
    let err = tree.resolve(&["virtio_blk", "nvme"]).unwrap_err();
    assert!(
        matches!(&err, InitramfsError::MissingModule { name, .. } if name == "nvme"),
        "{err:?}"
    );
    assert!(err.to_string().contains("nvme"), "{err}");

    // A dependency that vanished: the message says who needed it.
    std::fs::write(
        t.root.join("modules.dep"),
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_gone.ko\n",
    )
    .unwrap();
    let tree = ModuleTree::open(&t.root).unwrap();
    let err = tree.resolve(&["virtio_blk"]).unwrap_err();
    assert!(
        matches!(&err, InitramfsError::MissingDependency { name, needed_by, .. }
            if name == "virtio_gone" && needed_by == "virtio_blk"),
        "{err:?}"
    );
}

#[test]
fn dependency_cycles_are_reported() {
    let t = tree(true, None);
    std::fs::write(
        t.root.join("modules.dep"),
        "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n",
    )
    .unwrap();
    let tree = ModuleTree::open(&t.root).unwrap();
    let err = tree.resolve(&["a"]).unwrap_err();
    assert!(
        matches!(&err, InitramfsError::DependencyCycle(c) if c == "a -> b -> a"),
        "{err:?}"
    );
}

#[test]
fn not_a_modules_tree() {
    let dir = tempfile::tempdir().unwrap();
    let err = ModuleTree::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, InitramfsError::NotAModulesTree { .. }),
        "{err:?}"
    );
}

#[test]
fn the_writer_produces_a_sorted_deterministic_newc_archive() {
    let mut a = Initramfs::new();
    a.file("/init", 0o755, &b"#!init"[..]).unwrap();
    a.file("lib/modules/x/kernel/a.ko", 0o644, vec![1, 2, 3, 4, 5])
        .unwrap();
    a.char_device("dev/console", 0o600, 5, 1).unwrap();
    a.symlink("sbin", "bin").unwrap();
    a.dir("proc", 0o555).unwrap();
    let bytes = a.to_bytes();
    assert_eq!(bytes, a.clone().to_bytes(), "deterministic");

    let entries = read_newc(&bytes);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dev",
            "dev/console",
            "init",
            "lib",
            "lib/modules",
            "lib/modules/x",
            "lib/modules/x/kernel",
            "lib/modules/x/kernel/a.ko",
            "proc",
            "sbin"
        ]
    );
    let by = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
    assert_eq!(by("init").mode, 0o100755);
    assert_eq!(by("init").data, b"#!init");
    assert_eq!(by("dev").mode, 0o040755);
    assert_eq!(by("proc").mode, 0o040555);
    assert_eq!(by("dev/console").mode, 0o020600);
    assert_eq!(by("dev/console").rdev, (5, 1));
    assert_eq!(by("sbin").mode, 0o120777);
    assert_eq!(by("sbin").data, b"bin");
    assert_eq!(by("lib/modules/x/kernel/a.ko").data, [1, 2, 3, 4, 5]);
    assert!(entries.iter().all(|e| e.uid == 0 && e.mtime == 0));
    let inos: HashSet<u32> = entries.iter().map(|e| e.ino).collect();
    assert_eq!(inos.len(), entries.len(), "inode numbers are unique");

    // Insertion order does not matter.
    let mut b = Initramfs::new();
    b.dir("proc", 0o555).unwrap();
    b.symlink("sbin", "bin").unwrap();
    b.char_device("dev/console", 0o600, 5, 1).unwrap();
    b.file("lib/modules/x/kernel/a.ko", 0o644, vec![1, 2, 3, 4, 5])
        .unwrap();
    b.file("init", 0o755, &b"#!init"[..]).unwrap();
    assert_eq!(b.to_bytes(), bytes);

    assert!(matches!(
        Initramfs::new().file("../etc/passwd", 0o644, vec![]),
        Err(InitramfsError::BadPath(_))
    ));
    assert!(Initramfs::new().dir("/", 0o755).is_err());
}

#[test]
fn build_writes_init_modules_and_load_list() {
    let t = tree(false, None);
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("banger-init");
    std::fs::write(&init, b"\x7fELF init").unwrap();
    let out = dir.path().join("initrd");
    let report = build_initramfs(
        &init,
        &t.root,
        GUEST_MODULES,
        InitramfsCompression::Gzip,
        &out,
    )
    .unwrap();
    assert_eq!(report.modules, EXPECTED_ORDER);
    assert_eq!(report.builtin, ["ext4"]);
    assert_eq!(report.kernel_version, "6.1.0-99-cloud-amd64");
    assert_eq!(
        crate::format::check_initrd(&out).unwrap(),
        crate::format::InitrdFormat::Gzip
    );

    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap())
        .read_to_end(&mut cpio)
        .unwrap();
    assert_eq!(report.bytes, std::fs::metadata(&out).unwrap().len());
    let entries = read_newc(&cpio);
    let by = |n: &str| entries.iter().find(|e| e.name == n);
    let init_entry = by("init").unwrap();
    assert_eq!(init_entry.mode, 0o100755);
    assert_eq!(init_entry.data, b"\x7fELF init");
    assert_eq!(by("dev/console").unwrap().rdev, (5, 1));
    let list = String::from_utf8(by(MODULE_LIST).unwrap().data.clone()).unwrap();
    let listed: Vec<&str> = list.lines().collect();
    assert_eq!(listed.len(), EXPECTED_ORDER.len());
    assert_eq!(
        listed[3],
        "/lib/modules/6.1.0-99-cloud-amd64/kernel/drivers/block/virtio_blk.ko"
    );
    for path in &listed {
        let entry = by(path.trim_start_matches('/')).unwrap_or_else(|| panic!("{path}"));
        assert!(entry.data.starts_with(b"\x7fELF"));
    }
    // Modules nobody asked for stay out.
    assert!(entries.iter().all(|e| !e.name.contains("hid")));
    // Nothing else was left next to the output.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    // The init's features are listed, and found again in the compressed and plain forms.
    assert_eq!(init_features(&out).unwrap(), banger_init::FEATURES);
    let plain = dir.path().join("initrd.cpio");
    std::fs::write(&plain, &cpio).unwrap();
    assert_eq!(init_features(&plain).unwrap(), ["config-drive"]);
    std::fs::remove_file(&plain).unwrap();

    // Same inputs, same bytes.
    let again = dir.path().join("initrd2");
    build_initramfs(
        &init,
        &t.root,
        GUEST_MODULES,
        InitramfsCompression::Gzip,
        &again,
    )
    .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn other_initrds_list_no_features() {
    let dir = tempfile::tempdir().unwrap();
    let without = dir.path().join("without");
    let mut archive = Initramfs::new();
    archive
        .file("init", 0o755, b"#!/bin/sh\n".to_vec())
        .unwrap();
    archive.file("zz", 0o644, b"x".to_vec()).unwrap();
    std::fs::write(&without, archive.to_bytes()).unwrap();
    assert!(init_features(&without).unwrap().is_empty());
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"\x28\xb5\x2f\xfd zstd, not read").unwrap();
    assert!(init_features(&junk).unwrap().is_empty());
    std::fs::write(&junk, b"").unwrap();
    assert!(init_features(&junk).unwrap().is_empty());
    assert!(init_features(&dir.path().join("missing")).is_err());
}

#[test]
fn compressed_modules_are_stored_decompressed() {
    for (with_dep, kind) in [(true, "xz"), (false, "xz"), (true, "zst"), (false, "zst")] {
        let t = tree(with_dep, Some(kind));
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        std::fs::write(&init, b"init").unwrap();
        let tree = ModuleTree::open(&t.root).unwrap();
        let (archive, r) = assemble(&init, &tree, GUEST_MODULES).unwrap();
        assert_eq!(names(&r), EXPECTED_ORDER, "{kind}, modules.dep: {with_dep}");
        let entries = read_newc(&archive.to_bytes());
        let by = |n: &str| entries.iter().find(|e| e.name == n);
        let (name, stored) = if kind == "xz" {
            ("virtio_blk", "kernel/drivers/block/virtio_blk.ko")
        } else {
            ("overlay", "kernel/fs/overlayfs/overlay.ko")
        };
        let entry = by(&format!("lib/modules/6.1.0-99-cloud-amd64/{stored}"))
            .unwrap_or_else(|| panic!("{kind}: {stored} missing"));
        assert_eq!(
            entry.data,
            fake_ko(name, MODULES.iter().find(|m| m.1 == name).unwrap().2)
        );
        let list = String::from_utf8(by(MODULE_LIST).unwrap().data.clone()).unwrap();
        assert!(list.lines().all(|l| l.ends_with(".ko")), "{list}");
    }
}

#[test]
fn a_failed_build_leaves_nothing() {
    let t = tree(true, None);
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    std::fs::write(&init, b"init").unwrap();
    let out = dir.path().join("initrd");
    let err = build_initramfs(
        &init,
        &t.root,
        &["virtio_blk", "missing_one"],
        InitramfsCompression::None,
        &out,
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing_one"), "{err}");
    let err = build_initramfs(
        &dir.path().join("no-init"),
        &t.root,
        &[],
        InitramfsCompression::None,
        &out,
    )
    .unwrap_err();
    assert!(matches!(err, InitramfsError::Read { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

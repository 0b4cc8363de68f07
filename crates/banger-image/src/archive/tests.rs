//! Image archives end to end on a small synthetic image: an ELF kernel fixture, banger-shaped
//! initrd, a real ext4 made by mkfs.ext4, a work seed. What a failed or cancelled export or
//! import leaves behind (nothing) is checked for each way of failing.

use std::cell::{Cell, RefCell};
use std::os::unix::fs::MetadataExt;

use banger_host::runner::{CommandRunner, CommandSpec, RealRunner};
use banger_test_support::fake_vmlinux;

use super::*;

const MIB: u64 = 1 << 20;
/// The kernel release of the synthetic image's kernel.
const KERNEL_VERSION: &str = "6.1.0-archive-test";

#[derive(Default)]
struct Log {
    events: RefCell<Vec<String>>,
    cancel_after_progress: Cell<Option<usize>>,
    progress_seen: Cell<usize>,
}

impl Reporter for Log {
    fn begin(&self, stage: &str) {
        self.events.borrow_mut().push(format!("begin {stage}"));
    }
    fn progress(&self, _stage: &str, _done: u64, _total: u64) {
        self.progress_seen.set(self.progress_seen.get() + 1);
    }
    fn done(&self, stage: &str, _note: Option<String>) {
        self.events.borrow_mut().push(format!("done {stage}"));
    }
    fn skip(&self, stage: &str, _reason: &str) {
        self.events.borrow_mut().push(format!("skip {stage}"));
    }
    fn cancelled(&self) -> bool {
        self.cancel_after_progress
            .get()
            .is_some_and(|n| self.progress_seen.get() >= n)
    }
}

/// A stored image in `root/images/src` with a `rootfs_bytes` ext4 root, an initrd, a work
/// seed (a file, a directory, a symlink) and a bootstrap-style manifest carrying the seed's
/// fingerprint and fields the record does not know.
fn stored_image(root: &Path, rootfs_bytes: u64) -> (Image, PathBuf) {
    let dir = root.join("images/src");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(KERNEL_FILE), fake_vmlinux(KERNEL_VERSION)).unwrap();
    let mut cpio = crate::initramfs::Initramfs::new();
    cpio.file("init", 0o755, b"\x7fELF".to_vec()).unwrap();
    cpio.init_features().unwrap();
    fs::write(dir.join(INITRD_FILE), cpio.to_bytes()).unwrap();
    let rootfs = dir.join(ROOTFS_FILE);
    File::create(&rootfs)
        .unwrap()
        .set_len(rootfs_bytes)
        .unwrap();
    RealRunner
        .run(&CommandSpec::new("mkfs.ext4").args(["-q", "-F", rootfs.to_str().unwrap()]))
        .expect("mkfs.ext4 (e2fsprogs) is needed");

    let seed = dir.join(WORK_SEED_DIR);
    fs::create_dir(&seed).unwrap();
    fs::set_permissions(&seed, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(seed.join(".profile"), "export EDITOR=vi\n").unwrap();
    fs::create_dir(seed.join(".config")).unwrap();
    fs::set_permissions(seed.join(".config"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(seed.join(".config/tool.toml"), "x = 1\n").unwrap();
    fs::set_permissions(
        seed.join(".config/tool.toml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink(".profile", seed.join(".bash_profile")).unwrap();
    let fingerprint = vmdisk::fingerprint(&seed).unwrap();

    let manifest = ImageManifest {
        publish: Vec::new(),
        name: "debian".into(),
        distro: Some("debian".into()),
        suite: Some("bookworm".into()),
        kernel_version: Some(KERNEL_VERSION.into()),
        packages: vec![banger_api::Package {
            name: "openssh-server".into(),
            version: "1:9.2p1-2".into(),
        }],
        services: vec![banger_api::ServiceCheck {
            name: "ssh".into(),
            port: 22,
            timeout_secs: None,
            http: None,
        }],
        init_features: vec!["config-drive".into()],
        created_from: "debootstrap bookworm".into(),
        created_at: Timestamp::from_millis(1_763_900_000_000),
        imported_from: None,
    };
    let mut raw = serde_json::to_value(&manifest).unwrap();
    raw["work_seed"] = serde_json::json!({"dir": WORK_SEED_DIR, "fingerprint": fingerprint});
    raw["inputs"] = serde_json::json!({"mirror": "http://deb.debian.org/debian"});
    fs::write(
        dir.join(MANIFEST_FILE),
        serde_json::to_vec_pretty(&raw).unwrap(),
    )
    .unwrap();
    let file = |name: &str| ImageFile {
        path: dir.join(name).display().to_string(),
        bytes: fs::metadata(dir.join(name)).unwrap().len(),
        allocated_bytes: 0,
    };
    let image = Image {
        id: "src".into(),
        name: "debian".into(),
        source: ImageSource::Bootstrapped,
        files: ImageFiles {
            kernel: file(KERNEL_FILE),
            initrd: Some(file(INITRD_FILE)),
            rootfs: file(ROOTFS_FILE),
        },
        manifest,
        created_at: Timestamp::now(),
        retired: None,
    };
    (image, dir)
}

/// Names in `dir`, sorted: what an export or import left there.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Compares two files a MiB at a time (a 2 GiB rootfs is not read into memory).
fn same_bytes(a: &Path, b: &Path) {
    use std::os::unix::fs::FileExt;
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let len = fa.metadata().unwrap().len();
    assert_eq!(
        len,
        fb.metadata().unwrap().len(),
        "{} and {}",
        a.display(),
        b.display()
    );
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(MIB) as usize;
        fa.read_exact_at(&mut x[..n], offset).unwrap();
        fb.read_exact_at(&mut y[..n], offset).unwrap();
        assert!(
            x[..n] == y[..n],
            "{} and {} differ at {offset}",
            a.display(),
            b.display()
        );
        offset += n as u64;
    }
}

#[test]
fn a_round_trip_gives_the_same_image_and_a_sparse_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, src_dir) = stored_image(tmp.path(), 2 << 30);
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let file = out_dir.join("debian.banger-image");

    let log = Log::default();
    let exported = export(&image, &src_dir, &file, false, &log).unwrap();
    assert_eq!(
        names(&out_dir),
        ["debian.banger-image"],
        "no temp file left"
    );
    assert_eq!(exported.bytes, fs::metadata(&file).unwrap().len());
    assert!(
        exported.bytes < 16 * MIB,
        "a 2 GiB sparse rootfs compresses to {} bytes",
        exported.bytes
    );
    assert_eq!(
        *log.events.borrow(),
        [
            "begin pack kernel",
            "done pack kernel",
            "begin pack initrd",
            "done pack initrd",
            "begin pack rootfs",
            "done pack rootfs",
            "begin pack work seed",
            "done pack work seed",
            "begin write file",
            "done write file",
        ]
    );

    let head = read_head(&file).unwrap();
    assert_eq!(head.label.name, "debian");
    assert_eq!(head.label.version, FORMAT_VERSION);
    assert_eq!(head.manifest, image.manifest);

    let dst_dir = tmp.path().join("images/dst");
    let log = Log::default();
    let imported = import("dst", "copy", &file, &dst_dir, &log).unwrap();
    assert_eq!(imported.name, "copy");
    assert_eq!(imported.id, "dst");
    assert_eq!(imported.source, ImageSource::Imported);
    for name in [KERNEL_FILE, INITRD_FILE, ROOTFS_FILE] {
        same_bytes(&src_dir.join(name), &dst_dir.join(name));
    }
    // The sparse write: the imported 2 GiB rootfs holds only what mkfs.ext4 wrote.
    let rootfs = dst_dir.join(ROOTFS_FILE);
    let meta = fs::metadata(&rootfs).unwrap();
    assert_eq!(meta.len(), 2 << 30);
    assert!(
        meta.blocks() * 512 < 128 * MIB,
        "the imported rootfs allocates {} bytes",
        meta.blocks() * 512
    );
    assert_eq!(imported.files.rootfs.bytes, 2 << 30);
    // What the record says (measured right after the write, before writeback settles).
    assert!(imported.files.rootfs.allocated_bytes < 128 * MIB);

    // The work seed: same content, modes and symlink, hence the same fingerprint.
    let seed = dst_dir.join(WORK_SEED_DIR);
    assert_eq!(
        vmdisk::fingerprint(&seed).unwrap(),
        vmdisk::fingerprint(&src_dir.join(WORK_SEED_DIR)).unwrap()
    );
    assert_eq!(fs::metadata(&seed).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(
        fs::read_link(seed.join(".bash_profile")).unwrap(),
        Path::new(".profile")
    );

    // The manifest keeps everything but the name, and says where it came from.
    let mut expected = image.manifest.clone();
    expected.name = "copy".into();
    let imported_from = imported.manifest.imported_from.clone().unwrap();
    assert!(
        imported_from.starts_with(&format!("{} (image \"debian\"", file.display())),
        "{imported_from}"
    );
    expected.imported_from = Some(imported_from);
    assert_eq!(imported.manifest, expected);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&fs::read(dst_dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(on_disk["name"], "copy");
    assert_eq!(on_disk["inputs"]["mirror"], "http://deb.debian.org/debian");
    assert_eq!(
        serde_json::from_value::<ImageManifest>(on_disk).unwrap(),
        imported.manifest
    );
    assert_eq!(
        *log.events.borrow(),
        [
            "begin read label",
            "done read label",
            "begin unpack kernel",
            "done unpack kernel",
            "begin unpack initrd",
            "done unpack initrd",
            "begin unpack rootfs",
            "done unpack rootfs",
            "begin unpack work seed",
            "done unpack work seed",
            "begin check files",
            "done check files",
        ]
    );
}

#[test]
fn an_image_without_initrd_or_seed_round_trips_and_skips_those_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut image, src_dir) = stored_image(tmp.path(), 16 * MIB);
    fs::remove_file(src_dir.join(INITRD_FILE)).unwrap();
    fs::remove_dir_all(src_dir.join(WORK_SEED_DIR)).unwrap();
    // A registered image: no manifest file fields beyond the record's.
    fs::remove_file(src_dir.join(MANIFEST_FILE)).unwrap();
    image.files.initrd = None;
    let file = tmp.path().join("plain.banger-image");
    let log = Log::default();
    export(&image, &src_dir, &file, false, &log).unwrap();
    assert!(log.events.borrow().contains(&"skip pack initrd".to_owned()));
    assert!(
        log.events
            .borrow()
            .contains(&"skip pack work seed".to_owned())
    );

    let log = Log::default();
    let dst = tmp.path().join("images/dst");
    let imported = import("dst", "plain", &file, &dst, &log).unwrap();
    assert!(imported.files.initrd.is_none());
    assert_eq!(names(&dst), [MANIFEST_FILE, ROOTFS_FILE, KERNEL_FILE]);
    let events = log.events.borrow();
    assert!(
        events.contains(&"skip unpack initrd".to_owned()),
        "{events:?}"
    );
    assert!(events.contains(&"skip unpack work seed".to_owned()));
}

#[test]
fn export_refuses_an_existing_file_unless_told_to_replace_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, src_dir) = stored_image(tmp.path(), 16 * MIB);
    let file = tmp.path().join("taken");
    fs::write(&file, "precious").unwrap();
    let err = export(&image, &src_dir, &file, false, &Log::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Exists { .. }), "{err:?}");
    assert_eq!(fs::read(&file).unwrap(), b"precious");
    assert!(err.hint().unwrap().contains("--force"));

    export(&image, &src_dir, &file, true, &Log::default()).unwrap();
    read_head(&file).unwrap();
}

#[test]
fn a_cancelled_or_failed_export_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, src_dir) = stored_image(tmp.path(), 64 * MIB);
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let log = Log::default();
    log.cancel_after_progress.set(Some(3));
    let err = export(&image, &src_dir, &out.join("x.banger-image"), false, &log).unwrap_err();
    assert!(matches!(err, ArchiveError::Cancelled(_)), "{err:?}");
    assert!(names(&out).is_empty(), "left {:?}", names(&out));

    // A file of the image that cannot be read (here: gone) fails the export part-way.
    fs::remove_file(src_dir.join(ROOTFS_FILE)).unwrap();
    let err = export(
        &image,
        &src_dir,
        &out.join("x.banger-image"),
        false,
        &Log::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains(ROOTFS_FILE), "{err}");
    assert!(names(&out).is_empty(), "left {:?}", names(&out));
}

/// One entry of a crafted archive: name bytes, type, contents or symlink target.
type Crafted<'a> = (&'a [u8], EntryType, &'a [u8]);

/// Writes a zstd tar of `entries`, after a valid label and manifest when `head` is set.
fn craft(path: &Path, head: bool, entries: &[Crafted<'_>]) {
    let encoder = zstd::Encoder::new(File::create(path).unwrap(), 3).unwrap();
    let mut builder = Builder::new(encoder);
    if head {
        let label = Label {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            name: "crafted".into(),
            banger_version: "0.0.0".into(),
            exported_at: Timestamp::now(),
        };
        append_bytes(
            &mut builder,
            LABEL_FILE,
            &serde_json::to_vec(&label).unwrap(),
        )
        .unwrap();
        let manifest = serde_json::json!({"name": "crafted", "created_from": "test",
            "created_at": "2025-11-23T12:13:20.123Z"});
        append_bytes(
            &mut builder,
            MANIFEST_FILE,
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }
    for (name, kind, data) in entries {
        let mut header = Header::new_gnu();
        // Written raw: the tar crate itself refuses to write `..` or absolute names.
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        if *kind == EntryType::Symlink {
            header.set_size(0);
            header.as_gnu_mut().unwrap().linkname[..data.len()].copy_from_slice(data);
            header.set_cksum();
            builder.append(&header, io::empty()).unwrap();
        } else {
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// Imports `file` and expects a failure that leaves no image directory.
fn import_fails(tmp: &Path, file: &Path) -> ArchiveError {
    let dst = tmp.join("images/dst");
    let err = import("dst", "x", file, &dst, &Log::default()).unwrap_err();
    assert!(!dst.exists(), "{err}: the image directory was left behind");
    err
}

#[test]
fn foreign_and_newer_files_are_refused_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("notes.txt");
    fs::write(&text, "hello").unwrap();
    let err = import_fails(tmp.path(), &text);
    assert!(matches!(err, ArchiveError::Foreign { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("is not a banger image archive (not zstd-compressed)")
    );
    assert_eq!(
        err.hint().as_deref(),
        Some("import files written by `banger image export NAME FILE`")
    );

    // A zstd tar, but not one banger wrote.
    let tar = tmp.path().join("other.tar.zst");
    craft(&tar, false, &[(b"etc/passwd", EntryType::Regular, b"root")]);
    let err = import_fails(tmp.path(), &tar);
    assert!(
        err.to_string()
            .contains("banger-image.json missing, found \"etc/passwd\" instead"),
        "{err}"
    );

    // A label from a future banger.
    let newer = tmp.path().join("newer.banger-image");
    let label = serde_json::json!({"format": FORMAT, "version": FORMAT_VERSION + 1,
        "name": "x", "banger_version": "9.0.0", "exported_at": "2030-01-01T00:00:00.000Z"});
    let label = serde_json::to_vec(&label).unwrap();
    craft(
        &newer,
        false,
        &[(LABEL_FILE.as_bytes(), EntryType::Regular, &label)],
    );
    let err = import_fails(tmp.path(), &newer);
    assert!(
        matches!(err, ArchiveError::Newer { found: 2, .. }),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("upgrade banger"));
    // ... and read_head, which the daemon asks before starting an import, says the same.
    assert!(matches!(read_head(&newer), Err(ArchiveError::Newer { .. })));
}

#[test]
fn a_manifest_with_a_service_banger_cannot_wait_for_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad-service.banger-image");
    let label = serde_json::to_vec(&Label {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        name: "crafted".into(),
        banger_version: "0.0.0".into(),
        exported_at: Timestamp::now(),
    })
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({"name": "crafted",
        "created_from": "test", "created_at": "2025-11-23T12:13:20.123Z",
        "services": [{"name": "web", "port": 22}]}))
    .unwrap();
    craft(
        &file,
        false,
        &[
            (LABEL_FILE.as_bytes(), EntryType::Regular, &label),
            (MANIFEST_FILE.as_bytes(), EntryType::Regular, &manifest),
        ],
    );
    let err = read_head(&file).unwrap_err();
    assert!(
        err.to_string()
            .contains("declares services banger cannot wait for: service \"web\" has port 22"),
        "{err}"
    );
    let err = import_fails(tmp.path(), &file);
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
}

#[test]
fn entries_that_escape_the_image_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<Crafted<'_>>, &str); 6] = [
        (
            "dotdot",
            vec![(b"../escaped", EntryType::Regular, b"x")],
            "the name contains `..`",
        ),
        (
            "seed-dotdot",
            vec![
                (b"work-seed", EntryType::Directory, b""),
                (b"work-seed/../../escaped", EntryType::Regular, b"x"),
            ],
            "the name contains `..`",
        ),
        (
            "absolute",
            vec![(b"/tmp/escaped", EntryType::Regular, b"x")],
            "the name is absolute",
        ),
        (
            "through-symlink",
            vec![
                (b"work-seed", EntryType::Directory, b""),
                (b"work-seed/out", EntryType::Symlink, b"/tmp"),
                (b"work-seed/out/escaped", EntryType::Regular, b"x"),
            ],
            "it would be written through a symlink",
        ),
        (
            "unknown",
            vec![(b"etc/passwd", EntryType::Regular, b"x")],
            "banger image archives hold no such file",
        ),
        (
            "device",
            vec![
                (b"work-seed", EntryType::Directory, b""),
                (b"work-seed/null", EntryType::Char, b""),
            ],
            "only directories, regular files and symlinks are accepted",
        ),
    ];
    for (name, entries, reason) in cases {
        let file = tmp.path().join(name);
        craft(&file, true, &entries);
        let err = import_fails(tmp.path(), &file);
        assert!(
            matches!(&err, ArchiveError::Unsafe { reason: r, .. } if *r == reason),
            "{name}: {err:?}"
        );
    }
    assert!(!tmp.path().join("escaped").exists());
    assert!(!Path::new("/tmp/escaped").exists());
}

#[test]
fn a_damaged_or_incomplete_file_fails_the_import_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, src_dir) = stored_image(tmp.path(), 16 * MIB);
    let file = tmp.path().join("good.banger-image");
    export(&image, &src_dir, &file, false, &Log::default()).unwrap();
    let bytes = fs::read(&file).unwrap();

    // A flipped byte in the middle: zstd's block decoding or its frame checksum catches it.
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    let damaged = tmp.path().join("damaged.banger-image");
    fs::write(&damaged, &flipped).unwrap();
    let err = import_fails(tmp.path(), &damaged);
    assert!(
        matches!(err, ArchiveError::Corrupt { .. }),
        "a flipped byte gave {err:?}"
    );

    // Cut short, as an interrupted copy between hosts leaves it.
    let short = tmp.path().join("short.banger-image");
    fs::write(&short, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = import_fails(tmp.path(), &short);
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("copy the file again"));
}

#[test]
fn unpacked_files_must_pass_the_registration_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let elf = fake_vmlinux(KERNEL_VERSION);
    let missing_rootfs = tmp.path().join("no-rootfs");
    craft(
        &missing_rootfs,
        true,
        &[(b"vmlinux", EntryType::Regular, &elf)],
    );
    let err = import_fails(tmp.path(), &missing_rootfs);
    assert!(
        err.to_string()
            .ends_with("is damaged: it has no rootfs.ext4"),
        "{err}"
    );

    let bad_kernel = tmp.path().join("bad-kernel");
    craft(
        &bad_kernel,
        true,
        &[
            (b"vmlinux", EntryType::Regular, b"MZ not an elf at all"),
            (b"rootfs.ext4", EntryType::Regular, b"nor an ext4"),
        ],
    );
    let err = import_fails(tmp.path(), &bad_kernel);
    assert!(
        matches!(err, ArchiveError::BadFile { what: "kernel", .. }),
        "{err:?}"
    );
}

#[test]
fn a_work_seed_that_differs_from_the_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, src_dir) = stored_image(tmp.path(), 16 * MIB);
    // The seed changed after the manifest recorded its fingerprint.
    fs::write(src_dir.join(WORK_SEED_DIR).join(".profile"), "changed\n").unwrap();
    let file = tmp.path().join("x.banger-image");
    export(&image, &src_dir, &file, false, &Log::default()).unwrap();
    let err = import_fails(tmp.path(), &file);
    assert!(err.to_string().contains("work seed's fingerprint"), "{err}");
}

#[test]
fn a_cancelled_import_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, src_dir) = stored_image(tmp.path(), 64 * MIB);
    let file = tmp.path().join("x.banger-image");
    export(&image, &src_dir, &file, false, &Log::default()).unwrap();
    let dst = tmp.path().join("images/dst");
    let log = Log::default();
    log.cancel_after_progress.set(Some(3));
    let err = import("dst", "x", &file, &dst, &log).unwrap_err();
    assert!(matches!(err, ArchiveError::Cancelled("import")), "{err:?}");
    assert!(!dst.exists());
    assert_eq!(names(&tmp.path().join("images")), ["src"]);
}

#[test]
fn an_existing_image_directory_is_never_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, src_dir) = stored_image(tmp.path(), 16 * MIB);
    let file = tmp.path().join("x.banger-image");
    export(&image, &src_dir, &file, false, &Log::default()).unwrap();
    let err = import("src", "x", &file, &src_dir, &Log::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Exists { .. }), "{err:?}");
    assert!(src_dir.join(ROOTFS_FILE).is_file());
}

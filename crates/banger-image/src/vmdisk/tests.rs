//! A VM's disks made with the real mkfs.ext4 and read back with debugfs (files, modes,
//! owners, labels), its config drive read back as the init reads it, and what a failing mkfs or
//! ownership fix leaves behind (nothing), with a fake runner.
use super::*;
use banger_host::ext4::Dumpe2fs;
use banger_host::{FakeRunner, Matcher, RealRunner};
use std::os::unix::fs::symlink;

const MIB: u64 = 1 << 20;

fn files() -> VmFiles {
    VmFiles {
        hostname: "dev".to_owned(),
        network: GuestNetwork {
            address: Ipv4Addr::new(172, 30, 0, 5),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(172, 30, 0, 1)),
            dns: vec![Ipv4Addr::new(172, 30, 0, 1)],
            search: vec!["vm".to_owned()],
            mac: Some("52:54:00:AB:CD:EF".to_owned()),
        },
        authorized_keys: "ssh-ed25519 AAAAC3Nza... user@host".to_owned(),
        ssh_host_key: SshHostKey {
            algorithm: "ed25519".to_owned(),
            private_key:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
                    .to_owned(),
            public_key: "ssh-ed25519 AAAAhost root@dev".to_owned(),
        },
        agent_token: "tok-123".to_owned(),
        extra: vec![StagedFile {
            path: "usr/local/bin/banger-hello".to_owned(),
            mode: 0o755,
            contents: b"#!/bin/sh\necho hello\n".to_vec(),
        }],
    }
}

/// An image made of a VM's root must lose every file that made the VM itself: each
/// file a VM gets is listed (host keys are taken out by their name pattern).
#[test]
fn every_per_vm_file_is_listed() {
    let mut vm = files();
    vm.extra.clear();
    for file in vm.files().unwrap() {
        assert!(
            PER_VM_FILES.contains(&file.path.as_str())
                || file.path.starts_with("etc/ssh/ssh_host_"),
            "{} is a VM's own file but not in PER_VM_FILES",
            file.path
        );
    }
}

/// `debugfs -R REQUEST image` through the real runner; stdout.
fn debugfs(image: &Path, request: &str) -> String {
    RealRunner
        .run(&Debugfs::request(image, request).command())
        .unwrap()
        .stdout_lossy()
}

/// Mode and owner of `path` in `image`, from `debugfs stat`.
fn stat(image: &Path, path: &str) -> (String, String) {
    let out = debugfs(image, &format!("stat \"{path}\""));
    let mode = out
        .split("Mode:")
        .nth(1)
        .unwrap_or_else(|| panic!("{path} not in {}: {out}", image.display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let user = out
        .split("User:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let group = out
        .split("Group:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    (mode, format!("{user}:{group}"))
}

fn label(image: &Path) -> String {
    let out = RealRunner
        .run(&Dumpe2fs::header(image).command())
        .unwrap()
        .stdout_lossy();
    Dumpe2fs::field(&out, "Filesystem volume name")
        .unwrap()
        .to_owned()
}

#[test]
fn network_file_format() {
    assert_eq!(
        files().network.render(),
        "# Written by banger when this VM was created; banger's /init applies it.\n\
         address=172.30.0.5/24\ngateway=172.30.0.1\ndns=172.30.0.1\nmac=52:54:00:ab:cd:ef\n"
    );
}

#[test]
fn invalid_inputs_are_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRunner::new();
    let disk = dir.path().join("overlay.ext4");
    type Change = Box<dyn Fn(&mut VmFiles)>;
    let cases: Vec<Change> = vec![
        Box::new(|f| f.hostname = "no_underscores".into()),
        Box::new(|f| f.hostname = "-dash".into()),
        Box::new(|f| f.network.prefix_len = 33),
        Box::new(|f| f.network.mac = Some("52:54:00".into())),
        Box::new(|f| f.network.search = vec!["vm\nnameserver 6.6.6.6".into()]),
        Box::new(|f| f.network.search = vec![String::new()]),
        Box::new(|f| f.ssh_host_key.algorithm = "../x".into()),
        Box::new(|f| f.extra[0].path = "../../etc/passwd".into()),
        Box::new(|f| f.extra[0].path = "/etc/passwd".into()),
    ];
    for change in cases {
        let mut f = files();
        change(&mut f);
        let err = build_overlay_disk(&fake, dir.path(), &f, &disk, 64 * MIB).unwrap_err();
        assert!(matches!(err, VmDiskError::Invalid(_)), "{err:?}");
    }
    assert!(fake.calls().is_empty());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn overlay_disk_holds_the_vm_files_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("overlay.ext4");
    build_overlay_disk(&RealRunner, dir.path(), &files(), &disk, 64 * MIB).unwrap();

    // Sparse: 64 MiB apparent, a small fraction allocated. Private: it holds keys.
    assert_eq!(fs::metadata(&disk).unwrap().len(), 64 * MIB);
    assert_eq!(fs::metadata(&disk).unwrap().mode() & 0o777, 0o600);
    assert!(banger_host::allocated_bytes(&disk).unwrap() < 16 * MIB);
    assert_eq!(label(&disk), OVERLAY_LABEL);
    // The staging directory is gone.
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["overlay.ext4"]);

    assert_eq!(debugfs(&disk, "cat /upper/etc/hostname"), "dev\n");
    assert!(debugfs(&disk, "cat /upper/etc/hosts").contains("172.30.0.5\tdev\n"));
    assert_eq!(
        debugfs(&disk, "cat /upper/etc/resolv.conf"),
        "nameserver 172.30.0.1\nsearch vm\n"
    );
    assert_eq!(
        debugfs(&disk, &format!("cat /upper/{NETWORK_FILE}")),
        files().network.render()
    );
    assert_eq!(
        debugfs(&disk, &format!("cat /upper/{AGENT_TOKEN_FILE}")),
        "tok-123"
    );
    assert!(
        debugfs(&disk, &format!("cat /upper/{SSHD_DROP_IN}"))
            .contains("AuthorizedKeysFile .ssh/authorized_keys /etc/banger/authorized_keys\n")
    );

    let expect = [
        ("/", "0755"),
        ("/upper", "0755"),
        ("/upper/etc", "0755"),
        ("/work", "0755"),
        ("/upper/etc/hostname", "0644"),
        ("/upper/etc/banger/authorized_keys", "0600"),
        ("/upper/etc/banger/agent-token", "0600"),
        ("/upper/etc/ssh/ssh_host_ed25519_key", "0600"),
        ("/upper/etc/ssh/ssh_host_ed25519_key.pub", "0644"),
        ("/upper/usr/local/bin/banger-hello", "0755"),
    ];
    for (path, mode) in expect {
        let (got_mode, owner) = stat(&disk, path);
        assert_eq!(got_mode, mode, "{path}");
        assert_eq!(owner, "0:0", "{path}");
    }
    assert_eq!(
        debugfs(&disk, "ls -p /work")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count(),
        2,
        "work/ is empty (only . and ..)"
    );
}

#[test]
fn files_owned_by_the_staging_user_become_roots() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    fs::create_dir_all(seed.join("a b")).unwrap();
    fs::write(seed.join("a b/x"), "x").unwrap();
    fs::write(seed.join("other"), "o").unwrap();
    let me = fs::metadata(&seed).unwrap().uid();
    // As root, pretend user 1234 staged the seed (and someone else owns `other`).
    let staging = if me == 0 {
        for path in [seed.clone(), seed.join("a b"), seed.join("a b/x")] {
            std::os::unix::fs::lchown(&path, Some(1234), Some(1234)).unwrap();
        }
        std::os::unix::fs::lchown(seed.join("other"), Some(4321), Some(4321)).unwrap();
        1234
    } else {
        me
    };
    let commands = ownership_commands(&seed, staging).unwrap();
    assert!(commands.contains("sif \"/a b/x\" uid 0\n"), "{commands}");
    assert!(commands.contains("sif \"/a b\" gid 0\n"), "{commands}");
    if me != 0 {
        banger_test_support::skip!("the end-to-end part of the ownership test needs root");
        return;
    }
    assert!(
        !commands.contains("/other"),
        "another owner is kept: {commands}"
    );
    let disk = dir.path().join("work.ext4");
    build_work_disk(&RealRunner, Some(&seed), &disk, 32 * MIB).unwrap();
    assert_eq!(stat(&disk, "/a b/x").1, "0:0");
    assert_eq!(stat(&disk, "/a b").1, "0:0");
    assert_eq!(
        stat(&disk, "/other").1,
        "4321:4321",
        "another owner is kept"
    );
    assert_eq!(stat(&disk, "/").1, "0:0");
}

#[test]
fn work_disk_is_seeded_and_fingerprinted() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    fs::create_dir_all(seed.join(".config/opencode")).unwrap();
    fs::write(seed.join(".bashrc"), "export EDITOR=vi\n").unwrap();
    fs::write(seed.join(".config/opencode/run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        seed.join(".config/opencode/run.sh"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    symlink(".bashrc", seed.join(".profile")).unwrap();

    let disk = dir.path().join("work.ext4");
    let fp = build_work_disk(&RealRunner, Some(&seed), &disk, 32 * MIB).unwrap();
    assert_eq!(fp, fingerprint(&seed).unwrap());
    assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64, "{fp}");
    assert_eq!(label(&disk), WORK_LABEL);
    assert_eq!(debugfs(&disk, "cat /.bashrc"), "export EDITOR=vi\n");
    assert_eq!(stat(&disk, "/.config/opencode/run.sh").0, "0750");
    assert_eq!(stat(&disk, "/").0, "0755");
    assert!(debugfs(&disk, "stat /.profile").contains("Type: symlink"));

    // Unseeded: an empty filesystem and the empty fingerprint.
    let empty = dir.path().join("empty.ext4");
    let fp_empty = build_work_disk(&RealRunner, None, &empty, 16 * MIB).unwrap();
    let empty_seed = dir.path().join("empty-seed");
    fs::create_dir(&empty_seed).unwrap();
    assert_eq!(fp_empty, fingerprint(&empty_seed).unwrap());
    assert_ne!(fp_empty, fp);

    // An existing disk is never overwritten.
    let err = build_work_disk(&RealRunner, None, &disk, 16 * MIB).unwrap_err();
    assert!(matches!(err, VmDiskError::Exists { .. }), "{err:?}");
    assert_eq!(debugfs(&disk, "cat /.bashrc"), "export EDITOR=vi\n");
}

#[test]
fn fingerprint_tracks_content_modes_and_names_not_times() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    fs::create_dir(&seed).unwrap();
    fs::write(seed.join("a"), "1").unwrap();
    let first = fingerprint(&seed).unwrap();
    assert_eq!(first, fingerprint(&seed).unwrap());

    let f = fs::File::options()
        .write(true)
        .open(seed.join("a"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(fingerprint(&seed).unwrap(), first, "times do not count");

    fs::set_permissions(seed.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
    let moded = fingerprint(&seed).unwrap();
    assert_ne!(moded, first, "modes count");

    fs::write(seed.join("a"), "2").unwrap();
    assert_ne!(fingerprint(&seed).unwrap(), moded, "content counts");

    fs::rename(seed.join("a"), seed.join("b")).unwrap();
    let renamed = fingerprint(&seed).unwrap();
    fs::rename(seed.join("b"), seed.join("a")).unwrap();
    assert_ne!(renamed, fingerprint(&seed).unwrap(), "names count");

    assert!(matches!(
        fingerprint(&dir.path().join("missing")),
        Err(VmDiskError::Seed { .. })
    ));
}

#[test]
fn the_config_drive_carries_the_vm_files_for_the_init() {
    use banger_init::config_drive::{self as cd, Entry};
    let bytes = config_drive(&files()).unwrap();
    assert_eq!(bytes.len() % 512, 0, "whole sectors");
    assert_eq!(cd::label(&bytes).as_deref(), Some(cd::LABEL));
    let entries = cd::parse(&bytes).unwrap();
    let wanted = files().files().unwrap();
    let got: Vec<(&str, u32, &[u8])> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::File { path, mode, data } if path != cd::MARKER_ENTRY => {
                Some((path.as_str(), *mode, data.as_slice()))
            }
            _ => None,
        })
        .collect();
    let mut expected: Vec<(&str, u32, &[u8])> = wanted
        .iter()
        .map(|f| (f.path.as_str(), f.mode, f.contents.as_slice()))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    assert!(entries.contains(&Entry::Dir {
        path: "etc/ssh".into(),
        mode: 0o755
    }));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.cpio");
    write_config_drive(&files(), &path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert!(matches!(
        write_config_drive(&files(), &path),
        Err(VmDiskError::Exists { .. })
    ));

    let mut early = files();
    early.extra.push(StagedFile {
        path: "-early".into(),
        mode: 0o644,
        contents: vec![],
    });
    assert!(matches!(config_drive(&early), Err(VmDiskError::Invalid(_))));
}

#[test]
fn a_blank_overlay_disk_is_labelled_and_empty() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("overlay.ext4");
    build_blank_overlay_disk(&RealRunner, &disk, 1024 * MIB).unwrap();
    let meta = fs::metadata(&disk).unwrap();
    assert_eq!(meta.len(), 1024 * MIB);
    // Its 32 MiB journal is left a hole (a new file reads as zeros): a few MiB of metadata.
    assert!(
        meta.blocks() * 512 < 8 * MIB,
        "{} bytes allocated",
        meta.blocks() * 512
    );
    let head = fs::read(&disk).unwrap();
    assert_eq!(
        banger_init::boot::ext_label(&head[..2048]).as_deref(),
        Some(OVERLAY_LABEL)
    );
}

#[test]
fn a_failing_mkfs_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRunner::new().fail_nth("mkfs.ext4", 1, "mkfs.ext4: Could not allocate block");
    let disk = dir.path().join("overlay.ext4");
    let err = build_overlay_disk(&fake, dir.path(), &files(), &disk, 64 * MIB).unwrap_err();
    assert!(matches!(err, VmDiskError::Mkfs(_)), "{err:?}");
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].starts_with("mkfs.ext4 -q -F -L banger-overlay -d ")
            && calls[0].ends_with(&format!(
                " -E root_owner=0:0,lazy_journal_init=1 {}",
                disk.display()
            )),
        "{}",
        calls[0]
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no disk, no stage"
    );

    let fake = FakeRunner::new().fail_nth("mkfs.ext4", 1, "boom");
    let err = build_work_disk(&fake, None, &disk, 16 * MIB).unwrap_err();
    assert!(matches!(err, VmDiskError::Mkfs(_)));
    assert!(!disk.exists());

    // Too small for the content: the real mkfs fails, nothing is left.
    let seed = dir.path().join("seed");
    fs::create_dir(&seed).unwrap();
    fs::write(seed.join("big"), vec![7u8; 4 * MIB as usize]).unwrap();
    let err = build_work_disk(&RealRunner, Some(&seed), &disk, MIB).unwrap_err();
    assert!(matches!(err, VmDiskError::Mkfs(_)), "{err:?}");
    assert!(!disk.exists());
}

#[test]
fn a_failing_ownership_fix_removes_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    fs::create_dir(&seed).unwrap();
    fs::write(seed.join("f"), "f").unwrap();
    let staging_uid = fs::metadata(&seed).unwrap().uid();
    if staging_uid == 0 {
        // As root the ownership pass has nothing to do; make it run by chowning the seed
        // to a user and the directory itself, which is what "staged by" is judged by.
        std::os::unix::fs::lchown(&seed, Some(1234), None).unwrap();
        std::os::unix::fs::lchown(seed.join("f"), Some(1234), None).unwrap();
    }
    let fake = FakeRunner::new().respond(
        "debugfs",
        banger_host::CommandOutput {
            code: Some(0),
            stdout: Vec::new(),
            stderr: b"debugfs 1.47.0 (5-Feb-2023)\n/f: File not found by ext2_lookup\n".to_vec(),
        },
    );
    let disk = dir.path().join("work.ext4");
    let err = build_work_disk(&fake, Some(&seed), &disk, 16 * MIB).unwrap_err();
    assert!(
        matches!(&err, VmDiskError::OwnershipRejected { detail, .. } if detail.contains("ext2_lookup")),
        "{err:?}"
    );
    assert_eq!(fake.calls_matching(Matcher::program("debugfs")).len(), 1);
    assert!(!disk.exists());
}

/// The guest's resolver rides on the config drive as its `etc/resolv.conf`, which every init
/// that reads a drive copies: a drive with a search domain and one written before search
/// domains existed both come out of the init's parser with a network file it accepts.
#[test]
fn config_drive_round_trip_with_and_without_a_search_domain() {
    use banger_init::config_drive::{self as cd, Entry};
    let file = |entries: &[Entry], wanted: &str| -> String {
        entries
            .iter()
            .find_map(|e| match e {
                Entry::File { path, data, .. } if path == wanted => {
                    Some(String::from_utf8(data.clone()).unwrap())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{wanted} is not on the drive"))
    };
    let with = cd::parse(&config_drive(&files()).unwrap()).unwrap();
    assert_eq!(
        file(&with, "etc/resolv.conf"),
        "nameserver 172.30.0.1\nsearch vm\n"
    );
    let net = banger_init::netconf::parse(&file(&with, NETWORK_FILE)).unwrap();
    assert_eq!(net.dns, [Ipv4Addr::new(172, 30, 0, 1)]);

    let mut old = files();
    old.network.search.clear();
    old.network.dns = vec![Ipv4Addr::new(10, 0, 0, 53)];
    let without = cd::parse(&config_drive(&old).unwrap()).unwrap();
    assert_eq!(file(&without, "etc/resolv.conf"), "nameserver 10.0.0.53\n");
    // Byte for byte what banger wrote before search domains: the same network file.
    assert_eq!(
        file(&without, NETWORK_FILE),
        "# Written by banger when this VM was created; banger's /init applies it.\n\
         address=172.30.0.5/24\ngateway=172.30.0.1\ndns=10.0.0.53\nmac=52:54:00:ab:cd:ef\n"
    );
    banger_init::netconf::parse(&file(&without, NETWORK_FILE)).unwrap();
}

/// The files this module writes are the files banger's guest init reads.
#[test]
fn the_guest_init_reads_what_is_written_here() {
    use banger_init::{boot, netconf};
    assert_eq!(netconf::NETWORK_FILE, NETWORK_FILE);
    let written = files().network;
    let read = netconf::parse(&written.render()).unwrap();
    assert_eq!(
        (
            read.address,
            read.prefix_len,
            read.gateway,
            read.dns,
            read.mac
        ),
        (
            written.address,
            written.prefix_len,
            written.gateway,
            written.dns,
            Some("52:54:00:ab:cd:ef".to_owned())
        )
    );
    assert_eq!(
        boot::MODULE_LIST.trim_start_matches('/'),
        crate::initramfs::MODULE_LIST
    );
}

//! The ext superblock reader against a filesystem the real `mkfs.ext4` made (e2fsprogs is part
//! of banger's requirements). A test harness of its own: only test harnesses and banger-host
//! may start processes.

use std::path::Path;
use std::process::Command;

use banger_guest_contract::ext::Superblock;

fn mkfs() -> Option<&'static str> {
    ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// Against a filesystem `mkfs.ext4` made (e2fsprogs is part of banger's requirements).
#[test]
fn reads_a_real_ext4() {
    let mkfs = mkfs().expect("mkfs.ext4 (e2fsprogs) is installed");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("fs.ext4");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let status = Command::new(mkfs)
        .args(["-q", "-F", "-b", "4096", "-L", "banger-root", "-U"])
        .arg("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        .arg(&image)
        .status()
        .unwrap();
    assert!(status.success());
    let head = std::fs::read(&image).unwrap();
    let sb = Superblock::read(&head[..2048]).unwrap();
    assert!(sb.is_ext4());
    assert!(sb.has_journal());
    assert_eq!(sb.block_size(), Some(4096));
    assert_eq!(sb.blocks(), 2048);
    assert_eq!(sb.label(), "banger-root");
    assert_eq!(sb.uuid(), "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
}

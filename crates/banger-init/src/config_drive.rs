//! The VM's config drive: a small read-only block device holding everything that makes a VM
//! that VM (hostname, network, SSH keys, agent token), so its overlay disk can be a blank
//! filesystem taken from a pool instead of one made for it.
//!
//! The drive is an uncompressed newc cpio archive (`cpio -t < config.cpio` lists it), padded
//! to whole 512-byte sectors. Its first entry is the file [`MARKER_ENTRY`]: that is how the
//! init recognises it among the VM's block devices (`banger.config=LABEL=banger-config`, the
//! label being the marker's name without its dot). The other entries are directories and
//! regular files, paths relative to the guest's root, with their permission bits; everything
//! is owned by root.
//!
//! The init copies them into the overlay's upper directory before it mounts the root, and
//! keeps a copy of the drive at [`APPLIED_COPY`]: a later boot with the same drive leaves the
//! files alone (what the user changed in the VM stays changed), a different drive is applied
//! again. A VM whose overlay was discarded gets its files back at the next boot.

use std::fmt::Write as _;

use banger_guest_contract::newc::{self, S_IFDIR, S_IFMT, S_IFREG};

/// Where, relative to the guest's root, the init keeps the copy of the drive it applied.
pub use banger_guest_contract::paths::CONFIG_DRIVE_COPY as APPLIED_COPY;
/// The label the init matches (`banger.config=LABEL=banger-config`).
pub use banger_guest_contract::paths::CONFIG_DRIVE_LABEL as LABEL;
/// The archive's first entry.
pub use banger_guest_contract::paths::CONFIG_DRIVE_MARKER as MARKER_ENTRY;
/// What the marker entry holds.
pub use banger_guest_contract::paths::CONFIG_DRIVE_MARKER_CONTENTS as MARKER_CONTENTS;
/// The largest drive the init reads; banger's are a few KiB.
pub const MAX_SIZE: usize = 1 << 20;

/// One entry of the drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
}

/// The drive is not one banger wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the config drive is damaged: {0}")]
pub struct ConfigDriveError(String);

/// The label of a config drive whose first bytes are `head`: the name of its first entry
/// without the leading dot, when that entry is a dot-file at the archive's root.
pub fn label(head: &[u8]) -> Option<String> {
    let (_, name, _) = newc::entry_name(head, 0).ok()?;
    let label = name.strip_prefix('.')?;
    (!label.is_empty() && !label.contains('/')).then(|| label.to_owned())
}

/// The entries of the drive `bytes`, the marker first and without the trailer.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, ConfigDriveError> {
    let damaged = |e: newc::NewcError| ConfigDriveError(e.to_string());
    let mut entries = Vec::new();
    let mut reader = newc::Reader::new(bytes);
    while let Some(entry) = reader.next_entry().map_err(damaged)? {
        let (name, mode) = (entry.name, entry.metadata.mode);
        if entries.is_empty() && name != MARKER_ENTRY {
            return Err(ConfigDriveError(format!(
                "the first entry is {name:?}, not {MARKER_ENTRY}"
            )));
        }
        check_path(name)?;
        entries.push(match mode & S_IFMT {
            S_IFDIR => Entry::Dir {
                path: name.to_owned(),
                mode: mode & 0o7777,
            },
            S_IFREG => Entry::File {
                path: name.to_owned(),
                mode: mode & 0o7777,
                data: entry.data.to_vec(),
            },
            other => {
                return Err(ConfigDriveError(format!(
                    "{name}: type {other:o} (only directories and files belong on it)"
                )));
            }
        });
    }
    Ok(entries)
}

/// The drive's entries as lines for a log: `path mode size`.
pub fn describe(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let _ = match e {
            Entry::Dir { path, mode } => writeln!(out, "{path}/ {mode:o}"),
            Entry::File { path, mode, data } => writeln!(out, "{path} {mode:o} {}", data.len()),
        };
    }
    out
}

fn check_path(path: &str) -> Result<(), ConfigDriveError> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if ok {
        Ok(())
    } else {
        Err(ConfigDriveError(format!(
            "entry {path:?} is not a plain relative path"
        )))
    }
}

/// Drives for the init's tests, written the way banger writes them.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn drive(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut writer = newc::Writer::new(Vec::new());
        for (name, mode, data) in entries {
            let metadata = newc::Metadata {
                ino: 1,
                mode: *mode,
                nlink: 1,
                ..newc::Metadata::default()
            };
            writer.entry(name, &metadata, data).expect("write to a Vec");
        }
        writer.finish().expect("write to a Vec").1
    }
}

#[cfg(test)]
mod tests {
    use super::testing::drive;
    use super::*;

    #[test]
    fn reads_what_banger_writes() {
        let bytes = drive(&[
            (MARKER_ENTRY, S_IFREG | 0o644, MARKER_CONTENTS.as_bytes()),
            ("etc", S_IFDIR | 0o755, b""),
            ("etc/hostname", S_IFREG | 0o644, b"dev\n"),
            ("etc/banger/agent-token", S_IFREG | 0o600, b"abc"),
        ]);
        assert_eq!(label(&bytes).as_deref(), Some(LABEL));
        let entries = parse(&bytes).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry::File {
                    path: MARKER_ENTRY.into(),
                    mode: 0o644,
                    data: MARKER_CONTENTS.into()
                },
                Entry::Dir {
                    path: "etc".into(),
                    mode: 0o755
                },
                Entry::File {
                    path: "etc/hostname".into(),
                    mode: 0o644,
                    data: b"dev\n".to_vec()
                },
                Entry::File {
                    path: "etc/banger/agent-token".into(),
                    mode: 0o600,
                    data: b"abc".to_vec()
                },
            ]
        );
        assert_eq!(
            describe(&entries[1..]),
            "etc/ 755\netc/hostname 644 4\netc/banger/agent-token 600 3\n"
        );
    }

    #[test]
    fn other_devices_have_no_label() {
        assert_eq!(label(&[0; 2048]), None);
        assert_eq!(label(b"070701"), None);
        let plain = drive(&[("etc", S_IFDIR | 0o755, b"")]);
        assert_eq!(label(&plain), None, "the first entry is not a dot-file");
    }

    #[test]
    fn refuses_what_banger_does_not_write() {
        let err = |entries: &[(&str, u32, &[u8])]| parse(&drive(entries)).unwrap_err().0;
        let marker = (MARKER_ENTRY, S_IFREG | 0o644, MARKER_CONTENTS.as_bytes());
        assert!(err(&[("etc", S_IFDIR | 0o755, b"")]).contains("first entry"));
        assert!(err(&[marker, ("../x", S_IFREG | 0o644, b"")]).contains("plain relative"));
        assert!(err(&[marker, ("/etc/x", S_IFREG | 0o644, b"")]).contains("plain relative"));
        assert!(err(&[marker, ("a//b", S_IFREG | 0o644, b"")]).contains("plain relative"));
        assert!(err(&[marker, ("etc/l", 0o120777, b"/x")]).contains("type 120000"));
        let whole = drive(&[marker, ("etc/hostname", S_IFREG | 0o644, b"dev\n")]);
        // The marker ends at byte 150; the second entry's data starts at 276.
        assert!(
            parse(&whole[..150])
                .unwrap_err()
                .0
                .contains("inside an entry header")
        );
        assert!(parse(&whole[..278]).unwrap_err().0.contains("past the end"));
        assert!(parse(&[0; 512]).unwrap_err().0.contains("no newc header"));
    }
}

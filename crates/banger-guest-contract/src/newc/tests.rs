use super::*;

fn meta(ino: u32, mode: u32) -> Metadata {
    Metadata {
        ino,
        mode,
        nlink: 1,
        ..Metadata::default()
    }
}

/// An archive written by [`Writer`].
fn archive(entries: &[(&str, Metadata, &[u8])]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    for (name, m, data) in entries {
        w.entry(name, m, data).unwrap();
    }
    let (len, bytes) = w.finish().unwrap();
    assert_eq!(len, bytes.len() as u64);
    bytes
}

fn read_all(bytes: &[u8]) -> Result<Vec<Entry<'_>>, NewcError> {
    Reader::new(bytes).collect()
}

#[test]
fn round_trip_keeps_every_field() {
    let dev = Metadata {
        ino: 7,
        mode: S_IFCHR | 0o600,
        uid: 1000,
        gid: 100,
        nlink: 1,
        mtime: 1_700_000_000,
        dev: (8, 1),
        rdev: (5, 1),
        check: 0,
    };
    let entries: Vec<(&str, Metadata, &[u8])> = vec![
        (
            "etc",
            Metadata {
                nlink: 2,
                ..meta(1, S_IFDIR | 0o755)
            },
            b"",
        ),
        ("etc/hostname", meta(2, S_IFREG | 0o644), b"dev\n"),
        ("bin/sh", meta(3, S_IFLNK | 0o777), b"busybox"),
        ("dev/console", dev, b""),
        // Every name and data length modulo 4, so every padding is exercised.
        ("a", meta(4, S_IFREG | 0o600), b"1"),
        ("ab", meta(5, S_IFREG | 0o600), b"12"),
        ("abc", meta(6, S_IFREG | 0o600), b"123"),
        ("abcd", meta(8, S_IFREG | 0o600), b"1234"),
    ];
    let bytes = archive(&entries);
    assert_eq!(bytes.len() % 512, 0, "padded to 512-byte blocks");
    let mut reader = Reader::new(&bytes);
    for (name, m, data) in &entries {
        let e = reader
            .next_entry()
            .unwrap()
            .expect("an entry, not the trailer");
        assert_eq!((e.name, &e.metadata, e.data), (*name, m, *data));
    }
    assert_eq!(reader.next_entry().unwrap(), None, "the trailer ends it");
    assert!(
        reader.rest().iter().all(|&b| b == 0),
        "only padding after it"
    );
    assert_eq!(reader.next_entry().unwrap(), None, "and stays ended");
}

/// A two-entry archive written out by hand, field by field, independent of [`Writer`].
#[test]
fn reads_a_hand_written_archive_and_writes_the_same_bytes() {
    let by_hand = |upper: bool| {
        let hex = |field: u32| {
            if upper {
                format!("{field:08X}")
            } else {
                format!("{field:08x}")
            }
        };
        let mut bytes = Vec::new();
        // "hello" (6 with its NUL): 110 + 6 = 116, already aligned; data 2 bytes + 2 padding.
        bytes.extend_from_slice(b"070701");
        for field in [1, 0o100644, 0, 0, 1, 0, 2, 0, 0, 0, 0, 6, 0] {
            bytes.extend_from_slice(hex(field).as_bytes());
        }
        bytes.extend_from_slice(b"hello\0hi\0\0");
        bytes.extend_from_slice(b"070701");
        for field in [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0] {
            bytes.extend_from_slice(hex(field).as_bytes());
        }
        // "TRAILER!!!\0" is 11: 110 + 11 = 121, padded to 124.
        bytes.extend_from_slice(b"TRAILER!!!\0\0\0\0");
        bytes
    };
    let bytes = by_hand(true);
    let entries = read_all(&bytes).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "hello");
    assert_eq!(entries[0].metadata, meta(1, S_IFREG | 0o644));
    assert_eq!(entries[0].data, b"hi");
    // Upper-case hex reads too; the writer writes lower case and pads to 512.
    let ours = archive(&[("hello", meta(1, S_IFREG | 0o644), b"hi")]);
    let lower = by_hand(false);
    assert_eq!(&ours[..lower.len()], &lower[..]);
    assert!(ours[lower.len()..].iter().all(|&b| b == 0));
    assert_eq!(ours.len(), 512);
}

#[test]
fn damage_is_reported_with_where() {
    let whole = archive(&[
        (
            ".marker",
            meta(1, S_IFREG | 0o644),
            b"banger config drive 1\n",
        ),
        ("etc/hostname", meta(2, S_IFREG | 0o644), b"dev\n"),
    ]);
    // The first entry ends at byte 144; the second entry's data starts at 268.
    assert_eq!(
        read_all(&whole[..144]).unwrap_err(),
        NewcError::TruncatedHeader { at: 144 }
    );
    let err = read_all(&whole[..150]).unwrap_err();
    assert!(err.to_string().contains("inside an entry header"), "{err}");
    let err = read_all(&whole[..270]).unwrap_err();
    assert_eq!(
        err,
        NewcError::TruncatedData {
            name: "etc/hostname".into()
        }
    );
    assert!(err.to_string().contains("past the end"));
    let err = read_all(&[0; 512]).unwrap_err();
    assert_eq!(err, NewcError::BadMagic { at: 0 });
    assert!(err.to_string().contains("no newc header"));

    let mut bad_field = whole.clone();
    bad_field[6] = b'g';
    assert_eq!(
        read_all(&bad_field).unwrap_err(),
        NewcError::BadField { at: 0 }
    );
    let mut no_nul = whole.clone();
    no_nul[110 + 7] = b'x';
    assert_eq!(read_all(&no_nul).unwrap_err(), NewcError::BadName { at: 0 });
    let mut bad_utf8 = whole.clone();
    bad_utf8[111] = 0xff;
    assert_eq!(
        read_all(&bad_utf8).unwrap_err(),
        NewcError::BadName { at: 0 }
    );
    // A name size reaching past the end.
    let mut long_name = whole.clone();
    long_name[6 + 8 * 11..6 + 8 * 12].copy_from_slice(b"00100000");
    assert_eq!(
        read_all(&long_name).unwrap_err(),
        NewcError::BadName { at: 0 }
    );
    // The iterator stops after an error.
    let mut reader = Reader::new(&[0; 512]);
    assert!(reader.next().unwrap().is_err());
    assert!(reader.next().is_none());
}

#[test]
fn the_first_name_reads_from_a_head_alone() {
    let bytes = archive(&[(".banger-config", meta(1, S_IFREG | 0o644), &[0; 4096])]);
    let (header, name, data_at) = entry_name(&bytes[..200], 0).unwrap();
    assert_eq!(name, ".banger-config");
    assert_eq!(header.file_size, 4096);
    assert_eq!(data_at, 128);
    assert!(entry_name(b"070701", 0).is_err());
}

#[test]
fn find_entry_reads_only_up_to_the_entry() {
    let bytes = archive(&[
        ("init", meta(1, S_IFREG | 0o755), b"\x7fELF..."),
        (
            "banger-init.features",
            meta(2, S_IFREG | 0o644),
            b"config-drive\n",
        ),
        ("lib", meta(3, S_IFDIR | 0o755), b""),
    ]);
    let mut r: &[u8] = &bytes;
    assert_eq!(
        find_entry(&mut r, "banger-init.features")
            .unwrap()
            .as_deref(),
        Some(&b"config-drive\n"[..])
    );
    // The data's padding (13 bytes of data, 3 of padding) and the next entry are left unread.
    assert_eq!(&r[..3], &[0; 3]);
    assert!(r[3..].starts_with(MAGIC));
    assert_eq!(find_entry(&mut &bytes[..], "absent").unwrap(), None);
    let err = find_entry(&mut &[0u8; 512][..], "init").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let err = find_entry(&mut &bytes[..100], "init").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn the_writer_refuses_what_newc_cannot_hold() {
    let mut w = Writer::new(Vec::new());
    let m = meta(1, S_IFREG | 0o644);
    assert_eq!(
        w.entry("", &m, b"").unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        w.entry("a\0b", &m, b"").unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

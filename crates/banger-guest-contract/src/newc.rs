//! The newc cpio format ("new ASCII", magic `070701`): what Linux unpacks an initramfs from,
//! and what banger writes its initramfs archives and config drives in.
//!
//! An archive is a run of entries, each a 110-byte header (the magic, then thirteen fields
//! of eight hex digits: inode, mode, uid, gid, nlink, mtime, file size, device major and
//! minor, rdev major and minor, name size including its NUL, checksum), the NUL-terminated
//! name, padding to a multiple of 4 bytes, the data, padding to a multiple of 4 bytes. An
//! entry named [`TRAILER`] ends it. banger's archives are then padded with zeros to whole
//! 512-byte blocks, which `cpio` and most tools expect (the kernel does not need it).
//!
//! [`Reader`] reads an archive in memory, checking every bound; [`find_entry`] reads one from
//! a stream only as far as the entry it looks for; [`Writer`] writes one.

use std::fmt;
use std::io::{self, Read, Write};

/// The magic of every header.
pub const MAGIC: &[u8; 6] = b"070701";
/// The magic of the variant with checksums, which Linux also unpacks.
pub const CRC_MAGIC: &[u8; 6] = b"070702";
/// The length of a header.
pub const HEADER_LEN: usize = 110;
/// The name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";
/// The block size banger pads its archives to.
pub const BLOCK: u64 = 512;

/// The file type bits of a mode.
pub const S_IFMT: u32 = 0o170000;
/// A directory.
pub const S_IFDIR: u32 = 0o040000;
/// A regular file.
pub const S_IFREG: u32 = 0o100000;
/// A symbolic link (its data is the target).
pub const S_IFLNK: u32 = 0o120000;
/// A character device (its rdev is the device number).
pub const S_IFCHR: u32 = 0o020000;

/// An archive that is not well-formed newc, with where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewcError {
    /// The bytes end inside the header starting at `at`.
    TruncatedHeader { at: usize },
    /// No newc magic at `at`.
    BadMagic { at: usize },
    /// A header field at `at` is not eight hex digits.
    BadField { at: usize },
    /// The name of the entry at `at` runs past the end, lacks its NUL or is not UTF-8.
    BadName { at: usize },
    /// The data of entry `name` runs past the end.
    TruncatedData { name: String },
}

impl fmt::Display for NewcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewcError::TruncatedHeader { at } => {
                write!(f, "it ends inside an entry header at {at}")
            }
            NewcError::BadMagic { at } => write!(f, "no newc header at byte {at}"),
            NewcError::BadField { at } => write!(f, "a bad header field at byte {at}"),
            NewcError::BadName { at } => write!(f, "a bad entry name at byte {at}"),
            NewcError::TruncatedData { name } => write!(f, "{name}: its data runs past the end"),
        }
    }
}

impl std::error::Error for NewcError {}

impl From<NewcError> for io::Error {
    fn from(e: NewcError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// An entry's metadata: the header's fields but the sizes, which follow from the name and
/// data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metadata {
    pub ino: u32,
    /// File type ([`S_IFMT`] bits) and permissions.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    /// The device holding the file (major, minor).
    pub dev: (u32, u32),
    /// For a device node, the device it is (major, minor).
    pub rdev: (u32, u32),
    pub check: u32,
}

/// A parsed header: the metadata and the sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub metadata: Metadata,
    pub file_size: u32,
    /// The name's length including its NUL.
    pub name_size: u32,
}

impl Header {
    /// Parses the header at the start of `bytes`; `at` is its offset in the archive, for
    /// errors.
    pub fn parse(bytes: &[u8], at: usize) -> Result<Header, NewcError> {
        let head = bytes
            .get(..HEADER_LEN)
            .ok_or(NewcError::TruncatedHeader { at })?;
        if &head[..6] != MAGIC {
            return Err(NewcError::BadMagic { at });
        }
        let field = |i: usize| {
            let raw = &head[6 + 8 * i..6 + 8 * (i + 1)];
            std::str::from_utf8(raw)
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or(NewcError::BadField { at })
        };
        Ok(Header {
            metadata: Metadata {
                ino: field(0)?,
                mode: field(1)?,
                uid: field(2)?,
                gid: field(3)?,
                nlink: field(4)?,
                mtime: field(5)?,
                dev: (field(7)?, field(8)?),
                rdev: (field(9)?, field(10)?),
                check: field(12)?,
            },
            file_size: field(6)?,
            name_size: field(11)?,
        })
    }
}

/// One entry read from an archive in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub metadata: Metadata,
    pub data: &'a [u8],
}

/// The header and name of the entry at `at`, and where its data starts; the data is not
/// checked. Enough to tell what an archive's first entry is from its first bytes.
pub fn entry_name(bytes: &[u8], at: usize) -> Result<(Header, &str, usize), NewcError> {
    let header = Header::parse(bytes.get(at..).unwrap_or_default(), at)?;
    let name_at = at + HEADER_LEN;
    let name = bytes
        .get(name_at..name_at + header.name_size as usize)
        .and_then(|n| n.strip_suffix(&[0]))
        .and_then(|n| std::str::from_utf8(n).ok())
        .ok_or(NewcError::BadName { at })?;
    Ok((header, name, align4(name_at + header.name_size as usize)))
}

/// Reads the entries of an archive in memory, in order, up to (without) the trailer; after
/// the trailer, [`Reader::rest`] is what follows it.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            bytes,
            at: 0,
            done: false,
        }
    }

    /// The next entry, `None` at the trailer.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>, NewcError> {
        if self.done {
            return Ok(None);
        }
        let (header, name, data_at) = entry_name(self.bytes, self.at)?;
        let data_end = data_at + header.file_size as usize;
        let data = self
            .bytes
            .get(data_at..data_end)
            .ok_or_else(|| NewcError::TruncatedData {
                name: name.to_owned(),
            })?;
        self.at = align4(data_end).min(self.bytes.len());
        if name == TRAILER {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(Entry {
            name,
            metadata: header.metadata,
            data,
        }))
    }

    /// The bytes after the entries read so far (after the trailer: the archive's padding).
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Entry<'a>, NewcError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_entry() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The data of the entry named `wanted` in the newc archive `r`, reading no further; `None`
/// when the archive ends (its trailer) without it.
pub fn find_entry(r: &mut dyn Read, wanted: &str) -> io::Result<Option<Vec<u8>>> {
    let mut at = 0u64;
    loop {
        let mut head = [0u8; HEADER_LEN];
        r.read_exact(&mut head)?;
        let header = Header::parse(&head, at as usize)?;
        let size = u64::from(header.file_size);
        let name_len = u64::from(header.name_size);
        let name_pad = pad4(HEADER_LEN as u64 + name_len) as u64;
        let mut name = vec![0u8; (name_len + name_pad) as usize];
        r.read_exact(&mut name)?;
        name.truncate(name_len.saturating_sub(1) as usize);
        if name == TRAILER.as_bytes() {
            return Ok(None);
        }
        if name == wanted.as_bytes() {
            let mut data = vec![0u8; size as usize];
            r.read_exact(&mut data)?;
            return Ok(Some(data));
        }
        let data_pad = pad4(size) as u64;
        io::copy(&mut r.take(size + data_pad), &mut io::sink())?;
        at += HEADER_LEN as u64 + name_len + name_pad + size + data_pad;
    }
}

/// Writes a newc archive: [`Writer::entry`] for each entry, then [`Writer::finish`] for the
/// trailer and the padding to whole 512-byte blocks.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Writer<W> {
        Writer { out, written: 0 }
    }

    /// Writes one entry. Refuses (`InvalidInput`) an empty name, a name with a NUL, and data
    /// longer than the format's 32-bit size field.
    pub fn entry(&mut self, name: &str, metadata: &Metadata, data: &[u8]) -> io::Result<u64> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        if name.is_empty() || name.contains('\0') {
            return Err(invalid(format!("invalid cpio entry name {name:?}")));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            invalid(format!(
                "{name}: {} bytes is too large for cpio",
                data.len()
            ))
        })?;
        let m = metadata;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}\
             {:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            m.ino,
            m.mode,
            m.uid,
            m.gid,
            m.nlink,
            m.mtime,
            m.dev.0,
            m.dev.1,
            m.rdev.0,
            m.rdev.1,
            m.check,
        );
        let mut n = 0u64;
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        n += (header.len() + namesize) as u64;
        let pad = pad4(n);
        self.out.write_all(&[0; 3][..pad])?;
        n += pad as u64;
        self.out.write_all(data)?;
        n += data.len() as u64;
        let pad = pad4(n);
        self.out.write_all(&[0; 3][..pad])?;
        n += pad as u64;
        self.written += n;
        Ok(n)
    }

    /// Writes the trailer and pads the archive with zeros to whole 512-byte blocks; returns
    /// the archive's length and the writer.
    pub fn finish(mut self) -> io::Result<(u64, W)> {
        self.entry(
            TRAILER,
            &Metadata {
                nlink: 1,
                ..Metadata::default()
            },
            &[],
        )?;
        let pad = (BLOCK - self.written % BLOCK) % BLOCK;
        self.out.write_all(&vec![0; pad as usize])?;
        Ok((self.written + pad, self.out))
    }
}

/// `n` rounded up to a multiple of 4.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn pad4(n: u64) -> usize {
    ((4 - (n % 4)) % 4) as usize
}

#[cfg(test)]
mod tests;

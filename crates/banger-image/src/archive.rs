//! Image archives: one file that carries a whole image from one banger host to another
//! (`banger image export NAME FILE`, `banger image import FILE`).
//!
//! The file is a tar stream compressed with zstd (one frame, with a checksum). Its entries,
//! in order: `banger-image.json` (the [`Label`]: format name and version, the image's name),
//! `manifest.json` (the image's manifest, byte for byte), `vmlinux`, `initrd` when the image
//! has one, `rootfs.ext4`, and the work seed directory `work-seed/` when the image has one.
//! The label comes first so a foreign or newer file is refused before anything is written.
//!
//! [`export`] writes to a temporary file beside the target and renames it in at the end, so
//! a failed or cancelled export leaves neither a partial file nor a clobbered old one.
//! [`import`] treats the file as hostile: only the names above are accepted, nothing is
//! written outside the new image directory or through a symlink, `rootfs.ext4` is written
//! sparsely (zero blocks stay holes), and the unpacked files must pass the same checks as a
//! registration ([`crate::format`]) and match the manifest's work seed fingerprint. On any
//! failure or cancellation the new image directory is removed, whole.

use std::cell::Cell;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use banger_api::{Image, ImageFile, ImageFiles, ImageManifest, ImageSource, Timestamp};
use banger_host::disk::{SparseWriteError, write_sparse};
use serde::{Deserialize, Serialize};
use tar::{Archive, Builder, EntryType, Header};

use crate::bootstrap::WORK_SEED_DIR;
use crate::format::{self, FormatError};
use crate::register::{INITRD_FILE, KERNEL_FILE, MANIFEST_FILE, ROOTFS_FILE, Reporter};
use crate::vmdisk::{self, VmDiskError};

/// The first entry of every image archive.
pub const LABEL_FILE: &str = "banger-image.json";
/// What [`Label::format`] says.
pub const FORMAT: &str = "banger-image";
/// The archive layout this banger writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The suffix the docs and examples use for image archives.
pub const SUFFIX: &str = ".banger-image";

/// zstd level 3: fast, and a run of zeros (most of a sparse root filesystem) compresses to
/// next to nothing at any level.
const ZSTD_LEVEL: i32 = 3;
/// Largest label and manifest accepted (a manifest lists packages: a few hundred KiB).
const MAX_LABEL_BYTES: u64 = 64 << 10;
const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Bytes between two progress reports.
const REPORT_EVERY: u64 = 4 << 20;

/// Stage names of an export, in order.
pub const EXPORT_STAGES: [&str; 5] = [
    "pack kernel",
    "pack initrd",
    "pack rootfs",
    "pack work seed",
    "write file",
];

/// Stage names of an import, in order.
pub const IMPORT_STAGES: [&str; 6] = [
    "read label",
    "unpack kernel",
    "unpack initrd",
    "unpack rootfs",
    "unpack work seed",
    "check files",
];

/// `banger-image.json`: what the file is and which image it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// Always [`FORMAT`]; anything else is not a banger image archive.
    pub format: String,
    /// The layout's version, [`FORMAT_VERSION`] when this banger wrote it.
    pub version: u32,
    /// The exported image's name.
    pub name: String,
    /// The banger that wrote the file.
    pub banger_version: String,
    pub exported_at: Timestamp,
}

/// Exporting or importing an image archive failed. An import that fails leaves no image
/// directory; an export leaves no file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{} is not a banger image archive ({reason})", path.display())]
    Foreign { path: PathBuf, reason: String },

    #[error(
        "{} was written by a newer banger (archive format {found}; this banger reads up to {FORMAT_VERSION})",
        path.display()
    )]
    Newer { path: PathBuf, found: u32 },

    #[error("{} is damaged: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    #[error("refusing entry {entry:?} of {}: {reason}", path.display())]
    Unsafe {
        path: PathBuf,
        entry: String,
        reason: &'static str,
    },

    #[error("the archive's {what} is not a valid image file")]
    BadFile {
        what: &'static str,
        #[source]
        source: FormatError,
    },

    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },

    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the work seed cannot be read")]
    WorkSeed(#[from] VmDiskError),

    #[error("the {0} was cancelled")]
    Cancelled(&'static str),
}

impl ArchiveError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
        let path = path.to_owned();
        move |source| ArchiveError::Io { what, path, source }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ArchiveError::Foreign { .. } => {
                Some("import files written by `banger image export NAME FILE`".to_owned())
            }
            ArchiveError::Newer { .. } => {
                Some("upgrade banger on this host, or export with this host's banger".to_owned())
            }
            ArchiveError::Corrupt { .. } => {
                Some("copy the file again from the host that exported it".to_owned())
            }
            ArchiveError::BadFile { source, .. } => source.hint(),
            ArchiveError::Exists { .. } => {
                Some("pick another file name, or pass --force to replace it".to_owned())
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Export

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Writes `image` (its files in `image_dir`) into the archive `target`. `target` must not
/// exist unless `replace`; it appears only once complete.
pub fn export(
    image: &Image,
    image_dir: &Path,
    target: &Path,
    replace: bool,
    reporter: &dyn Reporter,
) -> Result<Exported, ArchiveError> {
    if !replace && fs::symlink_metadata(target).is_ok() {
        return Err(ArchiveError::Exists {
            path: target.to_owned(),
        });
    }
    let parent = target.parent().unwrap_or(Path::new("/"));
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Removed when dropped: every early return below discards the partial file.
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .tempfile_in(parent)
        .map_err(ArchiveError::io("create a file in", parent))?;
    let writer = BufWriter::with_capacity(1 << 20, temp.as_file());
    let mut encoder = zstd::Encoder::new(writer, ZSTD_LEVEL)
        .map_err(ArchiveError::io("compress into", temp.path()))?;
    encoder
        .include_checksum(true)
        .map_err(ArchiveError::io("compress into", temp.path()))?;
    let mut builder = Builder::new(encoder);
    pack(&mut builder, image, image_dir, temp.path(), reporter)?;

    reporter.begin(EXPORT_STAGES[4]);
    let write_error = ArchiveError::io("write", temp.path());
    let finished = builder
        .into_inner()
        .and_then(|encoder| encoder.finish())
        .and_then(|writer| writer.into_inner().map_err(|e| e.into_error()))
        .and_then(|file| file.sync_all());
    finished.map_err(write_error)?;
    if reporter.cancelled() {
        return Err(ArchiveError::Cancelled("export"));
    }
    let bytes = temp
        .as_file()
        .metadata()
        .map_err(ArchiveError::io("measure", temp.path()))?
        .len();
    let persisted = if replace {
        temp.persist(target)
    } else {
        temp.persist_noclobber(target)
    };
    persisted.map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            ArchiveError::Exists {
                path: target.to_owned(),
            }
        } else {
            ArchiveError::Io {
                what: "rename the finished file to",
                path: target.to_owned(),
                source: e.error,
            }
        }
    })?;
    // The rename is durable only once the directory is.
    if let Err(e) = File::open(parent).and_then(|dir| dir.sync_all()) {
        tracing::warn!(dir = %parent.display(), error = %e, "cannot sync the export's directory");
    }
    reporter.done(
        EXPORT_STAGES[4],
        Some(banger_api::validate::format_size(bytes)),
    );
    Ok(Exported {
        path: target.to_owned(),
        bytes,
    })
}

fn pack<W: Write>(
    builder: &mut Builder<W>,
    image: &Image,
    image_dir: &Path,
    out: &Path,
    reporter: &dyn Reporter,
) -> Result<(), ArchiveError> {
    let write_error = |source| ArchiveError::Io {
        what: "write",
        path: out.to_owned(),
        source,
    };
    let label = Label {
        format: FORMAT.to_owned(),
        version: FORMAT_VERSION,
        name: image.name.clone(),
        banger_version: env!("CARGO_PKG_VERSION").to_owned(),
        exported_at: Timestamp::now(),
    };
    let label = serde_json::to_vec_pretty(&label).map_err(|e| write_error(io::Error::other(e)))?;
    append_bytes(builder, LABEL_FILE, &label).map_err(write_error)?;
    // The manifest as the image has it (a bootstrapped image's holds more than the record).
    let manifest_path = image_dir.join(MANIFEST_FILE);
    let manifest = match fs::read(&manifest_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => serde_json::to_vec_pretty(&image.manifest)
            .map_err(|e| write_error(io::Error::other(e)))?,
        Err(e) => return Err(ArchiveError::io("read", &manifest_path)(e)),
    };
    append_bytes(builder, MANIFEST_FILE, &manifest).map_err(write_error)?;

    let mut pack_file = |stage: &'static str, name: &str| -> Result<(), ArchiveError> {
        reporter.begin(stage);
        let path = image_dir.join(name);
        let file = File::open(&path).map_err(ArchiveError::io("read", &path))?;
        let len = file
            .metadata()
            .map_err(ArchiveError::io("read", &path))?
            .len();
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_size(len);
        header.set_mode(0o644);
        header.set_mtime(0);
        let file = io::BufReader::with_capacity(1 << 20, file);
        let mut reader = Reported::new(file, len, stage, reporter);
        let appended = builder.append_data(&mut header, name, &mut reader);
        if reader.cancelled.get() {
            return Err(ArchiveError::Cancelled("export"));
        }
        appended.map_err(|source| ArchiveError::Io {
            what: "pack",
            path,
            source,
        })?;
        if reader.done != len {
            return Err(ArchiveError::Io {
                what: "pack",
                path: image_dir.join(name),
                source: io::Error::other("the file changed size while being exported"),
            });
        }
        reporter.done(stage, Some(banger_api::validate::format_size(len)));
        Ok(())
    };
    pack_file(EXPORT_STAGES[0], KERNEL_FILE)?;
    if image_dir.join(INITRD_FILE).is_file() {
        pack_file(EXPORT_STAGES[1], INITRD_FILE)?;
    } else {
        reporter.skip(EXPORT_STAGES[1], "the image has no initrd");
    }
    pack_file(EXPORT_STAGES[2], ROOTFS_FILE)?;

    let seed = image_dir.join(WORK_SEED_DIR);
    if fs::symlink_metadata(&seed).is_ok_and(|m| m.is_dir()) {
        reporter.begin(EXPORT_STAGES[3]);
        let entries = pack_tree(builder, &seed, Path::new(WORK_SEED_DIR), out)?;
        reporter.done(EXPORT_STAGES[3], Some(format!("{entries} entries")));
    } else {
        reporter.skip(EXPORT_STAGES[3], "the image has no work seed");
    }
    if reporter.cancelled() {
        return Err(ArchiveError::Cancelled("export"));
    }
    Ok(())
}

fn append_bytes<W: Write>(builder: &mut Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    builder.append_data(&mut header, name, bytes)
}

/// Packs the directory `dir` as `name`: directories, regular files and symlinks with their
/// permission bits (the work seed's fingerprint covers them), sorted. Returns the entry count.
fn pack_tree<W: Write>(
    builder: &mut Builder<W>,
    dir: &Path,
    name: &Path,
    out: &Path,
) -> Result<u64, ArchiveError> {
    let meta = fs::symlink_metadata(dir).map_err(ArchiveError::io("read", dir))?;
    let write_error = |source| ArchiveError::Io {
        what: "write",
        path: out.to_owned(),
        source,
    };
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Directory);
    header.set_size(0);
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(0);
    builder
        .append_data(&mut header, name, io::empty())
        .map_err(write_error)?;
    let mut count = 1;
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(ArchiveError::io("list", dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(ArchiveError::io("list", dir))?;
    children.sort();
    for child in children {
        let path = dir.join(&child);
        let entry_name = name.join(&child);
        let meta = fs::symlink_metadata(&path).map_err(ArchiveError::io("read", &path))?;
        let mut header = Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_mtime(0);
        if meta.is_dir() {
            count += pack_tree(builder, &path, &entry_name, out)?;
            continue;
        } else if meta.is_symlink() {
            let target = fs::read_link(&path).map_err(ArchiveError::io("read", &path))?;
            header.set_entry_type(EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, &entry_name, &target)
                .map_err(write_error)?;
        } else if meta.is_file() {
            let file = File::open(&path).map_err(ArchiveError::io("read", &path))?;
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            builder
                .append_data(&mut header, &entry_name, file.take(meta.len()))
                .map_err(write_error)?;
        } else {
            // A socket or device in a seed means nothing on another host, and the work disk
            // would not get it either.
            tracing::warn!(path = %path.display(), "not exporting a special file of the work seed");
            continue;
        }
        count += 1;
    }
    Ok(count)
}

/// A reader that reports progress of a stage and stops when the operation is cancelled.
struct Reported<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    last_report: u64,
    stage: &'static str,
    reporter: &'a dyn Reporter,
    cancelled: Cell<bool>,
}

impl<'a, R> Reported<'a, R> {
    fn new(inner: R, total: u64, stage: &'static str, reporter: &'a dyn Reporter) -> Self {
        Reported {
            inner,
            done: 0,
            total,
            last_report: 0,
            stage,
            reporter,
            cancelled: Cell::new(false),
        }
    }
}

impl<R: Read> Read for Reported<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never more than the size the header announced, even when the file grew.
        let left = self.total.saturating_sub(self.done);
        let max = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.done += n as u64;
        if self.done - self.last_report >= REPORT_EVERY || self.done == self.total {
            self.last_report = self.done;
            self.reporter.progress(self.stage, self.done, self.total);
            if self.reporter.cancelled() {
                self.cancelled.set(true);
                return Err(io::Error::other("cancelled"));
            }
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Import

/// The first two entries of an archive: enough to know what it holds and to name the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub label: Label,
    pub manifest: ImageManifest,
}

/// Reads and checks the label and manifest of the archive at `path` without unpacking
/// anything: what the daemon checks before it starts an import.
pub fn read_head(path: &Path) -> Result<Head, ArchiveError> {
    let file = open_archive(path)?;
    let mut archive = Archive::new(decoder(path, file)?);
    let mut entries = archive.entries().map_err(|e| damaged(path, e))?;
    let (head, _) = read_head_entries(path, &mut entries)?;
    Ok(head)
}

fn open_archive(path: &Path) -> Result<File, ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io("open", path))?;
    let meta = file.metadata().map_err(ArchiveError::io("read", path))?;
    if !meta.is_file() {
        return Err(ArchiveError::Foreign {
            path: path.to_owned(),
            reason: "not a regular file".to_owned(),
        });
    }
    Ok(file)
}

fn decoder<'a>(
    path: &Path,
    file: File,
) -> Result<zstd::Decoder<'a, io::BufReader<File>>, ArchiveError> {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 4];
    let is_zstd = file
        .read_exact_at(&mut magic, 0)
        .map(|()| magic == [0x28, 0xb5, 0x2f, 0xfd]);
    match is_zstd {
        Ok(true) => {}
        Ok(false) => {
            return Err(ArchiveError::Foreign {
                path: path.to_owned(),
                reason: "not zstd-compressed".to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ArchiveError::Foreign {
                path: path.to_owned(),
                reason: "too short".to_owned(),
            });
        }
        Err(e) => return Err(ArchiveError::io("read", path)(e)),
    }
    zstd::Decoder::new(file).map_err(ArchiveError::io("decompress", path))
}

/// A read error inside the compressed stream: zstd's own errors (a bad frame, a checksum
/// mismatch) and a tar stream that ends early mean the file is damaged.
fn damaged(path: &Path, e: io::Error) -> ArchiveError {
    ArchiveError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn read_head_entries<R: Read>(
    path: &Path,
    entries: &mut tar::Entries<'_, R>,
) -> Result<(Head, serde_json::Value), ArchiveError> {
    let foreign = |reason: String| ArchiveError::Foreign {
        path: path.to_owned(),
        reason,
    };
    let mut next = |expected: &str, limit: u64| -> Result<Vec<u8>, ArchiveError> {
        let mut entry = match entries.next() {
            Some(entry) => entry.map_err(|e| damaged(path, e))?,
            None => return Err(foreign(format!("it has no {expected}"))),
        };
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name != expected || entry.header().entry_type() != EntryType::Regular {
            return Err(foreign(format!(
                "{expected} missing, found {name:?} instead"
            )));
        }
        if entry.size() > limit {
            return Err(foreign(format!(
                "its {expected} is {} bytes long",
                entry.size()
            )));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| damaged(path, e))?;
        Ok(bytes)
    };
    let label = next(LABEL_FILE, MAX_LABEL_BYTES)?;
    let label: Label = serde_json::from_slice(&label)
        .map_err(|e| foreign(format!("its {LABEL_FILE} cannot be read: {e}")))?;
    if label.format != FORMAT {
        return Err(foreign(format!("its format is {:?}", label.format)));
    }
    if label.version > FORMAT_VERSION {
        return Err(ArchiveError::Newer {
            path: path.to_owned(),
            found: label.version,
        });
    }
    let manifest = next(MANIFEST_FILE, MAX_MANIFEST_BYTES)?;
    let corrupt = |reason: String| ArchiveError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let raw: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| corrupt(format!("its manifest is not JSON: {e}")))?;
    if !raw.is_object() {
        return Err(corrupt("its manifest is not a JSON object".to_owned()));
    }
    let manifest: ImageManifest = serde_json::from_value(raw.clone())
        .map_err(|e| corrupt(format!("its manifest cannot be read: {e}")))?;
    crate::bootstrap::guest::validate_services(&manifest.services).map_err(|e| {
        corrupt(format!(
            "its manifest declares services banger cannot wait for: {e}"
        ))
    })?;
    Ok((Head { label, manifest }, raw))
}

/// Unpacks the archive at `source` into `image_dir` (which must not exist) as the image
/// `name` with id `id`. Returns the image to record. On error or cancellation `image_dir` is
/// removed.
pub fn import(
    id: &str,
    name: &str,
    source: &Path,
    image_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Image, ArchiveError> {
    let parent = image_dir.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(ArchiveError::io("create", parent))?;
    fs::create_dir(image_dir).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            ArchiveError::Exists {
                path: image_dir.to_owned(),
            }
        } else {
            ArchiveError::io("create", image_dir)(e)
        }
    })?;
    let result = import_into(id, name, source, image_dir, reporter);
    if result.is_err()
        && let Err(e) = fs::remove_dir_all(image_dir)
    {
        tracing::error!(dir = %image_dir.display(), error = %e, "cannot remove a failed import");
    }
    result
}

/// The stage each top-level entry belongs to.
fn stage_of(first: &str) -> Option<(&'static str, usize)> {
    match first {
        KERNEL_FILE => Some((IMPORT_STAGES[1], 1)),
        INITRD_FILE => Some((IMPORT_STAGES[2], 2)),
        ROOTFS_FILE => Some((IMPORT_STAGES[3], 3)),
        WORK_SEED_DIR => Some((IMPORT_STAGES[4], 4)),
        _ => None,
    }
}

fn import_into(
    id: &str,
    name: &str,
    source: &Path,
    image_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Image, ArchiveError> {
    reporter.begin(IMPORT_STAGES[0]);
    let file = open_archive(source)?;
    let mut archive = Archive::new(decoder(source, file)?);
    let mut entries = archive.entries().map_err(|e| damaged(source, e))?;
    let (head, mut raw_manifest) = read_head_entries(source, &mut entries)?;
    reporter.done(
        IMPORT_STAGES[0],
        Some(format!(
            "image {:?} exported by banger {}",
            head.label.name, head.label.banger_version
        )),
    );

    let unsafe_entry = |entry: &str, reason| ArchiveError::Unsafe {
        path: source.to_owned(),
        entry: entry.to_owned(),
        reason,
    };
    // Which stages ran (index into IMPORT_STAGES); the rest are skipped at the end.
    let mut seen = [false; IMPORT_STAGES.len()];
    seen[0] = true;
    let mut current: Option<&'static str> = None;
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(source, e))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let rel = safe_relative(&raw).map_err(|reason| unsafe_entry(&shown, reason))?;
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((stage, index)) = stage_of(&first) else {
            return Err(unsafe_entry(
                &shown,
                "banger image archives hold no such file",
            ));
        };
        let kind = entry.header().entry_type();
        let in_seed = index == 4;
        let top_level = rel.components().count() == 1;
        if !in_seed && (!top_level || kind != EntryType::Regular) {
            return Err(unsafe_entry(&shown, "a boot file must be a regular file"));
        }
        if in_seed && top_level && kind != EntryType::Directory {
            return Err(unsafe_entry(&shown, "the work seed must be a directory"));
        }
        if top_level && seen[index] {
            return Err(unsafe_entry(&shown, "it appears twice"));
        }
        if current != Some(stage) {
            if let Some(previous) = current {
                reporter.done(previous, None);
            }
            reporter.begin(stage);
            current = Some(stage);
        }
        seen[index] = true;
        if reporter.cancelled() {
            return Err(ArchiveError::Cancelled("import"));
        }

        let target = image_dir.join(&rel);
        check_parents(image_dir, &rel).map_err(|reason| unsafe_entry(&shown, reason))?;
        if fs::symlink_metadata(&target).is_ok() {
            return Err(unsafe_entry(&shown, "it appears twice"));
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let write_error = ArchiveError::io("write", &target);
        match kind {
            EntryType::Directory => {
                fs::create_dir(&target).map_err(write_error)?;
                dir_modes.push((target, mode));
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&shown, "a symlink without a target"))?;
                // The target is data for the VM's /root; nothing here is written through it.
                let link = std::ffi::OsStr::from_bytes(&link).to_owned();
                std::os::unix::fs::symlink(&link, &target).map_err(write_error)?;
            }
            EntryType::Regular => {
                let out = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(ArchiveError::io("create", &target))?;
                let len = entry.size();
                let mut last = 0;
                write_sparse(&mut entry, &out, len, &mut |done, total| {
                    if done - last >= REPORT_EVERY || done == total {
                        last = done;
                        reporter.progress(stage, done, total);
                    }
                    if reporter.cancelled() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .map_err(|e| match e {
                    SparseWriteError::Cancelled => ArchiveError::Cancelled("import"),
                    SparseWriteError::Write(error) => ArchiveError::Io {
                        what: "write",
                        path: target.clone(),
                        source: error,
                    },
                    SparseWriteError::Read(e) => damaged(source, e),
                    SparseWriteError::Short { expected, got } => ArchiveError::Corrupt {
                        path: source.to_owned(),
                        reason: format!("{shown:?} ends after {got} of {expected} bytes"),
                    },
                })?;
                // Durable before the image is recorded, as a registration's copies are.
                out.sync_all().map_err(ArchiveError::io("write", &target))?;
                let mode = if in_seed { mode } else { 0o644 };
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(ArchiveError::io("set the mode of", &target))?;
            }
            other => {
                return Err(ArchiveError::Unsafe {
                    path: source.to_owned(),
                    entry: shown,
                    reason: match other {
                        EntryType::Link => "hard links are not accepted",
                        _ => "only directories, regular files and symlinks are accepted",
                    },
                });
            }
        }
    }
    // Reading on to the end of the stream makes zstd check the frame's checksum: a flipped
    // bit anywhere is caught here rather than in a guest.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| damaged(source, e))?;
    if let Some(previous) = current {
        reporter.done(previous, None);
    }
    for (index, stage) in IMPORT_STAGES.iter().enumerate().take(5) {
        if !seen[index] {
            reporter.skip(stage, "not in the archive");
        }
    }
    if reporter.cancelled() {
        return Err(ArchiveError::Cancelled("import"));
    }
    // Directory modes last, deepest first: a read-only directory must not stop its contents.
    for (dir, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(ArchiveError::io("set the mode of", &dir))?;
    }

    reporter.begin(IMPORT_STAGES[5]);
    for (present, what) in [(seen[1], KERNEL_FILE), (seen[3], ROOTFS_FILE)] {
        if !present {
            return Err(ArchiveError::Corrupt {
                path: source.to_owned(),
                reason: format!("it has no {what}"),
            });
        }
    }
    let kernel = image_dir.join(KERNEL_FILE);
    let rootfs = image_dir.join(ROOTFS_FILE);
    let initrd = image_dir.join(INITRD_FILE);
    let bad = |what| move |source| ArchiveError::BadFile { what, source };
    format::check_kernel(&kernel).map_err(bad("kernel"))?;
    format::check_rootfs(&rootfs).map_err(bad("rootfs"))?;
    if seen[2] {
        format::check_initrd(&initrd).map_err(bad("initrd"))?;
    }
    // A bootstrapped image's manifest records its work seed's fingerprint; VMs compare
    // against it, so an import that changed the seed would look changed to every VM.
    let recorded = raw_manifest
        .pointer("/work_seed/fingerprint")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    if let Some(recorded) = recorded {
        let seed = image_dir.join(WORK_SEED_DIR);
        let found = vmdisk::seed_fingerprint(seed.is_dir().then_some(seed.as_path()))?;
        if found != recorded {
            return Err(ArchiveError::Corrupt {
                path: source.to_owned(),
                reason: format!(
                    "its work seed's fingerprint is {found}, the manifest says {recorded}"
                ),
            });
        }
    }

    let imported_from = format!(
        "{} (image {:?} exported by banger {} at {})",
        source.display(),
        head.label.name,
        head.label.banger_version,
        head.label.exported_at
    );
    let object = raw_manifest
        .as_object_mut()
        .expect("read_head_entries checked it is an object");
    object.insert("name".to_owned(), name.into());
    object.insert("imported_from".to_owned(), imported_from.clone().into());
    let mut manifest = head.manifest;
    manifest.name = name.to_owned();
    manifest.imported_from = Some(imported_from);
    let manifest_path = image_dir.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&raw_manifest)
        .map_err(|e| ArchiveError::io("encode", &manifest_path)(io::Error::other(e)))?;
    fs::write(&manifest_path, json).map_err(ArchiveError::io("write", &manifest_path))?;
    reporter.done(IMPORT_STAGES[5], None);
    if reporter.cancelled() {
        return Err(ArchiveError::Cancelled("import"));
    }

    Ok(Image {
        id: id.to_owned(),
        name: name.to_owned(),
        source: ImageSource::Imported,
        files: ImageFiles {
            kernel: stored_file(&kernel)?,
            initrd: if seen[2] {
                Some(stored_file(&initrd)?)
            } else {
                None
            },
            rootfs: stored_file(&rootfs)?,
        },
        manifest,
        created_at: Timestamp::now(),
        retired: None,
    })
}

/// The entry name as a relative path of normal components only: no `..`, not absolute, no
/// NUL. `.` components are dropped.
fn safe_relative(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.contains(&0) {
        return Err("the name contains a NUL byte");
    }
    let mut rel = PathBuf::new();
    for component in Path::new(std::ffi::OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("the name contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("the name is absolute"),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err("the name is empty");
    }
    Ok(rel)
}

/// Every directory between `root` and the entry must already be a real directory the archive
/// made: nothing is created implicitly, nothing is written through a symlink.
fn check_parents(root: &Path, rel: &Path) -> Result<(), &'static str> {
    let mut dir = root.to_owned();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for part in parent.components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err("it would be written through a symlink");
            }
            Ok(_) => return Err("its parent is not a directory"),
            Err(_) => return Err("its directory comes later or not at all"),
        }
    }
    Ok(())
}

fn stored_file(path: &Path) -> Result<ImageFile, ArchiveError> {
    let meta = fs::metadata(path).map_err(ArchiveError::io("measure", path))?;
    Ok(ImageFile {
        path: path.display().to_string(),
        bytes: meta.len(),
        allocated_bytes: banger_host::disk::allocated_bytes(path).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests;

//! Assembling banger's initramfs: the archive builder, and the init, device nodes, modules
//! and lists that go into it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use banger_guest_contract::newc::{self, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};

use super::modules::{ModuleTree, Resolution, read_module};
use super::{FEATURES_PATH, INIT_PATH, InitramfsError, MODULE_LIST};

/// The fixed modification time of every entry, so archives are reproducible.
const MTIME: u32 = 0;

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// An initramfs being assembled: entries keyed by path, written sorted as a newc cpio archive.
/// Parent directories are added automatically (mode 0755).
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    pub fn new() -> Self {
        Initramfs::default()
    }

    /// Adds a directory (`mode` holds the permission bits).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, InitramfsError> {
        self.insert(
            path,
            Entry::Dir {
                mode: mode & 0o7777,
            },
        )
    }

    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        data: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, InitramfsError> {
        self.insert(
            path,
            Entry::File {
                mode: mode & 0o7777,
                data: data.into(),
            },
        )
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, InitramfsError> {
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        )
    }

    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self, InitramfsError> {
        self.insert(
            path,
            Entry::CharDevice {
                mode: mode & 0o7777,
                major,
                minor,
            },
        )
    }

    /// Lists banger's init features ([`banger_init::FEATURES`]) at [`FEATURES_PATH`], one a
    /// line, which is how an image's manifest learns them from its initrd ([`init_features`]).
    pub fn init_features(&mut self) -> Result<&mut Self, InitramfsError> {
        let features: String = banger_init::FEATURES
            .iter()
            .map(|f| format!("{f}\n"))
            .collect();
        self.file(FEATURES_PATH, 0o644, features)
    }

    /// The paths in the archive, in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn insert(&mut self, path: &str, entry: Entry) -> Result<&mut Self, InitramfsError> {
        let path = clean_path(path)?;
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(Entry::Dir { mode: 0o755 });
            parent = dir.parent();
        }
        self.entries.insert(path, entry);
        Ok(self)
    }

    /// Writes the archive. Sorting by path puts every directory before its contents.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<u64> {
        let mut writer = newc::Writer::new(out);
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir { mode } => (S_IFDIR | mode, &[], (0, 0)),
                Entry::File { mode, data } => (S_IFREG | mode, data, (0, 0)),
                Entry::Symlink { target } => (S_IFLNK | 0o777, target.as_bytes(), (0, 0)),
                Entry::CharDevice { mode, major, minor } => (S_IFCHR | mode, &[], (*major, *minor)),
            };
            let nlink = if matches!(entry, Entry::Dir { .. }) {
                2
            } else {
                1
            };
            let metadata = newc::Metadata {
                ino,
                mode,
                nlink,
                mtime: MTIME,
                rdev,
                ..newc::Metadata::default()
            };
            writer.entry(path, &metadata, data)?;
        }
        // The trailer, then whole 512-byte blocks: the kernel does not need them, but `cpio`
        // and most tools expect them.
        Ok(writer.finish()?.0)
    }

    /// The archive as bytes, uncompressed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }
}

/// `./a//b/` → `a/b`; absolute paths are taken as relative to the archive root; `..` and
/// empty paths are refused.
fn clean_path(path: &str) -> Result<String, InitramfsError> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") || path.contains('\0') {
        return Err(InitramfsError::BadPath(path.to_owned()));
    }
    Ok(parts.join("/"))
}

/// What [`build_initramfs`] put in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsReport {
    pub kernel_version: String,
    /// Module names in load order.
    pub modules: Vec<String>,
    /// Wanted modules the kernel has built in.
    pub builtin: Vec<String>,
    /// Size of the written file.
    pub bytes: u64,
}

/// How the initramfs file is compressed. Linux unpacks both; gzip is supported by every
/// distribution kernel (`CONFIG_RD_GZIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitramfsCompression {
    None,
    Gzip,
}

/// Assembles banger's initramfs for the kernel whose modules are in `modules_dir`
/// (`.../lib/modules/<version>`): `/init` from `init_binary`, the modules `wanted` resolves to
/// (decompressed) under `/lib/modules/<version>/`, the load list at [`MODULE_LIST`], and
/// `/dev/console` so the kernel can give `/init` a console before devtmpfs is mounted.
pub fn assemble(
    init_binary: &Path,
    tree: &ModuleTree,
    wanted: &[&str],
) -> Result<(Initramfs, Resolution), InitramfsError> {
    let init = std::fs::read(init_binary).map_err(|source| InitramfsError::Read {
        path: init_binary.to_owned(),
        source,
    })?;
    let resolution = tree.resolve(wanted)?;
    let mut archive = Initramfs::new();
    archive.file(INIT_PATH, 0o755, init)?;
    for dir in ["dev", "proc", "sys", "run", "newroot"] {
        archive.dir(dir, 0o755)?;
    }
    archive.char_device("dev/console", 0o600, 5, 1)?;
    archive.char_device("dev/null", 0o666, 1, 3)?;
    let mut list = String::new();
    for module in &resolution.modules {
        let bytes = read_module(&tree.root().join(&module.path))?;
        let path = module.initramfs_path(tree.version());
        list.push('/');
        list.push_str(&path);
        list.push('\n');
        archive.file(&path, 0o644, bytes)?;
    }
    archive.file(MODULE_LIST, 0o644, list)?;
    archive.init_features()?;
    Ok((archive, resolution))
}

/// The init features an initrd lists at [`FEATURES_PATH`]: what banger's initramfs says of
/// its init. Empty for any other initrd (another format, another compression than none or
/// gzip, no such entry). Reads only up to that entry, which banger's archives put near the
/// start.
pub fn init_features(initrd: &Path) -> Result<Vec<String>, InitramfsError> {
    let read_error = |source| InitramfsError::Read {
        path: initrd.to_owned(),
        source,
    };
    let mut file = io::BufReader::new(std::fs::File::open(initrd).map_err(read_error)?);
    let mut magic = [0u8; 2];
    let head = io::Read::read(&mut file, &mut magic).map_err(read_error)?;
    let prefix = io::Cursor::new(magic[..head].to_vec());
    let mut archive: Box<dyn Read> = if magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(prefix.chain(file)))
    } else {
        Box::new(prefix.chain(file))
    };
    match newc::find_entry(&mut archive, FEATURES_PATH) {
        Ok(Some(data)) => Ok(String::from_utf8_lossy(&data)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
        // Not a newc archive, or one without the list: not banger's initramfs.
        Ok(None) | Err(_) => Ok(Vec::new()),
    }
}

/// [`assemble`]s the initramfs and writes it to `out` (under a temporary name first, so a
/// failure leaves nothing at `out`).
pub fn build_initramfs(
    init_binary: &Path,
    modules_dir: &Path,
    wanted: &[&str],
    compression: InitramfsCompression,
    out: &Path,
) -> Result<InitramfsReport, InitramfsError> {
    let tree = ModuleTree::open(modules_dir)?;
    let (archive, resolution) = assemble(init_binary, &tree, wanted)?;
    let partial = crate::kernel::partial_path(out);
    let write_error = |source| InitramfsError::Write {
        path: out.to_owned(),
        source,
    };
    let result = (|| -> io::Result<u64> {
        let file = io::BufWriter::new(std::fs::File::create(&partial)?);
        let file = match compression {
            InitramfsCompression::None => {
                let mut file = file;
                archive.write_to(&mut file)?;
                file.into_inner().map_err(|e| e.into_error())?
            }
            InitramfsCompression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
                archive.write_to(&mut gz)?;
                gz.finish()?.into_inner().map_err(|e| e.into_error())?
            }
        };
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        std::fs::rename(&partial, out)?;
        Ok(bytes)
    })();
    match result {
        Ok(bytes) => Ok(InitramfsReport {
            kernel_version: tree.version().to_owned(),
            modules: resolution.modules.iter().map(|m| m.name.clone()).collect(),
            builtin: resolution.builtin,
            bytes,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(write_error(e))
        }
    }
}

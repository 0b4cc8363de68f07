//! The initramfs banger generates for its images: banger's own `/init` (the `banger-init`
//! binary), exactly the kernel modules the guest needs to reach its disks, network and agent,
//! and a list saying in which order to load them. Nothing else: no shell, no udev, no modprobe.
//!
//! Two parts. [`ModuleTree`] reads a kernel's `lib/modules/<version>/` and resolves wanted
//! module names to files in dependency order (from `modules.dep`, or, when the tree has not
//! been through `depmod` — a kernel package unpacked with `dpkg-deb -x` has not — from each
//! module's own `.modinfo` section). [`Initramfs`] is a deterministic newc cpio writer: entries
//! sorted by path, owner root, a fixed mtime, inode numbers in order, so the same inputs give
//! the same bytes. Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are stored decompressed:
//! `finit_module` in the guest then needs no decompressor, whatever the kernel's config.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The modules a banger guest needs: the virtio-mmio transport (devices are found through
/// ACPI or the kernel command line), block and network devices, the vsock transport the agent
/// listens on, overlayfs for the root, and ext4 for the disks. Modules built into the kernel
/// are skipped.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "vmw_vsock_virtio_transport",
    "overlay",
    "ext4",
];

/// Where the initramfs lists the modules to load, one absolute path a line, in load order.
/// `banger-init` reads this exact path.
pub const MODULE_LIST: &str = "lib/modules/banger.load";
/// Where the init binary goes.
pub const INIT_PATH: &str = "init";
/// Where the initramfs lists the init's features ([`banger_init::FEATURES`]), one a line.
pub const FEATURES_PATH: &str = "banger-init.features";

/// The fixed modification time of every entry, so archives are reproducible.
const MTIME: u32 = 0;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Building an initramfs or resolving its modules failed.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write {}", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("{} is not a kernel modules directory (no modules.dep and no kernel/ tree)", path.display())]
    NotAModulesTree { path: PathBuf },

    #[error("kernel module {name} is neither in {} nor built into the kernel", tree.display())]
    MissingModule { name: String, tree: PathBuf },

    #[error(
        "kernel module {name} (needed by {needed_by}) is neither in {} nor built into the kernel",
        tree.display()
    )]
    MissingDependency {
        name: String,
        needed_by: String,
        tree: PathBuf,
    },

    #[error("kernel modules depend on each other in a cycle: {0}")]
    DependencyCycle(String),

    #[error("cannot read the module information of {}: {problem}", path.display())]
    BadModule { path: PathBuf, problem: String },

    #[error("cannot decompress kernel module {}", path.display())]
    Decompress { path: PathBuf, source: io::Error },

    #[error("invalid initramfs path {0:?}")]
    BadPath(String),
}

/// One module to load, resolved to its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The module name, with `_` for `-` (how the kernel names it).
    pub name: String,
    /// Relative to the modules tree, e.g. `kernel/drivers/block/virtio_blk.ko`.
    pub path: PathBuf,
}

impl Module {
    /// Where the module goes in the initramfs (relative, compression suffix removed):
    /// `lib/modules/<version>/kernel/...ko`.
    pub fn initramfs_path(&self, version: &str) -> String {
        let rel = self.path.to_string_lossy();
        let plain = strip_compression(&rel).0;
        format!("lib/modules/{version}/{plain}")
    }
}

/// What [`ModuleTree::resolve`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    /// Modules to load, dependencies first, each once.
    pub modules: Vec<Module>,
    /// Wanted modules (or dependencies) that the kernel has built in.
    pub builtin: Vec<String>,
}

/// A kernel's `lib/modules/<version>/` directory.
#[derive(Debug, Clone)]
pub struct ModuleTree {
    root: PathBuf,
    version: String,
    /// name → path relative to `root`.
    files: HashMap<String, PathBuf>,
    /// name → dependency names, from `modules.dep`; `None` when the tree has no `modules.dep`
    /// and dependencies are read from the modules themselves.
    deps: Option<HashMap<String, Vec<String>>>,
    builtin: HashSet<String>,
}

impl ModuleTree {
    /// Reads the tree at `root` (`.../lib/modules/<version>`); the version is the directory's
    /// name.
    pub fn open(root: &Path) -> Result<ModuleTree, InitramfsError> {
        let version = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let read = |path: &Path| -> Result<Option<String>, InitramfsError> {
            match std::fs::read_to_string(path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(InitramfsError::Read {
                    path: path.to_owned(),
                    source,
                }),
            }
        };

        let mut files = HashMap::new();
        let deps = match read(&root.join("modules.dep"))? {
            Some(text) => {
                let mut deps = HashMap::new();
                for line in text.lines() {
                    let Some((module, rest)) = line.split_once(':') else {
                        continue;
                    };
                    let name = module_name(module);
                    files.insert(name.clone(), PathBuf::from(module.trim()));
                    deps.insert(name, rest.split_whitespace().map(module_name).collect());
                }
                Some(deps)
            }
            None => {
                if !root.join("kernel").is_dir() {
                    return Err(InitramfsError::NotAModulesTree {
                        path: root.to_owned(),
                    });
                }
                // Without depmod's index, find every module file; dependencies are read from
                // the few modules that are needed, when they are needed.
                for sub in ["kernel", "updates", "extra"] {
                    walk_modules(root, &root.join(sub), &mut files)?;
                }
                None
            }
        };
        let builtin = read(&root.join("modules.builtin"))?
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(module_name)
            .collect();
        Ok(ModuleTree {
            root: root.to_owned(),
            version,
            files,
            deps,
            builtin,
        })
    }

    /// The kernel release this tree is for, e.g. `6.1.0-28-cloud-amd64`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the kernel has `name` built in.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Resolves `wanted` module names to the files to load, dependencies first, each once.
    /// Built-in modules are skipped (and reported); a module that is neither a file nor built
    /// in is an error naming it.
    pub fn resolve(&self, wanted: &[&str]) -> Result<Resolution, InitramfsError> {
        let mut out = Resolution::default();
        let mut done = HashSet::new();
        let mut visiting = Vec::new();
        for name in wanted {
            self.visit(&normalize(name), None, &mut visiting, &mut done, &mut out)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        needed_by: Option<&str>,
        visiting: &mut Vec<String>,
        done: &mut HashSet<String>,
        out: &mut Resolution,
    ) -> Result<(), InitramfsError> {
        if done.contains(name) {
            return Ok(());
        }
        if let Some(at) = visiting.iter().position(|v| v == name) {
            let mut cycle = visiting[at..].to_vec();
            cycle.push(name.to_owned());
            return Err(InitramfsError::DependencyCycle(cycle.join(" -> ")));
        }
        let Some(path) = self.files.get(name) else {
            if self.builtin.contains(name) {
                done.insert(name.to_owned());
                out.builtin.push(name.to_owned());
                return Ok(());
            }
            return Err(match needed_by {
                None => InitramfsError::MissingModule {
                    name: name.to_owned(),
                    tree: self.root.clone(),
                },
                Some(by) => InitramfsError::MissingDependency {
                    name: name.to_owned(),
                    needed_by: by.to_owned(),
                    tree: self.root.clone(),
                },
            });
        };
        let deps = match &self.deps {
            Some(deps) => deps.get(name).cloned().unwrap_or_default(),
            None => {
                let full = self.root.join(path);
                let bytes = read_module(&full)?;
                modinfo_depends(&bytes).map_err(|problem| InitramfsError::BadModule {
                    path: full,
                    problem,
                })?
            }
        };
        visiting.push(name.to_owned());
        for dep in &deps {
            self.visit(dep, Some(name), visiting, done, out)?;
        }
        visiting.pop();
        done.insert(name.to_owned());
        out.modules.push(Module {
            name: name.to_owned(),
            path: path.clone(),
        });
        Ok(())
    }
}

fn walk_modules(
    root: &Path,
    dir: &Path,
    files: &mut HashMap<String, PathBuf>,
) -> Result<(), InitramfsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(InitramfsError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|source| InitramfsError::Read {
            path: dir.to_owned(),
            source,
        })?;
    // Sorted so that, should two files claim one name, the choice does not depend on the
    // order the filesystem lists them in.
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk_modules(root, &path, files)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && strip_compression(name).0.ends_with(".ko")
        {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_owned();
            files.entry(module_name(name)).or_insert(rel);
        }
    }
    Ok(())
}

/// `kernel/drivers/net/virtio-net.ko.xz` → `virtio_net`.
fn module_name(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or("");
    let file = strip_compression(file).0;
    normalize(file.strip_suffix(".ko").unwrap_or(file))
}

/// The kernel treats `-` and `_` in module names as the same character.
fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModuleCompression {
    None,
    Xz,
    Zstd,
    Gzip,
}

fn strip_compression(path: &str) -> (&str, ModuleCompression) {
    for (suffix, kind) in [
        (".xz", ModuleCompression::Xz),
        (".zst", ModuleCompression::Zstd),
        (".gz", ModuleCompression::Gzip),
    ] {
        if let Some(plain) = path.strip_suffix(suffix) {
            return (plain, kind);
        }
    }
    (path, ModuleCompression::None)
}

/// A module's bytes, decompressed when its name says it is compressed.
pub fn read_module(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    let bytes = std::fs::read(path).map_err(|source| InitramfsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let kind = strip_compression(&path.to_string_lossy()).1;
    let decompress_error = |source| InitramfsError::Decompress {
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    match kind {
        ModuleCompression::None => return Ok(bytes),
        ModuleCompression::Xz => lzma_rust2::XzReader::new(&bytes[..], true)
            .read_to_end(&mut out)
            .map_err(decompress_error)?,
        ModuleCompression::Zstd => zstd::stream::read::Decoder::new(&bytes[..])
            .and_then(|mut d| d.read_to_end(&mut out))
            .map_err(decompress_error)?,
        ModuleCompression::Gzip => flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(decompress_error)?,
    };
    Ok(out)
}

/// The `depends=` list of a module's `.modinfo` section (names, possibly empty).
fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>, String> {
    let modinfo = elf_section(elf, ".modinfo")?.ok_or("it has no .modinfo section")?;
    Ok(modinfo
        .split(|&b| b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(normalize)
                .collect::<Vec<_>>()
        })
        .collect())
}

/// The contents of the named section of a 64-bit little-endian ELF file.
fn elf_section<'a>(elf: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>, String> {
    let get = |at: usize, len: usize| -> Result<&'a [u8], String> {
        elf.get(at..at.checked_add(len).ok_or("offset overflow")?)
            .ok_or_else(|| format!("truncated ELF file (wanted bytes {at}..{})", at + len))
    };
    let u16_at = |at| get(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at| get(at, 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
    let u64_at = |at| get(at, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".to_owned());
    }
    let shoff = u64_at(0x28)?;
    let shentsize = u16_at(0x3a)?;
    let shnum = u16_at(0x3c)?;
    let shstrndx = u16_at(0x3e)?;
    if shentsize < 0x40 {
        return Err(format!("bad section header size {shentsize}"));
    }
    let header = |i: usize| shoff + i * shentsize;
    let strtab_off = u64_at(header(shstrndx) + 0x18)?;
    let strtab_len = u64_at(header(shstrndx) + 0x20)?;
    let strtab = get(strtab_off, strtab_len)?;
    for i in 0..shnum {
        let name_at = u32_at(header(i))?;
        let name = strtab
            .get(name_at..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .unwrap_or_default();
        if name == wanted.as_bytes() {
            let off = u64_at(header(i) + 0x18)?;
            let len = u64_at(header(i) + 0x20)?;
            return get(off, len).map(Some);
        }
    }
    Ok(None)
}

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
        let mut written = 0u64;
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
            written += write_entry(out, path, ino, mode, nlink, data, rdev)?;
        }
        written += write_entry(out, "TRAILER!!!", 0, 0, 1, &[], (0, 0))?;
        // The kernel does not need it, but `cpio` and most tools expect whole 512-byte blocks.
        let pad = (512 - (written % 512) as usize) % 512;
        out.write_all(&vec![0; pad])?;
        Ok(written + pad as u64)
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

fn write_entry(
    out: &mut impl Write,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) -> io::Result<u64> {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{MTIME:08x}{size:08x}\
         {maj:08x}{min:08x}{rdev_major:08x}{rdev_minor:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        size = data.len(),
        maj = 0,
        min = 0,
        check = 0,
    );
    let mut n = 0u64;
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    n += (header.len() + namesize) as u64;
    let pad = pad4(n);
    out.write_all(&[0; 3][..pad])?;
    n += pad as u64;
    out.write_all(data)?;
    n += data.len() as u64;
    let pad = pad4(n);
    out.write_all(&[0; 3][..pad])?;
    Ok(n + pad as u64)
}

fn pad4(n: u64) -> usize {
    ((4 - (n % 4)) % 4) as usize
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
    match find_entry(&mut archive, FEATURES_PATH) {
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

/// The data of the entry named `wanted` in the newc archive `r`, reading no further.
fn find_entry(r: &mut dyn Read, wanted: &str) -> io::Result<Option<Vec<u8>>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a newc archive");
    loop {
        let mut header = [0u8; 110];
        r.read_exact(&mut header)?;
        if &header[..6] != b"070701" {
            return Err(bad());
        }
        let field = |i: usize| {
            std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .ok_or_else(bad)
        };
        let size = field(6)?;
        let name_len = field(11)?;
        let name_pad = (4 - (110 + name_len) % 4) % 4;
        let mut name = vec![0u8; (name_len + name_pad) as usize];
        r.read_exact(&mut name)?;
        name.truncate(name_len.saturating_sub(1) as usize);
        let data_pad = (4 - size % 4) % 4;
        if name == b"TRAILER!!!" {
            return Ok(None);
        }
        if name == wanted.as_bytes() {
            let mut data = vec![0u8; size as usize];
            r.read_exact(&mut data)?;
            return Ok(Some(data));
        }
        io::copy(&mut r.take(size + data_pad), &mut io::sink())?;
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

#[cfg(test)]
mod tests {
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

    /// A minimal newc reader, independent of the writer's code.
    fn read_newc(mut bytes: &[u8]) -> Vec<CpioEntry> {
        let total = bytes.len();
        let mut out = Vec::new();
        loop {
            assert_eq!(
                &bytes[..6],
                b"070701",
                "bad magic at {}",
                total - bytes.len()
            );
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&bytes[6 + i * 8..14 + i * 8]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (ino, mode, uid, mtime, size) = (field(0), field(1), field(2), field(5), field(6));
            let rdev = (field(9), field(10));
            let namesize = field(11) as usize;
            let name_end = 110 + namesize;
            assert_eq!(bytes[name_end - 1], 0, "name not NUL-terminated");
            let name = String::from_utf8(bytes[110..name_end - 1].to_vec()).unwrap();
            let data_start = name_end.div_ceil(4) * 4;
            let data_end = data_start + size as usize;
            let data = bytes[data_start..data_end].to_vec();
            bytes = &bytes[data_end.div_ceil(4) * 4..];
            if name == "TRAILER!!!" {
                assert!(
                    bytes.iter().all(|&b| b == 0),
                    "only padding after the trailer"
                );
                assert_eq!(total % 512, 0, "padded to 512-byte blocks");
                return out;
            }
            out.push(CpioEntry {
                name,
                ino,
                mode,
                uid,
                mtime,
                rdev,
                data,
            });
        }
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
                    let mut w = lzma_rust2::XzWriter::new(
                        Vec::new(),
                        lzma_rust2::XzOptions::with_preset(3),
                    )
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
}

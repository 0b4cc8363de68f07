//! Which kernel modules a banger guest gets: a kernel's modules tree, and the wanted modules
//! resolved to files, dependencies first.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::InitramfsError;

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

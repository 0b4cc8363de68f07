//! Recognising the files a user hands to `banger image register` before banger adopts them: the
//! kernel must be an uncompressed x86_64 ELF `vmlinux`, the rootfs a bare ext4 filesystem image,
//! the initrd a newc cpio archive (optionally compressed). Checks read only a file's first
//! bytes (and, for the kernel version, scan the kernel once); every rejection says what the file
//! looks like instead and, through [`FormatError::hint`], what to do about it.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How much of a file's start the sniffers look at: the ext superblock ends at 2048.
const HEAD_LEN: usize = 2048;
/// Kernel version scan: bytes read at a time.
const SCAN_CHUNK: usize = 1 << 20;
const BANNER: &[u8] = b"Linux version ";
/// The longest version token accepted after [`BANNER`].
const MAX_VERSION_LEN: usize = 64;

use banger_guest_contract::endian::le16;
use banger_guest_contract::ext;

/// Which boot file of an image a file was given as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    Kernel,
    Rootfs,
    Initrd,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::Kernel => "kernel",
            FileRole::Rootfs => "rootfs",
            FileRole::Initrd => "initrd",
        })
    }
}

/// What a file looks like, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Elf,
    BzImage,
    Gzip,
    Zstd,
    Xz,
    Lz4,
    Bzip2,
    Lzma,
    /// A newc cpio archive (`070701`, or `070702` with checksums): what Linux unpacks.
    Cpio,
    /// The old portable cpio format (`070707`), which Linux cannot unpack.
    OldCpio,
    ExtFilesystem,
    GptDisk,
    MbrDisk,
    /// A PE executable (`MZ`), e.g. an EFI application.
    Pe,
    Unknown,
}

impl FileKind {
    fn is_compressed(self) -> bool {
        use FileKind::*;
        matches!(self, Gzip | Zstd | Xz | Lz4 | Bzip2 | Lzma)
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Elf => "an ELF file",
            FileKind::BzImage => "a bzImage kernel",
            FileKind::Gzip => "gzip-compressed data",
            FileKind::Zstd => "zstd-compressed data",
            FileKind::Xz => "xz-compressed data",
            FileKind::Lz4 => "lz4-compressed data",
            FileKind::Bzip2 => "bzip2-compressed data",
            FileKind::Lzma => "lzma-compressed data",
            FileKind::Cpio => "a cpio archive",
            FileKind::OldCpio => "an old-format (odc) cpio archive",
            FileKind::ExtFilesystem => "an ext2/3/4 filesystem image",
            FileKind::GptDisk => "a partitioned disk image (GPT)",
            FileKind::MbrDisk => "a partitioned disk image (MBR)",
            FileKind::Pe => "a PE/EFI executable",
            FileKind::Unknown => "unrecognised data",
        })
    }
}

/// What [`check_kernel`] learnt about a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// The release from the kernel's `Linux version ...` banner, e.g. `6.1.0-28-cloud-amd64`.
    pub version: Option<String>,
}

/// What [`check_rootfs`] learnt about an ext4 image, from its superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsInfo {
    pub block_size: u32,
    pub blocks: u64,
    pub label: Option<String>,
    /// The filesystem UUID, lowercase and hyphenated.
    pub uuid: String,
}

impl RootfsInfo {
    /// The size of the filesystem (not of the file holding it).
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// The container format of an initrd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitrdFormat {
    /// An uncompressed newc cpio archive.
    Cpio,
    Gzip,
    Zstd,
    Xz,
    /// lz4, legacy or frame format.
    Lz4,
    Bzip2,
    Lzma,
}

impl fmt::Display for InitrdFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitrdFormat::Cpio => "cpio",
            InitrdFormat::Gzip => "gzip",
            InitrdFormat::Zstd => "zstd",
            InitrdFormat::Xz => "xz",
            InitrdFormat::Lz4 => "lz4",
            InitrdFormat::Bzip2 => "bzip2",
            InitrdFormat::Lzma => "lzma",
        })
    }
}

/// A file given as a kernel, rootfs or initrd is missing, unreadable or not what its role needs.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{role} {}: no such file", path.display())]
    Missing { role: FileRole, path: PathBuf },

    #[error("{role} {} is a directory, not a file", path.display())]
    Directory { role: FileRole, path: PathBuf },

    #[error("{role} {} is not a regular file", path.display())]
    NotAFile { role: FileRole, path: PathBuf },

    #[error("{role} {}: permission denied", path.display())]
    PermissionDenied { role: FileRole, path: PathBuf },

    #[error("cannot read {role} {}", path.display())]
    Read {
        role: FileRole,
        path: PathBuf,
        source: io::Error,
    },

    #[error("{role} {} is empty", path.display())]
    Empty { role: FileRole, path: PathBuf },

    #[error("kernel {} is a compressed bzImage, not an uncompressed ELF vmlinux", path.display())]
    BzImage { path: PathBuf },

    #[error("kernel {} is not a kernel (found {found})", path.display())]
    NotAKernel { path: PathBuf, found: FileKind },

    #[error("kernel {} is not an x86_64 vmlinux: it is {problem}", path.display())]
    WrongElf { path: PathBuf, problem: String },

    #[error("rootfs {} is an {fs} filesystem; banger needs ext4", path.display())]
    OldExt { path: PathBuf, fs: &'static str },

    #[error("rootfs {} is {found}, not a bare filesystem image", path.display())]
    PartitionedDisk { path: PathBuf, found: FileKind },

    #[error("rootfs {} is not an ext4 filesystem image (found {found})", path.display())]
    NotExt4 { path: PathBuf, found: FileKind },

    #[error("rootfs {} has a corrupt ext4 superblock: {problem}", path.display())]
    CorruptExt4 { path: PathBuf, problem: String },

    #[error(
        "rootfs {} is truncated: its filesystem spans {fs_bytes} bytes but the file has {file_bytes}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        fs_bytes: u64,
        file_bytes: u64,
    },

    #[error("initrd {} is not an initramfs (found {found})", path.display())]
    NotInitrd { path: PathBuf, found: FileKind },
}

impl FormatError {
    /// The role the file was given as.
    pub fn role(&self) -> FileRole {
        use FormatError::*;
        match self {
            Missing { role, .. }
            | Directory { role, .. }
            | NotAFile { role, .. }
            | PermissionDenied { role, .. }
            | Read { role, .. }
            | Empty { role, .. } => *role,
            BzImage { .. } | NotAKernel { .. } | WrongElf { .. } => FileRole::Kernel,
            OldExt { .. }
            | PartitionedDisk { .. }
            | NotExt4 { .. }
            | CorruptExt4 { .. }
            | Truncated { .. } => FileRole::Rootfs,
            NotInitrd { .. } => FileRole::Initrd,
        }
    }

    /// The offending file.
    pub fn path(&self) -> &Path {
        use FormatError::*;
        match self {
            Missing { path, .. }
            | Directory { path, .. }
            | NotAFile { path, .. }
            | PermissionDenied { path, .. }
            | Read { path, .. }
            | Empty { path, .. }
            | BzImage { path }
            | NotAKernel { path, .. }
            | WrongElf { path, .. }
            | OldExt { path, .. }
            | PartitionedDisk { path, .. }
            | NotExt4 { path, .. }
            | CorruptExt4 { path, .. }
            | Truncated { path, .. }
            | NotInitrd { path, .. } => path,
        }
    }

    /// What the user can do about it, when there is something specific to say.
    pub fn hint(&self) -> Option<String> {
        use FormatError::*;
        let hint = match self {
            Missing { .. } | Read { .. } => return None,
            Directory { role, .. } => match role {
                FileRole::Kernel => "pass the vmlinux file itself".to_owned(),
                FileRole::Rootfs => "pass an ext4 image file; to make one from a directory tree \
                                     run `mkfs.ext4 -d DIR rootfs.ext4 4G`"
                    .to_owned(),
                FileRole::Initrd => "pass the initramfs file; to pack a directory run \
                                     `(cd DIR && find . | cpio -o -H newc | gzip) > initrd.img`"
                    .to_owned(),
            },
            NotAFile { .. } => {
                "pass a regular file; devices, sockets and pipes cannot be registered".to_owned()
            }
            PermissionDenied { path, .. } => format!(
                "make it readable by the user running bangerd, e.g. `chmod a+r {}` (kernels \
                 under /boot are often readable by root only)",
                path.display()
            ),
            Empty { .. } => {
                "the file has no content; was a download or build cut short?".to_owned()
            }
            BzImage { .. } => "banger boots the uncompressed ELF `vmlinux`: extract it with \
                               `scripts/extract-vmlinux bzImage > vmlinux` from the Linux source \
                               tree, or build a ready image with `banger image bootstrap debian`"
                .to_owned(),
            NotAKernel { found, .. } => kernel_hint(*found),
            WrongElf { .. } => "pass an uncompressed vmlinux built for x86_64 (64-bit)".to_owned(),
            OldExt { path, fs } => {
                let journal = if *fs == "ext2" { "has_journal," } else { "" };
                format!(
                    "convert it (work on a copy): `tune2fs -O {journal}extents,uninit_bg,dir_index \
                     {path} && e2fsck -fD {path}`, or remake it from its files with \
                     `mkfs.ext4 -d DIR rootfs.ext4 SIZE`",
                    path = path.display()
                )
            }
            PartitionedDisk { path, .. } => format!(
                "extract the root partition into its own file: find its start and size in \
                 sectors with `sfdisk -d {path}`, then `dd if={path} of=rootfs.ext4 bs=512 \
                 skip=START count=SIZE`; or build a bare image with `mkfs.ext4 -d`",
                path = path.display()
            ),
            NotExt4 { found, .. } => rootfs_hint(*found),
            CorruptExt4 { path, .. } => {
                format!("check it with `e2fsck -fn {}`", path.display())
            }
            Truncated { .. } => {
                "the file is shorter than the filesystem it holds; the copy or download was \
                 probably cut short"
                    .to_owned()
            }
            NotInitrd { found, .. } => initrd_hint(*found),
        };
        Some(hint)
    }
}

/// The hint for a file given as `given` that looks like a file for `other` (whose option is
/// named after its role, `--rootfs`).
fn swapped(given: FileRole, other: FileRole) -> String {
    let looks_like = match other {
        FileRole::Kernel => "a kernel",
        FileRole::Initrd => "an initrd",
        FileRole::Rootfs => "a root filesystem",
    };
    format!("this looks like {looks_like}; were --{given} and --{other} swapped?")
}

fn kernel_hint(found: FileKind) -> String {
    match found {
        FileKind::Cpio | FileKind::OldCpio => swapped(FileRole::Kernel, FileRole::Initrd),
        FileKind::ExtFilesystem => swapped(FileRole::Kernel, FileRole::Rootfs),
        kind if kind.is_compressed() => format!(
            "if it is a compressed vmlinux, decompress it first; a compressed kernel inside a \
             bzImage can be extracted with `scripts/extract-vmlinux` ({kind})"
        ),
        _ => "pass an uncompressed x86_64 ELF vmlinux, e.g. from `banger image bootstrap debian`"
            .to_owned(),
    }
}

fn rootfs_hint(found: FileKind) -> String {
    match found {
        FileKind::Elf | FileKind::BzImage => swapped(FileRole::Rootfs, FileRole::Kernel),
        FileKind::Cpio => swapped(FileRole::Rootfs, FileRole::Initrd),
        kind if kind.is_compressed() => {
            format!("it is {kind}; decompress it first and register the ext4 image inside")
        }
        _ => "make an ext4 image from a directory tree with `mkfs.ext4 -d DIR rootfs.ext4 SIZE`"
            .to_owned(),
    }
}

fn initrd_hint(found: FileKind) -> String {
    match found {
        FileKind::Elf | FileKind::BzImage => swapped(FileRole::Initrd, FileRole::Kernel),
        FileKind::ExtFilesystem => swapped(FileRole::Initrd, FileRole::Rootfs),
        FileKind::OldCpio => {
            "Linux only unpacks newc cpio archives; repack with `cpio -o -H newc`".to_owned()
        }
        _ => "pass a newc cpio archive, optionally compressed with gzip, zstd, xz, lz4, bzip2 or \
              lzma (what mkinitramfs and dracut produce)"
            .to_owned(),
    }
}

/// Checks that `path` is an uncompressed x86_64 ELF kernel (`vmlinux`) and reads its version.
pub fn check_kernel(path: &Path) -> Result<KernelInfo, FormatError> {
    let role = FileRole::Kernel;
    let (file, _) = open(role, path)?;
    let head = read_head(role, path, &file)?;
    match sniff(&head) {
        FileKind::Elf => {}
        FileKind::BzImage => {
            return Err(FormatError::BzImage {
                path: path.to_owned(),
            });
        }
        found => {
            return Err(FormatError::NotAKernel {
                path: path.to_owned(),
                found,
            });
        }
    }
    if let Some(problem) = elf_problem(&head) {
        return Err(FormatError::WrongElf {
            path: path.to_owned(),
            problem,
        });
    }
    let version = find_linux_version(&file).map_err(|source| read_error(role, path, source))?;
    Ok(KernelInfo { version })
}

/// Checks that `path` is a bare ext4 filesystem image and reads its superblock.
pub fn check_rootfs(path: &Path) -> Result<RootfsInfo, FormatError> {
    let role = FileRole::Rootfs;
    let (file, file_bytes) = open(role, path)?;
    let head = read_head(role, path, &file)?;
    let found = sniff(&head);
    match found {
        FileKind::ExtFilesystem => {}
        FileKind::GptDisk | FileKind::MbrDisk => {
            return Err(FormatError::PartitionedDisk {
                path: path.to_owned(),
                found,
            });
        }
        found => {
            return Err(FormatError::NotExt4 {
                path: path.to_owned(),
                found,
            });
        }
    }
    let corrupt = |problem: String| FormatError::CorruptExt4 {
        path: path.to_owned(),
        problem,
    };
    let sb = ext::Superblock::read(&head).ok_or_else(|| corrupt("no superblock".to_owned()))?;

    if !sb.is_ext4() {
        let fs = if sb.has_journal() { "ext3" } else { "ext2" };
        return Err(FormatError::OldExt {
            path: path.to_owned(),
            fs,
        });
    }

    let block_size = sb
        .block_size()
        .ok_or_else(|| corrupt(format!("block size 2^{} KiB", sb.log_block_size)))?;
    let blocks = sb.blocks();
    if blocks == 0 {
        return Err(corrupt("zero blocks".to_owned()));
    }
    let fs_bytes = blocks.saturating_mul(u64::from(block_size));
    if fs_bytes > file_bytes {
        return Err(FormatError::Truncated {
            path: path.to_owned(),
            fs_bytes,
            file_bytes,
        });
    }

    let label = sb.label().trim().to_owned();
    Ok(RootfsInfo {
        block_size,
        blocks,
        label: (!label.is_empty()).then_some(label),
        uuid: sb.uuid(),
    })
}

/// Checks that `path` is an initramfs: a newc cpio archive, bare or compressed.
pub fn check_initrd(path: &Path) -> Result<InitrdFormat, FormatError> {
    let role = FileRole::Initrd;
    let (file, _) = open(role, path)?;
    let head = read_head(role, path, &file)?;
    match sniff(&head) {
        FileKind::Cpio => Ok(InitrdFormat::Cpio),
        FileKind::Gzip => Ok(InitrdFormat::Gzip),
        FileKind::Zstd => Ok(InitrdFormat::Zstd),
        FileKind::Xz => Ok(InitrdFormat::Xz),
        FileKind::Lz4 => Ok(InitrdFormat::Lz4),
        FileKind::Bzip2 => Ok(InitrdFormat::Bzip2),
        FileKind::Lzma => Ok(InitrdFormat::Lzma),
        found => Err(FormatError::NotInitrd {
            path: path.to_owned(),
            found,
        }),
    }
}

/// Opens a regular, non-empty file; returns it with its length.
fn open(role: FileRole, path: &Path) -> Result<(File, u64), FormatError> {
    let meta = std::fs::metadata(path).map_err(|e| open_error(role, path, e))?;
    if meta.is_dir() {
        return Err(FormatError::Directory {
            role,
            path: path.to_owned(),
        });
    }
    if !meta.is_file() {
        return Err(FormatError::NotAFile {
            role,
            path: path.to_owned(),
        });
    }
    let file = File::open(path).map_err(|e| open_error(role, path, e))?;
    if meta.len() == 0 {
        return Err(FormatError::Empty {
            role,
            path: path.to_owned(),
        });
    }
    Ok((file, meta.len()))
}

fn open_error(role: FileRole, path: &Path, source: io::Error) -> FormatError {
    let path = path.to_owned();
    match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            FormatError::Missing { role, path }
        }
        io::ErrorKind::PermissionDenied => FormatError::PermissionDenied { role, path },
        _ => FormatError::Read { role, path, source },
    }
}

fn read_error(role: FileRole, path: &Path, source: io::Error) -> FormatError {
    FormatError::Read {
        role,
        path: path.to_owned(),
        source,
    }
}

/// The first [`HEAD_LEN`] bytes of `file`, or all of it when shorter.
fn read_head(role: FileRole, path: &Path, file: &File) -> Result<Vec<u8>, FormatError> {
    let mut head = vec![0; HEAD_LEN];
    let n = read_full_at(file, &mut head, 0).map_err(|e| read_error(role, path, e))?;
    head.truncate(n);
    Ok(head)
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Judges a file by its first bytes. Stronger signatures are tried first: a bzImage also
/// starts with `MZ`, and an ext image may carry a boot sector with the MBR signature.
pub fn sniff(head: &[u8]) -> FileKind {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"\x7fELF") {
        FileKind::Elf
    } else if at(0x202, b"HdrS") {
        FileKind::BzImage
    } else if at(0, &[0x1f, 0x8b]) {
        FileKind::Gzip
    } else if at(0, &[0x28, 0xb5, 0x2f, 0xfd]) {
        FileKind::Zstd
    } else if at(0, &[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        FileKind::Xz
    } else if at(0, &[0x02, 0x21, 0x4c, 0x18]) || at(0, &[0x04, 0x22, 0x4d, 0x18]) {
        FileKind::Lz4
    } else if at(0, b"BZh") {
        FileKind::Bzip2
    } else if at(0, b"070701") || at(0, b"070702") {
        FileKind::Cpio
    } else if at(0, b"070707") {
        FileKind::OldCpio
    } else if head.len() >= HEAD_LEN && ext::Superblock::read(head).is_some() {
        FileKind::ExtFilesystem
    } else if at(512, b"EFI PART") {
        FileKind::GptDisk
    } else if at(510, &[0x55, 0xaa]) {
        FileKind::MbrDisk
    } else if at(0, b"MZ") {
        FileKind::Pe
    } else if at(0, &[0x5d, 0x00, 0x00]) {
        FileKind::Lzma
    } else {
        FileKind::Unknown
    }
}

/// Why an ELF header is not that of an x86_64 vmlinux, or `None` when it is.
fn elf_problem(head: &[u8]) -> Option<String> {
    if head.len() < 64 {
        return Some("a truncated ELF file".to_owned());
    }
    if head[4] != 2 {
        return Some("a 32-bit ELF file".to_owned());
    }
    if head[5] != 1 {
        return Some("a big-endian ELF file".to_owned());
    }
    let machine = le16(head, 0x12);
    if machine != 0x3E {
        let name = match machine {
            0x03 => "i386",
            0x08 => "MIPS",
            0x15 => "PowerPC64",
            0x16 => "s390",
            0x28 => "ARM",
            0xB7 => "AArch64",
            0xF3 => "RISC-V",
            _ => "another architecture",
        };
        return Some(format!("built for {name} (ELF machine {machine:#x})"));
    }
    match le16(head, 0x10) {
        2 => None,
        1 => Some("a relocatable object, such as a kernel module".to_owned()),
        3 => Some("a shared object or position-independent executable".to_owned()),
        4 => Some("a core dump".to_owned()),
        other => Some(format!("an ELF file of type {other}, not an executable")),
    }
}

/// Finds the `Linux version X.Y.Z...` banner and returns the release token after it. The file
/// is scanned in chunks; the end of each chunk is carried over so a banner split across two
/// chunks is still found.
fn find_linux_version(file: &File) -> io::Result<Option<String>> {
    let keep = BANNER.len() + MAX_VERSION_LEN;
    let mut buf = vec![0u8; keep + SCAN_CHUNK];
    let mut carried = 0;
    let mut offset = 0u64;
    loop {
        let n = read_full_at(file, &mut buf[carried..], offset)?;
        let at_end = n < buf.len() - carried;
        let window = &buf[..carried + n];
        let mut from = 0;
        while let Some(found) = find(&window[from..], BANNER) {
            let start = from + found + BANNER.len();
            let rest = &window[start..];
            match rest.iter().position(|b| !b.is_ascii_graphic()) {
                Some(len) if is_release(&rest[..len]) => {
                    return Ok(Some(String::from_utf8_lossy(&rest[..len]).into_owned()));
                }
                None if at_end && is_release(rest) => {
                    return Ok(Some(String::from_utf8_lossy(rest).into_owned()));
                }
                _ => from = start,
            }
        }
        if at_end {
            return Ok(None);
        }
        offset += n as u64;
        let tail = window.len().saturating_sub(keep);
        carried = window.len() - tail;
        buf.copy_within(tail..tail + carried, 0);
    }
}

fn is_release(token: &[u8]) -> bool {
    (1..=MAX_VERSION_LEN).contains(&token.len()) && token[0].is_ascii_digit()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests;

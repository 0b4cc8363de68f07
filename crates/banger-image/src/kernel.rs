//! Turning a distribution kernel into what banger boots: an uncompressed ELF `vmlinux`.
//! Distributions ship a bzImage: a real-mode setup stub followed by a self-decompressing
//! protected-mode blob whose compressed payload is the vmlinux. The x86 boot protocol (2.08 and
//! later) records where that payload sits, so no scanning for magic numbers is needed: read the
//! setup header, slice the payload, recognise its compression by its magic and decompress it.
//! An ELF vmlinux given as input is returned as it is.
//!
//! Every compressor the kernel build supports for x86 is handled: gzip, xz (with the x86 BCJ
//! filter the kernel build uses), lz4 in its *legacy* framing, zstd, bzip2 and lzma (lzo is
//! not: no Debian kernel uses it). The kernel build appends the uncompressed size as a 32-bit
//! little-endian number to the payload; that number is checked against what the payload
//! decompressed to, so a truncated or corrupt payload is reported instead of producing a short
//! kernel.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use banger_guest_contract::endian::{le16, le32};

use crate::format::{self, FileKind, FormatError, KernelInfo};

/// Offsets into the x86 boot protocol's setup header (Documentation/arch/x86/boot.rst).
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC_AT: usize = 0x202;
const HEADER_MAGIC: &[u8] = b"HdrS";
const PROTOCOL_VERSION: usize = 0x206;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// The first boot protocol that records the payload's position.
const MIN_PROTOCOL: u16 = 0x0208;

/// The magic number that starts an lz4 legacy stream, and may start it again when two streams
/// are concatenated.
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// An lz4 legacy block decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// A vmlinux larger than this is refused rather than decompressed: real ones are 30–80 MiB, so
/// anything bigger is a corrupt payload or a decompression bomb.
pub const MAX_VMLINUX_BYTES: usize = 1 << 30;

/// How a bzImage payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Lz4,
    Zstd,
    Bzip2,
    Lzma,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
        })
    }
}

impl Compression {
    /// Recognises a compressed stream by its first bytes.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        let starts = |magic: &[u8]| data.starts_with(magic);
        if starts(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else if starts(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
            Some(Compression::Lz4)
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if starts(b"BZh") {
            Some(Compression::Bzip2)
        } else if starts(&[0x5d, 0x00, 0x00]) {
            // lzma_alone: properties byte 0x5d (lc=3, lp=0, pb=2, what `lzma` writes), then a
            // little-endian dictionary size whose high bytes are small.
            Some(Compression::Lzma)
        } else {
            None
        }
    }
}

/// Extracting a vmlinux from a kernel image failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read kernel image {}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write {}", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("the kernel image is neither a bzImage nor an ELF vmlinux (found {found})")]
    NotAKernel { found: FileKind },

    #[error(
        "the bzImage uses boot protocol {}.{:02}; banger needs 2.08 or later to find its payload",
        version >> 8,
        version & 0xff
    )]
    OldBootProtocol { version: u16 },

    #[error("the bzImage setup header is corrupt: {0}")]
    BadHeader(String),

    #[error("the bzImage payload is compressed with an unknown method (starts with {magic})")]
    UnknownCompression { magic: String },

    #[error("cannot decompress the {compression} kernel payload: {detail}")]
    Decompress {
        compression: Compression,
        detail: String,
    },

    #[error(
        "the {compression} kernel payload decompressed to {actual} bytes but the bzImage \
         records {expected} (mod 2^32): the payload is truncated or corrupt"
    )]
    SizeMismatch {
        compression: Compression,
        expected: u32,
        actual: usize,
    },

    #[error("the {compression} kernel payload decompresses to more than {limit} bytes")]
    TooLarge {
        compression: Compression,
        limit: usize,
    },

    #[error("the {compression} kernel payload did not decompress to an ELF file (found {found})")]
    NotElf {
        compression: Compression,
        found: FileKind,
    },

    #[error("the extracted vmlinux failed its check")]
    Check(#[source] FormatError),
}

/// Where a bzImage's compressed payload sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    pub compression: Compression,
    /// The payload as the setup header delimits it, including the appended size.
    pub data: &'a [u8],
}

/// Finds the compressed payload of a bzImage by its setup header.
pub fn find_payload(image: &[u8]) -> Result<Payload<'_>, KernelError> {
    if image.get(HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4) != Some(HEADER_MAGIC) {
        return Err(KernelError::NotAKernel {
            found: format::sniff(image),
        });
    }
    if image.len() < PAYLOAD_LENGTH + 4 {
        return Err(KernelError::BadHeader(format!(
            "the file ends after {} bytes, inside the setup header",
            image.len()
        )));
    }
    let version = le16(image, PROTOCOL_VERSION);
    if version < MIN_PROTOCOL {
        return Err(KernelError::OldBootProtocol { version });
    }
    // A setup_sects of 0 means 4, for compatibility with ancient boot loaders.
    let setup_sects = match image[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let protected_mode_start = (setup_sects + 1) * 512;
    let offset = le32(image, PAYLOAD_OFFSET) as usize;
    let length = le32(image, PAYLOAD_LENGTH) as usize;
    let start = protected_mode_start + offset;
    let end = start.saturating_add(length);
    if length == 0 || end > image.len() {
        return Err(KernelError::BadHeader(format!(
            "the payload ({length} bytes at offset {start}) lies outside the file's {} bytes; \
             is the file truncated?",
            image.len()
        )));
    }
    let data = &image[start..end];
    let compression = Compression::detect(data).ok_or_else(|| KernelError::UnknownCompression {
        magic: data
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
    })?;
    Ok(Payload { compression, data })
}

/// The vmlinux inside `image`: decompressed from a bzImage, or `image` itself when it already
/// is an ELF file. Returns the compression the payload used, `None` for an ELF input.
pub fn vmlinux_from_image(image: &[u8]) -> Result<(Vec<u8>, Option<Compression>), KernelError> {
    if format::sniff(image) == FileKind::Elf {
        return Ok((image.to_vec(), None));
    }
    let payload = find_payload(image)?;
    let compression = payload.compression;
    let vmlinux = decompress(compression, payload.data)?;
    // Every x86 kernel payload ends with the uncompressed size: gzip's own trailer, the
    // `size_append` of the kernel build for the others.
    if payload.data.len() >= 4 {
        let expected = le32(payload.data, payload.data.len() - 4);
        if expected != vmlinux.len() as u32 {
            return Err(KernelError::SizeMismatch {
                compression,
                expected,
                actual: vmlinux.len(),
            });
        }
    }
    let found = format::sniff(&vmlinux);
    if found != FileKind::Elf {
        return Err(KernelError::NotElf { compression, found });
    }
    Ok((vmlinux, Some(compression)))
}

/// Decompresses one kernel payload. Trailing bytes after the compressed stream (the kernel
/// build's appended size) are ignored.
pub fn decompress(compression: Compression, data: &[u8]) -> Result<Vec<u8>, KernelError> {
    let failed = |e: io::Error| KernelError::Decompress {
        compression,
        detail: e.to_string(),
    };
    match compression {
        Compression::Lz4 => decompress_lz4_legacy(data),
        Compression::Gzip => read_limited(compression, flate2::bufread::GzDecoder::new(data)),
        Compression::Bzip2 => read_limited(compression, bzip2::bufread::BzDecoder::new(data)),
        Compression::Xz => read_limited(compression, lzma_rust2::XzReader::new(data, false)),
        Compression::Lzma => {
            let reader =
                lzma_rust2::LzmaReader::new_mem_limit(data, u32::MAX, None).map_err(failed)?;
            read_limited(compression, reader)
        }
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(failed)?
                .single_frame();
            // The kernel compresses with `zstd -22 --ultra` from a pipe, which declares a
            // 128 MiB window; the library refuses windows over 8 MiB unless told otherwise.
            decoder.window_log_max(31).map_err(failed)?;
            read_limited(compression, decoder)
        }
    }
}

fn read_limited(compression: Compression, reader: impl Read) -> Result<Vec<u8>, KernelError> {
    let mut out = Vec::new();
    reader
        .take(MAX_VMLINUX_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| KernelError::Decompress {
            compression,
            detail: match e.kind() {
                io::ErrorKind::UnexpectedEof => "the compressed data ends early".to_owned(),
                _ => e.to_string(),
            },
        })?;
    if out.len() > MAX_VMLINUX_BYTES {
        return Err(KernelError::TooLarge {
            compression,
            limit: MAX_VMLINUX_BYTES,
        });
    }
    Ok(out)
}

/// The lz4 legacy format: the magic, then blocks, each a little-endian compressed size and an
/// lz4 block that decompresses to at most 8 MiB. The stream has no end marker; the kernel's
/// appended size shows up as a final 4-byte "block size" with nothing after it.
fn decompress_lz4_legacy(data: &[u8]) -> Result<Vec<u8>, KernelError> {
    let compression = Compression::Lz4;
    let corrupt = |detail: String| KernelError::Decompress {
        compression,
        detail,
    };
    let max_block = lz4_flex::block::get_maximum_output_size(LZ4_LEGACY_BLOCK);
    let mut out = Vec::new();
    let mut pos = 4;
    while pos < data.len() {
        let rest = data.len() - pos;
        if rest < 4 {
            return Err(corrupt(format!(
                "{rest} stray bytes at offset {pos} where a block size belongs"
            )));
        }
        let size = le32(data, pos);
        if size == LZ4_LEGACY_MAGIC {
            pos += 4;
            continue;
        }
        if rest == 4 {
            break; // the appended uncompressed size
        }
        let size = size as usize;
        if size == 0 || size > max_block {
            return Err(corrupt(format!(
                "impossible block size {size} at offset {pos}"
            )));
        }
        if size > rest - 4 {
            return Err(corrupt(format!(
                "the block at offset {pos} needs {size} bytes but only {} remain: the data is \
                 truncated",
                rest - 4
            )));
        }
        let block = &data[pos + 4..pos + 4 + size];
        let start = out.len();
        if start > MAX_VMLINUX_BYTES {
            return Err(KernelError::TooLarge {
                compression,
                limit: MAX_VMLINUX_BYTES,
            });
        }
        out.resize(start + LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| corrupt(format!("the block at offset {pos}: {e}")))?;
        out.truncate(start + n);
        pos += 4 + size;
    }
    if out.len() > MAX_VMLINUX_BYTES {
        return Err(KernelError::TooLarge {
            compression,
            limit: MAX_VMLINUX_BYTES,
        });
    }
    Ok(out)
}

/// What [`extract_vmlinux`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedKernel {
    /// `None` when the input already was an ELF vmlinux.
    pub compression: Option<Compression>,
    pub info: KernelInfo,
    pub bytes: u64,
}

/// Writes the vmlinux inside the kernel image `src` (a bzImage such as Debian's
/// `/boot/vmlinuz-*`, or an ELF vmlinux) to `dst` and verifies it with
/// [`format::check_kernel`]. `dst` is written under a temporary name and renamed into place,
/// so on failure nothing is left at `dst`.
pub fn extract_vmlinux(src: &Path, dst: &Path) -> Result<ExtractedKernel, KernelError> {
    let image = std::fs::read(src).map_err(|source| KernelError::Read {
        path: src.to_owned(),
        source,
    })?;
    let (vmlinux, compression) = vmlinux_from_image(&image)?;
    drop(image);

    let partial = partial_path(dst);
    let write_error = |source| KernelError::Write {
        path: dst.to_owned(),
        source,
    };
    let result = std::fs::write(&partial, &vmlinux)
        .map_err(write_error)
        .and_then(|()| format::check_kernel(&partial).map_err(KernelError::Check))
        .and_then(|info| {
            std::fs::rename(&partial, dst).map_err(write_error)?;
            Ok(info)
        });
    match result {
        Ok(info) => Ok(ExtractedKernel {
            compression,
            info,
            bytes: vmlinux.len() as u64,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// `dir/.name.partial` for `dir/name`: the same directory, so the final rename is atomic.
pub(crate) fn partial_path(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dst.with_file_name(format!(".{name}.partial"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use banger_host::{CommandRunner, CommandSpec, RealRunner, RunError};

    /// A small x86_64 ELF executable header followed by a version banner and filler, so
    /// `format::check_kernel` accepts it and finds the version.
    fn fake_vmlinux(len: usize) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little-endian
        elf[6] = 1;
        elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[0x12..0x14].copy_from_slice(&0x3Eu16.to_le_bytes()); // x86_64
        elf.extend_from_slice(b"Linux version 6.1.0-99-cloud-amd64 (debian-kernel@lists) #1\0");
        // Compressible but not trivially so: a repeating pattern with a counter mixed in.
        let mut i: u32 = 0;
        while elf.len() < len {
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12345);
            elf.push(if i.is_multiple_of(7) {
                (i >> 16) as u8
            } else {
                b'k'
            });
        }
        elf.truncate(len);
        elf
    }

    /// A bzImage around `payload`: a setup header declaring protocol 2.15 and `setup_sects`
    /// sectors of setup code, a fake decompressor stub, then the payload.
    fn fake_bzimage(payload: &[u8], setup_sects: u8) -> Vec<u8> {
        let sects = if setup_sects == 0 {
            4
        } else {
            usize::from(setup_sects)
        };
        let pm_start = (sects + 1) * 512;
        let stub = 300; // the decompressor code before the payload
        let mut image = vec![0u8; pm_start + stub];
        image[0..2].copy_from_slice(b"MZ");
        image[SETUP_SECTS] = setup_sects;
        image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        image[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
        image[PROTOCOL_VERSION..PROTOCOL_VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        image[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&(stub as u32).to_le_bytes());
        image[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(&[0xcc; 100]); // what follows the payload in a real bzImage
        image
    }

    /// What the kernel build's `size_append` does.
    fn with_size(mut compressed: Vec<u8>, plain: &[u8]) -> Vec<u8> {
        compressed.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        compressed
    }

    fn lz4_legacy(plain: &[u8]) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in plain.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    fn compress(compression: Compression, plain: &[u8]) -> Vec<u8> {
        let compressed = match compression {
            Compression::Gzip => {
                // gzip's own trailer ends with the size: the kernel appends nothing.
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(plain).unwrap();
                return e.finish().unwrap();
            }
            Compression::Lz4 => lz4_legacy(plain),
            Compression::Zstd => zstd::encode_all(plain, 19).unwrap(),
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                e.write_all(plain).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                // As the kernel's xz_wrap.sh does: crc32 check, x86 BCJ filter, LZMA2.
                let mut options = lzma_rust2::XzOptions::with_preset(6);
                options.set_check_sum_type(lzma_rust2::CheckType::Crc32);
                options.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
                let mut w = lzma_rust2::XzWriter::new(Vec::new(), options).unwrap();
                w.write_all(plain).unwrap();
                w.finish().unwrap()
            }
            Compression::Lzma => {
                // `lzma -9` from a pipe: header with unknown size, end marker.
                let options = lzma_rust2::LzmaOptions::with_preset(6);
                let mut w =
                    lzma_rust2::LzmaWriter::new_use_header(Vec::new(), &options, None).unwrap();
                w.write_all(plain).unwrap();
                w.finish().unwrap()
            }
        };
        with_size(compressed, plain)
    }

    const ALL: [Compression; 6] = [
        Compression::Gzip,
        Compression::Xz,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Bzip2,
        Compression::Lzma,
    ];

    #[test]
    fn every_compression_round_trips_through_a_bzimage() {
        let plain = fake_vmlinux(100_000);
        for compression in ALL {
            let payload = compress(compression, &plain);
            let image = fake_bzimage(&payload, 27);
            let found = find_payload(&image).unwrap();
            assert_eq!(found.compression, compression);
            assert_eq!(found.data, &payload[..], "{compression}");
            let (vmlinux, used) =
                vmlinux_from_image(&image).unwrap_or_else(|e| panic!("{compression}: {e}"));
            assert_eq!(used, Some(compression));
            assert!(vmlinux == plain, "{compression}: round trip differs");
        }
    }

    #[test]
    fn lz4_spanning_several_legacy_blocks() {
        // Larger than one 8 MiB legacy block, as every real kernel is.
        let plain = fake_vmlinux(LZ4_LEGACY_BLOCK + 12_345);
        let image = fake_bzimage(&compress(Compression::Lz4, &plain), 39);
        let (vmlinux, _) = vmlinux_from_image(&image).unwrap();
        assert!(vmlinux == plain);
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let plain = fake_vmlinux(10_000);
        let image = fake_bzimage(&compress(Compression::Gzip, &plain), 0);
        assert_eq!(vmlinux_from_image(&image).unwrap().0, plain);
    }

    #[test]
    fn an_elf_vmlinux_is_returned_as_is() {
        let plain = fake_vmlinux(5_000);
        assert_eq!(vmlinux_from_image(&plain).unwrap(), (plain, None));
    }

    #[test]
    fn truncated_payloads_are_reported_for_every_compression() {
        let plain = fake_vmlinux(60_000);
        for compression in ALL {
            let payload = compress(compression, &plain);
            // Cut the compressed stream in the middle, then keep the header consistent with
            // the cut: the payload itself is what is damaged.
            let cut = &payload[..payload.len() / 2];
            let err = vmlinux_from_image(&fake_bzimage(cut, 27)).unwrap_err();
            assert!(
                matches!(
                    err,
                    KernelError::Decompress { .. } | KernelError::SizeMismatch { .. }
                ),
                "{compression}: {err:?}"
            );
            assert!(err.to_string().contains(&compression.to_string()), "{err}");
        }
    }

    #[test]
    fn garbage_payloads_are_reported() {
        let plain = fake_vmlinux(50_000);
        for compression in ALL {
            let mut payload = compress(compression, &plain);
            // Keep the magic so the method is recognised; scramble the rest.
            let mut x: u32 = 7;
            for b in payload.iter_mut().skip(16) {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *b = (x >> 24) as u8;
            }
            let err = vmlinux_from_image(&fake_bzimage(&payload, 27)).unwrap_err();
            assert!(
                matches!(
                    err,
                    KernelError::Decompress { .. }
                        | KernelError::SizeMismatch { .. }
                        | KernelError::NotElf { .. }
                ),
                "{compression}: {err:?}"
            );
        }

        let image = fake_bzimage(b"LZO!not a known method", 27);
        let err = vmlinux_from_image(&image).unwrap_err();
        assert!(
            matches!(&err, KernelError::UnknownCompression { magic } if magic == "4c 5a 4f 21 6e 6f"),
            "{err:?}"
        );
    }

    #[test]
    fn a_payload_that_is_not_elf_is_refused() {
        let image = fake_bzimage(&compress(Compression::Gzip, &[0x42; 4096]), 27);
        let err = vmlinux_from_image(&image).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::NotElf {
                    compression: Compression::Gzip,
                    found: FileKind::Unknown
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn broken_setup_headers() {
        let plain = fake_vmlinux(10_000);
        let payload = compress(Compression::Gzip, &plain);

        let mut old = fake_bzimage(&payload, 27);
        old[PROTOCOL_VERSION..PROTOCOL_VERSION + 2].copy_from_slice(&0x0206u16.to_le_bytes());
        let err = vmlinux_from_image(&old).unwrap_err();
        assert!(matches!(
            err,
            KernelError::OldBootProtocol { version: 0x0206 }
        ));
        assert!(err.to_string().contains("2.06"), "{err}");

        let mut beyond = fake_bzimage(&payload, 27);
        beyond[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = vmlinux_from_image(&beyond).unwrap_err();
        assert!(matches!(err, KernelError::BadHeader(_)), "{err:?}");

        let image = fake_bzimage(&payload, 27);
        let err = vmlinux_from_image(&image[..0x210]).unwrap_err();
        assert!(matches!(err, KernelError::BadHeader(_)), "{err:?}");

        let err = vmlinux_from_image(b"070701 an initrd, not a kernel").unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::NotAKernel {
                    found: FileKind::Cpio
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn extract_writes_a_checked_vmlinux_and_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let plain = fake_vmlinux(100_000);
        let src = dir.path().join("vmlinuz");
        std::fs::write(&src, fake_bzimage(&compress(Compression::Zstd, &plain), 27)).unwrap();
        let dst = dir.path().join("vmlinux");
        let out = extract_vmlinux(&src, &dst).unwrap();
        assert_eq!(out.compression, Some(Compression::Zstd));
        assert_eq!(out.info.version.as_deref(), Some("6.1.0-99-cloud-amd64"));
        assert_eq!(out.bytes, plain.len() as u64);
        assert_eq!(std::fs::read(&dst).unwrap(), plain);

        // A payload that decompresses to a 32-bit ELF passes the magic test but not
        // check_kernel: nothing may be left behind.
        let mut elf32 = plain.clone();
        elf32[4] = 1;
        std::fs::write(&src, fake_bzimage(&compress(Compression::Xz, &elf32), 27)).unwrap();
        let dst2 = dir.path().join("vmlinux2");
        let err = extract_vmlinux(&src, &dst2).unwrap_err();
        assert!(matches!(err, KernelError::Check(_)), "{err:?}");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["vmlinux", "vmlinuz"]);

        let err = extract_vmlinux(&dir.path().join("nope"), &dst2).unwrap_err();
        assert!(matches!(err, KernelError::Read { .. }));
    }

    /// The real command-line compressors, invoked the way the kernel build invokes them,
    /// produce payloads this module decompresses. Each tool that is not installed is skipped
    /// with a visible line.
    #[test]
    fn payloads_made_by_the_real_tools() {
        // Debug builds decompress slowly: only lz4 gets more than one legacy block's worth.
        let small = fake_vmlinux(200_000);
        let large = fake_vmlinux(LZ4_LEGACY_BLOCK + 300_000);
        let tools: [(&str, &[&str], Compression); 6] = [
            ("gzip", &["-n", "-9", "-c"], Compression::Gzip),
            ("lz4", &["-l", "-9", "-c"], Compression::Lz4),
            ("zstd", &["-19", "-q", "-c"], Compression::Zstd),
            (
                "xz",
                &["--check=crc32", "--x86", "--lzma2=dict=32MiB", "-c"],
                Compression::Xz,
            ),
            ("bzip2", &["-9", "-c"], Compression::Bzip2),
            ("lzma", &["-9", "-c"], Compression::Lzma),
        ];
        for (tool, args, compression) in tools {
            let plain = if compression == Compression::Lz4 {
                &large
            } else {
                &small
            };
            // From stdin, as the kernel build does: the size is then unknown to the tool.
            let cmd = CommandSpec::new(tool)
                .args(args.iter().copied())
                .stdin(plain.clone());
            let out = match RealRunner.run(&cmd) {
                Ok(out) => out,
                Err(RunError::NotFound { .. }) => {
                    println!("SKIP: {tool} not installed");
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            let payload = if compression == Compression::Gzip {
                out.stdout
            } else {
                with_size(out.stdout, plain)
            };
            let image = fake_bzimage(&payload, 30);
            let (vmlinux, used) =
                vmlinux_from_image(&image).unwrap_or_else(|e| panic!("{tool}: {e}"));
            assert_eq!(used, Some(compression));
            assert!(vmlinux == *plain, "{tool}: round trip differs");
        }
    }
}

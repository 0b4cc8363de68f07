//! banger's guest binaries, embedded in the daemon so that an installed `bangerd` (say, from
//! `cargo install --path crates/banger`) can build images without a source tree or a second
//! toolchain run: [`INIT`] is the initramfs `/init` ([`banger-init`]) and [`AGENT`] the guest
//! agent (`banger-agent`), both static x86_64 executables. `build.rs` builds them with a nested cargo; see its header for how, and for
//! `BANGER_GUEST_<NAME>` to embed prebuilt binaries instead.
//!
//! [`banger-init`]: ../banger_init/index.html

/// One embedded guest binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestBinary {
    /// The binary's name, e.g. `banger-init`.
    pub name: &'static str,
    pub bytes: &'static [u8],
}

impl GuestBinary {
    /// Writes the binary to `path` with mode 0755, replacing what was there.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, self.bytes)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
    }
}

include!(concat!(env!("OUT_DIR"), "/guest_binaries.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_binaries_are_static_x86_64_executables() {
        for binary in [INIT, AGENT] {
            assert_static_x86_64(binary);
        }
        assert_eq!(INIT.name, "banger-init");
        assert_eq!(AGENT.name, "banger-agent");
    }

    fn assert_static_x86_64(binary: GuestBinary) {
        let b = binary.bytes;
        assert_eq!(&b[..4], b"\x7fELF");
        assert_eq!(b[4], 2, "64-bit");
        assert_eq!(u16::from_le_bytes([b[0x12], b[0x13]]), 0x3e, "x86_64");
        // Static: no PT_INTERP program header.
        let u16_at = |o: usize| usize::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let phoff = usize::try_from(u64::from_le_bytes(b[0x20..0x28].try_into().unwrap())).unwrap();
        let (size, count) = (u16_at(0x36), u16_at(0x38));
        assert!(count > 0);
        for i in 0..count {
            let at = phoff + i * size;
            let kind = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            assert_ne!(
                kind, 3,
                "banger-init has a program interpreter: it is not static"
            );
        }
    }

    #[test]
    fn written_binaries_are_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir();
        let path = dir.join("init");
        INIT.write_to(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), INIT.bytes);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("banger-guest-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

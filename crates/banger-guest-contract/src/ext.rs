//! The ext2/3/4 superblock: 1024 bytes at byte 1024 of the filesystem, little-endian.
//!
//! banger reads only what it needs: the magic (is this ext at all), the features (ext4 or
//! an older ext), the size, the UUID and the volume label. `banger-image` checks a root
//! filesystem with it; `banger-init` finds the VM's disks by label with it.

use crate::endian::{le16, le32};

/// Where the superblock starts.
pub const SUPERBLOCK_OFFSET: usize = 1024;
/// The superblock's length; a filesystem's first `SUPERBLOCK_OFFSET + SUPERBLOCK_LEN` bytes
/// hold all of it.
pub const SUPERBLOCK_LEN: usize = 1024;
/// `s_magic`, at offset 0x38.
pub const MAGIC: u16 = 0xEF53;

/// `s_feature_compat`: the filesystem has a journal (ext3 and later).
pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
/// `s_feature_incompat`: files use extents (ext4).
pub const INCOMPAT_EXTENTS: u32 = 0x40;
/// `s_feature_incompat`: 64-bit block numbers (ext4).
pub const INCOMPAT_64BIT: u32 = 0x80;
/// `s_feature_incompat`: flexible block groups (ext4).
pub const INCOMPAT_FLEX_BG: u32 = 0x200;

const BLOCKS_COUNT_LO: usize = 0x04;
const LOG_BLOCK_SIZE: usize = 0x18;
const MAGIC_AT: usize = 0x38;
const FEATURE_COMPAT: usize = 0x5C;
const FEATURE_INCOMPAT: usize = 0x60;
const UUID: usize = 0x68;
const VOLUME_NAME: usize = 0x78;
const BLOCKS_COUNT_HI: usize = 0x150;
/// The fields up to and including the volume label: the least a head must hold.
const MIN_LEN: usize = VOLUME_NAME + 16;

/// The superblock fields banger reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// `s_blocks_count_lo`.
    pub blocks_count_lo: u32,
    /// `s_blocks_count_hi`, when the head read covers it (it counts only with
    /// [`INCOMPAT_64BIT`]).
    pub blocks_count_hi: Option<u32>,
    /// `s_log_block_size`: the block size is `1024 << log_block_size`.
    pub log_block_size: u32,
    /// `s_feature_compat`.
    pub feature_compat: u32,
    /// `s_feature_incompat`.
    pub feature_incompat: u32,
    /// `s_uuid`.
    pub uuid: [u8; 16],
    /// `s_volume_name`, NUL-padded.
    pub volume_name: [u8; 16],
}

impl Superblock {
    /// The superblock of the filesystem whose first bytes are `head`, or `None` when `head`
    /// is too short to hold it up to the label (`1024 + 0x88` bytes) or the magic is not
    /// ext's. Nothing else is checked: see [`Superblock::block_size`].
    pub fn read(head: &[u8]) -> Option<Superblock> {
        let sb = head.get(SUPERBLOCK_OFFSET..)?;
        if sb.len() < MIN_LEN || le16(sb, MAGIC_AT) != MAGIC {
            return None;
        }
        let array = |at: usize| {
            let mut out = [0u8; 16];
            out.copy_from_slice(&sb[at..at + 16]);
            out
        };
        Some(Superblock {
            blocks_count_lo: le32(sb, BLOCKS_COUNT_LO),
            blocks_count_hi: (sb.len() >= BLOCKS_COUNT_HI + 4).then(|| le32(sb, BLOCKS_COUNT_HI)),
            log_block_size: le32(sb, LOG_BLOCK_SIZE),
            feature_compat: le32(sb, FEATURE_COMPAT),
            feature_incompat: le32(sb, FEATURE_INCOMPAT),
            uuid: array(UUID),
            volume_name: array(VOLUME_NAME),
        })
    }

    /// Whether the filesystem uses a feature only ext4 has (extents, flexible block groups,
    /// 64-bit block numbers); without one it is ext2 or ext3.
    pub fn is_ext4(&self) -> bool {
        self.feature_incompat & (INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG | INCOMPAT_64BIT) != 0
    }

    /// Whether the filesystem has a journal (ext3 and later).
    pub fn has_journal(&self) -> bool {
        self.feature_compat & COMPAT_HAS_JOURNAL != 0
    }

    /// The block size in bytes, or `None` for a corrupt `s_log_block_size` (above 64 KiB).
    pub fn block_size(&self) -> Option<u32> {
        (self.log_block_size <= 6).then(|| 1024u32 << self.log_block_size)
    }

    /// The number of blocks, with the high half when the filesystem is 64-bit and the head
    /// read covered it.
    pub fn blocks(&self) -> u64 {
        let mut blocks = u64::from(self.blocks_count_lo);
        if self.feature_incompat & INCOMPAT_64BIT != 0 {
            blocks |= u64::from(self.blocks_count_hi.unwrap_or(0)) << 32;
        }
        blocks
    }

    /// The volume label up to its first NUL (lossy UTF-8, not trimmed; empty when unset).
    pub fn label(&self) -> String {
        let end = self
            .volume_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.volume_name.len());
        String::from_utf8_lossy(&self.volume_name[..end]).into_owned()
    }

    /// The UUID, lowercase and hyphenated.
    pub fn uuid(&self) -> String {
        let hex: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

/// The volume label of an ext2/3/4 filesystem whose first bytes are `head`.
pub fn label(head: &[u8]) -> Option<String> {
    Superblock::read(head).map(|sb| sb.label())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let mut sb = vec![0u8; 2048];
        assert_eq!(label(&sb), None);
        sb[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert_eq!(label(&sb).as_deref(), Some(""));
        sb[1024 + 0x78..1024 + 0x78 + 11].copy_from_slice(b"banger-work");
        assert_eq!(label(&sb).as_deref(), Some("banger-work"));
        assert_eq!(label(&sb[..1100]), None);
        assert_eq!(label(&sb[..1024 + 0x88]).as_deref(), Some("banger-work"));
    }

    #[test]
    fn sizes_and_features() {
        let mut head = vec![0u8; 2048];
        let sb = &mut head[1024..];
        sb[0x38..0x3a].copy_from_slice(&MAGIC.to_le_bytes());
        sb[0x04..0x08].copy_from_slice(&10u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        let read = Superblock::read(&head).unwrap();
        assert!(!read.is_ext4());
        assert!(!read.has_journal());
        assert_eq!(read.block_size(), Some(4096));
        assert_eq!(read.blocks(), 10, "the high half counts only when 64-bit");

        head[1024 + 0x60..1024 + 0x64].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
        head[1024 + 0x5C..1024 + 0x60].copy_from_slice(&COMPAT_HAS_JOURNAL.to_le_bytes());
        let read = Superblock::read(&head).unwrap();
        assert!(read.is_ext4());
        assert!(read.has_journal());
        assert_eq!(read.blocks(), (1 << 32) | 10);
        // A head that stops before the high half still reads.
        assert_eq!(Superblock::read(&head[..1024 + 0x88]).unwrap().blocks(), 10);

        head[1024 + 0x18..1024 + 0x1c].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(Superblock::read(&head).unwrap().block_size(), None);
    }
}

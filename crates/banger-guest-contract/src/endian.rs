//! Little-endian integers at a byte offset, as the on-disk formats banger reads store them
//! (the ext superblock here; ELF headers and the x86 boot header in `banger-image`). The
//! caller has checked that `bytes` is long enough: an offset past the end panics.

/// The `u16` at `offset`.
pub fn le16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

/// The `u32` at `offset`.
pub fn le32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_little_endian_at_any_offset() {
        let bytes = [0xff, 0x53, 0xef, 0x78, 0x56, 0x34, 0x12];
        assert_eq!(le16(&bytes, 1), 0xEF53);
        assert_eq!(le32(&bytes, 3), 0x1234_5678);
        assert_eq!(le32(&bytes, 0), 0x78EF_53FF);
    }

    #[test]
    #[should_panic]
    fn an_offset_past_the_end_panics() {
        le32(&[0; 4], 1);
    }
}

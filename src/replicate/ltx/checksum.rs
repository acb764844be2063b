//! The file checksum: CRC-64/GO-ISO over the header, each page's 6-byte header, its 4-byte size
//! field and its *uncompressed* bytes, the 6-byte terminator, the index with its size, and the
//! post-apply checksum. Stored with the top bit set.

use crc::{Crc, Digest, Table, CRC_64_GO_ISO};

// Slice-by-16 tables: the checksum covers every uncompressed page, so on a restore of a large
// snapshot it is most of the decoding time with the crate's one-byte-at-a-time default.
static CRC: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_GO_ISO);

pub struct FileChecksum(Digest<'static, u64, Table<16>>);

impl FileChecksum {
    pub fn new() -> Self {
        Self(CRC.digest())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> u64 {
        self.0.finalize() | (1 << 63)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_polynomial_is_go_iso() {
        assert_eq!(super::CRC.checksum(b"123456789"), 0xb909_56c7_75a4_1001);
    }
}

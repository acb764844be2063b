//! The 100-byte LTX header.

use super::LtxError;

pub const HEADER_SIZE: usize = 100;
const MAGIC: &[u8; 4] = b"LTX1";
/// "No database checksum": the only flag value the real restore accepts.
const FLAGS: u32 = 0x2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub page_size: u32,
    /// Database size in pages after applying the file.
    pub commit: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Level 0 only: where in the -wal the shipped segment starts, and its length (else 0).
    pub wal_offset: u64,
    pub wal_size: u64,
    pub wal_salt1: u32,
    pub wal_salt2: u32,
}

/// The page SQLite never stores data in: the one holding byte 2^30 of the file.
pub fn lock_page(page_size: u32) -> u32 {
    0x4000_0000 / page_size + 1
}

impl Header {
    pub fn validate(&self) -> Result<(), LtxError> {
        if !self.page_size.is_power_of_two() || !(512..=65536).contains(&self.page_size) {
            return Err(LtxError::BadPageSize(self.page_size));
        }
        if self.min_txid == 0 || self.max_txid < self.min_txid {
            return Err(LtxError::BadTxids {
                min: self.min_txid,
                max: self.max_txid,
            });
        }
        if self.wal_offset == 0
            && (self.wal_size != 0 || self.wal_salt1 != 0 || self.wal_salt2 != 0)
        {
            return Err(LtxError::BadWal("a wal size or salt needs a wal offset"));
        }
        Ok(())
    }

    /// Pages come in strictly increasing order, none above `commit`, never the lock page.
    pub fn check_page_number(&self, pgno: u32, previous: u32) -> Result<(), LtxError> {
        if pgno <= previous {
            return Err(LtxError::PageOrder { pgno, previous });
        }
        if pgno > self.commit {
            return Err(LtxError::PageAboveCommit {
                pgno,
                commit: self.commit,
            });
        }
        if pgno == lock_page(self.page_size) {
            return Err(LtxError::LockPage(pgno));
        }
        Ok(())
    }

    /// A file with min TXID 1 is a snapshot: it holds every page of the database.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&FLAGS.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        // 40..48 pre-apply checksum: zero (no database checksums).
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        // 72..80 node id and 80..100 reserved: zero.
        b
    }

    pub fn decode(b: &[u8]) -> Result<Header, LtxError> {
        let b: &[u8; HEADER_SIZE] = b
            .get(..HEADER_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(LtxError::Truncated("the header"))?;
        let u32_at = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(x)
        };
        if &b[0..4] != MAGIC {
            return Err(LtxError::BadMagic([b[0], b[1], b[2], b[3]]));
        }
        if u32_at(4) != FLAGS {
            return Err(LtxError::BadFlags(u32_at(4)));
        }
        if u64_at(40) != 0 {
            return Err(LtxError::NonZero("pre-apply checksum"));
        }
        if u64_at(72) != 0 {
            return Err(LtxError::NonZero("node id"));
        }
        if b[80..100].iter().any(|x| *x != 0) {
            return Err(LtxError::NonZero("reserved"));
        }
        let header = Header {
            page_size: u32_at(8),
            commit: u32_at(12),
            min_txid: u64_at(16),
            max_txid: u64_at(24),
            timestamp_ms: u64_at(32) as i64,
            wal_offset: u64_at(48),
            wal_size: u64_at(56),
            wal_salt1: u32_at(64),
            wal_salt2: u32_at(68),
        };
        header.validate()?;
        Ok(header)
    }
}

//! LTX v3, the file format of a Litestream 0.5 replica: a header, LZ4-compressed pages in
//! increasing order, a page index, and a CRC-64 trailer. Byte for byte what litestream 0.5.17
//! (superfly/ltx v0.5.2) writes and reads.
//!
//! ```text
//! header (100) | frames: pgno u32, flags u16, size u32, lz4 block | 6 zero bytes
//!              | index: varint (pgno, offset, frame size)*, varint 0 | u64 index size
//!              | post-apply checksum u64 (0) | file checksum u64 (crc | 1 << 63)
//! ```

mod checksum;
mod decoder;
mod encoder;
mod header;

pub use decoder::{decode, decode_with, Decoded, PageReader};
pub use encoder::{encode, Encoder};
pub use header::{lock_page, Header, HEADER_SIZE};

/// Why bytes are not a valid LTX file, or why pages cannot make one. Every variant names the
/// place that is wrong, so an operator can find the broken object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LtxError {
    #[error("ltx file is truncated: {0} is cut off")]
    Truncated(&'static str),
    #[error("not an ltx file: magic is {0:?}, expected \"LTX1\"")]
    BadMagic([u8; 4]),
    #[error("unsupported ltx flags {0:#x} (only 0x2, no database checksum, is valid)")]
    BadFlags(u32),
    #[error("invalid page size {0} (a power of two from 512 to 65536)")]
    BadPageSize(u32),
    #[error("invalid txid range {min}..{max}")]
    BadTxids { min: u64, max: u64 },
    #[error("invalid wal fields in the header: {0}")]
    BadWal(&'static str),
    #[error("header field {0} must be zero")]
    NonZero(&'static str),
    #[error("page {pgno} is out of order (after page {previous})")]
    PageOrder { pgno: u32, previous: u32 },
    #[error("page {pgno} is above the commit size of {commit} pages")]
    PageAboveCommit { pgno: u32, commit: u32 },
    #[error("page {0} is the sqlite lock page, which is never stored")]
    LockPage(u32),
    #[error("page {pgno} has {len} bytes, the page size is {page_size}")]
    PageLength {
        pgno: u32,
        len: usize,
        page_size: u32,
    },
    #[error("page {pgno} has frame flags {flags:#x}, expected 0x1")]
    PageFlags { pgno: u32, flags: u16 },
    #[error("page {pgno} does not decompress to one page: {detail}")]
    Decompress { pgno: u32, detail: String },
    #[error("the page index does not match the frames: {0}")]
    Index(String),
    #[error("the post-apply checksum must be zero, found {0:#018x}")]
    PostApplyChecksum(u64),
    #[error("writing the ltx file: {0}")]
    Write(String),
    #[error("reading the ltx file: {0}")]
    Read(String),
    #[error("file checksum mismatch: trailer says {stored:#018x}, contents give {computed:#018x}")]
    Checksum { stored: u64, computed: u64 },
}

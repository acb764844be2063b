//! Reading and checking an LTX file. Never panics on any input: every malformed byte is an
//! `LtxError` that says where.

use std::io::Read;

use super::checksum::FileChecksum;
use super::header::{lock_page, Header, HEADER_SIZE};
use super::LtxError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub header: Header,
    /// Page number and uncompressed bytes, in increasing order.
    pub pages: Vec<(u32, Vec<u8>)>,
}

const TRAILER: usize = 16;

fn be_u64(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_be_bytes(x)
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, LtxError> {
    let mut pages = Vec::new();
    let header = decode_with(bytes, |pgno, page| pages.push((pgno, page.to_vec())))?;
    Ok(Decoded { header, pages })
}

/// Decodes `bytes`, handing each page to `on_page` in order as it is decompressed (into one
/// reused buffer). The file is only valid once this returns `Ok`: its checksum is checked last,
/// so whatever `on_page` did with the pages must be discarded on an error.
pub fn decode_with(bytes: &[u8], mut on_page: impl FnMut(u32, &[u8])) -> Result<Header, LtxError> {
    let mut reader = PageReader::new(bytes)?;
    while let Some(pgno) = reader.next_page()? {
        on_page(pgno, reader.page());
    }
    Ok(*reader.header())
}

/// Reads an LTX file from a stream one page at a time, in page order, so that files larger than
/// memory can be merged or applied. The whole file is checked (index, trailer, checksum, a
/// snapshot's completeness) when `next_page` reaches the end; until it has returned `Ok(None)`,
/// the pages read may belong to a corrupt file.
pub struct PageReader<R: Read> {
    input: R,
    header: Header,
    sum: FileChecksum,
    page: Vec<u8>,
    compressed: Vec<u8>,
    frames: Vec<(u32, u64, u64)>,
    at: u64,
    previous: u32,
    done: bool,
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), LtxError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => LtxError::Truncated(what),
        _ => LtxError::Read(e.to_string()),
    })
}

impl<R: Read> PageReader<R> {
    pub fn new(mut input: R) -> Result<Self, LtxError> {
        let mut head = [0u8; HEADER_SIZE];
        read_exact(&mut input, &mut head, "the header")?;
        let header = Header::decode(&head)?;
        let mut sum = FileChecksum::new();
        sum.update(&head);
        Ok(Self {
            input,
            header,
            sum,
            page: vec![0u8; header.page_size as usize],
            compressed: Vec::new(),
            frames: Vec::new(),
            at: HEADER_SIZE as u64,
            previous: 0,
            done: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The page `next_page` last returned.
    pub fn page(&self) -> &[u8] {
        &self.page
    }

    /// The next page's number (its bytes in `page`), or `None` once the whole file was read
    /// and found valid.
    pub fn next_page(&mut self) -> Result<Option<u32>, LtxError> {
        if self.done {
            return Ok(None);
        }
        let start = self.at;
        let mut head = [0u8; 6];
        read_exact(&mut self.input, &mut head, "a page header")?;
        self.at += 6;
        let pgno = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = u16::from_be_bytes([head[4], head[5]]);
        if pgno == 0 {
            if flags != 0 {
                return Err(LtxError::PageFlags { pgno, flags });
            }
            self.sum.update(&head);
            self.finish()?;
            self.done = true;
            return Ok(None);
        }
        if flags != 0x1 {
            return Err(LtxError::PageFlags { pgno, flags });
        }
        self.header.check_page_number(pgno, self.previous)?;
        self.previous = pgno;
        let mut size_field = [0u8; 4];
        read_exact(&mut self.input, &mut size_field, "a page size")?;
        let size = u32::from_be_bytes(size_field) as usize;
        // A size no page could compress to is a damaged file, not a reason to allocate.
        if size > lz4_flex::block::get_maximum_output_size(self.page.len()) + 16 {
            return Err(LtxError::Truncated("a page's data"));
        }
        self.compressed.resize(size, 0);
        read_exact(&mut self.input, &mut self.compressed, "a page's data")?;
        self.at += 4 + size as u64;
        let len =
            lz4_flex::block::decompress_into(&self.compressed, &mut self.page).map_err(|e| {
                LtxError::Decompress {
                    pgno,
                    detail: e.to_string(),
                }
            })?;
        if len != self.header.page_size as usize {
            return Err(LtxError::Decompress {
                pgno,
                detail: format!("{len} bytes"),
            });
        }
        self.sum.update(&head);
        self.sum.update(&size_field);
        self.sum.update(&self.page);
        self.frames.push((pgno, start, self.at - start));
        Ok(Some(pgno))
    }

    /// After the frames: the index, its size, the trailer, the checksum.
    fn finish(&mut self) -> Result<(), LtxError> {
        let mut rest = Vec::new();
        self.input
            .read_to_end(&mut rest)
            .map_err(|e| LtxError::Read(e.to_string()))?;
        // The index sits between the frames and the 8-byte index size before the trailer.
        let index_end = rest
            .len()
            .checked_sub(TRAILER + 8)
            .ok_or(LtxError::Truncated("the page index"))?;
        let index_size = be_u64(&rest[index_end..index_end + 8]);
        if index_end as u64 != index_size {
            return Err(LtxError::Index(format!(
                "its size field says {index_size} bytes, {index_end} are there"
            )));
        }
        let mut index = &rest[..index_end];
        let mut read =
            || leb128::read::unsigned(&mut index).map_err(|e| LtxError::Index(e.to_string()));
        for (n, (pgno, offset, size)) in self.frames.iter().enumerate() {
            let entry = (read()?, read()?, read()?);
            if entry != (u64::from(*pgno), *offset, *size) {
                return Err(LtxError::Index(format!(
                    "entry {n} is (page {}, offset {}, size {}), the frame is (page {pgno}, offset {offset}, size {size})",
                    entry.0, entry.1, entry.2
                )));
            }
        }
        if read()? != 0 {
            return Err(LtxError::Index(
                "it lists more pages than the file holds".into(),
            ));
        }
        if !index.is_empty() {
            return Err(LtxError::Index("bytes after its terminator".into()));
        }
        self.sum.update(&rest[..index_end + 8]);
        let post_apply = be_u64(&rest[index_end + 8..]);
        if post_apply != 0 {
            return Err(LtxError::PostApplyChecksum(post_apply));
        }
        self.sum.update(&rest[index_end + 8..index_end + 16]);
        let stored = be_u64(&rest[index_end + 16..]);
        let computed = std::mem::replace(&mut self.sum, FileChecksum::new()).finish();
        if stored != computed {
            return Err(LtxError::Checksum { stored, computed });
        }
        if self.header.is_snapshot() {
            let lock = lock_page(self.header.page_size);
            let expected = (1..=self.header.commit).filter(|p| *p != lock).count();
            if self.frames.len() != expected {
                return Err(LtxError::Index(format!(
                    "a snapshot must hold all {expected} pages, it holds {}",
                    self.frames.len()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{encode, Header, LtxError};
    use super::*;
    use proptest::prelude::*;

    fn header(page_size: u32, commit: u32, min: u64, max: u64) -> Header {
        Header {
            page_size,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: 1_795_000_000_000,
            ..Header::default()
        }
    }

    fn file() -> impl Strategy<Value = (Header, Vec<(u32, Vec<u8>)>)> {
        (
            prop_oneof![Just(512u32), Just(1024), Just(4096)],
            1u32..12,
            any::<bool>(),
        )
            .prop_flat_map(|(page_size, commit, snapshot)| {
                // Which pages a file holds: all of them for a snapshot, any subset otherwise.
                let pages = proptest::collection::vec(any::<bool>(), commit as usize);
                let contents = proptest::collection::vec(
                    prop_oneof![
                        Just(vec![0u8; page_size as usize]),
                        proptest::collection::vec(any::<u8>(), page_size as usize),
                        (any::<u8>(), 1usize..64).prop_map(move |(b, run)| (0..page_size as usize)
                            .map(|i| if (i / run) % 2 == 0 { b } else { i as u8 })
                            .collect()),
                    ],
                    commit as usize,
                );
                (pages, contents).prop_map(move |(mask, contents)| {
                    let (min, max) = if snapshot { (1, 1) } else { (5, 9) };
                    let h = header(page_size, commit, min, max);
                    let pages = (1..=commit)
                        .filter(|p| snapshot || mask[*p as usize - 1])
                        .map(|p| (p, contents[p as usize - 1].clone()))
                        .collect();
                    (h, pages)
                })
            })
    }

    fn encoded(h: &Header, pages: &[(u32, Vec<u8>)]) -> Vec<u8> {
        encode(h, pages.iter().map(|(p, d)| (*p, d.as_slice()))).expect("valid pages encode")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Invariant: what is encoded decodes to the same header and pages.
        #[test]
        fn encoding_then_decoding_gives_back_the_pages((h, pages) in file()) {
            let bytes = encoded(&h, &pages);
            let decoded = decode(&bytes).expect("decodes");
            prop_assert_eq!(decoded.header, h);
            prop_assert_eq!(decoded.pages, pages);
        }

        /// Invariant: any truncation is an error, never a panic.
        #[test]
        fn a_truncated_file_is_refused((h, pages) in file(), cut in any::<prop::sample::Index>()) {
            let bytes = encoded(&h, &pages);
            let len = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..len]).is_err());
        }

        /// Invariant: a flipped byte is an error naming what is wrong, never a panic, and never
        /// different data. (The checksum covers the uncompressed pages, as Litestream's does, so a
        /// flip inside an LZ4 block that decompresses to the very same page, such as a match
        /// offset moved by a whole period in repeating bytes, is harmless and goes unnoticed.)
        #[test]
        fn a_flipped_byte_is_refused_or_changes_nothing((h, pages) in file(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encoded(&h, &pages);
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            match decode(&bytes) {
                Err(err) => prop_assert!(!err.to_string().is_empty()),
                Ok(decoded) => {
                    prop_assert_eq!(decoded.header, h);
                    prop_assert_eq!(decoded.pages, pages);
                }
            }
        }
    }

    #[test]
    fn the_lock_page_is_never_stored() {
        let h = header(65536, 16_400, 2, 2);
        let lock = super::super::lock_page(65536);
        assert_eq!(lock, 16_385);
        let page = vec![0u8; 65536];
        assert_eq!(
            encode(&h, [(lock, page.as_slice())]),
            Err(LtxError::LockPage(lock))
        );
    }

    #[test]
    fn garbage_and_empty_input_are_refused() {
        assert_eq!(decode(b""), Err(LtxError::Truncated("the header")));
        assert!(matches!(decode(&[0u8; 200]), Err(LtxError::BadMagic(_))));
    }
}

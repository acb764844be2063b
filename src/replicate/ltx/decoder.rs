//! Reading and checking an LTX file. Never panics on any input: every malformed byte is an
//! `LtxError` that says where.

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

fn take<'a>(
    bytes: &'a [u8],
    at: &mut usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], LtxError> {
    let end = at.checked_add(len).ok_or(LtxError::Truncated(what))?;
    let slice = bytes.get(*at..end).ok_or(LtxError::Truncated(what))?;
    *at = end;
    Ok(slice)
}

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
    let header = Header::decode(bytes)?;
    let lock = lock_page(header.page_size);
    let mut sum = FileChecksum::new();
    sum.update(&bytes[..HEADER_SIZE]);
    let mut at = HEADER_SIZE;
    let mut page = vec![0u8; header.page_size as usize];
    let mut frames: Vec<(u32, u64, u64)> = Vec::new();
    let mut previous = 0u32;
    loop {
        let start = at;
        let head = take(bytes, &mut at, 6, "a page header")?;
        let pgno = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = u16::from_be_bytes([head[4], head[5]]);
        if pgno == 0 {
            if flags != 0 {
                return Err(LtxError::PageFlags { pgno, flags });
            }
            sum.update(head);
            break;
        }
        if flags != 0x1 {
            return Err(LtxError::PageFlags { pgno, flags });
        }
        header.check_page_number(pgno, previous)?;
        previous = pgno;
        let size_field = take(bytes, &mut at, 4, "a page size")?;
        let size = u32::from_be_bytes([size_field[0], size_field[1], size_field[2], size_field[3]])
            as usize;
        let compressed = take(bytes, &mut at, size, "a page's data")?;
        let len = lz4_flex::block::decompress_into(compressed, &mut page).map_err(|e| {
            LtxError::Decompress {
                pgno,
                detail: e.to_string(),
            }
        })?;
        if len != header.page_size as usize {
            return Err(LtxError::Decompress {
                pgno,
                detail: format!("{len} bytes"),
            });
        }
        sum.update(head);
        sum.update(size_field);
        sum.update(&page);
        frames.push((pgno, start as u64, (at - start) as u64));
        on_page(pgno, &page);
    }

    // The index sits between the frames and the 8-byte index size before the trailer.
    let index_end = bytes
        .len()
        .checked_sub(TRAILER + 8)
        .filter(|end| *end >= at)
        .ok_or(LtxError::Truncated("the page index"))?;
    let index_size = be_u64(&bytes[index_end..index_end + 8]);
    if index_end as u64 - at as u64 != index_size {
        return Err(LtxError::Index(format!(
            "its size field says {index_size} bytes, {} are there",
            index_end - at
        )));
    }
    let mut index = &bytes[at..index_end];
    let mut read =
        || leb128::read::unsigned(&mut index).map_err(|e| LtxError::Index(e.to_string()));
    for (n, (pgno, offset, size)) in frames.iter().enumerate() {
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
    sum.update(&bytes[at..index_end + 8]);

    let post_apply = be_u64(&bytes[index_end + 8..]);
    if post_apply != 0 {
        return Err(LtxError::PostApplyChecksum(post_apply));
    }
    sum.update(&bytes[index_end + 8..index_end + 16]);
    let stored = be_u64(&bytes[index_end + 16..]);
    let computed = sum.finish();
    if stored != computed {
        return Err(LtxError::Checksum { stored, computed });
    }
    if header.is_snapshot() {
        let expected = (1..=header.commit).filter(|p| *p != lock).count();
        if frames.len() != expected {
            return Err(LtxError::Index(format!(
                "a snapshot must hold all {expected} pages, it holds {}",
                frames.len()
            )));
        }
    }
    Ok(header)
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

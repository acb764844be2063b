//! Writing an LTX file from pages.

use super::checksum::FileChecksum;
use super::header::{Header, HEADER_SIZE};
use super::LtxError;

const PAGE_FLAG_SIZE: u16 = 0x1;

/// Encodes `pages` (page number and bytes, strictly increasing, none above `header.commit`,
/// never the lock page) into one LTX file.
pub fn encode<'a>(
    header: &Header,
    pages: impl IntoIterator<Item = (u32, &'a [u8])>,
) -> Result<Vec<u8>, LtxError> {
    header.validate()?;
    let mut out = Vec::with_capacity(HEADER_SIZE + 4096);
    let mut sum = FileChecksum::new();
    let head = header.encode();
    out.extend_from_slice(&head);
    sum.update(&head);

    let mut index = Vec::new();
    let mut previous = 0u32;
    for (pgno, data) in pages {
        header.check_page_number(pgno, previous)?;
        if data.len() != header.page_size as usize {
            return Err(LtxError::PageLength {
                pgno,
                len: data.len(),
                page_size: header.page_size,
            });
        }
        previous = pgno;
        let compressed = lz4_flex::block::compress(data);
        let offset = out.len() as u64;
        let mut frame_head = [0u8; 10];
        frame_head[0..4].copy_from_slice(&pgno.to_be_bytes());
        frame_head[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        frame_head[6..10].copy_from_slice(&(compressed.len() as u32).to_be_bytes());
        out.extend_from_slice(&frame_head);
        out.extend_from_slice(&compressed);
        sum.update(&frame_head);
        sum.update(data);
        let frame_size = (frame_head.len() + compressed.len()) as u64;
        for value in [u64::from(pgno), offset, frame_size] {
            leb128::write::unsigned(&mut index, value)
                .map_err(|e| LtxError::Index(e.to_string()))?;
        }
    }
    let terminator = [0u8; 6];
    out.extend_from_slice(&terminator);
    sum.update(&terminator);

    leb128::write::unsigned(&mut index, 0).map_err(|e| LtxError::Index(e.to_string()))?;
    let index_size = (index.len() as u64).to_be_bytes();
    out.extend_from_slice(&index);
    out.extend_from_slice(&index_size);
    sum.update(&index);
    sum.update(&index_size);

    let post_apply = 0u64.to_be_bytes();
    out.extend_from_slice(&post_apply);
    sum.update(&post_apply);
    out.extend_from_slice(&sum.finish().to_be_bytes());
    Ok(out)
}

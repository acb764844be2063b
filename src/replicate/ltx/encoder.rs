//! Writing an LTX file from pages, as a stream: the header first, each page as it comes, the
//! index and the checksum at the end. Memory is the page index (a few bytes per page), however
//! large the file.

use std::io::Write;

use super::checksum::FileChecksum;
use super::header::{Header, HEADER_SIZE};
use super::LtxError;

const PAGE_FLAG_SIZE: u16 = 0x1;

/// Encodes pages (strictly increasing, none above `header.commit`, never the lock page) into
/// `out`. Nothing is valid until `finish` wrote the trailer.
pub struct Encoder<W: Write> {
    out: W,
    header: Header,
    sum: FileChecksum,
    index: Vec<u8>,
    previous: u32,
    written: u64,
    pages: u64,
}

fn write_error(e: std::io::Error) -> LtxError {
    LtxError::Write(e.to_string())
}

impl<W: Write> Encoder<W> {
    pub fn new(header: &Header, mut out: W) -> Result<Self, LtxError> {
        header.validate()?;
        let mut sum = FileChecksum::new();
        let head = header.encode();
        out.write_all(&head).map_err(write_error)?;
        sum.update(&head);
        Ok(Self {
            out,
            header: *header,
            sum,
            index: Vec::new(),
            previous: 0,
            written: HEADER_SIZE as u64,
            pages: 0,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Pages written so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    pub fn page(&mut self, pgno: u32, data: &[u8]) -> Result<(), LtxError> {
        self.header.check_page_number(pgno, self.previous)?;
        if data.len() != self.header.page_size as usize {
            return Err(LtxError::PageLength {
                pgno,
                len: data.len(),
                page_size: self.header.page_size,
            });
        }
        self.previous = pgno;
        let compressed = lz4_flex::block::compress(data);
        let mut frame_head = [0u8; 10];
        frame_head[0..4].copy_from_slice(&pgno.to_be_bytes());
        frame_head[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        frame_head[6..10].copy_from_slice(&(compressed.len() as u32).to_be_bytes());
        self.out.write_all(&frame_head).map_err(write_error)?;
        self.out.write_all(&compressed).map_err(write_error)?;
        self.sum.update(&frame_head);
        self.sum.update(data);
        let frame_size = (frame_head.len() + compressed.len()) as u64;
        for value in [u64::from(pgno), self.written, frame_size] {
            leb128::write::unsigned(&mut self.index, value)
                .map_err(|e| LtxError::Index(e.to_string()))?;
        }
        self.written += frame_size;
        self.pages += 1;
        Ok(())
    }

    /// Writes the terminator, the index and the trailer.
    pub fn finish(&mut self) -> Result<(), LtxError> {
        let terminator = [0u8; 6];
        self.sum.update(&terminator);
        leb128::write::unsigned(&mut self.index, 0).map_err(|e| LtxError::Index(e.to_string()))?;
        let index_size = (self.index.len() as u64).to_be_bytes();
        self.sum.update(&self.index);
        self.sum.update(&index_size);
        let post_apply = 0u64.to_be_bytes();
        self.sum.update(&post_apply);
        let checksum = std::mem::replace(&mut self.sum, FileChecksum::new())
            .finish()
            .to_be_bytes();
        for part in [
            &terminator[..],
            &self.index,
            &index_size,
            &post_apply,
            &checksum,
        ] {
            self.out.write_all(part).map_err(write_error)?;
        }
        self.out.flush().map_err(write_error)
    }

    /// The output (whole only after `finish`).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Encodes `pages` into one LTX file in memory.
pub fn encode<'a>(
    header: &Header,
    pages: impl IntoIterator<Item = (u32, &'a [u8])>,
) -> Result<Vec<u8>, LtxError> {
    let mut encoder = Encoder::new(header, Vec::with_capacity(HEADER_SIZE + 4096))?;
    for (pgno, data) in pages {
        encoder.page(pgno, data)?;
    }
    encoder.finish()?;
    Ok(encoder.into_inner())
}

//! Compactions and snapshots: several LTX files of the replica merged into one, as streams.
//! Each source is downloaded to an unnamed temp file (never held in memory), then all are read
//! page by page in page order and the newest version of each page is encoded into the upload,
//! so memory is a read buffer per source and the upload's buffer, whatever the database's size.

use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};

use super::error::ShipError;
use super::ltx::{self, Encoder, Header, LtxError, PageReader};
use super::replica::SNAPSHOT_LEVEL;
use super::replica::{LtxFile, Replica};
use super::restore::RestoreError;

/// Merges `chain` (in apply order, as `restore::plan` gives it) into one file at `level`
/// covering `[min_txid, last max]`: newest page wins, and a page above a later file's commit
/// (the database shrank) is dropped, exactly as applying the chain would leave it.
pub fn merge(
    replica: &dyn Replica,
    chain: &[LtxFile],
    level: u32,
    min_txid: u64,
) -> Result<Option<LtxFile>, ShipError> {
    let corrupt = |file: &LtxFile| {
        let key = file.key.clone();
        move |source: LtxError| {
            ShipError::Restore(RestoreError::Corrupt {
                path: key.clone(),
                source,
            })
        }
    };
    let spool = |e: std::io::Error| ShipError::Read {
        path: "a temp file for compaction".into(),
        source: e,
    };
    let mut readers = Vec::with_capacity(chain.len());
    for file in chain {
        let mut tmp = tempfile::tempfile().map_err(spool)?;
        {
            let mut out = BufWriter::with_capacity(1 << 20, &mut tmp);
            replica.read_into(file, &mut out)?;
            out.flush().map_err(spool)?;
        }
        tmp.seek(SeekFrom::Start(0)).map_err(spool)?;
        let reader =
            PageReader::new(BufReader::with_capacity(256 << 10, tmp)).map_err(corrupt(file))?;
        readers.push(reader);
    }
    let Some(last) = readers.last().map(|r| *r.header()) else {
        return Ok(None);
    };
    if let Some((file, _)) = chain
        .iter()
        .zip(&readers)
        .find(|(_, r)| r.header().page_size != last.page_size)
    {
        return Err(RestoreError::PageSizeChanged(file.key.clone()).into());
    }
    // A page from file i survives only up to the smallest commit of the files from i on.
    let mut caps = vec![0u32; readers.len()];
    let mut cap = u32::MAX;
    for (i, reader) in readers.iter().enumerate().rev() {
        cap = cap.min(reader.header().commit);
        caps[i] = cap;
    }
    let header = Header {
        page_size: last.page_size,
        commit: last.commit,
        min_txid,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        ..Header::default()
    };
    let mut upload = replica.create(level, &header)?;
    let merged = (|| {
        let mut encoder = Encoder::new(&header, &mut *upload)?;
        let mut heads = Vec::with_capacity(readers.len());
        for (file, reader) in chain.iter().zip(readers.iter_mut()) {
            heads.push(reader.next_page().map_err(corrupt(file))?);
        }
        while let Some(pgno) = heads.iter().flatten().min().copied() {
            let winner = heads
                .iter()
                .rposition(|h| *h == Some(pgno))
                .unwrap_or_default();
            if pgno <= caps[winner] {
                encoder.page(pgno, readers[winner].page())?;
            }
            for (i, head) in heads.iter_mut().enumerate() {
                if *head == Some(pgno) {
                    *head = readers[i].next_page().map_err(corrupt(&chain[i]))?;
                }
            }
        }
        if level == SNAPSHOT_LEVEL {
            let lock = ltx::lock_page(header.page_size);
            let expected = (1..=header.commit).filter(|p| *p != lock).count() as u64;
            if encoder.pages() != expected {
                return Err(ShipError::Restore(RestoreError::Integrity(format!(
                    "a snapshot merged from {} files would hold {} of its {expected} pages",
                    chain.len(),
                    encoder.pages()
                ))));
            }
        }
        encoder.finish()?;
        Ok::<_, ShipError>(())
    })();
    match merged {
        Ok(()) => Ok(Some(upload.finish()?)),
        Err(err) => {
            upload.abort();
            Err(err)
        }
    }
}

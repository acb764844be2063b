//! The whole database as one LTX file, streamed: the database file's pages overlaid with the
//! WAL's committed frames, read page by page through the descriptors the process keeps
//! (`store::DbFiles`, never a new `open`), encoded and uploaded as they are read. Memory is a
//! chunk of pages, the WAL's page map and the upload's buffer, whatever the database's size.

use std::io::Write;

use super::error::ShipError;
use super::ltx::{self, Encoder, LtxError};
use super::replica::{LtxFile, ReplicaError, Upload};
use super::wal::{self, Segment, WalError, WAL_HEADER_SIZE};
use crate::store::DbFiles;

/// Pages read from the database file at a time.
const CHUNK_PAGES: u32 = 256;

/// What an image is made of: the database's size and the WAL's committed frames at the time
/// it was scanned.
pub struct Scan {
    pub page_size: u32,
    pub commit: u32,
    pub segment: Option<Segment>,
}

impl Scan {
    /// Where in the WAL the image ends (the shipper's cursor after it).
    pub fn cursor(&self) -> Option<wal::Cursor> {
        self.segment.as_ref().map(|s| s.cursor)
    }
}

/// Reads the database header and walks the WAL; `None` while the database is not written yet.
pub fn scan(files: &DbFiles) -> Result<Option<Scan>, ShipError> {
    let read = |e| ShipError::Read {
        path: files.db_path().display().to_string(),
        source: e,
    };
    let len = files.db_len().map_err(read)?;
    let segment = wal::read_committed(files.wal(), WAL_HEADER_SIZE)?;
    let wal_commit = segment.as_ref().map_or(0, |s| s.commit);
    if len < 100 && wal_commit == 0 {
        return Ok(None);
    }
    let page_size = match &segment {
        Some(s) if s.commit > 0 => s.header.page_size,
        _ => {
            let mut head = [0u8; 2];
            files.read_db_at(&mut head, 16).map_err(read)?;
            match u16::from_be_bytes(head) {
                1 => 65536,
                n => u32::from(n),
            }
        }
    };
    if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
        return Ok(None);
    }
    let commit = if wal_commit > 0 {
        wal_commit
    } else {
        (len / u64::from(page_size)) as u32
    };
    Ok(Some(Scan {
        page_size,
        commit,
        segment,
    }))
}

/// Encodes pages 1..=commit (but the lock page) into `encoder`, newest version first from the
/// WAL, else from the database file. `still_valid` is asked every few hundred pages; false (a
/// checkpoint began, the WAL was restarted, the file is shorter than its pages) means the
/// image may mix two states: `Ok(false)`, and the caller throws it away.
pub fn write_pages<W: Write>(
    files: &DbFiles,
    scan: &Scan,
    encoder: &mut Encoder<W>,
    still_valid: &dyn Fn() -> bool,
) -> Result<bool, ShipError> {
    let page_size = scan.page_size as usize;
    let lock = ltx::lock_page(scan.page_size);
    let db_pages = files.db_len().map_err(|e| ShipError::Read {
        path: files.db_path().display().to_string(),
        source: e,
    })? / page_size as u64;
    let mut chunk = vec![0u8; page_size * CHUNK_PAGES as usize];
    let mut frame = Vec::new();
    let mut first = 1u32;
    while first <= scan.commit {
        let n = CHUNK_PAGES.min(scan.commit - first + 1);
        let in_file = db_pages
            .saturating_sub(u64::from(first - 1))
            .min(u64::from(n)) as usize;
        if in_file > 0 {
            files
                .read_db_at(
                    &mut chunk[..in_file * page_size],
                    u64::from(first - 1) * page_size as u64,
                )
                .map_err(|e| ShipError::Read {
                    path: files.db_path().display().to_string(),
                    source: e,
                })?;
        }
        for i in 0..n {
            let pgno = first + i;
            if pgno == lock {
                continue;
            }
            let from_wal = scan
                .segment
                .as_ref()
                .and_then(|s| s.pages.get(&pgno).map(|at| (s, *at)));
            let data = match from_wal {
                Some((segment, at)) => match segment.page(files.wal(), pgno, at, &mut frame) {
                    Ok(page) => page,
                    Err(WalError::Restarted) => return Ok(false),
                    Err(e) => return Err(e.into()),
                },
                None if (i as usize) < in_file => {
                    &chunk[i as usize * page_size..(i as usize + 1) * page_size]
                }
                // Neither in the file nor in the WAL: the file changed under the read.
                None => return Ok(false),
            };
            encoder.page(pgno, data)?;
        }
        first += n;
        if !still_valid() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One encoding written to one or two uploads at once (the first image goes to level 9 and
/// level 0), so the database is read once.
pub struct Uploads<'a> {
    pub uploads: Vec<Box<dyn Upload + 'a>>,
}

impl Write for Uploads<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for upload in &mut self.uploads {
            upload.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for upload in &mut self.uploads {
            upload.flush()?;
        }
        Ok(())
    }
}

impl Uploads<'_> {
    pub fn abort(self) {
        for upload in self.uploads {
            upload.abort();
        }
    }

    /// Finishes every upload in order; on the first failure the rest are aborted.
    pub fn finish(self) -> Result<Vec<LtxFile>, ReplicaError> {
        let mut done = Vec::new();
        let mut uploads = self.uploads.into_iter();
        while let Some(upload) = uploads.next() {
            match upload.finish() {
                Ok(file) => done.push(file),
                Err(err) => {
                    uploads.for_each(|u| u.abort());
                    return Err(err);
                }
            }
        }
        Ok(done)
    }
}

impl From<LtxError> for ShipError {
    fn from(err: LtxError) -> Self {
        ShipError::Ltx(err)
    }
}

/// This process's resident memory (`VmRSS`), for the image report.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

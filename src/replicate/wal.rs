//! Reading SQLite's `-wal` file: the committed frames after a given offset.
//!
//! Contract: only frames up to the last *commit* frame whose salts match the header and whose
//! cumulative checksum is valid are returned; anything after (a transaction being written, or
//! leftovers of an older WAL generation) is not. The writer's checkpoint may restart the WAL:
//! the header's salts change, and a reader must start again at offset 32.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

pub const WAL_HEADER_SIZE: u64 = 32;
const FRAME_HEADER_SIZE: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    big_endian_checksum: bool,
    checksum: (u32, u32),
}

/// The committed frames read from a WAL: where the latest version of each page is. The pages
/// themselves stay in the file until `page` reads them, so memory is a few bytes per page
/// however large the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub header: WalHeader,
    /// Where the segment starts and ends (an offset to continue from next time).
    pub start: u64,
    pub end: u64,
    /// Database size in pages after the last commit in the segment.
    pub commit: u32,
    /// Page number -> offset of its latest committed frame.
    pub pages: BTreeMap<u32, u64>,
    /// Where to resume next time.
    pub cursor: Cursor,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("reading the wal: {0}")]
    Io(#[from] std::io::Error),
    #[error("the wal header is invalid: {0}")]
    Header(&'static str),
    #[error("the wal was restarted while it was read")]
    Restarted,
}

impl Segment {
    /// Reads page `pgno` from its frame at `frame` into `buf`, checking that the frame is still
    /// the one the scan saw (its page number and this generation's salts): a WAL restarted
    /// since is an error, never another page.
    pub fn page<'a>(
        &self,
        wal: &File,
        pgno: u32,
        frame: u64,
        buf: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], WalError> {
        buf.resize(FRAME_HEADER_SIZE + self.header.page_size as usize, 0);
        wal.read_exact_at(buf, frame).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => WalError::Restarted,
            _ => WalError::Io(e),
        })?;
        if be32(&buf[0..4]) != pgno
            || be32(&buf[8..12]) != self.header.salt1
            || be32(&buf[12..16]) != self.header.salt2
        {
            return Err(WalError::Restarted);
        }
        Ok(&buf[FRAME_HEADER_SIZE..])
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// SQLite's WAL checksum: two running sums over 32-bit words, in the byte order the magic names.
fn checksum(data: &[u8], big_endian: bool, (mut s0, mut s1): (u32, u32)) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            if big_endian {
                be32(b)
            } else {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
        };
        s0 = s0.wrapping_add(word(&pair[0..4]).wrapping_add(s1));
        s1 = s1.wrapping_add(word(&pair[4..8]).wrapping_add(s0));
    }
    (s0, s1)
}

pub fn parse_header(b: &[u8]) -> Result<WalHeader, WalError> {
    if b.len() < WAL_HEADER_SIZE as usize {
        return Err(WalError::Header("shorter than 32 bytes"));
    }
    let big_endian = match be32(&b[0..4]) {
        0x377f_0682 => false,
        0x377f_0683 => true,
        _ => return Err(WalError::Header("bad magic")),
    };
    if be32(&b[4..8]) != 3_007_000 {
        return Err(WalError::Header("unknown version"));
    }
    let computed = checksum(&b[0..24], big_endian, (0, 0));
    if computed != (be32(&b[24..28]), be32(&b[28..32])) {
        return Err(WalError::Header("checksum mismatch"));
    }
    let page_size = match be32(&b[8..12]) {
        1 => 65536,
        n => n,
    };
    Ok(WalHeader {
        page_size,
        checkpoint_seq: be32(&b[12..16]),
        salt1: be32(&b[16..20]),
        salt2: be32(&b[20..24]),
        big_endian_checksum: big_endian,
        checksum: computed,
    })
}

/// Where a previous read stopped: enough to read only what was appended since, as long as the
/// WAL generation (its salts) is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub end: u64,
    pub salts: (u32, u32),
    sums: (u32, u32),
}

/// Reads the committed frames of `wal` from `from` (32 for the start). Returns `None` if the
/// WAL is empty or has no valid header yet.
pub fn read_committed(wal: &File, from: u64) -> Result<Option<Segment>, WalError> {
    read_segment(wal, from, None)
}

/// Reads what was committed after `cursor`, reading only the bytes appended since. If the WAL
/// was restarted (new salts) it reads the new generation from its start.
pub fn read_after(wal: &File, cursor: &Cursor) -> Result<Option<Segment>, WalError> {
    read_segment(wal, cursor.end, Some(cursor))
}

/// Bytes read at a time while walking the frames.
const SCAN_CHUNK: usize = 4 << 20;

fn read_segment(
    wal: &File,
    from: u64,
    cursor: Option<&Cursor>,
) -> Result<Option<Segment>, WalError> {
    let len = wal.metadata()?.len();
    let mut head = [0u8; WAL_HEADER_SIZE as usize];
    if len < WAL_HEADER_SIZE {
        return Ok(None);
    }
    match wal.read_exact_at(&mut head, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let header = parse_header(&head)?;
    let frame_size = FRAME_HEADER_SIZE + header.page_size as usize;
    // Checksums chain from the header through every frame: resume from the cursor's sums, or
    // walk from the start.
    let (base, mut sums, from) = match cursor {
        Some(c) if c.salts == (header.salt1, header.salt2) && c.end >= WAL_HEADER_SIZE => {
            (c.end, c.sums, c.end)
        }
        Some(_) => (WAL_HEADER_SIZE, header.checksum, WAL_HEADER_SIZE),
        None => (WAL_HEADER_SIZE, header.checksum, from),
    };
    let mut pending: Vec<(u32, u64)> = Vec::new();
    let mut latest: BTreeMap<u32, u64> = BTreeMap::new();
    let mut end = from.max(WAL_HEADER_SIZE);
    let mut end_sums = sums;
    let mut commit = 0;
    let per_chunk = (SCAN_CHUNK / frame_size).max(1);
    let mut chunk = vec![0u8; per_chunk * frame_size];
    let mut at = base;
    'scan: while at + frame_size as u64 <= len {
        let want = (((len - at) as usize) / frame_size).min(per_chunk) * frame_size;
        let got = read_up_to(wal, &mut chunk[..want], at)?;
        if got < frame_size {
            break;
        }
        for frame in chunk[..got - got % frame_size].chunks_exact(frame_size) {
            if be32(&frame[8..12]) != header.salt1 || be32(&frame[12..16]) != header.salt2 {
                break 'scan;
            }
            sums = checksum(&frame[0..8], header.big_endian_checksum, sums);
            sums = checksum(
                &frame[FRAME_HEADER_SIZE..],
                header.big_endian_checksum,
                sums,
            );
            if sums != (be32(&frame[16..20]), be32(&frame[20..24])) {
                break 'scan;
            }
            pending.push((be32(&frame[0..4]), at));
            at += frame_size as u64;
            let db_size = be32(&frame[4..8]);
            if db_size != 0 {
                // A commit: its frames (and those before it) are durable.
                if at > from {
                    for (pgno, frame_at) in pending.drain(..) {
                        if frame_at + FRAME_HEADER_SIZE as u64 > from {
                            latest.insert(pgno, frame_at);
                        }
                    }
                    commit = db_size;
                    end = at;
                }
                end_sums = sums;
                pending.clear();
            }
        }
    }
    Ok(Some(Segment {
        header,
        start: from.max(WAL_HEADER_SIZE),
        end,
        commit,
        pages: latest,
        cursor: Cursor {
            end,
            salts: (header.salt1, header.salt2),
            sums: end_sums,
        },
    }))
}

/// Reads what is there of `buf.len()` bytes at `offset` (less at the end of the file).
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn pages(wal: &File, segment: &Segment) -> BTreeMap<u32, Vec<u8>> {
        let mut buf = Vec::new();
        segment
            .pages
            .iter()
            .map(|(pgno, at)| {
                let page = segment.page(wal, *pgno, *at, &mut buf).expect("page");
                (*pgno, page.to_vec())
            })
            .collect()
    }

    #[test]
    fn the_committed_frames_rebuild_the_database_sqlite_shows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("w.db");
        let conn = Connection::open(&db).expect("db");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);",
        )
        .expect("schema");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        let base = std::fs::read(&db).expect("db bytes");
        for i in 0..200 {
            conn.execute(
                "INSERT INTO t (body) VALUES (?1)",
                [format!("{i} {}", "z".repeat(100))],
            )
            .expect("insert");
        }
        let wal = File::open(dir.path().join("w.db-wal")).expect("wal");
        let first = read_committed(&wal, WAL_HEADER_SIZE)
            .expect("reads")
            .expect("a segment");
        assert!(first.end > first.start && first.commit > 0);

        // Nothing new after `end`; more commits give exactly the next segment.
        let none = read_committed(&wal, first.end)
            .expect("reads")
            .expect("a segment");
        assert!(none.pages.is_empty() && none.end == first.end);
        conn.execute("UPDATE t SET body = 'changed' WHERE id = 7", [])
            .expect("update");
        let next = read_committed(&wal, first.end)
            .expect("reads")
            .expect("a segment");
        assert!(!next.pages.is_empty() && next.end > first.end);
        let resumed = read_after(&wal, &first.cursor)
            .expect("reads")
            .expect("a segment");
        assert_eq!(
            (resumed.end, pages(&wal, &resumed), resumed.cursor),
            (next.end, pages(&wal, &next), next.cursor),
            "reading only the appended bytes gives the same segment"
        );

        // The database file before plus every committed page gives what SQLite has.
        let page_size = first.header.page_size as usize;
        let mut rebuilt: Vec<u8> = base;
        rebuilt.resize(next.commit as usize * page_size, 0);
        for segment in [&first, &next] {
            for (pgno, page) in &pages(&wal, segment) {
                let at = (*pgno as usize - 1) * page_size;
                rebuilt[at..at + page_size].copy_from_slice(page);
            }
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        let expected = std::fs::read(&db).expect("db bytes");
        assert_eq!(rebuilt.len(), expected.len());
        assert!(
            rebuilt == expected,
            "pages rebuilt from the wal match the checkpointed database"
        );
    }

    #[test]
    fn a_torn_frame_at_the_end_is_not_returned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("t.db");
        let conn = Connection::open(&db).expect("db");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x);",
        )
        .expect("schema");
        conn.execute("INSERT INTO t VALUES (1)", [])
            .expect("insert");
        let wal_path = dir.path().join("t.db-wal");
        let wal = File::open(&wal_path).expect("wal");
        let whole = read_committed(&wal, WAL_HEADER_SIZE)
            .expect("reads")
            .expect("segment");
        let mut bytes = std::fs::read(&wal_path).expect("wal");
        let last = bytes.len() - 10;
        bytes[last] ^= 0xff;
        let copy = dir.path().join("copy-wal");
        std::fs::write(&copy, bytes).expect("copy");
        let copy = File::open(&copy).expect("copy");
        let torn = read_committed(&copy, WAL_HEADER_SIZE)
            .expect("reads")
            .expect("segment");
        assert!(
            torn.end < whole.end,
            "the damaged last commit is not shipped"
        );
    }
}

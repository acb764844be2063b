//! The `wal-shipper` thread: every sync interval the WAL frames committed since the last sync
//! become one level-0 LTX file in the replica (latest version of each page), and the writer is
//! told it may checkpoint them. After each sync it compacts levels 1..n on wall-clock multiples
//! of their intervals, writes a level-9 snapshot every `snapshot.interval`, and deletes what
//! retention allows without ever leaving a gap.
//!
//! Continuity: TXIDs continue from the replica's highest. At start the shipper cannot know which
//! of the local frames the replica already has, so it ships the whole database once: as the
//! snapshot (TXID 1) on an empty replica, else as a level-0 file holding every page. That file
//! is larger than a delta but never leaves a gap or an overlap. The same happens after the writer
//! had to checkpoint frames the replica never got (see `CheckpointGate`).
//!
//! Failures: serving goes on; the shipper retries with capped backoff, logs at most every 30 s,
//! and reports in `ReplicaStatus`. Frames wait in the WAL (the writer cannot checkpoint them), so
//! the replica catches up with no gap when it is back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::ReplicationConfig;
use super::ltx::{self, Header};
use super::replica::{LtxFile, Replica, ReplicaError};
use super::restore::{self, RestoreError, Target};
use super::status::ReplicaStatus;
use super::wal::{self, WAL_HEADER_SIZE};
use crate::store::CheckpointGate;

/// Level-9 files are snapshots: the whole database, `[1, X]`.
pub const SNAPSHOT_LEVEL: u32 = 9;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const LOG_EVERY: Duration = Duration::from_secs(30);
/// How long a sync waits for the writer to reach a commit boundary and hold.
const BARRIER_WAIT: Duration = Duration::from_millis(100);
/// Files fetched at once when compacting or snapshotting.
const READ_PARALLELISM: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("reading the wal: {0}")]
    Wal(#[from] wal::WalError),
    #[error("encoding ltx: {0}")]
    Ltx(#[from] ltx::LtxError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

pub struct Shipper {
    db_path: PathBuf,
    wal_path: PathBuf,
    replica: Arc<dyn Replica>,
    config: ReplicationConfig,
    gate: Arc<CheckpointGate>,
    status: Arc<ReplicaStatus>,
    /// What the replica holds, as listed at start and kept up to date by our own writes.
    files: Option<Vec<LtxFile>>,
    txid: u64,
    /// Where the last read of the WAL stopped (None: read it from the top).
    cursor: Option<wal::Cursor>,
    /// The whole database must go next (at start, or after the writer passed unshipped
    /// frames); cleared only once it is in the replica.
    image_pending: bool,
    /// Per compaction level, the wall-clock slot (time / interval) last compacted.
    compacted_slot: Vec<u64>,
}

impl Shipper {
    pub fn new(
        db_path: &Path,
        replica: Arc<dyn Replica>,
        config: ReplicationConfig,
        gate: Arc<CheckpointGate>,
        status: Arc<ReplicaStatus>,
    ) -> Self {
        let now = unix_secs(SystemTime::now());
        let compacted_slot = config
            .levels
            .iter()
            .map(|i| now / i.as_secs().max(1))
            .collect();
        Self {
            db_path: db_path.to_owned(),
            wal_path: PathBuf::from(format!("{}-wal", db_path.display())),
            replica,
            config,
            gate,
            status,
            files: None,
            txid: 0,
            cursor: None,
            image_pending: true,
            compacted_slot,
        }
    }

    pub fn txid(&self) -> u64 {
        self.txid
    }

    /// One round: list the replica and ship the whole database on the first, then ship what
    /// was committed since. Returns whether a file was written.
    pub fn step(&mut self) -> Result<bool, ShipError> {
        if self.files.is_none() {
            let files = self.replica.list()?;
            self.txid = files.iter().map(|f| f.max_txid).max().unwrap_or(0);
            self.files = Some(files);
        }
        if self.gate.take_image_wanted() {
            self.image_pending = true;
        }
        if self.image_pending {
            let shipped = self.ship_image()?;
            self.image_pending = !shipped;
            return Ok(shipped);
        }
        let synced = self.try_sync();
        // Whatever happened, the writer must not stay held.
        self.gate.end_barrier();
        synced
    }

    fn ship_image(&mut self) -> Result<bool, ShipError> {
        let epoch = self.gate.epoch();
        if epoch % 2 == 1 {
            // A checkpoint is copying pages into the file right now.
            return Ok(false);
        }
        let file = std::fs::read(&self.db_path).map_err(|source| ShipError::Read {
            path: self.db_path.display().to_string(),
            source,
        })?;
        if file.len() < 100 {
            return Ok(false);
        }
        let page_size = match u16::from_be_bytes([file[16], file[17]]) {
            1 => 65536,
            n => u32::from(n),
        };
        let mut pages: BTreeMap<u32, Vec<u8>> = file
            .chunks(page_size as usize)
            .enumerate()
            .map(|(i, p)| (i as u32 + 1, p.to_vec()))
            .collect();
        let mut commit = pages.len() as u32;
        let mut cursor = None;
        if let Some(segment) = wal::read_committed(&self.wal_path, WAL_HEADER_SIZE)? {
            if segment.commit > 0 {
                commit = segment.commit;
                pages.extend(segment.pages);
            }
            cursor = Some(segment.cursor);
        }
        if self.gate.epoch() != epoch {
            // A checkpoint began or ended while we read: the file may mix two states. Next round.
            return Ok(false);
        }
        let lock = ltx::lock_page(page_size);
        pages.retain(|p, _| *p <= commit && *p != lock);
        let first = self.txid == 0;
        let txid = self.txid + 1;
        let header = Header {
            page_size,
            commit,
            min_txid: if first { 1 } else { txid },
            max_txid: txid,
            timestamp_ms: now_ms(),
            ..Header::default()
        };
        let bytes = ltx::encode(&header, pages.iter().map(|(p, d)| (*p, d.as_slice())))?;
        if first {
            self.write(SNAPSHOT_LEVEL, &header, bytes.clone())?;
        }
        self.write(0, &header, bytes)?;
        self.txid = txid;
        self.cursor = cursor;
        self.gate.shipped(epoch, self.offset());
        self.report_synced();
        Ok(true)
    }

    fn offset(&self) -> u64 {
        self.cursor.map_or(WAL_HEADER_SIZE, |c| c.end)
    }

    /// Ships what was committed since the last sync; returns whether a file was written.
    pub fn try_sync(&mut self) -> Result<bool, ShipError> {
        let started = Instant::now();
        let epoch = self.gate.epoch();
        let read = match &self.cursor {
            Some(cursor) => wal::read_after(&self.wal_path, cursor)?,
            None => wal::read_committed(&self.wal_path, WAL_HEADER_SIZE)?,
        };
        let Some(mut segment) = read else {
            // No WAL (or an empty one after a truncating checkpoint): start over at its top.
            self.cursor = None;
            self.report_synced();
            return Ok(false);
        };
        if self.cursor.map(|c| c.salts) != Some(segment.cursor.salts) {
            // A new WAL generation. Unless the writer had to pass unshipped frames (then the
            // whole database goes next), everything in the old one was shipped.
            if self.gate.take_image_wanted() {
                self.image_pending = true;
                let shipped = self.ship_image()?;
                self.image_pending = !shipped;
                return Ok(shipped);
            }
        }
        // When the writer wants to truncate: with most of the WAL read, the writer holds at its
        // next commit while the tail is read, so this one file holds everything and the writer
        // can truncate (the WAL stays within one interval of growth, the hold stays short).
        if self.gate.truncate_wanted() && self.gate.begin_barrier(BARRIER_WAIT) {
            if let Some(tail) = wal::read_after(&self.wal_path, &segment.cursor)? {
                if tail.cursor.salts == segment.cursor.salts {
                    segment.pages.extend(tail.pages);
                    if tail.commit > 0 {
                        segment.commit = tail.commit;
                    }
                    segment.end = tail.end;
                    segment.cursor = tail.cursor;
                }
            }
        }
        if segment.pages.is_empty() {
            self.cursor = Some(segment.cursor);
            self.gate.shipped(epoch, self.offset());
            self.report_synced();
            return Ok(false);
        }
        let txid = self.txid + 1;
        let header = Header {
            page_size: segment.header.page_size,
            commit: segment.commit,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: now_ms(),
            ..Header::default()
        };
        let lock = ltx::lock_page(segment.header.page_size);
        segment
            .pages
            .retain(|p, _| *p <= segment.commit && *p != lock);
        let read = started.elapsed();
        let bytes = ltx::encode(
            &header,
            segment.pages.iter().map(|(p, d)| (*p, d.as_slice())),
        )?;
        let encoded = started.elapsed();
        self.write(0, &header, bytes)?;
        tracing::debug!(
            txid,
            pages = segment.pages.len(),
            wal_bytes = segment.end - segment.start,
            read_ms = read.as_millis() as u64,
            encode_ms = (encoded - read).as_millis() as u64,
            write_ms = (started.elapsed() - encoded).as_millis() as u64,
            "synced"
        );
        metrics::histogram!("dropd_replica_sync_seconds").record(started.elapsed().as_secs_f64());
        self.txid = txid;
        self.cursor = Some(segment.cursor);
        self.gate.shipped(epoch, self.offset());
        self.report_synced();
        Ok(true)
    }

    fn pending_wal_bytes(&self) -> u64 {
        std::fs::metadata(&self.wal_path)
            .map_or(0, |m| m.len())
            .saturating_sub(self.offset())
    }

    fn report_synced(&self) {
        self.status.synced(self.txid, self.pending_wal_bytes());
    }

    fn write(&mut self, level: u32, header: &Header, bytes: Vec<u8>) -> Result<(), ShipError> {
        let size = bytes.len() as u64;
        let written = self.replica.write(level, header, bytes)?;
        self.status.uploaded(size);
        if let Some(files) = &mut self.files {
            files.push(written);
        }
        Ok(())
    }

    /// Compaction, snapshots and retention, each when due.
    pub fn maintain(&mut self, now: SystemTime) -> Result<(), ShipError> {
        let secs = unix_secs(now);
        let mut first_error = None;
        for i in 0..self.config.levels.len() {
            let slot = secs / self.config.levels[i].as_secs().max(1);
            if slot != self.compacted_slot[i] {
                match self.compact(i as u32 + 1) {
                    Ok(()) => self.compacted_slot[i] = slot,
                    // A level that failed stops the levels above it this round.
                    Err(err) => {
                        first_error.get_or_insert(err);
                        break;
                    }
                }
            }
        }
        if self.snapshot_due(now) {
            if let Err(err) = self.snapshot() {
                first_error.get_or_insert(err);
            }
        }
        if self.config.retention_enabled {
            let files = self.files.as_deref().unwrap_or_default();
            let expired = expired(files, now, &self.config);
            if !expired.is_empty() {
                match self.replica.delete(&expired) {
                    Ok(()) => {
                        if let Some(files) = &mut self.files {
                            files.retain(|f| !expired.contains(f));
                        }
                    }
                    Err(err) => {
                        first_error.get_or_insert(err.into());
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Folds the files of `level - 1` that `level` does not cover yet into one file.
    pub fn compact(&mut self, level: u32) -> Result<(), ShipError> {
        let files = self.files.as_deref().unwrap_or_default();
        let done = files
            .iter()
            .filter(|f| f.level == level)
            .map(|f| f.max_txid)
            .max()
            .unwrap_or(0);
        let mut sources: Vec<&LtxFile> = files
            .iter()
            .filter(|f| f.level == level - 1 && f.max_txid > done)
            .collect();
        sources.sort_by_key(|f| (f.min_txid, std::cmp::Reverse(f.max_txid)));
        let mut chain: Vec<LtxFile> = Vec::new();
        for file in sources {
            match chain.last() {
                None => chain.push(file.clone()),
                Some(last) if file.min_txid > last.max_txid + 1 => break,
                Some(last) if file.max_txid > last.max_txid => chain.push(file.clone()),
                Some(_) => {}
            }
        }
        let Some(first) = chain.first() else {
            return Ok(());
        };
        let min_txid = first.min_txid;
        let image = restore::materialize(&*self.replica, &chain, READ_PARALLELISM, &|_| {})?;
        self.write_image(level, min_txid, &image)
    }

    fn write_image(
        &mut self,
        level: u32,
        min_txid: u64,
        image: &restore::Image,
    ) -> Result<(), ShipError> {
        let header = Header {
            page_size: image.page_size,
            commit: image.commit,
            min_txid,
            max_txid: image.max_txid,
            timestamp_ms: image.timestamp_ms,
            ..Header::default()
        };
        let bytes = ltx::encode(&header, image.pages.iter().map(|(p, d)| (*p, d.as_slice())))?;
        self.write(level, &header, bytes)
    }

    fn snapshot_due(&self, now: SystemTime) -> bool {
        let files = self.files.as_deref().unwrap_or_default();
        let newest = files
            .iter()
            .filter(|f| f.level == SNAPSHOT_LEVEL)
            .max_by_key(|f| f.max_txid);
        match newest {
            None => !files.is_empty(),
            Some(s) => {
                s.max_txid < self.txid
                    && now
                        .duration_since(s.written)
                        .is_ok_and(|age| age >= self.config.snapshot_interval)
            }
        }
    }

    /// Writes the replica's latest state as a level-9 file `[1, txid]`.
    pub fn snapshot(&mut self) -> Result<(), ShipError> {
        let files = self.files.as_deref().unwrap_or_default();
        let chain = restore::plan(files, Target::Latest, "the replica")?;
        let image = restore::materialize(&*self.replica, &chain, READ_PARALLELISM, &|_| {})?;
        self.write_image(SNAPSHOT_LEVEL, 1, &image)
    }

    /// Syncs every sync interval (or at once when the writer asks) until the server stops,
    /// then once more.
    pub fn run_until_stopped(mut self) {
        let interval = self.config.sync_interval;
        // Syncs keep a fixed schedule, so the time a sync takes does not add to the lag.
        let mut next = Instant::now();
        let mut failures: u32 = 0;
        let mut last_logged: Option<Instant> = None;
        let mut last_maintenance_log: Option<Instant> = None;
        loop {
            let running = self
                .gate
                .wait_for_work(next.saturating_duration_since(Instant::now()));
            let result = self.step();
            if result.is_ok() && running {
                // Compaction, snapshots and retention failing does not stop shipping, and is
                // not a replica outage for the writer; skipped on the last round so a stop is
                // never held up by a snapshot.
                if let Err(err) = self.maintain(SystemTime::now()) {
                    self.status.maintenance_failed(err.to_string());
                    if last_maintenance_log.is_none_or(|t: Instant| t.elapsed() >= LOG_EVERY) {
                        last_maintenance_log = Some(Instant::now());
                        tracing::error!(error = %err, "compaction, snapshot or retention failed; shipping goes on");
                    }
                }
            }
            match result {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!(
                            txid = self.txid,
                            failures,
                            "the replica is reachable again and caught up"
                        );
                    }
                    failures = 0;
                    next = (next + interval).max(Instant::now());
                    self.gate.set_failing(false);
                }
                Err(err) => {
                    failures += 1;
                    self.gate.set_failing(true);
                    self.status
                        .failed(err.to_string(), self.pending_wal_bytes());
                    if last_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        last_logged = Some(Instant::now());
                        tracing::error!(error = %err, failures, "replicating failed; serving goes on and the shipper retries");
                    }
                    next = Instant::now()
                        + interval
                            .saturating_mul(1 << failures.min(6))
                            .min(MAX_BACKOFF)
                            .max(interval);
                }
            }
            if !running {
                break;
            }
        }
        tracing::info!(txid = self.txid, "wal-shipper stopped");
    }
}

/// The files retention may delete: snapshots older than `snapshot.retention` (never the
/// newest), anything every kept snapshot already covers, and level-0 files that level 1 holds
/// and that are older than `l0-retention`. Deletes nothing if the rest could not be restored.
pub fn expired(files: &[LtxFile], now: SystemTime, config: &ReplicationConfig) -> Vec<LtxFile> {
    let old =
        |f: &LtxFile, keep: Duration| now.duration_since(f.written).is_ok_and(|age| age > keep);
    let mut snapshots: Vec<&LtxFile> = files.iter().filter(|f| f.level == SNAPSHOT_LEVEL).collect();
    snapshots.sort_by_key(|f| f.max_txid);
    let Some(newest) = snapshots.last() else {
        return Vec::new();
    };
    let newest_max = newest.max_txid;
    let kept_snapshots: Vec<&&LtxFile> = snapshots
        .iter()
        .filter(|f| f.max_txid == newest_max || !old(f, config.snapshot_retention))
        .collect();
    let oldest_kept = kept_snapshots
        .iter()
        .map(|f| f.max_txid)
        .min()
        .unwrap_or(newest_max);
    let level1_max = files
        .iter()
        .filter(|f| f.level == 1)
        .map(|f| f.max_txid)
        .max();
    let expired: Vec<LtxFile> = files
        .iter()
        .filter(|f| {
            if f.level == SNAPSHOT_LEVEL {
                return !kept_snapshots.iter().any(|k| **k == *f);
            }
            if f.max_txid <= oldest_kept {
                return true;
            }
            f.level == 0
                && !config.levels.is_empty()
                && level1_max.is_some_and(|m| f.max_txid <= m)
                && old(f, config.l0_retention)
        })
        .cloned()
        .collect();
    let kept: Vec<LtxFile> = files
        .iter()
        .filter(|f| !expired.contains(f))
        .cloned()
        .collect();
    if restore::plan(&kept, Target::Latest, "the replica").is_err() {
        tracing::warn!("retention would leave the replica unrestorable; deleting nothing");
        return Vec::new();
    }
    expired
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicate::replica::{FileReplica, ReplicaTarget};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A file replica whose next `fail_writes` uploads fail, as an unreachable S3 would.
    struct Flaky {
        inner: FileReplica,
        fail_writes: AtomicUsize,
    }

    impl Replica for Flaky {
        fn list(&self) -> Result<Vec<LtxFile>, ReplicaError> {
            self.inner.list()
        }
        fn read(&self, file: &LtxFile) -> Result<Vec<u8>, ReplicaError> {
            self.inner.read(file)
        }
        fn write(
            &self,
            level: u32,
            header: &Header,
            bytes: Vec<u8>,
        ) -> Result<LtxFile, ReplicaError> {
            if self
                .fail_writes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(ReplicaError::Url("the replica is down".into()));
            }
            self.inner.write(level, header, bytes)
        }
        fn delete(&self, files: &[LtxFile]) -> Result<(), ReplicaError> {
            self.inner.delete(files)
        }
    }

    #[test]
    fn a_whole_database_that_failed_to_upload_is_sent_again_never_a_delta_instead() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&db).expect("db");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x TEXT);",
        )
        .expect("schema");
        let insert = |n: usize| {
            for i in 0..n {
                conn.execute("INSERT INTO t VALUES (?1)", [format!("{i:0>300}")])
                    .expect("insert");
            }
        };
        insert(50);
        let replica = Arc::new(Flaky {
            inner: FileReplica::new(dir.path().join("replica")),
            fail_writes: AtomicUsize::new(1),
        });
        let gate = Arc::new(CheckpointGate::default());
        let mut shipper = Shipper::new(
            &db,
            replica.clone(),
            ReplicationConfig::for_target(ReplicaTarget::File(dir.path().join("replica"))),
            gate.clone(),
            Arc::new(ReplicaStatus::new("test".into())),
        );
        assert!(shipper.step().is_err(), "the first upload fails");
        assert!(
            shipper.step().expect("retried"),
            "the start-up image is sent again"
        );

        // Unshipped commits, then the writer forced past them (the WAL limit while the replica
        // was down), then more commits in the new WAL; the first upload after that fails too.
        insert(7);
        gate.truncating();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        gate.truncated(true);
        insert(5);
        replica.fail_writes.store(1, Ordering::SeqCst);
        assert!(shipper.step().is_err());
        assert!(shipper.step().expect("retried"));

        let files = replica.list().expect("listed");
        let chain = restore::plan(&files, Target::Latest, "r").expect("plan");
        let out = dir.path().join("restored.db");
        restore::apply(&*replica, &chain, &out, 2, &|_| {}).expect("restored");
        let restored = rusqlite::Connection::open(&out).expect("opens");
        let rows: i64 = restored
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(
            rows, 62,
            "the seven commits the writer passed are in the replica"
        );
    }

    fn file(level: u32, min: u64, max: u64, age_secs: u64, now: SystemTime) -> LtxFile {
        LtxFile {
            level,
            min_txid: min,
            max_txid: max,
            key: format!("{level}/{min}-{max}"),
            size: 0,
            written: now - Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn retention_drops_old_snapshots_and_compacted_level_zero_but_never_leaves_a_gap() {
        let now = SystemTime::now();
        let config = ReplicationConfig::for_target(ReplicaTarget::File("/r".into()));
        let day = 24 * 3600;
        let files = vec![
            file(9, 1, 10, 2 * day, now),
            file(0, 9, 9, 2 * day, now),
            file(0, 10, 10, 2 * day, now),
            file(1, 11, 20, day + 60, now),
            file(9, 1, 20, day - 60, now),
            file(0, 11, 11, day, now),
            file(1, 21, 30, 600, now),
            file(0, 21, 21, 600, now),
            file(0, 30, 30, 400, now),
            file(0, 31, 31, 10, now),
            file(0, 32, 32, 1, now),
        ];
        let expired = expired(&files, now, &config);
        let names: Vec<(u32, u64, u64)> = expired
            .iter()
            .map(|f| (f.level, f.min_txid, f.max_txid))
            .collect();
        assert_eq!(
            names,
            vec![
                (9, 1, 10),
                (0, 9, 9),
                (0, 10, 10),
                (1, 11, 20),
                (0, 11, 11),
                (0, 21, 21),
                (0, 30, 30)
            ]
        );
        let kept: Vec<LtxFile> = files.into_iter().filter(|f| !expired.contains(f)).collect();
        let chain = restore::plan(&kept, Target::Latest, "r").expect("still restorable");
        assert_eq!(chain.last().map(|f| f.max_txid), Some(32));
    }

    #[test]
    fn retention_keeps_everything_when_deleting_would_break_the_chain() {
        let now = SystemTime::now();
        let config = ReplicationConfig::for_target(ReplicaTarget::File("/r".into()));
        // Level 1 claims to cover 1..20, but a level-0 file in between is all that links the
        // snapshot to the rest: deleting would leave 11..15 unreachable.
        let files = vec![
            file(9, 1, 10, 60, now),
            file(1, 16, 20, 3600, now),
            file(0, 11, 15, 3600, now),
            file(0, 21, 21, 1, now),
        ];
        assert!(expired(&files, now, &config).is_empty());
    }
}

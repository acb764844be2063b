//! The `wal-shipper` thread: every sync interval the WAL frames committed since the last sync
//! become one level-0 LTX file in the replica (latest version of each page), and the writer is
//! told it may checkpoint them. After each sync it compacts levels 1..n on wall-clock multiples
//! of their intervals, writes a level-9 snapshot every `snapshot.interval`, and deletes what
//! retention allows without ever leaving a gap.
//!
//! Continuity: TXIDs continue from the replica's highest. At start the shipper ships the whole
//! database once (`image`): as the snapshot (TXID 1) on an empty replica, else as a level-0
//! file holding every page, because after a crash or a restore it cannot know which local
//! frames the replica has. After a clean stop that left the replica ending with exactly this
//! database (`position`), it resumes instead. The image is shipped again whenever frames the
//! replica lacks were folded away: by the writer at the WAL limit (see `handshake`), or by
//! another process that checkpointed and restarted the WAL despite the writer's guard.
//!
//! Every byte of the database and its WAL is read through the descriptors the process keeps
//! (`store::DbFiles`): opening and closing one here would drop SQLite's locks.
//!
//! Failures: serving goes on; the shipper retries with capped backoff, logs at most every 30 s,
//! and reports in `ReplicaStatus`. Frames wait in the WAL (the writer cannot checkpoint them), so
//! the replica catches up with no gap when it is back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::ReplicationConfig;
use super::image::{self, Uploads};
use super::ltx::{self, Encoder, Header};
use super::replica::{LtxFile, Replica, ReplicaError};
use super::restore::{self, RestoreError, Target};
use super::status::{ImageReport, ReplicaStatus};
use super::wal::{self, WAL_HEADER_SIZE};
use super::{compact, position, retention};
use crate::handshake::ShipperGate;
use crate::store::DbFiles;

/// Level-9 files are snapshots: the whole database, `[1, X]`.
pub const SNAPSHOT_LEVEL: u32 = 9;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const LOG_EVERY: Duration = Duration::from_secs(30);
/// How long a sync waits for the writer to reach a commit boundary and hold.
const BARRIER_WAIT: Duration = Duration::from_millis(100);

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
    Ltx(ltx::LtxError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

pub struct Shipper {
    files: Arc<DbFiles>,
    replica: Arc<dyn Replica>,
    config: ReplicationConfig,
    gate: ShipperGate,
    status: Arc<ReplicaStatus>,
    /// What the replica holds, as listed at start and kept up to date by our own writes.
    listed: Option<Vec<LtxFile>>,
    txid: u64,
    /// Where the last read of the WAL stopped (None: read it from the top), and the writer's
    /// checkpoint epoch before that read: a new WAL generation in the same epoch was not made
    /// by the writer.
    cursor: Option<wal::Cursor>,
    cursor_epoch: u64,
    /// The whole database must go next (at start, or after frames the replica lacks were
    /// folded away); cleared only once it is in the replica.
    image_pending: bool,
    image_reason: &'static str,
    /// The TXID a clean stop left the replica at with exactly this database (see `position`).
    resume: Option<u64>,
    /// The last sync found the WAL restarted under it and shipped nothing.
    interrupted: bool,
    /// Per compaction level, the wall-clock slot (time / interval) last compacted.
    compacted_slot: Vec<u64>,
}

impl Shipper {
    pub fn new(
        files: Arc<DbFiles>,
        replica: Arc<dyn Replica>,
        config: ReplicationConfig,
        gate: ShipperGate,
        status: Arc<ReplicaStatus>,
    ) -> Self {
        let now = unix_secs(SystemTime::now());
        let compacted_slot = config
            .levels
            .iter()
            .map(|i| now / i.as_secs().max(1))
            .collect();
        Self {
            files,
            replica,
            config,
            gate,
            status,
            listed: None,
            txid: 0,
            cursor: None,
            cursor_epoch: 0,
            image_pending: true,
            image_reason: "start",
            resume: None,
            interrupted: false,
            compacted_slot,
        }
    }

    /// Continues the replica at `txid` without an image, if it still ends there when listed.
    pub fn resuming(mut self, txid: Option<u64>) -> Self {
        self.resume = txid;
        self
    }

    pub fn txid(&self) -> u64 {
        self.txid
    }

    fn want_image(&mut self, reason: &'static str) {
        self.image_pending = true;
        self.image_reason = reason;
    }

    /// One round: list the replica and ship the whole database on the first, then ship what
    /// was committed since. Returns whether a file was written.
    pub fn step(&mut self) -> Result<bool, ShipError> {
        if self.listed.is_none() {
            let files = self.replica.list()?;
            self.txid = files.iter().map(|f| f.max_txid).max().unwrap_or(0);
            self.listed = Some(files);
            self.cursor_epoch = self.gate.epoch();
            match self.resume.take() {
                Some(txid) if txid == self.txid && txid > 0 => {
                    tracing::info!(
                        txid,
                        "the replica ends with this database's state: resuming without an image"
                    );
                    self.image_pending = false;
                }
                Some(txid) => {
                    tracing::warn!(
                        recorded = txid,
                        replica = self.txid,
                        "the replica moved since the last clean stop; shipping the whole database"
                    );
                }
                None => {}
            }
        }
        if self.gate.take_image_wanted() {
            self.want_image("the writer folded away frames the replica lacked");
        }
        if self.image_pending {
            let shipped = self.ship_image()?;
            self.image_pending = !shipped;
            return Ok(shipped);
        }
        self.try_sync()
    }

    fn ship_image(&mut self) -> Result<bool, ShipError> {
        let _reading = self.gate.reading_image();
        self.read_and_ship_image()
    }

    fn read_and_ship_image(&mut self) -> Result<bool, ShipError> {
        let epoch = self.gate.epoch();
        if epoch % 2 == 1 {
            // A checkpoint is copying pages into the file right now.
            return Ok(false);
        }
        let started = Instant::now();
        let rss_before = image::rss_bytes();
        let Some(scan) = image::scan(&self.files)? else {
            return Ok(false);
        };
        let first = self.txid == 0;
        let txid = self.txid + 1;
        let header = Header {
            page_size: scan.page_size,
            commit: scan.commit,
            min_txid: if first { 1 } else { txid },
            max_txid: txid,
            timestamp_ms: now_ms(),
            ..Header::default()
        };
        header.validate()?;
        let mut uploads = Uploads {
            uploads: Vec::new(),
        };
        let levels: &[u32] = if first { &[SNAPSHOT_LEVEL, 0] } else { &[0] };
        for level in levels {
            match self.replica.create(*level, &header) {
                Ok(upload) => uploads.uploads.push(upload),
                Err(err) => {
                    uploads.abort();
                    return Err(err.into());
                }
            }
        }
        let mut encoder = Encoder::new(&header, uploads)?;
        let gate = self.gate.clone();
        let written =
            image::write_pages(&self.files, &scan, &mut encoder, &|| gate.epoch() == epoch)
                .and_then(|complete| {
                    if complete {
                        encoder.finish()?;
                    }
                    Ok(complete)
                });
        let pages = encoder.pages();
        let uploads = encoder.into_inner();
        match written {
            Ok(true) if self.gate.epoch() == epoch => {}
            Ok(_) => {
                // A checkpoint began or ended while we read: the file may mix two states.
                uploads.abort();
                return Ok(false);
            }
            Err(err) => {
                uploads.abort();
                return Err(err);
            }
        }
        let files = uploads.finish()?;
        let bytes = files.last().map_or(0, |f| f.size);
        for file in files {
            self.status.uploaded(file.size);
            if let Some(listed) = &mut self.listed {
                listed.push(file);
            }
        }
        self.txid = txid;
        self.cursor = scan.cursor();
        self.cursor_epoch = epoch;
        self.gate.shipped(epoch, self.offset());
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            txid,
            pages,
            bytes,
            seconds,
            reason = self.image_reason,
            "shipped the whole database"
        );
        self.status.image_shipped(ImageReport {
            txid: format!("{txid:016x}"),
            pages,
            bytes,
            seconds,
            rss_before_bytes: rss_before,
            reason: self.image_reason,
        });
        self.report_synced();
        Ok(true)
    }

    fn offset(&self) -> u64 {
        self.cursor.map_or(WAL_HEADER_SIZE, |c| c.end)
    }

    /// True if the WAL generation changed (or the WAL emptied) since the cursor was taken
    /// without the writer truncating it: another process checkpointed and restarted it, so
    /// frames the replica lacks may be gone from the WAL (they are in the database file).
    fn restarted_by_another_process(&self, epoch: u64, writer_may_restart: bool) -> bool {
        self.cursor.is_some_and(|c| c.end > WAL_HEADER_SIZE)
            && epoch == self.cursor_epoch
            && !writer_may_restart
    }

    /// Ships what was committed since the last sync; returns whether a file was written.
    pub fn try_sync(&mut self) -> Result<bool, ShipError> {
        let started = Instant::now();
        self.interrupted = false;
        let (epoch, writer_may_restart) = self.gate.generation();
        let wal = self.files.wal();
        let read = match &self.cursor {
            Some(cursor) => wal::read_after(wal, cursor)?,
            None => wal::read_committed(wal, WAL_HEADER_SIZE)?,
        };
        let new_generation = read
            .as_ref()
            .is_none_or(|s| self.cursor.map(|c| c.salts) != Some(s.cursor.salts));
        if new_generation && self.restarted_by_another_process(epoch, writer_may_restart) {
            tracing::warn!(
                "another process checkpointed and restarted the WAL before the replica had all of                  it; shipping the whole database"
            );
            self.want_image("another process restarted the WAL");
            let shipped = self.ship_image()?;
            self.image_pending = !shipped;
            return Ok(shipped);
        }
        let Some(mut segment) = read else {
            // No WAL (or an empty one after a truncating checkpoint): start over at its top.
            self.cursor = None;
            self.cursor_epoch = epoch;
            self.report_synced();
            return Ok(false);
        };
        if new_generation && self.gate.take_image_wanted() {
            // The writer had to pass unshipped frames: the whole database goes next.
            self.want_image("the writer folded away frames the replica lacked");
            let shipped = self.ship_image()?;
            self.image_pending = !shipped;
            return Ok(shipped);
        }
        // When the writer wants to truncate: with most of the WAL read, the writer holds at its
        // next commit while the tail is read, so this one file holds everything and the writer
        // can truncate (the WAL stays within one interval of growth, the hold stays short).
        // Raised until this function returns, whichever way: the report below must reach a
        // writer that is still holding.
        let barrier = if self.gate.truncate_wanted() {
            self.gate.raise_barrier(BARRIER_WAIT)
        } else {
            None
        };
        if barrier.is_some() {
            if let Some(tail) = wal::read_after(wal, &segment.cursor)? {
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
            self.cursor_epoch = epoch;
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
        let mut upload = self.replica.create(0, &header)?;
        let encoded = (|| {
            let mut encoder = Encoder::new(&header, &mut *upload)?;
            let mut buf = Vec::new();
            for (pgno, at) in &segment.pages {
                if *pgno > segment.commit || *pgno == lock {
                    continue;
                }
                let page = segment.page(wal, *pgno, *at, &mut buf)?;
                encoder.page(*pgno, page)?;
            }
            encoder.finish()?;
            Ok::<_, ShipError>(encoder.pages())
        })();
        let pages = match encoded {
            Ok(pages) => pages,
            Err(ShipError::Wal(wal::WalError::Restarted)) => {
                // Read again from the cursor next round, in whatever generation the WAL is.
                upload.abort();
                tracing::debug!("the WAL was restarted while a sync read it; reading it again");
                self.interrupted = true;
                return Ok(false);
            }
            Err(err) => {
                upload.abort();
                return Err(err);
            }
        };
        let encoded = started.elapsed();
        let written = upload.finish()?;
        self.status.uploaded(written.size);
        if let Some(listed) = &mut self.listed {
            listed.push(written);
        }
        tracing::debug!(
            txid,
            pages,
            wal_bytes = segment.end - segment.start,
            encode_ms = encoded.as_millis() as u64,
            write_ms = (started.elapsed() - encoded).as_millis() as u64,
            "synced"
        );
        metrics::histogram!("dropd_replica_sync_seconds").record(started.elapsed().as_secs_f64());
        self.txid = txid;
        self.cursor = Some(segment.cursor);
        self.cursor_epoch = epoch;
        self.gate.shipped(epoch, self.offset());
        self.report_synced();
        Ok(true)
    }

    fn pending_wal_bytes(&self) -> u64 {
        self.files.wal_len().saturating_sub(self.offset())
    }

    fn report_synced(&self) {
        self.status.synced(self.txid, self.pending_wal_bytes());
    }

    /// After the last round, with the writer stopped: true if the replica holds everything the
    /// database and its WAL hold.
    fn everything_shipped(&self) -> bool {
        let wal_len = self.files.wal_len();
        !self.image_pending
            && !self.interrupted
            && self.txid > 0
            && (wal_len == 0 || self.cursor.is_some_and(|c| c.end == wal_len))
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
            let files = self.listed.as_deref().unwrap_or_default();
            let expired = retention::expired(files, now, &self.config);
            if !expired.is_empty() {
                match self.replica.delete(&expired) {
                    Ok(()) => {
                        if let Some(files) = &mut self.listed {
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
        let files = self.listed.as_deref().unwrap_or_default();
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
        self.merged(compact::merge(&*self.replica, &chain, level, min_txid)?);
        Ok(())
    }

    fn merged(&mut self, written: Option<LtxFile>) {
        if let Some(file) = written {
            self.status.uploaded(file.size);
            if let Some(files) = &mut self.listed {
                files.push(file);
            }
        }
    }

    fn snapshot_due(&self, now: SystemTime) -> bool {
        let files = self.listed.as_deref().unwrap_or_default();
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
        let files = self.listed.as_deref().unwrap_or_default();
        let chain = restore::plan(files, Target::Latest, "the replica")?;
        self.merged(compact::merge(&*self.replica, &chain, SNAPSHOT_LEVEL, 1)?);
        Ok(())
    }

    /// Syncs every sync interval (or at once when the writer asks) until the server stops,
    /// then once more, and notes where that left the replica.
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
            let ok = result.is_ok();
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
                if ok && self.everything_shipped() {
                    let target = self.config.target.to_string();
                    if let Err(err) = position::record(self.files.db_path(), &target, self.txid) {
                        tracing::warn!(error = %err, "could not note the replica position; the next start ships the whole database");
                    }
                }
                // Held through the last sync (the writer has stopped): now nothing replicates.
                self.gate.close_hold();
                break;
            }
        }
        tracing::info!(txid = self.txid, "wal-shipper stopped");
    }
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
        fn create(
            &self,
            level: u32,
            header: &Header,
        ) -> Result<Box<dyn crate::replicate::replica::Upload + '_>, ReplicaError> {
            if self
                .fail_writes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(ReplicaError::Url("the replica is down".into()));
            }
            self.inner.create(level, header)
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
        let crate::handshake::Handshake {
            writer: gate,
            shipper: shipper_gate,
            ..
        } = crate::handshake::Handshake::with_default_sizes();
        let mut shipper = Shipper::new(
            DbFiles::keep(&db).expect("kept"),
            replica.clone(),
            ReplicationConfig::for_target(ReplicaTarget::File(dir.path().join("replica"))),
            shipper_gate,
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
}

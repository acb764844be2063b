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

mod maintain;
mod sync;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::ReplicationConfig;
pub use super::error::ShipError;
use super::replica::{LtxFile, Replica};
use super::status::ReplicaStatus;
use super::{position, wal};
use crate::handshake::ShipperGate;
use crate::store::DbFiles;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const LOG_EVERY: Duration = Duration::from_secs(30);

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

    pub(super) fn want_image(&mut self, reason: &'static str) {
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
    use crate::replicate::ltx::Header;
    use crate::replicate::replica::{FileReplica, ReplicaError, ReplicaTarget};
    use crate::replicate::restore::{self, Target};
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
        fn read_lease(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError> {
            self.inner.read_lease()
        }
        fn write_lease(
            &self,
            bytes: Vec<u8>,
            expected: Option<&str>,
        ) -> Result<Option<String>, ReplicaError> {
            self.inner.write_lease(bytes, expected)
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

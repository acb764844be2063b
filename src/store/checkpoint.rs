//! The writer's half of checkpoint gating (`handshake` is the protocol): with a replica
//! attached, the one connection that writes the database checkpoints only WAL frames the
//! shipper has shipped, keeps the WAL near `checkpoint_wal_size` by holding at the shipper's
//! barrier, and under `max_wal_size` even when the replica is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::files::DbFiles;
pub use super::guard::WalGuard;
use crate::handshake::WriterGate;

/// Longest the writer holds back commits waiting for the shipper so it can truncate the WAL.
const SHIP_WAIT: Duration = Duration::from_secs(2);
/// After a hold that ran out, how long before the writer holds again.
const SHIP_WAIT_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `PRAGMA wal_checkpoint(mode)`; true if every frame was checkpointed.
pub fn run(conn: &Connection, mode: &str) -> bool {
    let started = std::time::Instant::now();
    let sql = format!("PRAGMA wal_checkpoint({mode})");
    match conn.query_row(&sql, [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    }) {
        Ok((busy, log, done)) => {
            let ms = started.elapsed().as_millis() as u64;
            if ms > 50 {
                tracing::warn!(mode, busy, log, done, ms, "slow checkpoint");
            } else {
                tracing::debug!(mode, busy, log, done, ms, "checkpoint");
            }
            busy == 0 && log == done
        }
        Err(err) => {
            tracing::warn!(mode, error = %err, "checkpoint failed");
            false
        }
    }
}

/// The writer's half of the protocol, for the one connection that writes the database.
#[derive(Debug)]
pub struct GatedCheckpoints {
    gate: WriterGate,
    files: Arc<DbFiles>,
    next_hold: Instant,
    warned: bool,
    urged: bool,
}

impl GatedCheckpoints {
    pub fn new(gate: WriterGate, files: Arc<DbFiles>) -> Self {
        Self {
            gate,
            files,
            next_hold: Instant::now(),
            warned: false,
            urged: false,
        }
    }

    fn wal_len(&self) -> u64 {
        self.files.wal_len()
    }

    /// Lets other processes checkpoint again (the process is about to stop).
    pub fn release_guard(&mut self) {
        self.gate.release_wal();
    }

    /// After a COMMIT, before its answers: see `WriterGate::committed`.
    pub fn record_commit(&self) {
        self.gate.committed(self.wal_len());
    }

    fn truncate(&mut self, conn: &Connection, lost: bool) -> bool {
        self.gate.truncating();
        self.gate.release_wal();
        let done = run(conn, "TRUNCATE");
        self.gate.hold_wal();
        // Even a checkpoint reported as failed may have copied every frame, and SQLite then
        // restarts the WAL at the next write: the shipper's reports start over either way.
        self.gate.truncated(lost);
        if !done {
            self.gate.truncation_failed();
        }
        if done {
            self.warned = false;
            self.urged = false;
        }
        done
    }

    /// When nothing is queued: truncates if the replica has everything.
    pub fn when_idle(&mut self, conn: &Connection) -> bool {
        self.gate.hold_wal();
        let wal_len = self.wal_len();
        wal_len > 0 && self.gate.allows(wal_len) && self.truncate(conn, false)
    }

    /// After a commit: keeps the WAL near `checkpoint_wal_size` by holding for the shipper's
    /// next sync (one sync interval of growth at most), and under `max_wal_size` even when the
    /// replica is down. True if it truncated.
    pub fn after_commit(&mut self, conn: &Connection) -> bool {
        let gate = self.gate.clone();
        // A hold that failed (say, a busy moment) is tried again here rather than never.
        gate.hold_wal();
        let wal_len = self.wal_len();
        if wal_len < gate.checkpoint_wal_size() {
            return false;
        }
        if gate.allows(wal_len) {
            return self.truncate(conn, false);
        }
        if wal_len >= gate.max_wal_size() && !gate.image_in_progress() {
            tracing::error!(
                wal_bytes = wal_len,
                limit = gate.max_wal_size(),
                "the replica has been unreachable until the WAL reached its limit: checkpointing \
                 anyway; the replica gets the whole database when it is back, and loses the \
                 point-in-time history of the outage"
            );
            return self.truncate(conn, true);
        }
        if !self.warned && wal_len >= gate.max_wal_size() / 10 * 8 {
            self.warned = true;
            tracing::warn!(
                wal_bytes = wal_len,
                limit = gate.max_wal_size(),
                "the WAL is near its limit because the replica is not keeping up"
            );
        }
        gate.want_truncate();
        if !self.urged && wal_len >= gate.checkpoint_wal_size().saturating_mul(3) {
            // The scheduled sync is late (a starved core, a slow replica): ask for one now,
            // trading one extra file for the WAL bound.
            self.urged = true;
            gate.request_sync();
        }
        let now = Instant::now();
        if now < self.next_hold || !gate.barrier_requested() {
            return false;
        }
        if gate.hold_until_shipped(wal_len, SHIP_WAIT) {
            self.truncate(conn, false)
        } else {
            tracing::debug!(
                wal_bytes = wal_len,
                "the sync at the barrier did not ship everything; holding again later"
            );
            self.next_hold = now + SHIP_WAIT_BACKOFF;
            false
        }
    }
}

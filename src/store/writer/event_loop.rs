//! The writer thread's loop: waiting for commands, batching them, idle work (expiry, pruning,
//! checkpoints), and stopping when the database files were replaced under it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::domain::Clock;

use super::super::commands::Command;
use super::super::files::DbFiles;
use super::super::keys::KeyBook;
use super::super::memory::Memory;
use super::super::{expiry, idempotency, schedule, CommitListener, StoreError};
use super::group_commit::{run_batch, BatchChores, Verifier};
use super::{
    CHECKPOINT_SPACING, CHECKPOINT_WAL_BYTES, EXIT_STORAGE_REPLACED, IDLE_TICK,
    IDLE_TRUNCATE_AFTER, PAGE_SIZE, PRUNE_EVERY, WAL_FRAME_HEADER,
};

pub(super) struct WriterLoop {
    pub(super) conn: Connection,
    pub(super) rx: Receiver<Command>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) batch_limit: usize,
    pub(super) memory: Memory,
    pub(super) sweep_limit: i64,
    pub(super) box_id: Option<String>,
    pub(super) ledger_key: Option<Arc<crate::domain::ledger::LedgerKey>>,
    pub(super) ledger: bool,
    pub(super) next_expiry: Arc<AtomicI64>,
    /// When the next drop's close falls due (Unix ms; `i64::MAX` for none).
    pub(super) next_close: i64,
    /// The WAL index's frame count and salts after the last commit.
    pub(super) wal_frames: (u32, u64),
    pub(super) keys: Arc<KeyBook>,
    pub(super) next_prune: Instant,
    pub(super) verifier: Verifier,
    /// With a replica: checkpoints only past shipped frames (see `handshake`).
    pub(super) gated: Option<super::super::checkpoint::GatedCheckpoints>,
    pub(super) files: Arc<DbFiles>,
    pub(super) listener: Option<Arc<dyn CommitListener>>,
    pub(super) depth: Arc<AtomicI64>,
    pub(super) commits_since_checkpoint: u64,
    pub(super) commits_since_attempt: u64,
    /// When the last command arrived.
    pub(super) last_command: Instant,
    pub(super) health: Arc<super::WriterHealth>,
    pub(super) bell: Arc<crate::store::outbox::OutboxBell>,
    pub(super) outbox_retention_ms: i64,
}

impl WriterLoop {
    pub(super) fn run_until_stopped(&mut self) {
        self.publish_next_expiry();
        self.read_next_close();
        let mut queue = Vec::with_capacity(self.batch_limit);
        loop {
            self.health.turned();
            match self.rx.recv_timeout(IDLE_TICK) {
                Ok(cmd) => {
                    self.last_command = Instant::now();
                    queue.push(cmd);
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.try_idle_work();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let closed = self.drain_into(&mut queue);
            if self.try_run_batch(&mut queue) || closed {
                // Answer whatever was queued behind the shutdown request, then stop.
                loop {
                    let closed = self.drain_into(&mut queue);
                    if queue.is_empty() {
                        break;
                    }
                    self.try_run_batch(&mut queue);
                    if closed && queue.is_empty() {
                        break;
                    }
                }
                break;
            }
            if let Some(gated) = &mut self.gated {
                if gated.after_commit(&self.conn) {
                    self.commits_since_checkpoint = 0;
                }
            } else if self.commits_since_attempt >= CHECKPOINT_SPACING
                && u64::from(self.wal_frames.0) * (PAGE_SIZE + WAL_FRAME_HEADER)
                    >= CHECKPOINT_WAL_BYTES
            {
                self.commits_since_attempt = 0;
                self.try_checkpoint("PASSIVE");
            }
        }
        self.try_checkpoint("TRUNCATE");
        tracing::info!("store-writer stopped");
    }

    /// Moves queued commands into `queue` up to the batch limit; true if the channel closed.
    fn drain_into(&mut self, queue: &mut Vec<Command>) -> bool {
        let mut closed = false;
        while queue.len() < self.batch_limit {
            match self.rx.try_recv() {
                Ok(cmd) => queue.push(cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        closed
    }

    fn try_idle_work(&mut self) {
        let now = self.clock.now();
        match expiry::next_expiry(&self.conn) {
            Ok(Some(due)) if due <= now => {
                self.try_run_batch(&mut Vec::new());
            }
            _ if self.next_close <= now.timestamp_millis() => {
                self.try_run_batch(&mut Vec::new());
            }
            Ok(_) => {
                if Instant::now() >= self.next_prune && self.keys_to_prune(now) {
                    self.try_run_batch(&mut Vec::new());
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not look for expired holds"),
        }
        // Truncating a large WAL takes up to half a second (the file's truncation and fsync); a
        // lull of one idle tick inside a burst must not make the burst's next buyers wait for it.
        let quiet = self.gated.is_some() || self.last_command.elapsed() >= IDLE_TRUNCATE_AFTER;
        if self.commits_since_checkpoint > 0 && quiet {
            self.try_checkpoint("TRUNCATE");
        }
    }

    fn keys_to_prune(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        let cutoff = now
            .timestamp_millis()
            .saturating_sub(self.keys.retention_ms());
        match idempotency::oldest(&self.conn) {
            Ok(oldest) => oldest.is_some_and(|at| at < cutoff),
            Err(err) => {
                tracing::warn!(error = %err, "could not look for expired idempotency records");
                false
            }
        }
    }

    /// Counts the frames the last commit appended to the WAL (all of them, if it restarted the
    /// WAL: new salts).
    fn count_wal_frames(&mut self) {
        let Some((frames, salts)) = self.files.wal_index_frames() else {
            return;
        };
        let (last_frames, last_salts) = self.wal_frames;
        let written = if salts == last_salts && frames >= last_frames {
            frames - last_frames
        } else {
            frames
        };
        self.wal_frames = (frames, salts);
        crate::stats::count_wal_bytes(u64::from(written) * (PAGE_SIZE + WAL_FRAME_HEADER));
    }

    fn read_next_close(&mut self) {
        self.next_close = match schedule::next_close(&self.conn) {
            Ok(next) => next.map_or(i64::MAX, |t| t.timestamp_millis()),
            Err(err) => {
                tracing::warn!(error = %err, "could not read when the next drop closes");
                // Look again at the next batch.
                i64::MIN
            }
        };
    }

    /// Tells the HTTP workers when the next hold falls due.
    fn publish_next_expiry(&self) {
        let next = match expiry::next_expiry(&self.conn) {
            Ok(next) => next.map_or(i64::MAX, |t| t.timestamp_millis()),
            Err(err) => {
                tracing::warn!(error = %err, "could not read the next hold expiry");
                i64::MIN
            }
        };
        self.next_expiry.store(next, Ordering::Release);
    }

    /// Runs and commits one batch, then answers it. Returns true if a shutdown was requested.
    fn try_run_batch(&mut self, queue: &mut Vec<Command>) -> bool {
        self.depth.fetch_sub(queue.len() as i64, Ordering::Relaxed);
        let now = self.clock.now();
        let gated = self.gated.as_ref();
        let files = &self.files;
        let prune = Instant::now() >= self.next_prune;
        if prune {
            self.next_prune = Instant::now() + PRUNE_EVERY;
        }
        let close = self.next_close <= now.timestamp_millis();
        // The earliest expiry of an active hold, as of the last commit: before it nothing is
        // due, and the sweep's query (re-planned at every new time it is given) is skipped.
        let sweep = self.next_expiry.load(Ordering::Acquire) <= now.timestamp_millis();
        // A new drop or an edit may move the next close.
        let reschedules = close || queue.iter().any(Command::may_reschedule);
        let chores = BatchChores {
            box_id: self.box_id.as_deref(),
            ledger_key: self.ledger_key.as_deref(),
            ledger: self.ledger,
            sweep,
            none_due: !sweep,
            sweep_limit: self.sweep_limit,
            close,
            prune,
            verify: self.verifier.due(),
            warn_slow: true,
            bell: Some(&self.bell),
            outbox_retention_ms: Some(self.outbox_retention_ms),
        };
        let next_expiry = &*self.next_expiry;
        let conn = &self.conn;
        let ran = run_batch(
            &self.conn,
            now,
            &mut self.memory,
            &self.keys,
            queue,
            self.listener.as_deref(),
            &|| {
                files
                    .check()
                    .map_err(|replaced| StoreError::StorageReplaced(replaced.to_string()))?;
                if let Some(gated) = gated {
                    gated.record_commit();
                }
                // Before memory hears of the commit, so no view of it is paired with an
                // expiry from before it.
                let next = expiry::next_expiry(conn)
                    .map(|n| n.map_or(i64::MAX, |t| t.timestamp_millis()))
                    .unwrap_or(i64::MIN);
                next_expiry.store(next, Ordering::Release);
                Ok(())
            },
            chores,
        );
        if let Some(cost) = ran.verified {
            self.verifier.ran(cost);
        }
        if let Some(err) = ran.fatal {
            self.storage_replaced(&err);
        }
        if ran.committed {
            self.health.disk_full.store(false, Ordering::Relaxed);
        } else if ran.disk_full {
            self.health.disk_full.store(true, Ordering::Relaxed);
        }
        self.health.turned();
        if ran.committed && reschedules {
            self.read_next_close();
        }
        if ran.committed {
            self.commits_since_checkpoint += 1;
            self.commits_since_attempt += 1;
            self.count_wal_frames();
        }
        ran.shutdown
    }

    /// The tripwire fired: the WAL this connection commits into is no longer the file at the
    /// WAL path (another process deleted or replaced it), so nothing committed from now on would
    /// survive a restart. The batch was answered `503 storage-replaced`; what the open WAL
    /// holds goes into the database file before the process exits for its supervisor to
    /// restart it.
    fn storage_replaced(&mut self, err: &StoreError) -> ! {
        tracing::error!(
            code = "storage-replaced",
            error = %err,
            "stopping: acknowledging more writes would lose them; checkpointing what the open \
             WAL holds into the database first"
        );
        if let Some(gated) = &mut self.gated {
            gated.release_guard();
        }
        // HTTP reads may hold read transactions for a moment: try until everything is copied.
        let mut done = false;
        for _ in 0..20 {
            done = super::super::checkpoint::run(&self.conn, "TRUNCATE");
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let db_intact = self.files.db_intact();
        if let Some(aside) = self.files.move_aside_wal(!db_intact) {
            tracing::error!(
                code = "storage-replaced",
                path = %aside.display(),
                "moved aside a WAL that belongs to another state of the database, so the next \
                 start does not replay it"
            );
        }
        if db_intact {
            tracing::error!(
                code = "storage-replaced",
                checkpointed = done,
                "exiting; a restart serves from the database file"
            );
            if !done {
                tracing::error!(
                    code = "storage-replaced",
                    "not every frame of the open WAL could be copied into the database: \
                     compare with the replica before serving again"
                );
            }
        } else {
            tracing::error!(
                code = "storage-replaced",
                "exiting; the database file itself was replaced, so writes since its replacement \
                 are only in the file that was open (restore from the replica if in doubt)"
            );
        }
        std::process::exit(EXIT_STORAGE_REPLACED);
    }

    fn try_checkpoint(&mut self, mode: &str) {
        let done = match &mut self.gated {
            Some(gated) => gated.when_idle(&self.conn),
            None => super::super::checkpoint::run(&self.conn, mode),
        };
        if done {
            self.commits_since_checkpoint = 0;
        }
    }
}

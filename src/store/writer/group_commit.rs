//! One group commit: a queue of commands in one `BEGIN IMMEDIATE` transaction, a retry without a
//! command the database failed on, the commit, and then (only then) the answers.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::domain::DropId;

use super::super::batch::Batch;
use super::super::commands::Command;
use super::super::keys::KeyBook;
use super::super::memory::Memory;
use super::super::outbox::{self, OutboxBell};
use super::super::tx::Outcome;
use super::super::{draw, drops, expiry, idempotency, schedule, CommitListener, StoreError};

/// Commands that may fail alone in one batch before the rest is failed too: each failure costs
/// a re-run of the batch, so a bug that hits every command must not cost n² executions.
const MAX_RETRIES: usize = 8;
/// A batch that takes longer is logged: every buyer in it waited that long.
const SLOW_BATCH: Duration = Duration::from_millis(50);
/// Most expired idempotency records deleted in one batch.
const PRUNE_LIMIT: i64 = 2_000;

/// How a failed batch is reported to each of its commands.
#[derive(Clone, Copy)]
pub(super) struct CommitFailure {
    disk_full: bool,
}

impl CommitFailure {
    fn of(err: &StoreError) -> Self {
        Self {
            disk_full: err.is_disk_full(),
        }
    }

    fn to_error(self) -> StoreError {
        if self.disk_full {
            StoreError::DiskFull
        } else {
            StoreError::CommitFailed
        }
    }
}

/// What a batch does besides its commands.
#[derive(Clone, Copy, Default)]
pub(super) struct BatchChores<'a> {
    /// `--box-id`, for the ids of new holds.
    pub(super) box_id: Option<&'a str>,
    /// Signs the ledger heads the batch moves.
    pub(super) ledger_key: Option<&'a crate::domain::ledger::LedgerKey>,
    /// Chain the batch's changes (off only in the benchmark's baseline without the ledger).
    pub(super) ledger: bool,
    /// Expire due holds first, at most `sweep_limit`.
    pub(super) sweep: bool,
    pub(super) sweep_limit: i64,
    /// No active hold is due at the batch's time (the writer knows the earliest expiry).
    pub(super) none_due: bool,
    /// Commit the close of drops whose `ends_at` has passed.
    pub(super) close: bool,
    /// Delete idempotency records past the retention window.
    pub(super) prune: bool,
    /// Compare the writer's memory with a SQL recount before committing (debug builds).
    pub(super) verify: bool,
    /// Log batches slower than `SLOW_BATCH` (not for the naive baseline, where every command
    /// waits for the others' locks by design).
    pub(super) warn_slow: bool,
    /// Rung after a commit that appended outbox events.
    pub(super) bell: Option<&'a OutboxBell>,
    /// With `prune`: also delete outbox events older than this that every endpoint has.
    pub(super) outbox_retention_ms: Option<i64>,
}

/// Paces the differential check of debug builds: it recounts whole drops, so it runs at most
/// once per 50 ms and never takes more than about a twentieth of the writer's time.
pub(super) struct Verifier {
    next: Instant,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            next: Instant::now(),
        }
    }
}

impl Verifier {
    pub(super) fn due(&self) -> bool {
        cfg!(debug_assertions) && Instant::now() >= self.next
    }

    pub(super) fn ran(&mut self, cost: Duration) {
        self.next = Instant::now() + (cost * 20).max(Duration::from_millis(50));
    }
}

pub(super) struct BatchRun {
    /// How long the differential check took, if it ran.
    pub(super) verified: Option<Duration>,
    pub(super) shutdown: bool,
    pub(super) committed: bool,
    /// It failed because the disk is full.
    pub(super) disk_full: bool,
    /// The batch committed into files that are no longer the database's: stop the process.
    pub(super) fatal: Option<StoreError>,
}

/// Tells the listener what the batch changed, as the database now has it.
fn publish(
    conn: &Connection,
    listener: Option<&dyn CommitListener>,
    touched: Vec<DropId>,
    now: chrono::DateTime<chrono::Utc>,
) {
    let Some(listener) = listener else {
        return;
    };
    if touched.is_empty() {
        return;
    }
    let mut views = Vec::with_capacity(touched.len());
    for drop_id in touched {
        match drops::get_view(conn, drop_id.as_str(), now) {
            Ok(Some(view)) => views.push(view),
            Ok(None) => {}
            Err(err) => {
                // A view memory keeps after a change it missed could refuse buyers "sold out"
                // from memory: forget it, so the next request reads the drop again.
                tracing::warn!(error = %err, %drop_id, "could not read a changed drop; memory forgets it");
                listener.forget(&drop_id);
            }
        }
    }
    listener.committed(views);
}

/// Runs `queue` in one transaction on `conn`, commits, then answers every command.
///
/// If the database fails on one command (a constraint, a bug), the transaction is rolled back,
/// that command alone is answered with its failure, and the rest run again in a new transaction:
/// nothing was answered yet, so nobody saw the rolled-back work. A failure of the database as a
/// whole (disk full, I/O) fails the batch.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_batch(
    conn: &Connection,
    now: chrono::DateTime<chrono::Utc>,
    memory: &mut Memory,
    keys: &KeyBook,
    queue: &mut Vec<Command>,
    listener: Option<&dyn CommitListener>,
    after_commit: &dyn Fn() -> Result<(), StoreError>,
    chores: BatchChores<'_>,
) -> BatchRun {
    let started = Instant::now();
    let size = queue.len();
    let shutdown = queue.iter().any(Command::is_shutdown);
    let mut sweep = chores.sweep;
    let mut prune = chores.prune;
    let mut close = chores.close;
    let mut verified = None;
    let mut retries = 0;
    loop {
        let fail_all = |queue: &mut Vec<Command>, err: &StoreError| {
            let failure = CommitFailure::of(err);
            for cmd in queue.drain(..) {
                cmd.answer(Some(failure.to_error()));
            }
            BatchRun {
                verified: None,
                shutdown,
                committed: false,
                disk_full: failure.disk_full,
                fatal: None,
            }
        };
        if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = StoreError::from(err);
            tracing::error!(error = %err, "could not begin the write transaction");
            return fail_all(queue, &err);
        }
        let mut batch = Batch::new(now, memory, keys, chores.box_id, chores.ledger_key);
        batch.chains = chores.ledger;
        batch.all_due_swept = chores.none_due;
        let mut failed: Option<(Option<usize>, StoreError)> = None;
        if sweep {
            match expiry::expire_due(conn, &mut batch, chores.sweep_limit) {
                Ok(expired) => batch.all_due_swept = (expired as i64) < chores.sweep_limit,
                Err(Outcome::Failed(err)) => failed = Some((None, err)),
                Err(Outcome::Refused(refusal)) => {
                    failed = Some((None, StoreError::Internal(refusal.code())))
                }
            }
        }
        if close && failed.is_none() {
            match draw::draw_due(conn, &mut batch) {
                Ok(_) => {}
                Err(Outcome::Failed(err)) => failed = Some((None, err)),
                Err(Outcome::Refused(refusal)) => {
                    failed = Some((None, StoreError::Internal(refusal.code())))
                }
            }
        }
        if close && failed.is_none() {
            if let Err(err) = schedule::close_due(conn, &mut batch) {
                failed = Some((None, err.into()));
            }
        }
        if prune && failed.is_none() {
            let cutoff = batch
                .now
                .timestamp_millis()
                .saturating_sub(keys.retention_ms());
            if let Err(err) = idempotency::prune(conn, &mut batch, cutoff, PRUNE_LIMIT) {
                failed = Some((None, err.into()));
            }
            if let Some(retention) = chores.outbox_retention_ms.filter(|_| failed.is_none()) {
                let cutoff = batch.now.timestamp_millis().saturating_sub(retention);
                if let Err(err) = outbox::prune(conn, cutoff, PRUNE_LIMIT) {
                    failed = Some((None, err.into()));
                }
            }
        }
        if failed.is_none() {
            for (i, cmd) in queue.iter_mut().enumerate() {
                if let Err(err) = cmd.execute(conn, &mut batch) {
                    failed = Some((Some(i), err));
                    break;
                }
            }
        }
        if let Some((culprit, err)) = failed {
            drop(batch);
            let _ = conn.execute_batch("ROLLBACK");
            memory.forget();
            retries += 1;
            if !err.is_command_specific() || retries > MAX_RETRIES {
                tracing::error!(error = %err, commands = size, "the batch failed; nothing of it was written");
                return fail_all(queue, &err);
            }
            tracing::error!(error = %err, "a command failed; retrying its batch without it");
            match culprit {
                Some(i) => {
                    queue.remove(i).answer(Some(err));
                }
                None => {
                    sweep = false;
                    prune = false;
                    close = false;
                }
            }
            continue;
        }
        let applied = started.elapsed();
        let flushed = batch.flush(conn);
        if flushed.is_ok() && chores.verify {
            let checking = Instant::now();
            if let Err(differs) = batch.memory.verify(conn) {
                // Memory and the database disagree: answering from memory could oversell.
                panic!("the writer's memory differs from the database: {differs}");
            }
            verified = Some(checking.elapsed());
        }
        let committed = flushed.and_then(|()| conn.execute_batch("COMMIT"));
        let touched: Vec<DropId> = batch.touched.drain().collect();
        let new_keys = std::mem::take(&mut batch.new_keys);
        let gone_keys = std::mem::take(&mut batch.gone_keys);
        let announced = !batch.events.is_empty();
        let events = std::mem::take(&mut batch.events);
        let endpoints_changed = batch.endpoints_changed;
        let mut chained = std::mem::take(&mut batch.chained);
        drop(batch);
        if let Err(err) = committed {
            let err = StoreError::from(err);
            if err.is_io_failure() {
                // After a failed write or fsync the state on disk is unknown: answering 500
                // and going on could let a later commit make this batch durable after its
                // buyers were told it failed. A restart recovers from what is on disk.
                tracing::error!(error = %err, commands = size, "I/O error at commit; aborting the process");
                std::process::abort();
            }
            tracing::error!(error = %err, commands = size, "batch commit failed; nothing of it was written");
            let _ = conn.execute_batch("ROLLBACK");
            memory.forget();
            return fail_all(queue, &err);
        }
        metrics::histogram!("dropd_writer_batch_size").record(size as f64);
        metrics::histogram!("dropd_writer_apply_seconds").record(applied.as_secs_f64());
        if chores.warn_slow && started.elapsed() > SLOW_BATCH {
            tracing::warn!(
                commands = size,
                apply_ms = applied.as_millis() as u64,
                commit_ms = (started.elapsed() - applied).as_millis() as u64,
                "slow batch"
            );
        }
        metrics::histogram!("dropd_writer_commit_seconds")
            .record((started.elapsed() - applied).as_secs_f64());
        metrics::counter!("dropd_writer_commits_total").increment(1);
        crate::stats::count_batch(size);

        if let Err(err) = after_commit() {
            // Committed, but into files that are no longer the database's.
            let why = match &err {
                StoreError::StorageReplaced(why) => why.clone(),
                other => other.to_string(),
            };
            for cmd in queue.drain(..) {
                cmd.answer(Some(StoreError::StorageReplaced(why.clone())));
            }
            return BatchRun {
                verified,
                shutdown,
                committed: true,
                disk_full: false,
                fatal: Some(err),
            };
        }
        // Memory first, then the answers: a client that got its 2xx reads its own write, and a
        // retry under its key finds the record.
        for (hash, seq) in new_keys {
            keys.record(hash, seq);
        }
        for (hash, seq) in gone_keys {
            keys.forget_recorded(hash, seq);
        }
        publish(conn, listener, touched, now);
        if let Some(listener) = listener.filter(|_| !chained.heads.is_empty()) {
            let heads: Vec<_> = chained.heads.values().map(|h| (**h).clone()).collect();
            listener.signed(&heads);
        }
        if let Some(listener) = listener {
            let about_buyers: Vec<(&str, &str, &str)> = events
                .iter()
                .filter_map(|e| Some((e.buyer.as_deref()?, e.kind.as_str(), e.data.as_str())))
                .collect();
            if !about_buyers.is_empty() {
                listener.announced(&about_buyers);
            }
        }
        if let Some(bell) = chores.bell {
            if announced {
                bell.ring();
            }
            if endpoints_changed {
                bell.ring_endpoints();
            }
        }
        for mut cmd in queue.drain(..) {
            cmd.seal(&mut chained);
            cmd.answer(None);
        }
        return BatchRun {
            verified,
            shutdown,
            committed: true,
            disk_full: false,
            fatal: None,
        };
    }
}

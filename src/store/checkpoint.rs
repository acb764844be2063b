//! Checkpoint gating: with a replica attached, the writer may only checkpoint WAL frames the
//! shipper has shipped, or restarting the WAL would overwrite frames the replica never saw.
//!
//! The writer truncates the WAL whenever everything in it is shipped. Under sustained load that
//! moment never comes by itself, so once the WAL reaches `checkpoint_wal_size` the writer asks
//! for a sync and waits (briefly, without committing) until the shipper has caught up. If the
//! replica stays unreachable until `max_wal_size`, the writer checkpoints anyway and the shipper
//! sends the whole database as its next file: the replica loses the fine-grained history of the
//! outage, never its continuity.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::files::DbFiles;
pub use super::guard::WalGuard;

/// Longest the writer holds back commits waiting for the shipper so it can truncate the WAL.
const SHIP_WAIT: Duration = Duration::from_secs(2);
/// After a hold that ran out, how long before the writer holds again.
const SHIP_WAIT_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct CheckpointGate {
    state: Mutex<GateState>,
    changed: Condvar,
    /// With `ack_after_replicated`: the highest commit sequence number the replica holds.
    replicated: tokio::sync::watch::Sender<u64>,
    track_commits: bool,
    pub checkpoint_wal_size: u64,
    pub max_wal_size: u64,
    /// Held by the writer between its truncations and by the shipper through its last sync,
    /// so it lives here, beside both (see `WalGuard`).
    guard: Mutex<Option<WalGuard>>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Bumped by every truncation; a report from an older WAL generation is stale.
    epoch: u64,
    /// The WAL offset up to which every committed frame is in the replica (0: nothing yet).
    shipped_end: u64,
    sync_wanted: bool,
    image_wanted: bool,
    replica_failing: bool,
    stopping: bool,
    /// The writer: the WAL passed `checkpoint_wal_size`; at its next sync the shipper should
    /// hold the writer so it can ship everything and the writer can truncate.
    truncate_wanted: bool,
    /// The shipper: writer, hold at your next commit.
    barrier: bool,
    /// The writer is holding, committing nothing, until the shipper has shipped everything.
    writer_holding: bool,
    /// Commits so far (batches), and where each not yet replicated ends: (seq, epoch, end).
    commit_seq: u64,
    unreplicated: std::collections::VecDeque<(u64, u64, u64)>,
    /// A truncation reported busy: SQLite may restart the WAL in place (same length, new
    /// salts) at the next write, so reports from before that write must not count.
    restart_pending: bool,
    /// The shipper is reading the whole database: a forced truncation now would only make it
    /// start over, so the limit waits until it is done.
    image_in_progress: bool,
}

impl Default for CheckpointGate {
    fn default() -> Self {
        Self::new(16 << 20, 1 << 30)
    }
}

impl CheckpointGate {
    pub fn new(checkpoint_wal_size: u64, max_wal_size: u64) -> Self {
        Self {
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
            replicated: tokio::sync::watch::Sender::new(0),
            track_commits: false,
            checkpoint_wal_size,
            max_wal_size,
            guard: Mutex::new(None),
        }
    }

    fn guard(&self) -> MutexGuard<'_, Option<WalGuard>> {
        self.guard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts holding the WAL against other processes' checkpoints (see `WalGuard`).
    pub fn install_guard(&self, mut guard: WalGuard) {
        guard.hold();
        *self.guard() = Some(guard);
    }

    /// Holds the WAL again (after a truncation, or a hold that failed).
    pub fn hold_guard(&self) {
        if let Some(guard) = self.guard().as_mut() {
            guard.hold();
        }
    }

    /// Lets other processes checkpoint (before the writer's own truncation, or at the end).
    pub fn release_guard(&self) {
        if let Some(guard) = self.guard().as_mut() {
            guard.release();
        }
    }

    /// The shipper, after its last sync: nothing replicates any more.
    pub fn close_guard(&self) {
        self.guard().take();
    }

    /// Keeps track of which commits the replica holds (for `ack_after_replicated`).
    pub fn tracking_commits(mut self) -> Self {
        self.track_commits = true;
        self
    }

    /// The writer, after a COMMIT and before answering: the WAL now ends at `end`.
    pub fn committed(&self, end: u64) {
        let mut state = self.lock();
        if std::mem::take(&mut state.restart_pending) {
            // Epochs stay even outside a checkpoint (see `truncating`).
            state.epoch += 2;
            state.shipped_end = 0;
        }
        state.commit_seq += 1;
        if self.track_commits {
            let seq = state.commit_seq;
            // Nothing older is waiting and this commit added nothing the replica lacks (an
            // idempotent replay writes no frame; the report may also have come first).
            let covered = end == 0 || (state.shipped_end > 0 && end <= state.shipped_end);
            if state.unreplicated.is_empty() && covered {
                self.replicated.send_replace(seq);
            } else {
                let entry = (seq, state.epoch, end);
                state.unreplicated.push_back(entry);
            }
        }
    }

    /// The writer: its truncation was reported busy (see `restart_pending`).
    pub fn truncation_failed(&self) {
        self.lock().restart_pending = true;
    }

    /// The epoch, and whether the writer itself may restart the WAL in place before its next
    /// commit (after a truncation reported busy), read together: a new WAL generation seen
    /// after this is the writer's if either says so.
    pub fn generation(&self) -> (u64, bool) {
        let state = self.lock();
        (state.epoch, state.restart_pending)
    }

    /// The latest commit's sequence number; answers given so far belong to commits up to it.
    pub fn commit_seq(&self) -> u64 {
        self.lock().commit_seq
    }

    /// Resolves when the replica holds every commit up to `seq`.
    pub fn replicated(&self) -> tokio::sync::watch::Receiver<u64> {
        self.replicated.subscribe()
    }

    /// Marks as replicated the commits the report covers: those of older WAL generations (a
    /// report for a newer one comes after they were shipped, or after the whole database was),
    /// and those of this generation up to `end`.
    fn release_commits(&self, state: &mut GateState, epoch: u64, end: u64) {
        let mut released = None;
        while let Some(&(seq, e, at)) = state.unreplicated.front() {
            if e < epoch || (e == epoch && at <= end) {
                released = Some(seq);
                state.unreplicated.pop_front();
            } else {
                break;
            }
        }
        if let Some(seq) = released {
            self.replicated.send_replace(seq);
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// The shipper: everything up to `end` of the WAL generation seen at `epoch` is shipped.
    pub fn shipped(&self, epoch: u64, end: u64) {
        let mut state = self.lock();
        // An odd epoch is a checkpoint in progress: nothing read then counts.
        if state.epoch == epoch && epoch % 2 == 0 {
            state.shipped_end = end;
            state.replica_failing = false;
            self.release_commits(&mut state, epoch, end);
            self.changed.notify_all();
        }
    }

    pub fn set_failing(&self, failing: bool) {
        self.lock().replica_failing = failing;
    }

    pub fn replica_failing(&self) -> bool {
        self.lock().replica_failing
    }

    /// True when the WAL holds nothing the replica lacks: everything up to its end was shipped.
    pub fn allows(&self, wal_len: u64) -> bool {
        let state = self.lock();
        state.shipped_end > 0 && state.shipped_end == wal_len
    }

    pub fn want_truncate(&self) {
        self.lock().truncate_wanted = true;
    }

    /// Asks the shipper to sync now, without waiting for it.
    pub fn request_sync(&self) {
        self.lock().sync_wanted = true;
        self.changed.notify_all();
    }

    pub fn truncate_wanted(&self) -> bool {
        self.lock().truncate_wanted
    }

    pub fn barrier_requested(&self) -> bool {
        self.lock().barrier
    }

    /// The writer, committing nothing meanwhile: waits up to `wait` for the shipper to ship
    /// everything up to `wal_len`. False when the shipper gave up its barrier, the replica is
    /// failing, or the wait ran out.
    pub fn hold_until_shipped(&self, wal_len: u64, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        state.writer_holding = true;
        self.changed.notify_all();
        let shipped = loop {
            if state.shipped_end == wal_len && wal_len > 0 {
                break true;
            }
            let now = Instant::now();
            if now >= deadline || !state.barrier || state.replica_failing || state.stopping {
                break false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        state.writer_holding = false;
        shipped
    }

    /// The shipper, before a sync: if the writer wants to truncate, asks it to hold and waits
    /// up to `wait` for it to do so. True if the writer is holding.
    pub fn begin_barrier(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        if !state.truncate_wanted || state.stopping {
            return false;
        }
        state.barrier = true;
        self.changed.notify_all();
        loop {
            if state.writer_holding {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || state.stopping {
                // Not holding yet: it must not start holding for a sync that was read without it.
                state.barrier = false;
                self.changed.notify_all();
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The shipper, after the sync (shipped or not): the writer may go on.
    pub fn end_barrier(&self) {
        let mut state = self.lock();
        if state.barrier {
            state.barrier = false;
            self.changed.notify_all();
        }
    }

    /// Before a truncating checkpoint: whatever the shipper reports from now on is about a WAL
    /// that may be gone, and an image read now may mix two states (see `ship_image`).
    pub fn truncating(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.shipped_end = 0;
    }

    /// After a truncating checkpoint the WAL starts over; the shipper reads it from the top.
    /// With `lost` the truncation passed unshipped frames: the shipper must send the whole
    /// database next.
    pub fn truncated(&self, lost: bool) {
        let mut state = self.lock();
        if !lost {
            // Truncated because everything was shipped: every commit so far is replicated.
            let epoch = state.epoch + 1;
            self.release_commits(&mut state, epoch, 0);
        }
        state.epoch += 1;
        state.shipped_end = 0;
        state.image_wanted |= lost;
        state.truncate_wanted = false;
        state.barrier = false;
        self.changed.notify_all();
    }

    /// The shipper, around reading and uploading the whole database.
    pub fn set_image_in_progress(&self, reading: bool) {
        self.lock().image_in_progress = reading;
    }

    pub fn image_in_progress(&self) -> bool {
        self.lock().image_in_progress
    }

    pub fn take_image_wanted(&self) -> bool {
        std::mem::take(&mut self.lock().image_wanted)
    }

    /// The shipper: sleeps until `timeout`, a sync is wanted, or the server stops. Returns
    /// false once stopping.
    pub fn wait_for_work(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if state.stopping {
                return false;
            }
            if std::mem::take(&mut state.sync_wanted) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }
}

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
    gate: Arc<CheckpointGate>,
    files: Arc<DbFiles>,
    next_hold: Instant,
    warned: bool,
    urged: bool,
}

impl GatedCheckpoints {
    pub fn new(gate: Arc<CheckpointGate>, files: Arc<DbFiles>) -> Self {
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
        self.gate.release_guard();
    }

    /// After a COMMIT, before its answers: see `CheckpointGate::committed`.
    pub fn record_commit(&self) {
        self.gate.committed(self.wal_len());
    }

    fn truncate(&mut self, conn: &Connection, lost: bool) -> bool {
        self.gate.truncating();
        self.gate.release_guard();
        let done = run(conn, "TRUNCATE");
        self.gate.hold_guard();
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
        self.gate.hold_guard();
        let wal_len = self.wal_len();
        wal_len > 0 && self.gate.allows(wal_len) && self.truncate(conn, false)
    }

    /// After a commit: keeps the WAL near `checkpoint_wal_size` by holding for the shipper's
    /// next sync (one sync interval of growth at most), and under `max_wal_size` even when the
    /// replica is down. True if it truncated.
    pub fn after_commit(&mut self, conn: &Connection) -> bool {
        let gate = self.gate.clone();
        // A hold that failed (say, a busy moment) is tried again here rather than never.
        gate.hold_guard();
        let wal_len = self.wal_len();
        if wal_len < gate.checkpoint_wal_size {
            return false;
        }
        if gate.allows(wal_len) {
            return self.truncate(conn, false);
        }
        if wal_len >= gate.max_wal_size && !gate.image_in_progress() {
            tracing::error!(
                wal_bytes = wal_len,
                limit = gate.max_wal_size,
                "the replica has been unreachable until the WAL reached its limit: checkpointing \
                 anyway; the replica gets the whole database when it is back, and loses the \
                 point-in-time history of the outage"
            );
            return self.truncate(conn, true);
        }
        if !self.warned && wal_len >= gate.max_wal_size / 10 * 8 {
            self.warned = true;
            tracing::warn!(
                wal_bytes = wal_len,
                limit = gate.max_wal_size,
                "the WAL is near its limit because the replica is not keeping up"
            );
        }
        gate.want_truncate();
        if !self.urged && wal_len >= gate.checkpoint_wal_size.saturating_mul(3) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_stale_report_from_before_a_truncation_is_ignored() {
        let gate = CheckpointGate::default();
        let epoch = gate.epoch();
        gate.shipped(epoch, 4096);
        assert!(gate.allows(4096));
        assert!(!gate.allows(8192));
        gate.truncating();
        gate.truncated(false);
        gate.shipped(epoch, 4096);
        assert!(
            !gate.allows(4096),
            "a report for the old WAL must not open the gate"
        );
    }

    #[test]
    fn at_a_barrier_the_writer_holds_until_the_shipper_has_everything() {
        let gate = Arc::new(CheckpointGate::default());
        assert!(
            !gate.begin_barrier(Duration::from_millis(10)),
            "no barrier unless the writer wants to truncate"
        );
        gate.want_truncate();
        let shipper = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                assert!(gate.begin_barrier(Duration::from_secs(10)));
                gate.shipped(gate.epoch(), 1000);
                gate.end_barrier();
            })
        };
        while !gate.barrier_requested() {
            std::thread::yield_now();
        }
        assert!(gate.hold_until_shipped(1000, Duration::from_secs(10)));
        shipper.join().expect("shipper");

        // A barrier given up (the sync failed) releases the writer at once.
        gate.want_truncate();
        let shipper = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                assert!(gate.begin_barrier(Duration::from_secs(10)));
                gate.end_barrier();
            })
        };
        while !gate.barrier_requested() {
            std::thread::yield_now();
        }
        let started = Instant::now();
        assert!(!gate.hold_until_shipped(2000, Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(5));
        shipper.join().expect("shipper");
    }
}

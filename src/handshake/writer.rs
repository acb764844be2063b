//! The writer's handle: it reports commits and truncations, and asks before it checkpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::Truncation;
use super::{Shared, WalHold};

#[derive(Clone, Debug)]
pub struct WriterGate(pub(super) Arc<Shared>);

impl WriterGate {
    pub fn checkpoint_wal_size(&self) -> u64 {
        self.0.checkpoint_wal_size
    }

    pub fn max_wal_size(&self) -> u64 {
        self.0.max_wal_size
    }

    /// Starts holding the WAL against other processes' checkpoints.
    pub fn install_hold(&self, mut hold: Box<dyn WalHold>) {
        hold.hold();
        *self.0.hold() = Some(hold);
    }

    /// Holds the WAL again (after a truncation, or a hold that failed).
    pub fn hold_wal(&self) {
        if let Some(hold) = self.0.hold().as_mut() {
            hold.hold();
        }
    }

    /// Lets other processes checkpoint (before the writer's own truncation, or at the end).
    pub fn release_wal(&self) {
        if let Some(hold) = self.0.hold().as_mut() {
            hold.release();
        }
    }

    /// After a COMMIT and before answering: the WAL now ends at `end`.
    pub fn committed(&self, end: u64) {
        let mut state = self.0.lock();
        if std::mem::take(&mut state.restart_pending) {
            // Epochs stay even outside a checkpoint (see `truncating`).
            state.epoch += 2;
            state.shipped_end = 0;
        }
        state.commit_seq += 1;
        if self.0.track_commits {
            let seq = state.commit_seq;
            // Nothing older is waiting and this commit added nothing the replica lacks (an
            // idempotent replay writes no frame; the report may also have come first).
            let covered = end == 0 || (state.shipped_end > 0 && end <= state.shipped_end);
            if state.unreplicated.is_empty() && covered {
                self.0.replicated.send_replace(seq);
            } else {
                let entry = (seq, state.epoch, end);
                state.unreplicated.push_back(entry);
            }
        }
    }

    /// Its truncation was reported busy (see `State::restart_pending`).
    pub fn truncation_failed(&self) {
        self.0.lock().restart_pending = true;
    }

    /// True when the WAL holds nothing the replica lacks: everything up to its end was shipped.
    pub fn allows(&self, wal_len: u64) -> bool {
        let state = self.0.lock();
        state.shipped_end > 0 && state.shipped_end == wal_len
    }

    /// The WAL passed `checkpoint_wal_size`: at its next sync the shipper should hold the
    /// writer so it can ship everything and the writer can truncate.
    pub fn want_truncate(&self) {
        let mut state = self.0.lock();
        if state.truncation == Truncation::Idle {
            state.truncation = Truncation::Wanted;
        }
    }

    /// Asks the shipper to sync now, without waiting for it.
    pub fn request_sync(&self) {
        self.0.lock().sync_wanted = true;
        self.0.changed.notify_all();
    }

    pub fn barrier_requested(&self) -> bool {
        self.0.lock().barrier_up()
    }

    pub fn image_in_progress(&self) -> bool {
        self.0.lock().image_in_progress
    }

    /// Committing nothing meanwhile: waits up to `wait` for the shipper to ship everything up
    /// to `wal_len`. False when the shipper lowered its barrier, the replica is failing, or the
    /// wait ran out.
    pub fn hold_until_shipped(&self, wal_len: u64, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut state = self.0.lock();
        if state.truncation == Truncation::Barrier {
            state.truncation = Truncation::WriterHolding;
        }
        self.0.changed.notify_all();
        let shipped = loop {
            if state.shipped_end == wal_len && wal_len > 0 {
                break true;
            }
            let now = Instant::now();
            if now >= deadline
                || state.truncation != Truncation::WriterHolding
                || state.replica_failing
                || state.stopping
            {
                break false;
            }
            state = self
                .0
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        if state.truncation == Truncation::WriterHolding {
            state.truncation = Truncation::Barrier;
        }
        shipped
    }

    /// Before a truncating checkpoint: whatever the shipper reports from now on is about a WAL
    /// that may be gone, and an image read now may mix two states.
    pub fn truncating(&self) {
        let mut state = self.0.lock();
        state.epoch += 1;
        state.shipped_end = 0;
    }

    /// After a truncating checkpoint the WAL starts over; the shipper reads it from the top.
    /// With `lost` the truncation passed unshipped frames: the shipper must send the whole
    /// database next.
    pub fn truncated(&self, lost: bool) {
        let mut state = self.0.lock();
        if !lost {
            // Truncated because everything was shipped: every commit so far is replicated.
            let epoch = state.epoch + 1;
            self.0.release_commits(&mut state, epoch, 0);
        }
        state.epoch += 1;
        state.shipped_end = 0;
        state.image_wanted |= lost;
        state.truncation = Truncation::Idle;
        self.0.changed.notify_all();
    }
}

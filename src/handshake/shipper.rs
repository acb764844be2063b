//! The shipper's handle: it reports what it shipped, raises the barrier the writer holds at,
//! and learns when the whole database must go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::Truncation;
use super::Shared;

#[derive(Clone, Debug)]
pub struct ShipperGate(pub(super) Arc<Shared>);

/// The raised barrier: while it lives, the writer may hold at its next commit. Dropping it
/// lowers the barrier, so no path out of a sync (an error included) leaves the writer held.
#[must_use = "the barrier is lowered when this guard is dropped"]
#[derive(Debug)]
pub struct Barrier(Arc<Shared>);

impl Drop for Barrier {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        if state.barrier_up() {
            state.truncation = Truncation::Wanted;
            self.0.changed.notify_all();
        }
    }
}

/// The shipper is reading and uploading the whole database, until this is dropped.
#[must_use = "the image counts as read when this guard is dropped"]
#[derive(Debug)]
pub struct ImageRead(Arc<Shared>);

impl Drop for ImageRead {
    fn drop(&mut self) {
        self.0.lock().image_in_progress = false;
    }
}

impl ShipperGate {
    pub fn epoch(&self) -> u64 {
        self.0.lock().epoch
    }

    /// The epoch, and whether the writer itself may restart the WAL in place before its next
    /// commit (after a truncation reported busy), read together: a new WAL generation seen
    /// after this is the writer's if either says so.
    pub fn generation(&self) -> (u64, bool) {
        let state = self.0.lock();
        (state.epoch, state.restart_pending)
    }

    /// Everything up to `end` of the WAL generation seen at `epoch` is shipped.
    pub fn shipped(&self, epoch: u64, end: u64) {
        let mut state = self.0.lock();
        // An odd epoch is a checkpoint in progress: nothing read then counts.
        if state.epoch == epoch && epoch.is_multiple_of(2) {
            state.shipped_end = end;
            state.replica_failing = false;
            self.0.release_commits(&mut state, epoch, end);
            self.0.changed.notify_all();
        }
    }

    pub fn set_failing(&self, failing: bool) {
        self.0.lock().replica_failing = failing;
    }

    /// The writer passed `checkpoint_wal_size` and wants a barrier at the next sync.
    pub fn truncate_wanted(&self) -> bool {
        self.0.lock().truncation != Truncation::Idle
    }

    /// Before reading the WAL's tail: if the writer wants to truncate, asks it to hold and
    /// waits up to `wait` for it to do so. `Some` if the writer is holding.
    pub fn raise_barrier(&self, wait: Duration) -> Option<Barrier> {
        let deadline = Instant::now() + wait;
        let mut state = self.0.lock();
        if state.truncation == Truncation::Idle || state.stopping {
            return None;
        }
        state.truncation = Truncation::Barrier;
        self.0.changed.notify_all();
        loop {
            if state.truncation == Truncation::WriterHolding {
                return Some(Barrier(self.0.clone()));
            }
            let now = Instant::now();
            if now >= deadline || state.stopping || state.truncation != Truncation::Barrier {
                // Not holding yet: it must not start holding for a sync read without it.
                if state.truncation == Truncation::Barrier {
                    state.truncation = Truncation::Wanted;
                }
                self.0.changed.notify_all();
                return None;
            }
            state = self
                .0
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Around reading and uploading the whole database (see `State::image_in_progress`).
    pub fn reading_image(&self) -> ImageRead {
        self.0.lock().image_in_progress = true;
        ImageRead(self.0.clone())
    }

    pub fn take_image_wanted(&self) -> bool {
        std::mem::take(&mut self.0.lock().image_wanted)
    }

    /// Sleeps until `timeout`, a sync is wanted, or the server stops. Returns false once
    /// stopping.
    pub fn wait_for_work(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.0.lock();
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
                .0
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Tells the shipper (and a writer holding for it) that the server stops.
    pub fn stop(&self) {
        self.0.lock().stopping = true;
        self.0.changed.notify_all();
    }

    /// After the last sync: nothing replicates any more, other processes may checkpoint.
    pub fn close_hold(&self) {
        self.0.hold().take();
    }
}

//! The state both sides share, under one mutex.

use std::collections::VecDeque;

/// Where the truncation handshake stands (the picture in `handshake`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Truncation {
    /// The WAL is below `checkpoint_wal_size`, or was just truncated.
    #[default]
    Idle,
    /// The writer wants to truncate: at its next sync the shipper should raise the barrier.
    Wanted,
    /// The shipper asks the writer to hold at its next commit.
    Barrier,
    /// The writer holds, committing nothing, until the shipper has shipped everything.
    WriterHolding,
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// Bumped by every truncation (odd while one is in progress); a report from an older WAL
    /// generation is stale.
    pub epoch: u64,
    /// The WAL offset up to which every committed frame is in the replica (0: nothing yet).
    pub shipped_end: u64,
    pub truncation: Truncation,
    /// The writer asks the shipper to sync now rather than at its interval.
    pub sync_wanted: bool,
    /// The writer folded away frames the replica lacks: the whole database must go next.
    pub image_wanted: bool,
    pub replica_failing: bool,
    pub stopping: bool,
    /// Commits so far (batches), and where each not yet replicated ends: (seq, epoch, end).
    pub commit_seq: u64,
    pub unreplicated: VecDeque<(u64, u64, u64)>,
    /// A truncation reported busy: SQLite may restart the WAL in place (same length, new
    /// salts) at the next write, so reports from before that write must not count.
    pub restart_pending: bool,
    /// The shipper is reading the whole database: a forced truncation now would only make it
    /// start over, so the limit waits until it is done.
    pub image_in_progress: bool,
}

impl State {
    /// Pops the commits a report covers: those of older WAL generations (a report for a newer
    /// one comes after they were shipped, or after the whole database was), and those of this
    /// generation up to `end`. Returns the newest popped.
    pub fn release_commits(&mut self, epoch: u64, end: u64) -> Option<u64> {
        let mut released = None;
        while let Some(&(seq, e, at)) = self.unreplicated.front() {
            if e < epoch || (e == epoch && at <= end) {
                released = Some(seq);
                self.unreplicated.pop_front();
            } else {
                break;
            }
        }
        released
    }

    /// The shipper has raised the barrier (the writer may be holding at it already).
    pub fn barrier_up(&self) -> bool {
        matches!(
            self.truncation,
            Truncation::Barrier | Truncation::WriterHolding
        )
    }
}

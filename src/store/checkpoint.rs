//! Checkpoint gating: with a replica attached, the writer may only checkpoint WAL frames the
//! shipper has already shipped, or a WAL restart could overwrite frames the replica never saw.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct CheckpointGate {
    /// The WAL offset up to which every committed frame is in the replica (0: nothing yet).
    shipped_end: AtomicU64,
}

impl CheckpointGate {
    pub fn shipped(&self, end: u64) {
        self.shipped_end.store(end, Ordering::SeqCst);
    }

    /// True when the WAL holds nothing the replica lacks: everything up to its end was shipped.
    pub fn allows(&self, wal_len: u64) -> bool {
        let shipped = self.shipped_end.load(Ordering::SeqCst);
        shipped > 0 && shipped == wal_len
    }

    /// After a truncating checkpoint the WAL starts over; the shipper reads it from the top.
    pub fn reset(&self) {
        self.shipped_end.store(0, Ordering::SeqCst);
    }
}

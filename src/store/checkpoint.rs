//! Checkpoint gating: with a replica attached, the writer may only checkpoint WAL frames the
//! shipper has shipped, or restarting the WAL would overwrite frames the replica never saw.
//!
//! The writer truncates the WAL whenever everything in it is shipped. Under sustained load that
//! moment never comes by itself, so once the WAL reaches `checkpoint_wal_size` the writer asks
//! for a sync and waits (briefly, without committing) until the shipper has caught up. If the
//! replica stays unreachable until `max_wal_size`, the writer checkpoints anyway and the shipper
//! sends the whole database as its next file: the replica loses the fine-grained history of the
//! outage, never its continuity.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct CheckpointGate {
    state: Mutex<GateState>,
    changed: Condvar,
    pub checkpoint_wal_size: u64,
    pub max_wal_size: u64,
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
            checkpoint_wal_size,
            max_wal_size,
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
        if state.epoch == epoch {
            state.shipped_end = end;
            state.replica_failing = false;
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

    /// The writer, holding back commits: asks for a sync now and waits up to `wait` for it to
    /// cover `wal_len`. False at once while the replica is failing.
    pub fn wait_shipped(&self, wal_len: u64, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        state.sync_wanted = true;
        self.changed.notify_all();
        loop {
            if state.shipped_end == wal_len && wal_len > 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || state.replica_failing || state.stopping {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// After a truncating checkpoint the WAL starts over; the shipper reads it from the top.
    /// With `lost` the truncation passed unshipped frames: the shipper must send the whole
    /// database next.
    pub fn truncated(&self, lost: bool) {
        let mut state = self.lock();
        state.epoch += 1;
        state.shipped_end = 0;
        state.image_wanted |= lost;
        self.changed.notify_all();
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
        gate.truncated(false);
        gate.shipped(epoch, 4096);
        assert!(
            !gate.allows(4096),
            "a report for the old WAL must not open the gate"
        );
    }

    #[test]
    fn the_writer_waits_for_the_shipper_and_gives_up_when_the_replica_fails() {
        let gate = Arc::new(CheckpointGate::default());
        let shipper = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                assert!(gate.wait_for_work(Duration::from_secs(10)));
                gate.shipped(gate.epoch(), 1000);
            })
        };
        assert!(gate.wait_shipped(1000, Duration::from_secs(10)));
        shipper.join().expect("shipper");
        gate.set_failing(true);
        assert!(!gate.wait_shipped(2000, Duration::from_secs(10)));
    }
}

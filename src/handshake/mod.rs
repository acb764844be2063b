//! The replication handshake between the one writer and the WAL shipper: which WAL frames the
//! writer may fold into the database (checkpoint), and which commits the replica holds.
//!
//! With a replica attached, the writer may only checkpoint WAL frames the shipper has shipped,
//! or restarting the WAL would overwrite frames the replica never saw. The writer truncates the
//! WAL whenever everything in it is shipped. Under sustained load that moment never comes by
//! itself, so once the WAL reaches `checkpoint_wal_size` the writer asks for a truncation; at its
//! next sync the shipper raises a barrier, the writer holds (briefly, committing nothing) while
//! the shipper reads the WAL's tail, and truncates once everything is shipped:
//!
//! ```text
//!   Idle --writer: want_truncate--> Wanted --shipper: raise_barrier--> Barrier
//!     ^                               ^  \                               |
//!     |                               |   `--(shipper gave up)----<------+ writer: hold_until_shipped
//!     |                               |                                  v
//!     +------ writer: truncated ------+----(barrier guard dropped)--- WriterHolding
//! ```
//!
//! If the replica stays unreachable until `max_wal_size`, the writer checkpoints anyway and the
//! shipper sends the whole database as its next file: the replica loses the fine-grained
//! history of the outage, never its continuity.
//!
//! Each side gets its own handle (`WriterGate`, `ShipperGate`, and `AckView` for answers that
//! wait for the replica), so a method can only be called by the side it is for. Nothing here
//! knows SQLite or a replica: `store` and `replicate` both build on it.

mod shipper;
mod state;
mod writer;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub use shipper::{Barrier, ImageRead, ShipperGate};
pub use writer::WriterGate;

use state::State;

/// What keeps other processes from checkpointing frames the replica lacks (the store's
/// `WalGuard`). Held by the writer between its truncations and dropped by the shipper after its
/// last sync, so it lives here, between them.
pub trait WalHold: Send + std::fmt::Debug {
    fn hold(&mut self);
    fn release(&mut self);
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// With `ack_after_replicated`: the highest commit sequence number the replica holds.
    replicated: tokio::sync::watch::Sender<u64>,
    track_commits: bool,
    checkpoint_wal_size: u64,
    max_wal_size: u64,
    hold: Mutex<Option<Box<dyn WalHold>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold(&self) -> MutexGuard<'_, Option<Box<dyn WalHold>>> {
        self.hold.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks as replicated the commits a report covers (see `State::release_commits`).
    fn release_commits(&self, state: &mut State, epoch: u64, end: u64) {
        if let Some(seq) = state.release_commits(epoch, end) {
            self.replicated.send_replace(seq);
        }
    }
}

/// The three handles of one writer-shipper pair.
pub struct Handshake {
    pub writer: WriterGate,
    pub shipper: ShipperGate,
    pub acks: AckView,
}

impl Handshake {
    /// `track_commits`: keep track of which commits the replica holds (for
    /// `ack_after_replicated`).
    pub fn new(checkpoint_wal_size: u64, max_wal_size: u64, track_commits: bool) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            replicated: tokio::sync::watch::Sender::new(0),
            track_commits,
            checkpoint_wal_size,
            max_wal_size,
            hold: Mutex::new(None),
        });
        Self {
            writer: WriterGate(shared.clone()),
            shipper: ShipperGate(shared.clone()),
            acks: AckView(shared),
        }
    }

    /// Litestream's sizes: truncate at 16 MiB, give up on the replica at 1 GiB.
    pub fn with_default_sizes() -> Self {
        Self::new(16 << 20, 1 << 30, false)
    }
}

/// What an answer that waits for the replica may read.
#[derive(Clone, Debug)]
pub struct AckView(Arc<Shared>);

impl AckView {
    /// The latest commit's sequence number; answers given so far belong to commits up to it.
    pub fn commit_seq(&self) -> u64 {
        self.0.lock().commit_seq
    }

    /// Resolves when the replica holds every commit up to a sequence number.
    pub fn replicated(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.replicated.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_stale_report_from_before_a_truncation_is_ignored() {
        let Handshake {
            writer, shipper, ..
        } = Handshake::with_default_sizes();
        let epoch = shipper.epoch();
        shipper.shipped(epoch, 4096);
        assert!(writer.allows(4096));
        assert!(!writer.allows(8192));
        writer.truncating();
        writer.truncated(false);
        shipper.shipped(epoch, 4096);
        assert!(
            !writer.allows(4096),
            "a report for the old WAL must not open the gate"
        );
    }

    #[test]
    fn at_a_barrier_the_writer_holds_until_the_shipper_has_everything() {
        let Handshake {
            writer, shipper, ..
        } = Handshake::with_default_sizes();
        assert!(
            shipper.raise_barrier(Duration::from_millis(10)).is_none(),
            "no barrier unless the writer wants to truncate"
        );
        writer.want_truncate();
        let ship = {
            let shipper = shipper.clone();
            std::thread::spawn(move || {
                let barrier = shipper.raise_barrier(Duration::from_secs(10));
                assert!(barrier.is_some());
                shipper.shipped(shipper.epoch(), 1000);
            })
        };
        while !writer.barrier_requested() {
            std::thread::yield_now();
        }
        assert!(writer.hold_until_shipped(1000, Duration::from_secs(10)));
        ship.join().expect("shipper");

        // A barrier given up (the sync failed) releases the writer at once.
        writer.want_truncate();
        let ship = {
            let shipper = shipper.clone();
            std::thread::spawn(move || {
                let barrier = shipper.raise_barrier(Duration::from_secs(10));
                assert!(barrier.is_some());
                drop(barrier);
            })
        };
        while !writer.barrier_requested() {
            std::thread::yield_now();
        }
        let started = Instant::now();
        assert!(!writer.hold_until_shipped(2000, Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(5));
        ship.join().expect("shipper");
    }

    #[test]
    fn a_truncation_that_shipped_everything_acknowledges_every_commit() {
        let Handshake {
            writer,
            shipper,
            acks,
        } = Handshake::new(16 << 20, 1 << 30, true);
        writer.committed(4096);
        writer.committed(8192);
        assert_eq!(acks.commit_seq(), 2);
        shipper.shipped(shipper.epoch(), 4096);
        assert_eq!(*acks.replicated().borrow(), 1, "only the first is shipped");
        writer.truncating();
        writer.truncated(false);
        assert_eq!(*acks.replicated().borrow(), 2);
    }
}

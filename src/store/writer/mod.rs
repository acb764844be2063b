//! The `store-writer` thread: the only read-write connection, and group commit.
//!
//! Contract: commands are taken in arrival order; up to `batch_limit` queued commands run inside
//! one `BEGIN IMMEDIATE` transaction, each deciding before it writes (see `tx`); the transaction
//! commits once (one fsync for the batch under `synchronous=FULL`), the hub learns the new state,
//! and only then is any command answered. If
//! the commit fails, every command of the batch is answered with the failure and nothing of the
//! batch is visible. Only this thread checkpoints the WAL.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::domain::views::{DropPatch, DropView, HoldView, NewDrop, OrderView};
use crate::domain::{BuyerId, Clock, DropId, HoldId, Refusal};

mod event_loop;
mod group_commit;
#[cfg(feature = "bench")]
mod naive;

use event_loop::WriterLoop;
use group_commit::Verifier;

use super::audit::{Acted, Acting};
use super::commands::{Command, Reply};
use super::files::DbFiles;
use super::keys::KeyBook;
use super::memory::{BuyerLoad, Memory};
use super::requests::{Answer, ConfirmHold, IdempotentRequest, PlaceHold};
use super::{CommitListener, StoreConfig, StoreError};

/// How often an idle writer wakes to expire holds and checkpoint.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// Without a replica, a passive checkpoint while busy once the WAL holds this much (its frame
/// count in the WAL index: the file keeps its size when SQLite starts it over), and
/// at least `CHECKPOINT_SPACING` commits after the last attempt): frequent short copies instead
/// of rare long ones, which stalled the writer for a fifth of a second, and a WAL that stays
/// far under 64 MB through a stampede.
const CHECKPOINT_WAL_BYTES: u64 = 16 << 20;
const CHECKPOINT_SPACING: u64 = 32;
/// Without a replica, the idle truncation of the WAL waits for this long without commands.
const IDLE_TRUNCATE_AFTER: Duration = Duration::from_secs(1);
/// Exit status when the database files were replaced under the writer (see `storage_replaced`).
pub const EXIT_STORAGE_REPLACED: i32 = 75;
/// SQLite's default page size, which dropd never changes, and the header of each WAL frame.
const PAGE_SIZE: u64 = 4096;
const WAL_FRAME_HEADER: u64 = 24;
/// How often the writer looks for idempotency records past the retention window.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The handle handlers use to send commands; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Command>,
    /// When the earliest active hold expires (Unix ms; `i64::MAX` for none), as of the last
    /// commit: until then no hold is due, so memory may refuse `sold-out` without the writer.
    next_expiry: Arc<AtomicI64>,
    depth: Arc<AtomicI64>,
    alive: Arc<AtomicBool>,
    health: Arc<WriterHealth>,
    queue_size: usize,
    #[cfg(feature = "bench")]
    naive: Option<naive::NaiveWriters>,
}

pub struct WriterThread {
    handle: JoinHandle<()>,
    alive: Arc<AtomicBool>,
}

impl WriterThread {
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Waits for the writer to finish its queue, checkpoint and stop.
    pub fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("store-writer thread ended with a panic");
        }
    }
}

/// Counters for metrics and the operator page.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterStats {
    pub queue_depth: i64,
    /// Commands that may wait before requests get `503 overloaded`.
    pub queue_size: usize,
    /// Since the writer last went round its loop (it does at least every `IDLE_TICK`).
    pub quiet_for: Duration,
    /// The last batch failed because the disk is full (cleared by the next commit).
    pub disk_full: bool,
}

/// How the writer thread is doing, as it tells it.
#[derive(Debug)]
pub(crate) struct WriterHealth {
    started: Instant,
    /// Milliseconds after `started` of the writer's last turn round its loop.
    last_turn_ms: AtomicU64,
    pub(crate) disk_full: AtomicBool,
}

impl WriterHealth {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_turn_ms: AtomicU64::new(0),
            disk_full: AtomicBool::new(false),
        }
    }

    /// The writer is alive and turning.
    pub(crate) fn turned(&self) {
        self.last_turn_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_turn_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Who learns of each commit besides the listener: the idempotency keys memory knows, and the
/// outbox worker's bell.
pub(crate) struct Learners {
    pub(crate) keys: Arc<KeyBook>,
    pub(crate) bell: Arc<super::outbox::OutboxBell>,
}

pub(crate) fn spawn(
    conn: Connection,
    files: Arc<DbFiles>,
    gated: Option<super::checkpoint::GatedCheckpoints>,
    config: &StoreConfig,
    clock: Arc<dyn Clock>,
    listener: Option<Arc<dyn CommitListener>>,
    learns: Learners,
) -> Result<(Writer, WriterThread), StoreError> {
    let Learners { keys, bell } = learns;
    #[cfg(feature = "bench")]
    let naive = config
        .naive_writers
        .then(|| naive::NaiveWriters::open(&conn, config, &clock, &listener, &keys))
        .transpose()?;
    #[cfg(not(feature = "bench"))]
    if config.naive_writers {
        return Err(StoreError::Setup(
            "this build has no naive-writes baseline (it was built without the `bench` feature)"
                .into(),
        ));
    }
    let (tx, rx) = mpsc::sync_channel(config.queue_size.max(1));
    let depth = Arc::new(AtomicI64::new(0));
    let alive = Arc::new(AtomicBool::new(true));
    let next_expiry = Arc::new(AtomicI64::new(i64::MIN));
    let health = Arc::new(WriterHealth::new());
    let mut worker = WriterLoop {
        health: health.clone(),
        conn,
        rx,
        clock,
        batch_limit: config.batch_limit.max(1),
        memory: Memory::new(BuyerLoad::WholeDrop),
        sweep_limit: config.sweep_limit.max(1),
        box_id: config.box_id.clone(),
        ledger_key: config.ledger_key.clone(),
        ledger: config.ledger,
        wal_frames: (0, 0),
        next_expiry: next_expiry.clone(),
        next_close: i64::MIN,
        keys,
        next_prune: Instant::now(),
        verifier: Verifier::default(),
        gated,
        files,
        listener,
        depth: depth.clone(),
        commits_since_checkpoint: 0,
        commits_since_attempt: 0,
        last_command: Instant::now(),
        bell,
        outbox_retention_ms: config.outbox_retention.as_millis() as i64,
    };
    let thread_alive = alive.clone();
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                worker.run_until_stopped()
            }));
            thread_alive.store(false, Ordering::Relaxed);
            if outcome.is_err() {
                // The transaction's fate and the replies' are unknown: stop everything and let
                // the supervisor restart from what is on disk.
                tracing::error!("store-writer panicked; aborting the process");
                std::process::abort();
            }
        })
        .map_err(|e| StoreError::Setup(format!("could not start the store-writer thread: {e}")))?;
    let writer = Writer {
        tx,
        next_expiry,
        depth,
        alive: alive.clone(),
        health,
        queue_size: config.queue_size.max(1),
        #[cfg(feature = "bench")]
        naive,
    };
    Ok((writer, WriterThread { handle, alive }))
}

impl Writer {
    /// A handle to no writer (a follower's): every command fails at once with
    /// `WriterStopped`, and `is_running` is false. The follower's routes never send one.
    pub fn detached() -> Self {
        let (tx, _) = std::sync::mpsc::sync_channel(1);
        Writer {
            tx,
            next_expiry: Arc::new(AtomicI64::new(i64::MAX)),
            depth: Arc::new(AtomicI64::new(0)),
            alive: Arc::new(AtomicBool::new(false)),
            health: Arc::new(WriterHealth::new()),
            queue_size: 1,
            #[cfg(feature = "bench")]
            naive: None,
        }
    }

    fn submit<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<oneshot::Receiver<super::commands::Answered<T>>, StoreError> {
        let (tx, answer) = oneshot::channel();
        let reply = Reply::new(tx);
        #[cfg(feature = "bench")]
        if let Some(naive) = &self.naive {
            naive.run(make(reply));
            return Ok(answer);
        }
        self.depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(make(reply)) {
            Ok(()) => Ok(answer),
            Err(err) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                Err(match err {
                    TrySendError::Full(_) => StoreError::Overloaded,
                    TrySendError::Disconnected(_) => StoreError::WriterStopped,
                })
            }
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let answer = self.submit(make)?;
        let (result, cost) = answer.await.map_err(|_| StoreError::WriterStopped)?;
        super::cost::charge(cost);
        result
    }

    pub async fn place_hold(
        &self,
        req: IdempotentRequest,
        cmd: PlaceHold,
    ) -> Result<Answer<HoldView>, StoreError> {
        self.ask(|reply| Command::PlaceHold(req, cmd, reply)).await
    }

    pub async fn confirm_hold(
        &self,
        req: IdempotentRequest,
        cmd: ConfirmHold,
    ) -> Result<Answer<OrderView>, StoreError> {
        self.ask(|reply| Command::ConfirmHold(req, cmd, reply))
            .await
    }

    pub async fn release_hold(
        &self,
        buyer: BuyerId,
        hold_id: HoldId,
    ) -> Result<Result<HoldView, Refusal>, StoreError> {
        self.ask(|reply| Command::ReleaseHold {
            buyer,
            hold_id,
            reply,
        })
        .await
    }

    /// `buyer` joins `drop_id`'s queue; answers their entry (again: the one they have).
    pub async fn join_queue(
        &self,
        buyer: BuyerId,
        drop_id: DropId,
    ) -> Result<Result<crate::store::queue::QueueEntry, Refusal>, StoreError> {
        self.ask(|reply| Command::JoinQueue {
            buyer,
            drop_id,
            reply,
        })
        .await
    }

    /// `buyer` waits for a sold-out SKU; answers their entry (again: the one they have).
    pub async fn join_waitlist(
        &self,
        buyer: BuyerId,
        cmd: crate::store::waitlist::JoinWaitlist,
    ) -> Result<Result<crate::domain::waitlist::WaitlistEntry, Refusal>, StoreError> {
        self.ask(|reply| Command::JoinWaitlist { buyer, cmd, reply })
            .await
    }

    /// `buyer` enters a raffle for a SKU; answers their entry (again: the one they have).
    pub async fn enter_draw(
        &self,
        buyer: BuyerId,
        cmd: crate::store::draw::EnterDraw,
    ) -> Result<Result<crate::domain::draw::DrawEntry, Refusal>, StoreError> {
        self.ask(|reply| Command::EnterDraw { buyer, cmd, reply })
            .await
    }

    /// `buyer` leaves a SKU's waiting list; answers the entry as it ends.
    pub async fn leave_waitlist(
        &self,
        buyer: BuyerId,
        drop_id: DropId,
        sku: String,
    ) -> Result<Result<crate::domain::waitlist::WaitlistEntry, Refusal>, StoreError> {
        self.ask(|reply| Command::LeaveWaitlist {
            buyer,
            drop_id,
            sku,
            reply,
        })
        .await
    }

    pub async fn request_checkout(
        &self,
        buyer: BuyerId,
        hold_id: HoldId,
    ) -> Result<Result<HoldView, Refusal>, StoreError> {
        self.ask(|reply| Command::RequestCheckout {
            buyer,
            hold_id,
            reply,
        })
        .await
    }

    pub async fn create_drop(
        &self,
        act: Acting,
        spec: NewDrop,
    ) -> Result<Result<Acted<DropView>, Refusal>, StoreError> {
        self.ask(|reply| Command::CreateDrop { act, spec, reply })
            .await
    }

    pub async fn update_drop(
        &self,
        act: Acting,
        drop_id: DropId,
        patch: DropPatch,
        if_match: Option<i64>,
    ) -> Result<Result<Acted<DropView>, Refusal>, StoreError> {
        self.ask(|reply| Command::UpdateDrop {
            act,
            drop_id,
            patch,
            if_match,
            reply,
        })
        .await
    }

    pub async fn adjust_stock(
        &self,
        act: Acting,
        drop_id: DropId,
        sku: String,
        delta: i64,
    ) -> Result<Result<Acted<DropView>, Refusal>, StoreError> {
        self.ask(|reply| Command::AdjustStock {
            act,
            drop_id,
            sku,
            delta,
            reply,
        })
        .await
    }

    /// New access codes for a drop (answered with their text, once).
    pub async fn create_codes(
        &self,
        act: Acting,
        drop_id: DropId,
        spec: crate::domain::access_codes::NewCodes,
    ) -> Result<Result<Acted<crate::domain::access_codes::CreatedCodes>, Refusal>, StoreError> {
        self.ask(|reply| Command::CreateCodes {
            act,
            drop_id,
            spec,
            reply,
        })
        .await
    }

    /// A key of `scope` (`admin`, `payments`), stored as its hash.
    pub async fn create_admin_key(
        &self,
        name: String,
        key_hash: [u8; 32],
        scope: String,
    ) -> Result<String, StoreError> {
        self.ask(|reply| Command::CreateAdminKey {
            name,
            key_hash,
            scope,
            reply,
        })
        .await
    }

    /// True if the key was active and is revoked now.
    pub async fn revoke_admin_key(&self, id: String) -> Result<bool, StoreError> {
        self.ask(|reply| Command::RevokeAdminKey { id, reply })
            .await
    }

    /// The delivery worker's change to an endpoint's cursor or dead letters.
    pub async fn change_webhook(
        &self,
        change: crate::store::webhooks::WebhookChange,
    ) -> Result<crate::store::webhooks::WebhookAnswer, StoreError> {
        let answer = self
            .ask(|reply| Command::Webhook {
                act: None,
                change,
                reply,
            })
            .await?;
        match answer {
            Ok(Acted::Done(answer)) => Ok(answer),
            _ => Err(StoreError::Internal(
                "an unaudited change answered as audited",
            )),
        }
    }

    /// An operator's change to an endpoint or a dead letter, audited.
    pub async fn act_on_webhook(
        &self,
        act: Acting,
        change: crate::store::webhooks::WebhookChange,
    ) -> Result<Result<Acted<crate::store::webhooks::WebhookAnswer>, Refusal>, StoreError> {
        self.ask(|reply| Command::Webhook {
            act: Some(act),
            change,
            reply,
        })
        .await
    }

    /// Runs a batch now (expiring every hold due by the clock) and waits for its commit.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.ask(|reply| Command::Sync { reply }).await
    }

    /// Asks the writer to finish what is queued and stop; waits for room in the queue.
    pub fn shutdown(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Command::Shutdown).is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// False once the writer thread has stopped (after shutdown, or if it died).
    pub fn is_running(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// True if a hold may be due at `now_ms` (or the writer has not said yet).
    pub fn hold_may_be_due(&self, now_ms: i64) -> bool {
        now_ms >= self.next_expiry.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            queue_depth: self.depth.load(Ordering::Relaxed).max(0),
            queue_size: self.queue_size,
            quiet_for: self.health.quiet_for(),
            disk_full: self.health.disk_full.load(Ordering::Relaxed),
        }
    }

    /// Test hook: the writer thread sleeps `for_` inside its loop, as a writer stuck on a
    /// hung disk would (debug builds only).
    #[cfg(debug_assertions)]
    pub async fn stall_for_tests(&self, for_: Duration) -> Result<(), StoreError> {
        self.ask(|reply| Command::Stall { for_, reply }).await
    }
}

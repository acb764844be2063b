//! The `store-writer` thread: the only read-write connection, and group commit.
//!
//! Contract: commands are taken in arrival order; up to `batch_limit` queued commands run inside
//! one `BEGIN IMMEDIATE` transaction, each deciding before it writes (see `tx`); the transaction
//! commits once (one fsync for the batch under `synchronous=FULL`), the hub learns the new state,
//! and only then is any command answered. If
//! the commit fails, every command of the batch is answered with the failure and nothing of the
//! batch is visible. Only this thread checkpoints the WAL.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::domain::views::{DropPatch, DropView, HoldView, NewDrop, OrderView};
use crate::domain::{BuyerId, Clock, DropId, HoldId, Refusal};

use super::batch::Batch;
use super::commands::{Command, Reply};
use super::files::DbFiles;
use super::keys::KeyBook;
use super::memory::{BuyerLoad, Memory};
use super::requests::{Answer, ConfirmHold, IdempotentRequest, PlaceHold};
use super::tx::Outcome;
use super::{drops, holds, idempotency, CommitListener, StoreConfig, StoreError};

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
/// A batch that takes longer is logged: every buyer in it waited that long.
const SLOW_BATCH: Duration = Duration::from_millis(50);
/// Exit status when the database files were replaced under the writer (see `storage_replaced`).
pub const EXIT_STORAGE_REPLACED: i32 = 75;
/// Commands that may fail alone in one batch before the rest is failed too: each failure costs
/// a re-run of the batch, so a bug that hits every command must not cost n² executions.
const MAX_RETRIES: usize = 8;
/// SQLite's default page size, which dropd never changes, and the header of each WAL frame.
const PAGE_SIZE: u64 = 4096;
const WAL_FRAME_HEADER: u64 = 24;
/// Most expired idempotency records deleted in one batch.
const PRUNE_LIMIT: i64 = 2_000;
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
    naive: Option<NaiveWriters>,
}

/// The benchmark's baseline only (`serve --naive-writes`, hidden): every command runs in its own
/// transaction on one of a pool of read-write connections, the way a typical web app writes. It
/// exists so the gain of group commit is measured, not claimed; never use it in production.
#[derive(Clone)]
struct NaiveWriters {
    pool: r2d2::Pool<r2d2_sqlite::SqliteConnectionManager>,
    clock: Arc<dyn Clock>,
    listener: Option<Arc<dyn CommitListener>>,
    keys: Arc<KeyBook>,
    box_id: Option<String>,
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
}

pub(crate) fn spawn(
    conn: Connection,
    files: Arc<DbFiles>,
    gated: Option<super::checkpoint::GatedCheckpoints>,
    config: &StoreConfig,
    clock: Arc<dyn Clock>,
    listener: Option<Arc<dyn CommitListener>>,
    keys: Arc<KeyBook>,
) -> Result<(Writer, WriterThread), StoreError> {
    let naive = if config.naive_writers {
        // A typical web app would index holds by buyer to count a buyer's units per request.
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS naive_holds_by_buyer ON holds (drop_id, buyer)",
        )?;
        let sync = config.synchronous.as_str();
        let manager =
            r2d2_sqlite::SqliteConnectionManager::file(&config.path).with_init(move |c| {
                c.busy_timeout(Duration::from_secs(30))?;
                c.execute_batch(&format!(
                    "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
                ))
            });
        let pool = r2d2::Pool::builder().max_size(16).build(manager)?;
        Some(NaiveWriters {
            pool,
            clock: clock.clone(),
            listener: listener.clone(),
            keys: keys.clone(),
            box_id: config.box_id.clone(),
        })
    } else {
        None
    };
    let (tx, rx) = mpsc::sync_channel(config.queue_size.max(1));
    let depth = Arc::new(AtomicI64::new(0));
    let alive = Arc::new(AtomicBool::new(true));
    let next_expiry = Arc::new(AtomicI64::new(i64::MIN));
    let mut worker = WriterLoop {
        conn,
        rx,
        clock,
        batch_limit: config.batch_limit.max(1),
        memory: Memory::new(BuyerLoad::WholeDrop),
        sweep_limit: config.sweep_limit.max(1),
        box_id: config.box_id.clone(),
        wal_frames: (0, 0),
        next_expiry: next_expiry.clone(),
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
        naive,
    };
    Ok((writer, WriterThread { handle, alive }))
}

impl Writer {
    fn submit<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (tx, answer) = oneshot::channel();
        let reply = Reply::new(tx);
        if let Some(naive) = &self.naive {
            let naive = naive.clone();
            let cmd = make(reply);
            tokio::task::spawn_blocking(move || match naive.pool.get() {
                Ok(conn) => {
                    let now = naive.clock.now();
                    let listener = naive.listener.as_deref();
                    run_batch(
                        &conn,
                        now,
                        &mut Memory::new(BuyerLoad::OneBuyer),
                        &naive.keys,
                        &mut vec![cmd],
                        listener,
                        &|| Ok(()),
                        BatchChores {
                            box_id: naive.box_id.as_deref(),
                            sweep: true,
                            sweep_limit: 2_000,
                            ..BatchChores::default()
                        },
                    );
                }
                Err(err) => {
                    tracing::error!(error = %err, "no naive writer connection");
                    cmd.answer(Some(StoreError::CommitFailed));
                }
            });
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
        answer.await.map_err(|_| StoreError::WriterStopped)?
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

    pub async fn create_drop(
        &self,
        spec: NewDrop,
    ) -> Result<Result<DropView, Refusal>, StoreError> {
        self.ask(|reply| Command::CreateDrop { spec, reply }).await
    }

    pub async fn update_drop(
        &self,
        drop_id: DropId,
        patch: DropPatch,
    ) -> Result<Result<DropView, Refusal>, StoreError> {
        self.ask(|reply| Command::UpdateDrop {
            drop_id,
            patch,
            reply,
        })
        .await
    }

    pub async fn adjust_stock(
        &self,
        drop_id: DropId,
        sku: String,
        delta: i64,
    ) -> Result<Result<DropView, Refusal>, StoreError> {
        self.ask(|reply| Command::AdjustStock {
            drop_id,
            sku,
            delta,
            reply,
        })
        .await
    }

    pub async fn create_admin_key(
        &self,
        name: String,
        key_hash: [u8; 32],
    ) -> Result<String, StoreError> {
        self.ask(|reply| Command::CreateAdminKey {
            name,
            key_hash,
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
        }
    }
}

/// How a failed batch is reported to each of its commands.
#[derive(Clone, Copy)]
struct CommitFailure {
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

struct WriterLoop {
    conn: Connection,
    rx: Receiver<Command>,
    clock: Arc<dyn Clock>,
    batch_limit: usize,
    memory: Memory,
    sweep_limit: i64,
    box_id: Option<String>,
    next_expiry: Arc<AtomicI64>,
    /// The WAL index's frame count and salts after the last commit.
    wal_frames: (u32, u64),
    keys: Arc<KeyBook>,
    next_prune: Instant,
    verifier: Verifier,
    /// With a replica: checkpoints only past shipped frames (see `CheckpointGate`).
    gated: Option<super::checkpoint::GatedCheckpoints>,
    files: Arc<DbFiles>,
    listener: Option<Arc<dyn CommitListener>>,
    depth: Arc<AtomicI64>,
    commits_since_checkpoint: u64,
    commits_since_attempt: u64,
    /// When the last command arrived.
    last_command: Instant,
}

impl WriterLoop {
    fn run_until_stopped(&mut self) {
        self.publish_next_expiry();
        let mut queue = Vec::with_capacity(self.batch_limit);
        loop {
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
        match holds::next_expiry(&self.conn) {
            Ok(Some(due)) if due <= now => {
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

    /// Tells the HTTP workers when the next hold falls due.
    fn publish_next_expiry(&self) {
        let next = match holds::next_expiry(&self.conn) {
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
        let chores = BatchChores {
            box_id: self.box_id.as_deref(),
            sweep: true,
            sweep_limit: self.sweep_limit,
            prune,
            verify: self.verifier.due(),
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
                let next = holds::next_expiry(conn)
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
            done = super::checkpoint::run(&self.conn, "TRUNCATE");
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
            None => super::checkpoint::run(&self.conn, mode),
        };
        if done {
            self.commits_since_checkpoint = 0;
        }
    }
}

/// What a batch does besides its commands.
#[derive(Clone, Copy, Default)]
struct BatchChores<'a> {
    /// `--box-id`, for the ids of new holds.
    box_id: Option<&'a str>,
    /// Expire due holds first, at most `sweep_limit`.
    sweep: bool,
    sweep_limit: i64,
    /// Delete idempotency records past the retention window.
    prune: bool,
    /// Compare the writer's memory with a SQL recount before committing (debug builds).
    verify: bool,
}

/// Paces the differential check of debug builds: it recounts whole drops, so it runs at most
/// once per 50 ms and never takes more than about a twentieth of the writer's time.
struct Verifier {
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
    fn due(&self) -> bool {
        cfg!(debug_assertions) && Instant::now() >= self.next
    }

    fn ran(&mut self, cost: Duration) {
        self.next = Instant::now() + (cost * 20).max(Duration::from_millis(50));
    }
}

struct BatchRun {
    /// How long the differential check took, if it ran.
    verified: Option<Duration>,
    shutdown: bool,
    committed: bool,
    /// The batch committed into files that are no longer the database's: stop the process.
    fatal: Option<StoreError>,
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
fn run_batch(
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
                fatal: None,
            }
        };
        if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = StoreError::from(err);
            tracing::error!(error = %err, "could not begin the write transaction");
            return fail_all(queue, &err);
        }
        let mut batch = Batch::new(now, memory, keys, chores.box_id);
        let mut failed: Option<(Option<usize>, StoreError)> = None;
        if sweep {
            match holds::expire_due(conn, &mut batch, chores.sweep_limit) {
                Ok(expired) => batch.all_due_swept = (expired as i64) < chores.sweep_limit,
                Err(Outcome::Failed(err)) => failed = Some((None, err)),
                Err(Outcome::Refused(refusal)) => {
                    failed = Some((None, StoreError::Internal(refusal.code())))
                }
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
        if started.elapsed() > SLOW_BATCH {
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
        for cmd in queue.drain(..) {
            cmd.answer(None);
        }
        return BatchRun {
            verified,
            shutdown,
            committed: true,
            fatal: None,
        };
    }
}

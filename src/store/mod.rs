//! The only door to SQLite. One `store-writer` thread owns the read-write connection and applies
//! every change in group-committed batches (`writer`); reads go through a pool of `query_only`
//! connections (`read_pool`). Queries live beside the table group they touch.

pub mod access_codes;
mod admin_acts;
pub mod admin_keys;
pub mod attempts;
pub mod audit;
mod batch;
mod checkout;
pub mod checkpoint;
mod commands;
pub mod cost;
pub mod draw;
mod drop_rows;
pub mod drops;
mod error;
mod expiry;
pub mod files;
pub mod follower;
mod guard;
mod hold_rows;
pub mod holds;
pub mod idempotency;
pub mod invariants;
pub mod keys;
pub mod ledger;
mod memory;
pub mod migrations;
mod modes;
pub mod open;
pub mod orders;
pub mod outbox;
pub mod queue;
mod read_pool;
mod requests;
mod schedule;
mod tx;
pub mod waitlist;
pub mod webhooks;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::StoreError;
pub use files::DbFiles;
pub use keys::KeyBook;
pub use open::Synchronous;
pub use read_pool::ReadPool;
pub use requests::{Answer, ConfirmHold, IdempotentRequest, PlaceHold, ReceiptPart};
pub use writer::{Writer, WriterStats, WriterThread, EXIT_STORAGE_REPLACED};

use crate::domain::views::DropView;
use crate::domain::Clock;

/// Told about every committed change to a drop, after its commit, in commit order: the events
/// hub and the hot-read snapshots listen here.
pub trait CommitListener: Send + Sync + 'static {
    fn committed(&self, views: Vec<DropView>);
    /// A commit changed this drop but its new view could not be read: whatever memory holds
    /// of it is behind the database and must not answer anyone.
    fn forget(&self, drop_id: &crate::domain::DropId);
    /// A batch's outbox events committed: (buyer, type, data) of those about a buyer, for
    /// their own streams; called once per batch.
    fn announced(&self, _events: &[(&str, &str, &str)]) {}
    /// A batch moved these drops' ledger heads and signed them.
    fn signed(&self, _heads: &[crate::domain::ledger::SignedHead]) {}
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// Most commands committed in one transaction.
    pub batch_limit: usize,
    /// Commands waiting for the writer before new ones are refused with `overloaded`.
    pub queue_size: usize,
    pub read_pool_size: u32,
    /// Benchmark baseline only: one transaction per command on a pool of writers.
    pub naive_writers: bool,
    /// Most due holds one batch expires (a mass expiry is spread over batches; tests lower it).
    pub sweep_limit: i64,
    /// `--box-id`: carried in new holds' ids so a proxy can route them to this server.
    pub box_id: Option<String>,
    /// With a replica attached: checkpoint only what the shipper has shipped.
    pub checkpoint_gate: Option<crate::handshake::WriterGate>,
    /// How long an idempotency key is remembered (its record kept) after its first use.
    pub idempotency_retention: std::time::Duration,
    /// How long outbox events are kept once every active webhook endpoint has them.
    pub outbox_retention: std::time::Duration,
    /// Signs each drop's ledger head after every batch that appended to it.
    pub ledger_key: Option<Arc<crate::domain::ledger::LedgerKey>>,
    /// False only for the benchmark's baseline without the fairness ledger.
    pub ledger: bool,
}

/// The open store: the writer's handle, its thread, and the read pool.
pub struct Store {
    pub writer: Writer,
    pub reads: ReadPool,
    pub thread: WriterThread,
    /// The database's files as this process holds them (see `files`).
    pub files: Arc<DbFiles>,
    /// The idempotency keys memory knows (see `keys`).
    pub keys: Arc<KeyBook>,
    /// Rung when a commit appended outbox events.
    pub bell: Arc<outbox::OutboxBell>,
}

impl Store {
    pub fn open(
        config: &StoreConfig,
        clock: Arc<dyn Clock>,
        listener: Option<Arc<dyn CommitListener>>,
    ) -> Result<Store, StoreError> {
        let conn = open::open_writer(&config.path, config.synchronous)?;
        let files = DbFiles::keep(&config.path).map_err(|e| {
            StoreError::Setup(format!(
                "opening {} and its -wal and -shm: {e}",
                config.path.display()
            ))
        })?;
        let gated = match &config.checkpoint_gate {
            Some(gate) => {
                // Frames left in the WAL (a crash, a torn tail) are either shipped already or
                // go with the whole database the shipper sends after a crash, so they can be
                // folded in now: the WAL starts empty, and its length is where its last commit
                // ends, which the checkpoint protocol relies on.
                if !checkpoint::run(&conn, "TRUNCATE") {
                    // Busy: SQLite may restart the WAL in place at the first write.
                    gate.truncation_failed();
                }
                gate.install_hold(Box::new(checkpoint::WalGuard::open(&config.path)?));
                Some(checkpoint::GatedCheckpoints::new(
                    gate.clone(),
                    files.clone(),
                ))
            }
            None => None,
        };
        let reads = ReadPool::open(&config.path, config.read_pool_size)?;
        let keys = Arc::new(KeyBook::new(config.idempotency_retention));
        let known = idempotency::load(&conn, &keys)?;
        tracing::debug!(keys = known, "idempotency records loaded");
        let bell = Arc::new(outbox::OutboxBell::default());
        let (writer, thread) = writer::spawn(
            conn,
            files.clone(),
            gated,
            config,
            clock,
            listener,
            writer::Learners {
                keys: keys.clone(),
                bell: bell.clone(),
            },
        )?;
        Ok(Store {
            writer,
            reads,
            thread,
            files,
            keys,
            bell,
        })
    }
}

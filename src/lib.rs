//! dropd: a single-binary server for limited-stock drops.
//!
//! How a hold travels, and where each step lives:
//!
//! ```text
//!  buyer ──HTTP──> http/ (actix workers: auth, extract, problem+json)
//!                   │  sold out? answered from events/ + store::keys, no SQL, no writer
//!                   │  else: a Command on a bounded channel (full: 503 overloaded)
//!                   v
//!            store/writer/ (the one read-write connection, one thread)
//!                   │  a batch of commands in one BEGIN IMMEDIATE ... COMMIT
//!                   │  rules from domain/ (no I/O), counters in store::memory
//!                   │  answers sent only after the COMMIT
//!                   ├──> events/ (new drop views: hot reads, SSE fan-out by events-ticker)
//!                   v
//!            SQLite dropd.db + -wal  <── reads: store::read_pool (query_only, r2d2)
//!                   │
//!                   │  handshake/: which WAL frames may be checkpointed, which commits
//!                   │  the replica holds (writer side: store::checkpoint)
//!                   v
//!            replicate/shipper/ (wal-shipper thread) ──LTX files──> replicate/replica/
//!                                                               (a directory, or S3)
//!            replicate/restore: a replica back into a database (`dropd restore`)
//! ```
//!
//! `app` wires these together (and holds the shutdown order), `cli` is the command line,
//! `defaults` holds serve's defaults, `bench` (cargo feature `bench`, on by default) measures it
//! all. See `docs/design.md`.

/// The version and the git revision it was built from (`unknown` outside a checkout).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DROPD_REVISION"), ")");
pub const REVISION: &str = env!("DROPD_REVISION");

pub mod app;
pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod control;
pub mod defaults;
pub mod demo;
pub mod domain;
pub mod events;
pub mod handshake;
pub mod http;
pub mod outbox;
pub mod replicate;
pub mod stats;
pub mod store;
pub mod telemetry;

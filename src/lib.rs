//! dropd: a single-binary server for limited-stock drops.
//!
//! ```text
//! buyers --HTTP--> actix workers --Command (bounded channel)--> store-writer thread
//!    ^                 |                                           | BEGIN IMMEDIATE
//!    |                 | reads: r2d2 pool (query_only)             | ...a batch of commands...
//!    |                 v                                           | COMMIT (synchronous=FULL)
//!    |            SQLite file (WAL mode) <--------------------------+ then answer each command
//! ```
//!
//! `domain` holds the rules (no I/O), `store` is the only door to SQLite, `http` is the actix
//! edge, `app` wires them together. See `docs/design.md`.

pub mod app;
pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod defaults;
pub mod demo;
pub mod domain;
pub mod events;
pub mod handshake;
pub mod http;
pub mod replicate;
pub mod stats;
pub mod store;
pub mod telemetry;

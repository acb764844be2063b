//! Committed drop state in memory: the hot-read snapshots every `GET /v1/drops/{drop}` is served
//! from, and the hub that fans stock changes out to SSE subscribers within a CPU budget.
//!
//! The writer tells the hub about every commit (`store::CommitListener`); nothing here writes.
//! `hub` is the front; behind it `cache` keeps the views, `diff` says what changed, `fanout`
//! queues messages to subscribers, and `ticker` paces it.

pub mod buyers;
mod cache;
mod diff;
mod fanout;
mod hub;
mod sse;
mod stats;
mod ticker;

pub use cache::{Cached, LoadError};
pub use fanout::SubscribeError;
pub use hub::{Hub, HubConfig};
pub use stats::HubStats;

//! Committed drop state in memory: the hot-read snapshots every `GET /v1/drops/{drop}` is served
//! from, and the hub that fans stock changes out to SSE subscribers within a CPU budget.
//!
//! The writer tells the hub about every commit (`store::CommitListener`); nothing here writes.

mod hub;
mod sse;

pub use hub::{state_at as hub_state_at, Cached, Hub, HubConfig, HubStats, SubscribeError};

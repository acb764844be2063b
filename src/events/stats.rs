//! What the hub counts, for `/metrics`, the operator page and the benchmark.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct HubStats {
    /// Views read from SQLite because memory had none (one per coalesced miss).
    pub loads: AtomicU64,
    pub ticks: AtomicU64,
    /// Messages queued to subscribers.
    pub messages: AtomicU64,
    /// Time spent fanning out, in microseconds.
    pub fanout_micros: AtomicU64,
    /// The current tick interval, in milliseconds.
    pub interval_millis: AtomicU64,
    /// Messages dropped for subscribers that could not keep up.
    pub lagged: AtomicU64,
}

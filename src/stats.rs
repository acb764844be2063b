//! Live counters for the operator page, cheap enough for the hot path (one relaxed atomic add).
//! Prometheus gets the same figures through `metrics`; these are kept so the page can read them
//! back without parsing an exposition.

use std::sync::atomic::{AtomicU64, Ordering};

/// Outcomes of hold attempts, in the order the page shows them.
pub const OUTCOMES: [&str; 8] = [
    "held",
    "sold-out",
    "sold-out-from-memory",
    "limit-exceeded",
    "drop-not-live",
    "replayed",
    "overloaded",
    "other",
];

static ATTEMPTS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static BATCHES: AtomicU64 = AtomicU64::new(0);
static BATCHED_COMMANDS: AtomicU64 = AtomicU64::new(0);
static WAL_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes the writer wrote into the WAL (frames: page plus frame header).
pub fn count_wal_bytes(bytes: u64) {
    WAL_BYTES.fetch_add(bytes, Ordering::Relaxed);
    metrics::counter!("dropd_wal_bytes_written_total").increment(bytes);
}

pub fn wal_bytes() -> u64 {
    WAL_BYTES.load(Ordering::Relaxed)
}

pub fn count_attempt(outcome: &str) {
    let index = OUTCOMES
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(OUTCOMES.len() - 1);
    ATTEMPTS[index].fetch_add(1, Ordering::Relaxed);
    metrics::counter!("dropd_hold_attempts_total", "outcome" => OUTCOMES[index]).increment(1);
}

pub fn count_batch(commands: usize) {
    BATCHES.fetch_add(1, Ordering::Relaxed);
    BATCHED_COMMANDS.fetch_add(commands as u64, Ordering::Relaxed);
}

/// Cumulative attempts per outcome since start.
pub fn attempts() -> Vec<(&'static str, u64)> {
    OUTCOMES
        .iter()
        .zip(ATTEMPTS.iter())
        .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
        .collect()
}

/// (batches committed, commands in them) since start.
pub fn batches() -> (u64, u64) {
    (
        BATCHES.load(Ordering::Relaxed),
        BATCHED_COMMANDS.load(Ordering::Relaxed),
    )
}

//! What the load generator sends and how it counts answers: the workloads, the shared request
//! parts, one group's tallies, and the answer's class. A leaf: the closed loop (`load`) and the
//! raw connection (`raw`) both build on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::header::HeaderValue;

/// What one group of connections does.
#[derive(Debug, Clone)]
pub enum Workload {
    /// `GET /healthz`: the ceiling.
    Health,
    /// `POST /v1/drops/{drop}/holds` for one unit.
    Hold { drop: String },
    /// A hold, then its confirmation, per buyer.
    Checkout { drop: String },
    /// `GET /v1/drops/{drop}`.
    ReadDrop { drop: String },
    /// `GET /v1/drops/{drop}/events`, read until the phase ends and a grace period after.
    Watch { drop: String },
    /// Holds as many buyers send them through a proxy in front: each buyer from an address
    /// of its own, named in `X-Forwarded-For`.
    HoldForwarded { drop: String },
    /// A scalper: one buyer's token, one address, holds as fast as answers come.
    Scalp { drop: String },
    /// A flooding host: holds under many buyers' tokens, all from one address.
    Flood { drop: String },
    /// `POST /v1/drops/{drop}/queue`: buyers joining a queue drop's pre-queue.
    Join { drop: String },
    /// `GET /v1/drops/{drop}/queue`: buyers reading their place (and, once served, their
    /// signed admission).
    QueuePlace { drop: String },
}

/// How long watchers keep reading after the phase, to see the final state arrive.
pub const WATCH_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Group {
    pub workload: Workload,
    pub connections: usize,
}

/// What a group measured.
pub struct GroupResult {
    pub requests: u64,
    /// Transport failures (connect, reset, timeout): never counted as answers.
    pub errors: u64,
    /// Answers by outcome: `held`, `ordered`, a problem `code`, or `other`.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Latency in microseconds; for watchers, each one's longest wait between two messages
    /// while the phase ran (how stale a page could get).
    pub latency: Histogram<u64>,
    /// Watchers only: microseconds after the phase ended until the last message arrived (how long
    /// until every page showed the final stock).
    pub catch_up: Histogram<u64>,
    pub elapsed: Duration,
    pub(super) started: Option<Instant>,
    pub(super) finished: Option<Instant>,
}

impl GroupResult {
    pub(super) fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            outcomes: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, 120_000_000, 3)
                .expect("static histogram bounds"),
            catch_up: Histogram::new_with_bounds(1, 120_000_000, 3)
                .expect("static histogram bounds"),
            elapsed: Duration::ZERO,
            started: None,
            finished: None,
        }
    }

    pub(super) fn merge(&mut self, other: GroupResult) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        let _ = self.latency.add(&other.latency);
        let _ = self.catch_up.add(&other.catch_up);
        self.finished = self.finished.max(other.finished);
    }

    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn outcome(&self, name: &str) -> u64 {
        self.outcomes.get(name).copied().unwrap_or(0)
    }
}

/// Shared, prebuilt request parts: tokens are signed once, not per request.
pub struct Ctx {
    pub addr: SocketAddr,
    pub host: HeaderValue,
    pub tokens: Vec<HeaderValue>,
    /// Makes idempotency keys unique across phases and runs.
    pub run_id: String,
}

pub(super) const HOLD_BODY: &[u8] = br#"{"sku":"S1","quantity":1}"#;

/// The problem codes a stampede meets; anything else is counted as `other`.
const CODES: &[&str] = &[
    "sold-out",
    "limit-exceeded",
    "drop-not-live",
    "overloaded",
    "unavailable",
    "insufficient-storage",
    "idempotency-key-reused",
    "validation-failed",
    "unauthorized",
    "not-found",
    "internal",
    "too-many-requests",
];

/// Cheap on purpose: the load generator must cost far less per request than the server.
pub(super) fn classify(status: u16, body: &[u8]) -> &'static str {
    match status {
        200 => "ok",
        201 => "held",
        2010 => "ordered",
        _ => problem_code(body).unwrap_or("other"),
    }
}

pub(super) fn problem_code(body: &[u8]) -> Option<&'static str> {
    const NEEDLE: &[u8] = br#""code":""#;
    let start = body.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let rest = &body[start..];
    let code = &rest[..rest.iter().position(|b| *b == b'"')?];
    CODES.iter().copied().find(|c| c.as_bytes() == code)
}

//! Every reason the rules say no. Each has a stable kebab-case code that clients branch on;
//! the HTTP edge maps them to statuses in one place (`http::problem`).

use serde::{Deserialize, Serialize};

/// Serialized into the idempotency record, so a replay renders exactly the first answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub enum Refusal {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{sku} is sold out: {available} left, {requested} requested")]
    SoldOut {
        sku: String,
        available: i64,
        requested: i64,
    },
    #[error("the limit is {limit} per buyer for this drop; you already have {used} and asked for {requested}")]
    LimitExceeded {
        limit: i64,
        used: i64,
        requested: i64,
    },
    #[error("the drop is {state}, not live")]
    DropNotLive { state: String },
    #[error("the hold expired at {expired_at}; its units are back on sale")]
    HoldExpired { expired_at: String },
    #[error("the hold was released; its units are back on sale")]
    HoldReleased,
    #[error("the hold is already confirmed as order {order_id}")]
    HoldConfirmed { order_id: String },
    #[error(
        "this Idempotency-Key was used with a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    #[error("{detail}")]
    ValidationFailed { detail: String },
    #[error("drop {drop_id} has no SKU {sku}")]
    UnknownSku { drop_id: String, sku: String },
    #[error("a drop with id {drop_id} already exists")]
    DropExists { drop_id: String },
    #[error("stock of {sku} cannot go below {committed} units already held or sold (asked for {requested})")]
    StockBelowCommitted {
        sku: String,
        committed: i64,
        requested: i64,
    },
    #[error("a {from} drop cannot become {to}")]
    InvalidTransition { from: String, to: String },
    #[error("the drop's settings are at revision {current}, not {expected}: read the drop again and reapply your change")]
    StaleRevision { expected: i64, current: i64 },
    #[error("drop {drop_id} is first come, first served: it has no queue")]
    NoQueue { drop_id: String },
    #[error("the queue of drop {drop_id} is closed: the drop is {state}")]
    QueueClosed { drop_id: String, state: String },
    #[error("drop {drop_id} admits buyers from its queue: join it (POST /v1/drops/{drop_id}/queue) and send the admission token you get when your place is served in the Dropd-Admission header")]
    NotAdmitted { drop_id: String },
    #[error("your admission to drop {drop_id} expired at {expired_at}")]
    AdmissionExpired { drop_id: String, expired_at: String },
    #[error("{sku} is not sold out ({available} available): place a hold instead of waiting")]
    NotSoldOut { sku: String, available: i64 },
    #[error("drop {drop_id} is not a raffle (mode: draw): hold its units instead")]
    NoDraw { drop_id: String },
    #[error("the entries of drop {drop_id} closed at its start ({starts_at}), when the winners were drawn")]
    EntriesClosed { drop_id: String, starts_at: String },
    #[error("that access code does not open drop {drop_id}: {reason}")]
    CodeInvalid { drop_id: String, reason: String },
    #[error("that access code ({tier}) of drop {drop_id} is used up")]
    CodeUsedUp { drop_id: String, tier: String },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotFound { .. } => "not-found",
            Refusal::SoldOut { .. } => "sold-out",
            Refusal::LimitExceeded { .. } => "limit-exceeded",
            Refusal::DropNotLive { .. } => "drop-not-live",
            Refusal::HoldExpired { .. } => "hold-expired",
            Refusal::HoldReleased => "hold-released",
            Refusal::HoldConfirmed { .. } => "hold-confirmed",
            Refusal::IdempotencyKeyReused => "idempotency-key-reused",
            Refusal::ValidationFailed { .. } => "validation-failed",
            Refusal::UnknownSku { .. } => "unknown-sku",
            Refusal::DropExists { .. } => "drop-exists",
            Refusal::StockBelowCommitted { .. } => "stock-below-committed",
            Refusal::InvalidTransition { .. } => "invalid-state-transition",
            Refusal::StaleRevision { .. } => "stale-revision",
            Refusal::NoQueue { .. } => "no-queue",
            Refusal::QueueClosed { .. } => "queue-closed",
            Refusal::NotAdmitted { .. } => "not-admitted",
            Refusal::AdmissionExpired { .. } => "admission-expired",
            Refusal::NotSoldOut { .. } => "not-sold-out",
            Refusal::NoDraw { .. } => "no-draw",
            Refusal::EntriesClosed { .. } => "entries-closed",
            Refusal::CodeInvalid { .. } => "code-invalid",
            Refusal::CodeUsedUp { .. } => "code-used-up",
        }
    }

    /// Outcomes worth remembering under an Idempotency-Key: the request was well formed, named
    /// something that exists, competed while the drop was live, and the rules decided. Anything
    /// else is not recorded (and writes nothing), so the client can fix the request, or wait for
    /// the drop to open, and retry with the same key.
    pub fn is_recorded(&self) -> bool {
        !matches!(
            self,
            Refusal::ValidationFailed { .. }
                | Refusal::IdempotencyKeyReused
                | Refusal::UnknownSku { .. }
                | Refusal::NotFound { .. }
                | Refusal::DropNotLive { .. }
                | Refusal::NotAdmitted { .. }
                | Refusal::AdmissionExpired { .. }
                | Refusal::CodeInvalid { .. }
                | Refusal::CodeUsedUp { .. }
        )
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Refusal::NotFound { what: what.into() }
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Refusal::ValidationFailed {
            detail: detail.into(),
        }
    }
}

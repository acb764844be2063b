//! What handlers ask of the writer. Each command carries its own reply channel; the writer answers
//! only after the transaction holding the command's effect has committed.

use tokio::sync::oneshot;

use crate::domain::views::{DropPatch, DropView, HoldView, NewDrop, OrderView};
use crate::domain::{BuyerId, DropId, HoldId, IdempotencyKey, Refusal};

use super::StoreError;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Who asks, under which key, and a digest of exactly what they asked (route and canonical body):
/// the same key with another fingerprint is refused.
#[derive(Debug, Clone)]
pub struct IdempotentRequest {
    pub buyer: BuyerId,
    pub key: IdempotencyKey,
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct PlaceHold {
    pub drop_id: DropId,
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone)]
pub struct ConfirmHold {
    pub hold_id: HoldId,
    pub payment_ref: String,
}

/// The outcome of an idempotent command, fresh or replayed from its record.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub result: Result<T, Refusal>,
    pub replayed: bool,
}

pub(crate) enum Command {
    PlaceHold(IdempotentRequest, PlaceHold, Reply<Answer<HoldView>>),
    ConfirmHold(IdempotentRequest, ConfirmHold, Reply<Answer<OrderView>>),
    ReleaseHold {
        buyer: BuyerId,
        hold_id: HoldId,
        reply: Reply<Result<HoldView, Refusal>>,
    },
    CreateDrop {
        spec: NewDrop,
        reply: Reply<Result<DropView, Refusal>>,
    },
    UpdateDrop {
        drop_id: DropId,
        patch: DropPatch,
        reply: Reply<Result<DropView, Refusal>>,
    },
    AdjustStock {
        drop_id: DropId,
        sku: String,
        delta: i64,
        reply: Reply<Result<DropView, Refusal>>,
    },
    CreateAdminKey {
        name: String,
        key_hash: [u8; 32],
        reply: Reply<String>,
    },
    /// Runs a batch now (expiring due holds); answers once it committed.
    Sync {
        reply: Reply<()>,
    },
    /// Finish what is queued, checkpoint, and stop.
    Shutdown,
}

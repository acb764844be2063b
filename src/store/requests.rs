//! What a request asks of the writer, as plain data. Handlers build these, commands carry them,
//! and the rules in `holds` and `idempotency` read them; this module depends on nothing else of
//! the store, so none of those depends on another through it.

use crate::domain::{BuyerId, DropId, HoldId, IdempotencyKey, Refusal};

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
    /// Until when (Unix ms) the buyer's verified admission token admits them, on a queue drop.
    pub admitted_until: Option<i64>,
    /// An access code (a presale opens the drop before its start to its holders).
    pub code: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ConfirmHold {
    pub hold_id: HoldId,
    pub payment_ref: String,
    /// A payment service (who, for the audit log) confirms any buyer's hold; a buyer only
    /// their own.
    pub service: Option<crate::store::audit::Acting>,
}

/// The outcome of an idempotent command, fresh or replayed from its record.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub result: Result<T, Refusal>,
    pub replayed: bool,
    /// A hold attempt the writer numbered: its receipt (sealed once the batch is signed).
    pub receipt: Option<ReceiptPart>,
}

/// A receipt before the batch that decided the attempt is chained and signed, and after.
#[derive(Debug, Clone)]
pub enum ReceiptPart {
    Pending {
        drop_id: DropId,
        attempt_seq: i64,
        position: i64,
        outcome: String,
    },
    /// Rebuilt from the rows (a replay under the key).
    Sealed(Box<crate::domain::ledger::Receipt>),
    /// Sealed by the batch that decided it.
    Fresh(Box<super::ledger::FreshReceipt>),
}

impl serde::Serialize for ReceiptPart {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ReceiptPart::Sealed(receipt) => receipt.serialize(serializer),
            ReceiptPart::Fresh(receipt) => receipt.serialize(serializer),
            ReceiptPart::Pending { .. } => serializer.serialize_none(),
        }
    }
}

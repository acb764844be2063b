//! A buyer asks to pay for a hold: the payment service hears of it through the outbox
//! (`checkout.requested`, delivered by webhook), charges the buyer, and confirms the hold with
//! its service key; the buyer sees the order arrive on their own stream.

use rusqlite::{named_params, Connection};

use crate::domain::clock::rfc3339;
use crate::domain::outbox::{CheckoutData, EventKind};
use crate::domain::views::HoldView;
use crate::domain::{BuyerId, Currency, DropId, HoldId, Money, Refusal};

use super::batch::Batch;
use super::holds::{load_owned, still_open};
use super::tx::Outcome;

const PRICE: &str = "SELECT price_amount, currency FROM skus WHERE drop_id = :drop AND sku = :sku";

/// Announces the request for the buyer's active hold; writes nothing else, so asking again
/// only announces again (the payment service deduplicates by hold).
pub(crate) fn request(
    conn: &Connection,
    batch: &mut Batch<'_>,
    buyer: &BuyerId,
    hold_id: &HoldId,
) -> Result<HoldView, Outcome> {
    let (hold, _) = load_owned(conn, buyer, hold_id)?;
    still_open(&hold, batch.now)?;
    // Prices change only by admin edits, which the writer's memory never holds unwritten.
    let unit = conn.prepare_cached(PRICE)?.query_row(
        named_params! {":drop": hold.drop_id, ":sku": hold.sku},
        |r| {
            Ok(Money {
                amount: r.get(0)?,
                currency: Currency::from_trusted(r.get(1)?),
            })
        },
    )?;
    let total = unit
        .times(hold.quantity)
        .ok_or_else(|| Refusal::invalid("order total is too large"))?;
    batch.announce_quietly(
        buyer.as_str(),
        &DropId::from_trusted(hold.drop_id.clone()),
        EventKind::CheckoutRequested,
        &CheckoutData {
            hold_id: &hold.hold_id,
            sku: &hold.sku,
            quantity: hold.quantity,
            buyer: buyer.as_str(),
            total: &total,
            expires_at: rfc3339(hold.expires_at),
        },
    );
    Ok(hold)
}

//! Holds that reach their time: the sweep that ends them (bounded per batch), the due holds an
//! attempt ends before it is decided, and when the next one falls due.

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection};

use crate::domain::clock::from_millis;
use crate::domain::ledger::Event;
use crate::domain::outbox::{EventKind, HoldData};
use crate::domain::views::HoldState;
use crate::domain::{BuyerId, DropId};

use super::batch::Batch;
use super::hold_rows::{drop_memory, end_hold, give_back};
use super::tx::Outcome;
use super::waitlist;

/// Holds due at the batch's time that the sweep has not ended yet (through the partial index on
/// active holds' expiry, so only due holds are read).
const DUE_OF_BUYER: &str = "SELECT seq, sku, buyer, quantity, id FROM holds
                            WHERE state = 'active' AND expires_at <= :now
                              AND drop_id = :drop AND buyer = :buyer";
const DUE_OF_SKU: &str = "SELECT seq, sku, buyer, quantity, id FROM holds
                          WHERE state = 'active' AND expires_at <= :now
                            AND drop_id = :drop AND sku = :sku";

/// A due hold: number, SKU, buyer, quantity, public id.
pub(super) type DueHold = (i64, String, String, i64, String);

fn due(
    conn: &Connection,
    sql: &str,
    now: DateTime<Utc>,
    drop_id: &str,
    name: &str,
    value: &str,
) -> rusqlite::Result<Vec<DueHold>> {
    conn.prepare_cached(sql)?
        .query_map(
            &[
                (":now", &now.timestamp_millis() as &dyn rusqlite::ToSql),
                (":drop", &drop_id),
                (name, &value),
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?
        .collect()
}

/// `hold.expired` for a hold the batch ended at its time.
pub(super) fn announce_expired(
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    hold: (&str, &str, &str, i64),
) {
    let (hold_id, sku, buyer, quantity) = hold;
    batch.announce_for(
        buyer,
        drop_id,
        EventKind::HoldExpired,
        &HoldData {
            hold_id,
            sku,
            quantity,
            buyer,
            attempt_seq: None,
            expires_at: None,
        },
    );
    batch.record(
        drop_id,
        Event::Expiry {
            hold_id: hold_id.to_owned(),
            sku: sku.to_owned(),
            quantity,
        },
    );
}

pub(super) fn units(holds: &[DueHold]) -> i64 {
    holds.iter().map(|h| h.3).sum()
}

/// The buyer's due holds in a drop.
pub(super) fn due_of_buyer(
    conn: &Connection,
    now: DateTime<Utc>,
    drop_id: &DropId,
    buyer: &BuyerId,
) -> rusqlite::Result<Vec<DueHold>> {
    due(
        conn,
        DUE_OF_BUYER,
        now,
        drop_id.as_str(),
        ":buyer",
        buyer.as_str(),
    )
}

/// A SKU's due holds.
pub(super) fn due_of_sku(
    conn: &Connection,
    now: DateTime<Utc>,
    drop_id: &DropId,
    sku: &str,
) -> rusqlite::Result<Vec<DueHold>> {
    due(conn, DUE_OF_SKU, now, drop_id.as_str(), ":sku", sku)
}

const DUE: &str = "SELECT seq, drop_id, sku, quantity, buyer, id FROM holds
                   WHERE state = 'active' AND expires_at <= :now
                   ORDER BY expires_at LIMIT :limit";
const NEXT_EXPIRY: &str = "SELECT MIN(expires_at) FROM holds WHERE state = 'active'";

/// Expires up to `limit` holds that are due at the batch's time; returns how many.
pub(crate) fn expire_due(
    conn: &Connection,
    batch: &mut Batch<'_>,
    limit: i64,
) -> Result<usize, Outcome> {
    type Due = (i64, String, String, i64, String, String);
    let due: Vec<Due> = conn
        .prepare_cached(DUE)?
        .query_map(
            named_params! {":now": batch.now.timestamp_millis(), ":limit": limit},
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )?
        .collect::<Result<_, _>>()?;
    for (hold_seq, drop_id, sku, quantity, buyer, id) in &due {
        let drop = drop_memory(conn, batch.memory, drop_id)?;
        give_back(conn, drop, drop_id, sku, buyer, *quantity)?;
        end_hold(conn, *hold_seq, HoldState::Expired, batch.now)?;
        let drop_id = DropId::from_trusted(drop_id.clone());
        announce_expired(batch, &drop_id, (id, sku, buyer, *quantity));
    }
    // Offered once everything due is back, so a waiter is offered what all of it frees.
    let mut freed: Vec<(&String, &String)> = due.iter().map(|h| (&h.1, &h.2)).collect();
    freed.sort_unstable();
    freed.dedup();
    for (drop_id, sku) in freed {
        waitlist::offer(conn, batch, &DropId::from_trusted(drop_id.clone()), sku)?;
    }
    Ok(due.len())
}

/// Before an attempt on a SKU with waiters: its due holds end and every free unit goes to the
/// waiters, so the attempt competes only for what no waiter can take.
pub(crate) fn settle(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    sku: &str,
) -> Result<(), Outcome> {
    let waiters = match batch.memory.drop_mut(conn, drop_id)? {
        Some(drop) => drop
            .sku(conn, drop_id.as_str(), sku)?
            .map_or(0, |s| s.waiters),
        None => 0,
    };
    if waiters == 0 {
        return Ok(());
    }
    if !batch.all_due_swept {
        expire_due_of_sku(conn, batch, drop_id, sku)?;
    }
    waitlist::offer(conn, batch, drop_id, sku)
}

/// Ends every due hold of one SKU (before an attempt on it, when waiters are owed its units).
fn expire_due_of_sku(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    sku: &str,
) -> Result<(), Outcome> {
    let due_holds = due_of_sku(conn, batch.now, drop_id, sku)?;
    for (hold_seq, sku, owner, quantity, id) in &due_holds {
        let drop = drop_memory(conn, batch.memory, drop_id.as_str())?;
        give_back(conn, drop, drop_id.as_str(), sku, owner, *quantity)?;
        end_hold(conn, *hold_seq, HoldState::Expired, batch.now)?;
        announce_expired(batch, drop_id, (id, sku, owner, *quantity));
    }
    Ok(())
}

/// When the next active hold expires, if any.
pub(crate) fn next_expiry(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let ms: Option<i64> = conn
        .prepare_cached(NEXT_EXPIRY)?
        .query_row([], |r| r.get(0))?;
    Ok(ms.map(from_millis))
}

//! A hold's row and its units: writing a decided hold, ending one, giving its units back. The
//! rules that decide are the callers' (placing, releasing, expiring, offering).

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection};

use crate::domain::views::HoldState;
use crate::domain::{DropId, HoldId, SkuStock};

use super::memory::{DropMemory, Memory};
use super::tx::Outcome;
use super::StoreError;

const INSERT: &str = "INSERT INTO holds (secret, box, drop_id, sku, buyer, quantity, attempt_seq,
                          state, created_at, expires_at)
                      VALUES (:secret, :box, :drop, :sku, :buyer, :quantity, :seq, 'active', :now,
                          :expires)";

const END: &str = "UPDATE holds SET state = :state, ended_at = :now WHERE seq = :seq";

/// A hold to write, decided already: the caller checked the stock and the buyer's limit.
pub(crate) struct NewHold<'a> {
    pub drop_id: &'a str,
    pub sku: &'a str,
    pub buyer: &'a str,
    pub quantity: i64,
    pub attempt_seq: i64,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Holds the units in memory and writes the hold; answers its id and the SKU's stock after.
pub(crate) fn insert(
    conn: &Connection,
    box_id: Option<&str>,
    drop: &mut DropMemory,
    new: &NewHold<'_>,
) -> Result<(HoldId, SkuStock), Outcome> {
    let sku = drop
        .sku(conn, new.drop_id, new.sku)?
        .ok_or(StoreError::Internal("a SKU memory had is gone"))?;
    let held = sku.stock.hold(new.sku, new.quantity)?;
    sku.set(held);
    drop.add_units(new.buyer, new.quantity);
    let secret = HoldId::new_secret();
    conn.prepare_cached(INSERT)?.execute(named_params! {
        ":secret": secret, ":box": box_id, ":drop": new.drop_id, ":sku": new.sku,
        ":buyer": new.buyer, ":quantity": new.quantity, ":seq": new.attempt_seq,
        ":now": new.now.timestamp_millis(), ":expires": new.expires_at.timestamp_millis(),
    })?;
    Ok((
        HoldId::numbered(box_id, conn.last_insert_rowid(), secret),
        held,
    ))
}

/// An ended hold's units go back on sale and stop counting for its buyer.
pub(super) fn give_back(
    conn: &Connection,
    drop: &mut DropMemory,
    drop_id: &str,
    sku: &str,
    buyer: &str,
    quantity: i64,
) -> Result<(), Outcome> {
    // Foreign keys guarantee the SKU of a hold exists.
    let mem = drop.sku(conn, drop_id, sku)?.ok_or(StoreError::Internal(
        "a hold names a SKU that does not exist",
    ))?;
    mem.set(mem.stock.release(quantity));
    drop.add_units(buyer, -quantity);
    Ok(())
}

pub(super) fn drop_memory<'m>(
    conn: &Connection,
    memory: &'m mut Memory,
    drop_id: &str,
) -> Result<&'m mut DropMemory, Outcome> {
    Ok(memory
        .drop_mut(conn, &DropId::from_trusted(drop_id.to_owned()))?
        .ok_or(StoreError::Internal(
            "a hold names a drop that does not exist",
        ))?)
}

pub(super) fn end_hold(
    conn: &Connection,
    hold_seq: i64,
    state: HoldState,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(END)?.execute(
        named_params! {":state": state.as_str(), ":now": now.timestamp_millis(), ":seq": hold_seq},
    )?;
    Ok(())
}

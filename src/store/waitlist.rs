//! Waiting lists in the database: buyers waiting for a sold-out SKU, and the offers the writer
//! makes them from freed units, in the same transaction that freed them.

use std::collections::HashMap;

use chrono::Duration;
use rusqlite::{named_params, Connection, OptionalExtension};

use crate::domain::clock::from_millis;
use crate::domain::ledger::Event;
use crate::domain::outbox::{EventKind, HoldData};
use crate::domain::queue::{check_admission, Mode};
use crate::domain::waitlist::{
    check_join, offer_quantity, offer_seconds, WaitState, WaitlistEntry,
};
use crate::domain::{Allowance, BuyerId, DropId, DropState, Refusal};

use super::batch::Batch;
use super::hold_rows::{self, NewHold};
use super::tx::Outcome;
use super::StoreError;

/// A buyer asks to wait for `quantity` units of a sold-out SKU.
#[derive(Debug, Clone)]
pub struct JoinWaitlist {
    pub drop_id: DropId,
    pub sku: String,
    pub quantity: i64,
    /// As for holds: a queue drop's waiting list is for buyers its queue admitted.
    pub admitted_until: Option<i64>,
}

const COLUMNS: &str = "w.drop_id, w.sku, w.quantity, w.state, w.joined_at, h.id, w.rank, w.seq";
const WAITING_OF: &str = "SELECT seq FROM waitlist
                          WHERE drop_id = :drop AND sku = :sku AND buyer = :buyer
                            AND state = 'waiting'";
const INSERT: &str = "INSERT INTO waitlist (drop_id, sku, buyer, quantity, rank, joined_at, state)
                      VALUES (:drop, :sku, :buyer, :quantity, :rank, :now, 'waiting')";
const AHEAD: &str = "SELECT COUNT(*) FROM waitlist
                     WHERE drop_id = :drop AND sku = :sku AND state = 'waiting'
                       AND (rank, seq) < (:rank, :seq)";
const PLACE: &str = "SELECT place FROM queue_entries WHERE drop_id = :drop AND buyer = :buyer";
const NEXT: &str = "SELECT seq, buyer, quantity, rank FROM waitlist
                    WHERE drop_id = :drop AND sku = :sku AND state = 'waiting'
                      AND (rank, seq) > (:rank, :seq)
                    ORDER BY rank, seq LIMIT 64";
const OFFERED: &str = "UPDATE waitlist SET state = 'offered', hold_seq = :hold, ended_at = :now
                       WHERE seq = :seq";
const LEFT: &str = "UPDATE waitlist SET state = 'left', ended_at = :now WHERE seq = :seq";

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(WaitlistEntry, i64, i64)> {
    let state: String = r.get(3)?;
    Ok((
        WaitlistEntry {
            drop_id: r.get(0)?,
            sku: r.get(1)?,
            quantity: r.get(2)?,
            state: WaitState::parse(&state).unwrap_or(WaitState::Left),
            joined_at: from_millis(r.get(4)?),
            position: None,
            hold_id: r.get(5)?,
            fresh: false,
        },
        r.get(6)?,
        r.get(7)?,
    ))
}

/// The entry numbered `seq`, with its position while it waits.
fn entry(conn: &Connection, seq: i64) -> rusqlite::Result<WaitlistEntry> {
    let sql = format!(
        "SELECT {COLUMNS} FROM waitlist w LEFT JOIN holds h ON h.seq = w.hold_seq
         WHERE w.seq = :seq"
    );
    let (mut entry, rank, seq) = conn
        .prepare_cached(&sql)?
        .query_row(named_params! {":seq": seq}, entry_from_row)?;
    with_position(conn, &mut entry, rank, seq)?;
    Ok(entry)
}

fn with_position(
    conn: &Connection,
    entry: &mut WaitlistEntry,
    rank: i64,
    seq: i64,
) -> rusqlite::Result<()> {
    if entry.state == WaitState::Waiting {
        let ahead: i64 = conn.prepare_cached(AHEAD)?.query_row(
            named_params! {":drop": entry.drop_id, ":sku": entry.sku, ":rank": rank, ":seq": seq},
            |r| r.get(0),
        )?;
        entry.position = Some(ahead + 1);
    }
    Ok(())
}

/// `buyer` waits for `cmd.quantity` units of a sold-out SKU, once: asking again answers the
/// entry they have.
pub(crate) fn join(
    conn: &Connection,
    batch: &mut Batch<'_>,
    buyer: &BuyerId,
    cmd: &JoinWaitlist,
) -> Result<WaitlistEntry, Outcome> {
    let now = batch.now;
    let load = batch.memory.buyer_load();
    let drop = batch
        .memory
        .drop_mut(conn, &cmd.drop_id)?
        .ok_or_else(|| Refusal::not_found(format!("drop {}", cmd.drop_id)))?;
    let state = drop.rules.schedule.state_at(now);
    if state != DropState::Live {
        return Err(Refusal::DropNotLive {
            state: state.as_str().to_owned(),
        }
        .into());
    }
    let mode = drop.rules.mode;
    check_admission(
        mode,
        cmd.admitted_until,
        now.timestamp_millis(),
        cmd.drop_id.as_str(),
    )?;
    let drop_id = cmd.drop_id.as_str();
    let known = conn
        .prepare_cached(WAITING_OF)?
        .query_row(
            named_params! {":drop": drop_id, ":sku": cmd.sku, ":buyer": buyer.as_str()},
            |r| r.get::<_, i64>(0),
        )
        .optional()?;
    if let Some(seq) = known {
        return Ok(entry(conn, seq)?);
    }
    let limit = drop.rules.per_buyer_limit;
    let stock = drop
        .sku(conn, drop_id, &cmd.sku)?
        .ok_or_else(|| Refusal::UnknownSku {
            drop_id: drop_id.to_owned(),
            sku: cmd.sku.clone(),
        })?
        .for_sale(0);
    let used = drop.used(conn, &cmd.drop_id, buyer, load)?;
    check_join(Allowance { limit, used }, stock, &cmd.sku, cmd.quantity)?;

    // Decided: from here on it writes. A queue drop's waiters keep the queue's order.
    let rank = match mode {
        Mode::Queue => conn
            .prepare_cached(PLACE)?
            .query_row(
                named_params! {":drop": drop_id, ":buyer": buyer.as_str()},
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten()
            .unwrap_or(i64::MAX),
        // Behind the entries the draw did not reach, which wait at their drawn places.
        Mode::Draw => i64::MAX,
        Mode::Fcfs => 0,
    };
    let seq = enqueue(
        conn,
        batch,
        &cmd.drop_id,
        (&cmd.sku, buyer, cmd.quantity),
        rank,
    )?;
    let mut entry = entry(conn, seq)?;
    entry.fresh = true;
    Ok(entry)
}

/// Puts a buyer on a SKU's waiting list at `rank` (ties in arrival order); answers the entry's
/// number. The caller checked they may wait.
pub(crate) fn enqueue(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    (sku, buyer, quantity): (&str, &BuyerId, i64),
    rank: i64,
) -> Result<i64, Outcome> {
    conn.prepare_cached(INSERT)?.execute(named_params! {
        ":drop": drop_id.as_str(), ":sku": sku, ":buyer": buyer.as_str(), ":quantity": quantity,
        ":rank": rank, ":now": batch.now.timestamp_millis(),
    })?;
    let seq = conn.last_insert_rowid();
    if let Some(drop) = batch.memory.drop_mut(conn, drop_id)? {
        if let Some(mem) = drop.sku(conn, drop_id.as_str(), sku)? {
            mem.waiters += 1;
        }
    }
    batch.record(
        drop_id,
        Event::Wait {
            buyer: buyer.to_string(),
            sku: sku.to_owned(),
            quantity,
        },
    );
    Ok(seq)
}

/// `buyer` leaves a SKU's waiting list. Leaving again, or after the offer came, answers the
/// entry as it is.
pub(crate) fn leave(
    conn: &Connection,
    batch: &mut Batch<'_>,
    buyer: &BuyerId,
    drop_id: &DropId,
    sku: &str,
) -> Result<WaitlistEntry, Outcome> {
    let waiting = conn
        .prepare_cached(WAITING_OF)?
        .query_row(
            named_params! {":drop": drop_id.as_str(), ":sku": sku, ":buyer": buyer.as_str()},
            |r| r.get::<_, i64>(0),
        )
        .optional()?;
    let Some(seq) = waiting else {
        return latest(conn, drop_id.as_str(), sku, buyer)?.ok_or_else(|| {
            Refusal::not_found(format!(
                "your waiting-list entry for {sku} in drop {drop_id}"
            ))
            .into()
        });
    };
    conn.prepare_cached(LEFT)?
        .execute(named_params! {":seq": seq, ":now": batch.now.timestamp_millis()})?;
    if let Some(mem) = batch
        .memory
        .drop_mut(conn, drop_id)?
        .map(|d| d.sku(conn, drop_id.as_str(), sku))
        .transpose()?
        .flatten()
    {
        mem.waiters -= 1;
    }
    batch.record(
        drop_id,
        Event::Unwait {
            buyer: buyer.to_string(),
            sku: sku.to_owned(),
        },
    );
    Ok(entry(conn, seq)?)
}

fn latest(
    conn: &Connection,
    drop_id: &str,
    sku: &str,
    buyer: &BuyerId,
) -> Result<Option<WaitlistEntry>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM waitlist w LEFT JOIN holds h ON h.seq = w.hold_seq
         WHERE w.drop_id = :drop AND w.sku = :sku AND w.buyer = :buyer
         ORDER BY w.seq DESC LIMIT 1"
    );
    let found = conn
        .prepare_cached(&sql)?
        .query_row(
            named_params! {":drop": drop_id, ":sku": sku, ":buyer": buyer.as_str()},
            entry_from_row,
        )
        .optional()?;
    Ok(found.map(|(entry, _, _)| entry))
}

/// A buyer's entries in a drop's waiting lists, newest first, with their positions.
pub fn of_buyer(
    conn: &Connection,
    drop_id: &str,
    buyer: &BuyerId,
) -> Result<Vec<WaitlistEntry>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM waitlist w LEFT JOIN holds h ON h.seq = w.hold_seq
         WHERE w.drop_id = :drop AND w.buyer = :buyer ORDER BY w.seq DESC LIMIT 100"
    );
    let rows: Vec<(WaitlistEntry, i64, i64)> = conn
        .prepare_cached(&sql)?
        .query_map(
            named_params! {":drop": drop_id, ":buyer": buyer.as_str()},
            entry_from_row,
        )?
        .collect::<Result<_, _>>()?;
    let mut entries = Vec::with_capacity(rows.len());
    for (mut entry, rank, seq) in rows {
        with_position(conn, &mut entry, rank, seq)?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Waiters per drop and SKU, for the operator page (read once a second while it is open: the
/// waiting entries' index alone).
pub fn counts(conn: &Connection) -> Result<HashMap<(String, String), i64>, StoreError> {
    const COUNTS: &str = "SELECT drop_id, sku, COUNT(*) FROM waitlist
                          WHERE state = 'waiting' GROUP BY drop_id, sku";
    Ok(conn
        .prepare_cached(COUNTS)?
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<Result<_, _>>()?)
}

/// Hands the SKU's free units to its waiters in order, as offer holds: each waiter gets what is
/// free up to what they asked and their limit leaves; one at their limit keeps their place.
pub(crate) fn offer(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    sku: &str,
) -> Result<(), Outcome> {
    let now = batch.now;
    let load = batch.memory.buyer_load();
    let Some(drop) = batch.memory.drop_mut(conn, drop_id)? else {
        return Ok(());
    };
    if drop.rules.schedule.state_at(now) != DropState::Live {
        return Ok(());
    }
    let (limit, seconds) = (
        drop.rules.per_buyer_limit,
        offer_seconds(drop.rules.hold_seconds),
    );
    let mut offers = Vec::new();
    let mut after = (i64::MIN, 0i64);
    'pages: loop {
        let Some(mem) = drop.sku(conn, drop_id.as_str(), sku)? else {
            return Ok(());
        };
        if mem.waiters == 0 || mem.for_sale(0).available() == 0 {
            break;
        }
        let page: Vec<(i64, String, i64, i64)> = conn
            .prepare_cached(NEXT)?
            .query_map(
                named_params! {":drop": drop_id.as_str(), ":sku": sku,
                ":rank": after.0, ":seq": after.1},
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?
            .collect::<Result<_, _>>()?;
        if page.is_empty() {
            break;
        }
        for (seq, buyer, wanted, rank) in page {
            after = (rank, seq);
            let available = match drop.sku(conn, drop_id.as_str(), sku)? {
                Some(mem) => mem.for_sale(0).available(),
                None => 0,
            };
            if available == 0 {
                break 'pages;
            }
            let who = BuyerId::from_trusted(buyer.clone());
            let used = drop.used(conn, drop_id, &who, load)?;
            let Some(quantity) = offer_quantity(wanted, available, limit - used) else {
                continue;
            };
            let attempt_seq = drop.next_seq();
            let expires_at = now + Duration::seconds(seconds);
            let (hold_id, _) = hold_rows::insert(
                conn,
                batch.box_id,
                drop,
                &NewHold {
                    drop_id: drop_id.as_str(),
                    sku,
                    buyer: &buyer,
                    quantity,
                    attempt_seq,
                    now,
                    expires_at,
                },
            )?;
            conn.prepare_cached(OFFERED)?.execute(named_params! {
                ":hold": conn.last_insert_rowid(), ":now": now.timestamp_millis(), ":seq": seq,
            })?;
            if let Some(mem) = drop.sku(conn, drop_id.as_str(), sku)? {
                mem.waiters -= 1;
            }
            offers.push((
                buyer,
                quantity,
                attempt_seq,
                hold_id.to_string(),
                expires_at,
            ));
        }
    }
    for (buyer, quantity, attempt_seq, hold_id, expires_at) in offers {
        let data = HoldData {
            hold_id: &hold_id,
            sku,
            quantity,
            buyer: &buyer,
            attempt_seq: Some(attempt_seq),
            expires_at: Some(crate::domain::clock::rfc3339(expires_at)),
        };
        batch.announce_for(&buyer, drop_id, EventKind::HoldCreated, &data);
        batch.announce_for(&buyer, drop_id, EventKind::WaitlistOffered, &data);
        batch.record(
            drop_id,
            Event::Offer {
                attempt_seq,
                buyer,
                sku: sku.to_owned(),
                quantity,
                hold_id,
            },
        );
    }
    Ok(())
}

//! Holds: placing, confirming (which makes an order), releasing and expiring.

use crate::domain::ledger::Event;
use chrono::{DateTime, Duration, Utc};
use rusqlite::{named_params, Connection, OptionalExtension, Row};

use crate::domain::clock::{from_millis, rfc3339};
use crate::domain::drop::rules;
use crate::domain::inventory::decide_attempt;
use crate::domain::queue::check_admission;
use crate::domain::views::{HoldState, HoldView, OrderView};
use crate::domain::{
    Allowance, BuyerId, DropId, DropState, HoldId, HoldRef, OrderId, Refusal, SkuStock,
};

use crate::domain::outbox::{EventKind, HoldData, OrderData, SoldOutData};

use super::batch::Batch;
use super::memory::{DropMemory, Memory};
use super::requests::{ConfirmHold, PlaceHold};
use super::tx::Outcome;
use super::waitlist;
use super::StoreError;

const INSERT: &str = "INSERT INTO holds (secret, box, drop_id, sku, buyer, quantity, attempt_seq,
                          state, created_at, expires_at)
                      VALUES (:secret, :box, :drop, :sku, :buyer, :quantity, :seq, 'active', :now,
                          :expires)";
/// Holds due at the batch's time that the sweep has not ended yet (through the partial index on
/// active holds' expiry, so only due holds are read).
const DUE_OF_BUYER: &str = "SELECT seq, sku, buyer, quantity, id FROM holds
                            WHERE state = 'active' AND expires_at <= :now
                              AND drop_id = :drop AND buyer = :buyer";
const DUE_OF_SKU: &str = "SELECT seq, sku, buyer, quantity, id FROM holds
                          WHERE state = 'active' AND expires_at <= :now
                            AND drop_id = :drop AND sku = :sku";

/// A due hold: number, SKU, buyer, quantity, public id.
type DueHold = (i64, String, String, i64, String);

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
fn announce_expired(batch: &mut Batch<'_>, drop_id: &DropId, hold: (&str, &str, &str, i64)) {
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

fn units(holds: &[DueHold]) -> i64 {
    holds.iter().map(|h| h.3).sum()
}

pub(crate) fn place(
    conn: &Connection,
    batch: &mut Batch<'_>,
    buyer: &BuyerId,
    cmd: &PlaceHold,
) -> Result<HoldView, Outcome> {
    let now = batch.now;
    let all_due_swept = batch.all_due_swept;
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
    // A queue drop admits only buyers its queue served.
    check_admission(
        drop.rules.mode,
        cmd.admitted_until,
        now.timestamp_millis(),
        cmd.drop_id.as_str(),
    )?;
    let (limit, hold_seconds) = (drop.rules.per_buyer_limit, drop.rules.hold_seconds);
    let stock = drop
        .sku(conn, cmd.drop_id.as_str(), &cmd.sku)?
        .ok_or_else(|| Refusal::UnknownSku {
            drop_id: cmd.drop_id.to_string(),
            sku: cmd.sku.clone(),
        })?
        .stock;
    if !(1..=limit).contains(&cmd.quantity) {
        return Err(Refusal::invalid(format!(
            "quantity must be between 1 and the drop's per-buyer limit of {limit}"
        ))
        .into());
    }
    // Only attempts that compete for stock get a place in the arrival order.
    let attempt_seq = drop.next_seq();
    batch.attempt = Some(attempt_seq);
    let used = drop.used(conn, &cmd.drop_id, buyer, load)?;

    // A hold past its expiry counts for nothing, swept or not. After a complete sweep memory
    // has none; otherwise the database says which are due, and they end before this hold.
    let mut due_holds = Vec::new();
    if !all_due_swept && used + cmd.quantity > limit {
        due_holds = due(
            conn,
            DUE_OF_BUYER,
            now,
            cmd.drop_id.as_str(),
            ":buyer",
            buyer.as_str(),
        )?;
    }
    let allowance = Allowance {
        limit,
        used: used - units(&due_holds),
    };
    // The stock check needs the SKU's due holds only if the buyer's own do not free enough.
    let due_of_sku: i64 = due_holds
        .iter()
        .filter(|h| h.1 == cmd.sku)
        .map(|h| h.3)
        .sum();
    if allowance.check(cmd.quantity).is_ok()
        && !all_due_swept
        && stock.available() + due_of_sku < cmd.quantity
    {
        for hold in due(
            conn,
            DUE_OF_SKU,
            now,
            cmd.drop_id.as_str(),
            ":sku",
            &cmd.sku,
        )? {
            if !due_holds.iter().any(|known| known.0 == hold.0) {
                due_holds.push(hold);
            }
        }
    }
    let due_of_sku: i64 = due_holds
        .iter()
        .filter(|h| h.1 == cmd.sku)
        .map(|h| h.3)
        .sum();
    let freed = SkuStock {
        held: stock.held - due_of_sku,
        ..stock
    };
    decide_attempt(allowance, freed, &cmd.sku, cmd.quantity)?;

    // Decided: from here on it writes.
    for (hold_seq, sku, owner, quantity, _) in &due_holds {
        end_hold(conn, *hold_seq, HoldState::Expired, now)?;
        give_back(conn, drop, cmd.drop_id.as_str(), sku, owner, *quantity)?;
    }
    let expires_at = now + Duration::seconds(hold_seconds);
    let (hold_id, held) = insert(
        conn,
        batch.box_id,
        drop,
        &NewHold {
            drop_id: cmd.drop_id.as_str(),
            sku: &cmd.sku,
            buyer: buyer.as_str(),
            quantity: cmd.quantity,
            attempt_seq,
            now,
            expires_at,
        },
    )?;
    for (_, sku, owner, quantity, id) in &due_holds {
        announce_expired(batch, &cmd.drop_id, (id, sku, owner, *quantity));
    }
    let hold_text = hold_id.to_string();
    batch.announce_for(
        buyer.as_str(),
        &cmd.drop_id,
        EventKind::HoldCreated,
        &HoldData {
            hold_id: &hold_text,
            sku: &cmd.sku,
            quantity: cmd.quantity,
            buyer: buyer.as_str(),
            attempt_seq: Some(attempt_seq),
            expires_at: Some(rfc3339(expires_at)),
        },
    );
    if held.available() == 0 {
        batch.announce(
            &cmd.drop_id,
            EventKind::DropSoldOut,
            &SoldOutData { sku: &cmd.sku },
        );
    }
    // The buyer's own due holds of other SKUs ended here: their units are owed to waiters.
    let mut freed: Vec<&str> = due_holds.iter().map(|h| h.1.as_str()).collect();
    freed.sort_unstable();
    freed.dedup();
    for sku in freed {
        waitlist::offer(conn, batch, &cmd.drop_id, sku)?;
    }
    Ok(HoldView {
        hold_id: hold_text,
        drop_id: cmd.drop_id.to_string(),
        sku: cmd.sku.clone(),
        quantity: cmd.quantity,
        attempt_seq,
        created_at: now,
        expires_at,
        state: HoldState::Active,
        order_id: None,
    })
}

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
fn give_back(
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

fn drop_memory<'m>(
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

const SELECT_NUMBERED: &str = "SELECT h.id, h.drop_id, h.sku, h.quantity, h.attempt_seq,
                                      h.created_at, h.expires_at, h.state, o.id, h.buyer, h.seq,
                                      h.box
                               FROM holds h LEFT JOIN orders o ON o.hold_seq = h.seq
                               WHERE h.seq = :seq AND h.secret = :secret";
const SELECT_LEGACY: &str = "SELECT h.id, h.drop_id, h.sku, h.quantity, h.attempt_seq,
                                    h.created_at, h.expires_at, h.state, o.id, h.buyer, h.seq,
                                    h.box
                             FROM holds h LEFT JOIN orders o ON o.hold_seq = h.seq
                             WHERE h.legacy_id = :id";

/// A stored hold, its owner and its number.
struct Loaded {
    hold: HoldView,
    owner: String,
    seq: i64,
}

/// A hold by its public id: the secret and the box in the id must match the row's. The state
/// is as stored: an active hold past its expiry is still `active` until the writer sweeps it.
fn load(conn: &Connection, hold_id: &str) -> rusqlite::Result<Option<Loaded>> {
    let id = HoldId::from_trusted(hold_id.to_owned());
    let read = |r: &Row<'_>| {
        Ok((
            Loaded {
                hold: hold_from_row(r)?,
                owner: r.get(9)?,
                seq: r.get(10)?,
            },
            r.get::<_, Option<String>>(11)?,
        ))
    };
    match id.parse_ref() {
        HoldRef::Numbered {
            box_id,
            seq,
            secret,
        } => Ok(conn
            .prepare_cached(SELECT_NUMBERED)?
            .query_row(named_params! {":seq": seq, ":secret": secret}, read)
            .optional()?
            .filter(|(_, stored_box)| stored_box.as_deref() == box_id)
            .map(|(loaded, _)| loaded)),
        HoldRef::Legacy(legacy) => Ok(conn
            .prepare_cached(SELECT_LEGACY)?
            .query_row(named_params! {":id": legacy}, read)
            .optional()?
            .map(|(loaded, _)| loaded)),
    }
}

fn hold_from_row(r: &Row<'_>) -> rusqlite::Result<HoldView> {
    let state: String = r.get(7)?;
    Ok(HoldView {
        hold_id: r.get(0)?,
        drop_id: r.get(1)?,
        sku: r.get(2)?,
        quantity: r.get(3)?,
        attempt_seq: r.get(4)?,
        created_at: from_millis(r.get(5)?),
        expires_at: from_millis(r.get(6)?),
        state: HoldState::parse(&state).unwrap_or(HoldState::Expired),
        order_id: r.get(8)?,
    })
}

/// A hold as stored (for rebuilding the answer that created it).
pub(crate) fn get(conn: &Connection, hold_id: &str) -> rusqlite::Result<Option<HoldView>> {
    Ok(load(conn, hold_id)?.map(|l| l.hold))
}

/// A hold's number, if the id names a stored hold.
pub(crate) fn number(conn: &Connection, hold_id: &str) -> rusqlite::Result<Option<i64>> {
    Ok(load(conn, hold_id)?.map(|l| l.seq))
}

/// A buyer's own hold; anyone else's is reported as not found, never as forbidden.
pub fn get_for_buyer(
    conn: &Connection,
    buyer: &BuyerId,
    hold_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<HoldView>, StoreError> {
    Ok(load(conn, hold_id)?
        .filter(|l| l.owner == buyer.as_str())
        .map(|l| {
            let mut hold = l.hold;
            if hold.state == HoldState::Active && hold.expires_at <= now {
                hold.state = HoldState::Expired;
            }
            hold
        }))
}

/// The buyer's own hold and its number.
pub(crate) fn load_owned(
    conn: &Connection,
    buyer: &BuyerId,
    hold_id: &HoldId,
) -> Result<(HoldView, i64), Outcome> {
    load(conn, hold_id.as_str())?
        .filter(|l| l.owner == buyer.as_str())
        .map(|l| (l.hold, l.seq))
        .ok_or_else(|| Refusal::not_found(format!("hold {hold_id}")).into())
}

const END: &str = "UPDATE holds SET state = :state, ended_at = :now WHERE seq = :seq";
const INSERT_ORDER: &str = "INSERT INTO orders (id, hold_seq, hold_id, drop_id, sku, buyer,
                                quantity, unit_amount, currency, total_amount, payment_ref,
                                created_at)
                            VALUES (:id, :hold_seq, :hold, :drop, :sku, :buyer, :quantity, :unit,
                                :currency, :total, :payment_ref, :now)";

fn end_hold(
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

/// A hold that may still become an order: active, and not past its time (the batch's sweep
/// expires a bounded number of holds; one it has not reached yet is past its time all the same).
pub(crate) fn still_open(hold: &HoldView, now: DateTime<Utc>) -> Result<(), Refusal> {
    if hold.state != HoldState::Active {
        return Err(refuse_ended(hold));
    }
    if hold.expires_at <= now {
        return Err(Refusal::HoldExpired {
            expired_at: rfc3339(hold.expires_at),
        });
    }
    Ok(())
}

fn refuse_ended(hold: &HoldView) -> Refusal {
    match hold.state {
        HoldState::Expired => Refusal::HoldExpired {
            expired_at: rfc3339(hold.expires_at),
        },
        HoldState::Released => Refusal::HoldReleased,
        HoldState::Confirmed | HoldState::Active => Refusal::HoldConfirmed {
            order_id: hold.order_id.clone().unwrap_or_default(),
        },
    }
}

pub(crate) fn confirm(
    conn: &Connection,
    batch: &mut Batch<'_>,
    buyer: &BuyerId,
    cmd: &ConfirmHold,
) -> Result<OrderView, Outcome> {
    rules::check_payment_ref(&cmd.payment_ref)?;
    let (hold, hold_seq, owner) = if cmd.service.is_some() {
        load(conn, cmd.hold_id.as_str())?
            .map(|l| (l.hold, l.seq, BuyerId::from_trusted(l.owner)))
            .ok_or_else(|| Refusal::not_found(format!("hold {}", cmd.hold_id)))?
    } else {
        let (hold, seq) = load_owned(conn, buyer, &cmd.hold_id)?;
        (hold, seq, buyer.clone())
    };
    let buyer = &owner;
    still_open(&hold, batch.now)?;
    let drop = drop_memory(conn, batch.memory, &hold.drop_id)?;
    let sku = drop
        .sku(conn, &hold.drop_id, &hold.sku)?
        .ok_or_else(|| Refusal::not_found(format!("sku {}", hold.sku)))?;
    let total = sku
        .price
        .times(hold.quantity)
        .ok_or_else(|| Refusal::invalid("order total is too large"))?;
    let price = sku.price.clone();
    sku.set(sku.stock.confirm(hold.quantity));
    end_hold(conn, hold_seq, HoldState::Confirmed, batch.now)?;
    let order_id = OrderId::generate(batch.box_id);
    conn.prepare_cached(INSERT_ORDER)?.execute(named_params! {
        ":id": order_id.as_str(), ":hold_seq": hold_seq, ":hold": hold.hold_id, ":drop": hold.drop_id, ":sku": hold.sku,
        ":buyer": buyer.as_str(), ":quantity": hold.quantity, ":unit": price.amount,
        ":currency": price.currency.as_str(), ":total": total.amount,
        ":payment_ref": cmd.payment_ref, ":now": batch.now.timestamp_millis(),
    })?;
    batch.record(
        &DropId::from_trusted(hold.drop_id.clone()),
        Event::Confirmation {
            hold_id: hold.hold_id.clone(),
            order_id: order_id.to_string(),
            sku: hold.sku.clone(),
            quantity: hold.quantity,
        },
    );
    batch.announce_for(
        buyer.as_str(),
        &DropId::from_trusted(hold.drop_id.clone()),
        EventKind::OrderCreated,
        &OrderData {
            order_id: order_id.as_str(),
            hold_id: &hold.hold_id,
            sku: &hold.sku,
            quantity: hold.quantity,
            buyer: buyer.as_str(),
            unit_price: &price,
            total: &total,
            payment_ref: &cmd.payment_ref,
        },
    );
    Ok(OrderView {
        order_id: order_id.to_string(),
        hold_id: hold.hold_id,
        drop_id: hold.drop_id,
        sku: hold.sku,
        buyer: buyer.to_string(),
        quantity: hold.quantity,
        unit_price: price,
        total,
        payment_ref: cmd.payment_ref.clone(),
        created_at: batch.now,
    })
}

/// Gives the units back. Releasing a hold that already ended without an order is a no-op, so a
/// retried DELETE succeeds.
pub(crate) fn release(
    conn: &Connection,
    batch: &mut Batch<'_>,
    buyer: &BuyerId,
    hold_id: &HoldId,
) -> Result<HoldView, Outcome> {
    let (mut hold, hold_seq) = load_owned(conn, buyer, hold_id)?;
    match hold.state {
        HoldState::Released | HoldState::Expired => return Ok(hold),
        HoldState::Confirmed => return Err(refuse_ended(&hold).into()),
        HoldState::Active => {}
    }
    let drop = drop_memory(conn, batch.memory, &hold.drop_id)?;
    give_back(
        conn,
        drop,
        &hold.drop_id,
        &hold.sku,
        buyer.as_str(),
        hold.quantity,
    )?;
    end_hold(conn, hold_seq, HoldState::Released, batch.now)?;
    batch.record(
        &DropId::from_trusted(hold.drop_id.clone()),
        Event::Release {
            hold_id: hold.hold_id.clone(),
            sku: hold.sku.clone(),
            quantity: hold.quantity,
        },
    );
    batch.announce_for(
        buyer.as_str(),
        &DropId::from_trusted(hold.drop_id.clone()),
        EventKind::HoldReleased,
        &HoldData {
            hold_id: &hold.hold_id,
            sku: &hold.sku,
            quantity: hold.quantity,
            buyer: buyer.as_str(),
            attempt_seq: None,
            expires_at: None,
        },
    );
    hold.state = HoldState::Released;
    waitlist::offer(
        conn,
        batch,
        &DropId::from_trusted(hold.drop_id.clone()),
        &hold.sku,
    )?;
    Ok(hold)
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

/// Ends every due hold of one SKU (before an attempt on it, when waiters are owed its units).
pub(crate) fn expire_due_of_sku(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    sku: &str,
) -> Result<(), Outcome> {
    let due_holds = due(conn, DUE_OF_SKU, batch.now, drop_id.as_str(), ":sku", sku)?;
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

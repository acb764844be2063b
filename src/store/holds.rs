//! Holds: placing, confirming (which makes an order) and releasing. Their rows are written in
//! `hold_rows`; holds that reach their time end in `expiry`.

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
use super::hold_rows::{drop_memory, end_hold, give_back, insert, NewHold};
use super::requests::{ConfirmHold, PlaceHold};
use super::tx::Outcome;
use super::StoreError;
use super::{access_codes, expiry, waitlist};

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
    // A valid access code opens a drop that has not started yet: the presale.
    let presale_open = state == DropState::Scheduled && cmd.code.is_some();
    if state != DropState::Live && !presale_open {
        return Err(Refusal::DropNotLive {
            state: state.as_str().to_owned(),
        }
        .into());
    }
    let code = match &cmd.code {
        Some(text) => Some(access_codes::check(conn, &cmd.drop_id, text, now)?),
        None => None,
    };
    // A queue drop admits only buyers its queue served.
    check_admission(
        drop.rules.mode,
        cmd.admitted_until,
        now.timestamp_millis(),
        cmd.drop_id.as_str(),
    )?;
    let (limit, hold_seconds) = (drop.rules.per_buyer_limit, drop.rules.hold_seconds);
    // A tier's code may take its reserved units; nobody takes anyone else's.
    let own = match &code {
        Some((_, tier)) => access_codes::reserve_left(conn, &cmd.drop_id, &cmd.sku, tier)?,
        None => 0,
    };
    let stock = drop
        .sku(conn, cmd.drop_id.as_str(), &cmd.sku)?
        .ok_or_else(|| Refusal::UnknownSku {
            drop_id: cmd.drop_id.to_string(),
            sku: cmd.sku.clone(),
        })?
        .for_sale(own);
    if !(1..=limit).contains(&cmd.quantity) {
        return Err(Refusal::invalid(format!(
            "quantity must be between 1 and the drop's per-buyer limit of {limit}"
        ))
        .into());
    }
    // Only attempts that compete for stock get a place in the arrival order.
    let attempt_seq = drop.next_seq();
    batch.attempt = Some(attempt_seq);
    batch.attempt_code = code.as_ref().map(|(_, tier)| tier.clone());
    let used = drop.used(conn, &cmd.drop_id, buyer, load)?;

    // A hold past its expiry counts for nothing, swept or not. After a complete sweep memory
    // has none; otherwise the database says which are due, and they end before this hold.
    let mut due_holds = Vec::new();
    if !all_due_swept && used + cmd.quantity > limit {
        due_holds = expiry::due_of_buyer(conn, now, &cmd.drop_id, buyer)?;
    }
    let allowance = Allowance {
        limit,
        used: used - expiry::units(&due_holds),
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
        for hold in expiry::due_of_sku(conn, now, &cmd.drop_id, &cmd.sku)? {
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
    if let Some((code_seq, tier)) = &code {
        access_codes::count_use(conn, *code_seq, conn.last_insert_rowid())?;
        let from_reserve = own.min(cmd.quantity);
        if from_reserve > 0 {
            access_codes::take_reserved(conn, &cmd.drop_id, &cmd.sku, tier, from_reserve)?;
            if let Some(mem) = drop.sku(conn, cmd.drop_id.as_str(), &cmd.sku)? {
                mem.reserved -= from_reserve;
            }
        }
    }
    for (_, sku, owner, quantity, id) in &due_holds {
        expiry::announce_expired(batch, &cmd.drop_id, (id, sku, owner, *quantity));
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

const INSERT_ORDER: &str = "INSERT INTO orders (id, hold_seq, hold_id, drop_id, sku, buyer,
                                quantity, unit_amount, currency, total_amount, payment_ref,
                                created_at)
                            VALUES (:id, :hold_seq, :hold, :drop, :sku, :buyer, :quantity, :unit,
                                :currency, :total, :payment_ref, :now)";

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

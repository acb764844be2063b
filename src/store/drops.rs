//! Queries on drops and their SKUs.

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection, OptionalExtension, Row};

use crate::domain::clock::from_millis;
use crate::domain::drop::rules;
use crate::domain::queue::Mode;
use crate::domain::views::{DropPatch, DropView, NewDrop, SkuView};
use crate::domain::{
    Currency, DropId, DropSchedule, DropState, Money, OverrideState, Refusal, SkuStock,
};

use crate::domain::clock::rfc3339;
use crate::domain::ledger::{Event, SkuStock as LedgerStock};
use crate::domain::outbox::{EventKind, SoldOutData, StateData, StockData};

use super::batch::Batch;
use super::drop_rows::{load_rules, load_sku, save_stock};
use super::tx::Outcome;
use super::StoreError;

const VIEW: &str = "SELECT id, name, description, starts_at, ends_at, per_buyer_limit,
                           hold_seconds, override_state, version, revision, mode
                    FROM drops WHERE id = :id";
const LIST: &str = "SELECT id, name, description, starts_at, ends_at, per_buyer_limit,
                           hold_seconds, override_state, version, revision, mode
                    FROM drops ORDER BY starts_at, id";
const SKUS: &str = "SELECT s.sku, s.name, s.price_amount, s.currency, s.stock_total, s.held,
                           s.sold,
                           (SELECT COALESCE(SUM(r.reserved - r.taken), 0) FROM code_reserves r
                            WHERE r.drop_id = s.drop_id AND r.sku = s.sku)
                    FROM skus s WHERE s.drop_id = :drop ORDER BY s.position";

fn drop_from_row(r: &Row<'_>, now: DateTime<Utc>) -> rusqlite::Result<DropView> {
    let schedule = DropSchedule {
        starts_at: from_millis(r.get(3)?),
        ends_at: from_millis(r.get(4)?),
        override_state: r
            .get::<_, Option<String>>(7)?
            .as_deref()
            .and_then(OverrideState::parse),
    };
    Ok(DropView {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        starts_at: schedule.starts_at,
        ends_at: schedule.ends_at,
        per_buyer_limit: r.get(5)?,
        hold_seconds: r.get(6)?,
        state: schedule.state_at(now),
        version: r.get(8)?,
        revision: r.get(9)?,
        skus: Vec::new(),
        mode: Mode::parse(&r.get::<_, String>(10)?).unwrap_or_default(),
        queue: None,
        draw: None,
    })
}

fn load_skus(conn: &Connection, view: &mut DropView) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(SKUS)?;
    let rows = stmt.query_map(named_params! {":drop": view.id}, |r| {
        let stock = SkuStock {
            total: r.get(4)?,
            held: r.get(5)?,
            sold: r.get(6)?,
        };
        let reserved: i64 = r.get(7)?;
        Ok(SkuView {
            sku: r.get(0)?,
            name: r.get(1)?,
            price: Money {
                amount: r.get(2)?,
                currency: Currency::from_trusted(r.get(3)?),
            },
            stock: stock.total,
            available: (stock.available() - reserved).max(0),
            held: stock.held,
            sold: stock.sold,
            reserved: (reserved > 0).then_some(reserved),
        })
    })?;
    view.skus = rows.collect::<Result<_, _>>()?;
    match view.mode {
        Mode::Queue => view.queue = super::queue::view(conn, &view.id)?,
        Mode::Draw => view.draw = super::draw::view(conn, &view.id)?,
        Mode::Fcfs => {}
    }
    Ok(())
}

pub fn get_view(
    conn: &Connection,
    drop_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<DropView>, StoreError> {
    let view = conn
        .prepare_cached(VIEW)?
        .query_row(named_params! {":id": drop_id}, |r| drop_from_row(r, now))
        .optional()?;
    let Some(mut view) = view else {
        return Ok(None);
    };
    load_skus(conn, &mut view)?;
    Ok(Some(view))
}

pub fn list_views(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<DropView>, StoreError> {
    let mut views: Vec<DropView> = conn
        .prepare_cached(LIST)?
        .query_map([], |r| drop_from_row(r, now))?
        .collect::<Result<_, _>>()?;
    for view in &mut views {
        load_skus(conn, view)?;
    }
    Ok(views)
}

const INSERT_DROP: &str = "INSERT INTO drops (id, name, description, starts_at, ends_at,
                               per_buyer_limit, hold_seconds, created_at, mode)
                           VALUES (:id, :name, :description, :starts_at, :ends_at,
                               :limit, :hold_seconds, :now, :mode)";
const INSERT_SKU: &str = "INSERT INTO skus (drop_id, sku, name, price_amount, currency, position,
                              stock_total)
                          VALUES (:drop, :sku, :name, :amount, :currency, :position, :stock)";
const EXISTS: &str = "SELECT 1 FROM drops WHERE id = :id";

pub(crate) fn create(
    conn: &Connection,
    batch: &mut Batch<'_>,
    spec: &NewDrop,
) -> Result<DropView, Outcome> {
    rules::check_new_drop(spec)?;
    let exists = conn
        .prepare_cached(EXISTS)?
        .query_row(named_params! {":id": spec.id}, |_| Ok(()))
        .optional()?;
    if exists.is_some() {
        return Err(Refusal::DropExists {
            drop_id: spec.id.clone(),
        }
        .into());
    }
    conn.prepare_cached(INSERT_DROP)?.execute(named_params! {
        ":id": spec.id, ":name": spec.name, ":description": spec.description,
        ":starts_at": spec.starts_at.timestamp_millis(), ":ends_at": spec.ends_at.timestamp_millis(),
        ":limit": spec.per_buyer_limit, ":hold_seconds": spec.hold_seconds,
        ":now": batch.now.timestamp_millis(), ":mode": spec.mode.as_str(),
    })?;
    for (position, sku) in spec.skus.iter().enumerate() {
        conn.prepare_cached(INSERT_SKU)?.execute(named_params! {
            ":drop": spec.id, ":sku": sku.sku, ":name": sku.name,
            ":amount": sku.price.amount, ":currency": sku.price.currency.as_str(),
            ":position": position as i64, ":stock": sku.stock,
        })?;
    }
    super::ledger::open(conn, &spec.id)?;
    batch.record(
        &DropId::from_trusted(spec.id.clone()),
        Event::Created {
            skus: spec
                .skus
                .iter()
                .map(|s| LedgerStock {
                    sku: s.sku.clone(),
                    stock: s.stock,
                })
                .collect(),
            per_buyer_limit: spec.per_buyer_limit,
            starts_at: rfc3339(stored(spec.starts_at)),
            ends_at: rfc3339(stored(spec.ends_at)),
            hold_seconds: Some(spec.hold_seconds),
        },
    );
    if let (Mode::Queue, Some(rate)) = (spec.mode, spec.admission_rate) {
        super::queue::open(
            conn,
            batch,
            &DropId::from_trusted(spec.id.clone()),
            stored(spec.starts_at),
            rate,
            spec.admission_seconds
                .unwrap_or(super::queue::ADMISSION_SECONDS),
        )?;
    }
    if spec.mode == Mode::Draw {
        super::draw::open(conn, batch, &DropId::from_trusted(spec.id.clone()))?;
    }
    view_after_change(conn, batch, &spec.id)
}

fn view_after_change(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &str,
) -> Result<DropView, Outcome> {
    let id = DropId::from_trusted(drop_id.to_owned());
    batch.touch(&id);
    let mut view = get_view(conn, drop_id, batch.now)?
        .ok_or(StoreError::Internal("a changed drop vanished"))?;
    // The version is bumped when the batch is flushed; answer with the value it will have.
    view.version += 1;
    Ok(view)
}

const UPDATE: &str = "UPDATE drops SET name = :name, description = :description,
                          starts_at = :starts_at, ends_at = :ends_at,
                          per_buyer_limit = :limit, hold_seconds = :hold_seconds,
                          override_state = :override, revision = revision + 1,
                          closed_at = CASE WHEN :override = 'closed' OR :ends_at <= :now
                                           THEN COALESCE(closed_at, :now) ELSE closed_at END
                      WHERE id = :id";
const UPDATE_PRICE: &str = "UPDATE skus SET price_amount = :amount, currency = :currency
                            WHERE drop_id = :drop AND sku = :sku";

pub(crate) fn update(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    patch: &DropPatch,
    if_match: Option<i64>,
) -> Result<DropView, Outcome> {
    rules::check_patch(patch)?;
    let Some(current) = get_view(conn, drop_id.as_str(), batch.now)? else {
        return Err(Refusal::not_found(format!("drop {drop_id}")).into());
    };
    if let Some(expected) = if_match.filter(|&r| r != current.revision) {
        return Err(Refusal::StaleRevision {
            expected,
            current: current.revision,
        }
        .into());
    }
    let rules_now =
        load_rules(conn, drop_id)?.ok_or_else(|| Refusal::not_found(format!("drop {drop_id}")))?;
    let reschedules = patch.starts_at.is_some() || patch.ends_at.is_some();
    if current.state == DropState::Closed
        && (reschedules || patch.state.is_some_and(|s| s != DropState::Closed))
    {
        return Err(Refusal::InvalidTransition {
            from: "closed".into(),
            to: patch.state.unwrap_or(DropState::Live).as_str().to_owned(),
        }
        .into());
    }
    let mut schedule = DropSchedule {
        starts_at: patch.starts_at.unwrap_or(current.starts_at),
        ends_at: patch.ends_at.unwrap_or(current.ends_at),
        override_state: rules_now.schedule.override_state,
    };
    if let Some(target) = patch.state {
        schedule = schedule.set_state(current.state, target, batch.now)?;
    }
    let DropSchedule {
        starts_at,
        ends_at,
        override_state,
    } = schedule;
    if ends_at <= starts_at {
        return Err(Refusal::invalid("ends_at must be after starts_at").into());
    }
    let admits = patch.admission_rate.is_some() || patch.admission_paused.is_some();
    let mode = patch.mode.unwrap_or(current.mode);
    let opening_rate = if mode == current.mode {
        None
    } else {
        super::modes::check(&current, mode, batch.now, patch.admission_rate)?
    };
    match &current.queue {
        _ if mode != current.mode => {}
        None if admits => {
            return Err(Refusal::invalid(
                "admission_rate and admission_paused apply to queue drops (mode: queue)",
            )
            .into())
        }
        Some(queue) if queue.seeded_at.is_some() && starts_at != current.starts_at => {
            return Err(Refusal::invalid(
                "the queue's places were drawn at the start: a queue drop's start cannot move \
                 after it",
            )
            .into())
        }
        _ => {}
    }
    for price in patch.prices.iter().flatten() {
        if !current.skus.iter().any(|s| s.sku == price.sku) {
            return Err(Refusal::UnknownSku {
                drop_id: drop_id.to_string(),
                sku: price.sku.clone(),
            }
            .into());
        }
    }
    conn.prepare_cached(UPDATE)?.execute(named_params! {
        ":name": patch.name.as_ref().unwrap_or(&current.name),
        ":description": patch.description.as_ref().unwrap_or(&current.description),
        ":starts_at": starts_at.timestamp_millis(),
        ":ends_at": ends_at.timestamp_millis(),
        ":limit": patch.per_buyer_limit.unwrap_or(current.per_buyer_limit),
        ":hold_seconds": patch.hold_seconds.unwrap_or(current.hold_seconds),
        ":override": override_state.map(OverrideState::as_str),
        ":now": batch.now.timestamp_millis(),
        ":id": drop_id.as_str(),
    })?;
    if mode != current.mode {
        super::modes::apply(conn, batch, drop_id, mode, starts_at, opening_rate)?;
    } else if current.queue.is_some() && (admits || starts_at != current.starts_at) {
        super::queue::set_admission(
            conn,
            drop_id,
            batch.now,
            starts_at,
            patch.admission_rate,
            patch.admission_paused,
        )?;
    }
    for price in patch.prices.iter().flatten() {
        conn.prepare_cached(UPDATE_PRICE)?.execute(named_params! {
            ":amount": price.price.amount, ":currency": price.price.currency.as_str(),
            ":drop": drop_id.as_str(), ":sku": price.sku,
        })?;
    }
    let view = view_after_change(conn, batch, drop_id.as_str())?;
    batch.record(
        drop_id,
        Event::Edit {
            changes: changes_of(patch),
        },
    );
    if view.state != current.state {
        batch.announce(
            drop_id,
            EventKind::DropStateChanged,
            &StateData {
                from: current.state.as_str(),
                to: view.state.as_str(),
            },
        );
    }
    Ok(view)
}

pub(crate) fn adjust_stock(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    sku: &str,
    delta: i64,
) -> Result<DropView, Outcome> {
    if load_rules(conn, drop_id)?.is_none() {
        return Err(Refusal::not_found(format!("drop {drop_id}")).into());
    }
    let row = load_sku(conn, drop_id.as_str(), sku)?.ok_or_else(|| Refusal::UnknownSku {
        drop_id: drop_id.to_string(),
        sku: sku.to_owned(),
    })?;
    let stock = row.stock.restock(sku, delta)?;
    // Units reserved for access-code tiers are committed too.
    let reserved = super::access_codes::reserved_of(conn, drop_id, sku)?;
    if stock.total < stock.held + stock.sold + reserved {
        return Err(Refusal::StockBelowCommitted {
            sku: sku.to_owned(),
            committed: stock.held + stock.sold + reserved,
            requested: stock.total,
        }
        .into());
    }
    save_stock(conn, drop_id.as_str(), sku, stock)?;
    batch.record(
        drop_id,
        Event::Restock {
            sku: sku.to_owned(),
            delta,
            stock: stock.total,
        },
    );
    // Added units go to the SKU's waiters first; the answer shows the stock after their offers.
    super::waitlist::offer(conn, batch, drop_id, sku)?;
    batch.memory.flush(conn)?;
    let view = view_after_change(conn, batch, drop_id.as_str())?;
    batch.announce(
        drop_id,
        EventKind::StockAdjusted,
        &StockData {
            sku,
            delta,
            stock: stock.total,
            available: stock.available(),
        },
    );
    if stock.available() == 0 && row.stock.available() > 0 {
        batch.announce(drop_id, EventKind::DropSoldOut, &SoldOutData { sku });
    }
    Ok(view)
}

/// What a `PATCH` set, for the ledger: the members it sent.
/// A time as the database keeps it (whole milliseconds): what the ledger records is what the
/// writer judges by.
fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    from_millis(t.timestamp_millis())
}

fn changes_of(patch: &DropPatch) -> serde_json::Value {
    let patch = DropPatch {
        starts_at: patch.starts_at.map(stored),
        ends_at: patch.ends_at.map(stored),
        ..patch.clone()
    };
    let mut value = serde_json::to_value(&patch).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}

//! Raffles in the database: the draw opened with a drop, buyers entering before the start, and
//! the draw at the start that turns winners into holds and puts everyone else on the SKU's
//! waiting list at their drawn place.

use std::collections::HashMap;

use chrono::Duration;
use rusqlite::{named_params, Connection, OptionalExtension};

use crate::domain::clock::{from_millis, rfc3339};
use crate::domain::draw::{draw, DrawEntry, Entrant, EntryOutcome};
use crate::domain::ledger::{buyer_ref, Event};
use crate::domain::outbox::{EventKind, HoldData, LostData, SoldOutData};
use crate::domain::queue::{commitment, Mode};
use crate::domain::views::DrawView;
use crate::domain::{BuyerId, DropId, DropState, Refusal};

use super::batch::Batch;
use super::hold_rows::{self, NewHold};
use super::tx::Outcome;
use super::{waitlist, StoreError};

/// `POST /v1/drops/{drop}/entries`: enter the raffle for `quantity` units of `sku`.
#[derive(Debug, Clone)]
pub struct EnterDraw {
    pub drop_id: DropId,
    pub sku: String,
    pub quantity: i64,
}

const OPEN: &str = "INSERT INTO draws (drop_id, seed) VALUES (:drop, :seed)";

/// Opens `drop_id`'s raffle: a secret seed whose commitment goes into the ledger now.
pub(crate) fn open(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
) -> rusqlite::Result<()> {
    let seed: [u8; 32] = rand::random();
    conn.prepare_cached(OPEN)?
        .execute(named_params! {":drop": drop_id.as_str(), ":seed": seed.as_slice()})?;
    batch.record(
        drop_id,
        Event::Draw {
            commitment: commitment(&seed),
        },
    );
    Ok(())
}

const ENTRY: &str = "SELECT e.sku, e.quantity, e.entered_at, e.rank, e.won, h.id
                     FROM draw_entries e LEFT JOIN holds h ON h.seq = e.hold_seq
                     WHERE e.drop_id = :drop AND e.sku = :sku AND e.buyer = :buyer";
const INSERT: &str = "INSERT INTO draw_entries (drop_id, sku, buyer, quantity, entered_at)
                      VALUES (:drop, :sku, :buyer, :quantity, :now)";
const COUNT: &str = "UPDATE draws SET entered = entered + 1 WHERE drop_id = :drop";
const DRAWN_AT: &str = "SELECT drawn_at FROM draws WHERE drop_id = :drop";

fn entry_from_row(drop_id: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<DrawEntry> {
    let (rank, won): (Option<i64>, Option<i64>) = (r.get(3)?, r.get(4)?);
    Ok(DrawEntry {
        drop_id: drop_id.to_owned(),
        sku: r.get(0)?,
        quantity: r.get(1)?,
        entered_at: from_millis(r.get(2)?),
        outcome: match won {
            None => EntryOutcome::Pending,
            Some(0) => EntryOutcome::Lost,
            Some(_) => EntryOutcome::Won,
        },
        rank,
        won,
        hold_id: r.get(5)?,
        fresh: false,
    })
}

/// `buyer` enters `drop_id`'s raffle for a SKU, once: entering again answers the entry they
/// have.
pub(crate) fn enter(
    conn: &Connection,
    batch: &mut Batch<'_>,
    buyer: &BuyerId,
    cmd: &EnterDraw,
) -> Result<DrawEntry, Outcome> {
    let now = batch.now;
    let drop_id = cmd.drop_id.as_str();
    let drop = batch
        .memory
        .drop_mut(conn, &cmd.drop_id)?
        .ok_or_else(|| Refusal::not_found(format!("drop {drop_id}")))?;
    if drop.rules.mode != Mode::Draw {
        return Err(Refusal::NoDraw {
            drop_id: drop_id.to_owned(),
        }
        .into());
    }
    let (schedule, limit) = (drop.rules.schedule, drop.rules.per_buyer_limit);
    if drop.sku(conn, drop_id, &cmd.sku)?.is_none() {
        return Err(Refusal::UnknownSku {
            drop_id: drop_id.to_owned(),
            sku: cmd.sku.clone(),
        }
        .into());
    }
    let known = conn
        .prepare_cached(ENTRY)?
        .query_row(
            named_params! {":drop": drop_id, ":sku": cmd.sku, ":buyer": buyer.as_str()},
            |r| entry_from_row(drop_id, r),
        )
        .optional()?;
    if let Some(entry) = known {
        return Ok(entry);
    }
    let drawn: Option<i64> = conn
        .prepare_cached(DRAWN_AT)?
        .query_row(named_params! {":drop": drop_id}, |r| r.get(0))?;
    match schedule.state_at(now) {
        DropState::Scheduled if drawn.is_none() => {}
        DropState::Paused if now < schedule.starts_at => {
            return Err(Refusal::DropNotLive {
                state: DropState::Paused.as_str().to_owned(),
            }
            .into())
        }
        _ => {
            return Err(Refusal::EntriesClosed {
                drop_id: drop_id.to_owned(),
                starts_at: rfc3339(schedule.starts_at),
            }
            .into())
        }
    }
    if !(1..=limit).contains(&cmd.quantity) {
        return Err(Refusal::invalid(format!(
            "quantity must be between 1 and the drop's limit of {limit} per buyer"
        ))
        .into());
    }
    conn.prepare_cached(INSERT)?.execute(named_params! {
        ":drop": drop_id, ":sku": cmd.sku, ":buyer": buyer.as_str(),
        ":quantity": cmd.quantity, ":now": now.timestamp_millis(),
    })?;
    conn.prepare_cached(COUNT)?
        .execute(named_params! {":drop": drop_id})?;
    batch.record(
        &cmd.drop_id,
        Event::Enter {
            buyer: buyer.to_string(),
            sku: cmd.sku.clone(),
            quantity: cmd.quantity,
        },
    );
    batch.touch(&cmd.drop_id);
    Ok(DrawEntry {
        drop_id: drop_id.to_owned(),
        sku: cmd.sku.clone(),
        quantity: cmd.quantity,
        entered_at: from_millis(now.timestamp_millis()),
        outcome: EntryOutcome::Pending,
        rank: None,
        won: None,
        hold_id: None,
        fresh: true,
    })
}

const DUE: &str = "SELECT w.drop_id FROM draws w JOIN drops d ON d.id = w.drop_id
                   WHERE w.drawn_at IS NULL AND d.starts_at <= :now ORDER BY d.starts_at";

/// Draws every raffle whose drop has started; returns how many were drawn.
pub(crate) fn draw_due(conn: &Connection, batch: &mut Batch<'_>) -> Result<usize, Outcome> {
    let due: Vec<String> = conn
        .prepare_cached(DUE)?
        .query_map(named_params! {":now": batch.now.timestamp_millis()}, |r| {
            r.get(0)
        })?
        .collect::<Result<_, _>>()?;
    for id in &due {
        run(conn, batch, &DropId::from_trusted(id.clone()))?;
    }
    Ok(due.len())
}

const SEED: &str = "SELECT seed FROM draws WHERE drop_id = :drop AND drawn_at IS NULL";
const SALT: &str = "SELECT salt FROM ledgers WHERE drop_id = :drop";
const SKUS: &str = "SELECT sku FROM skus WHERE drop_id = :drop ORDER BY position, sku";
const ENTRIES: &str = "SELECT sku, buyer, quantity FROM draw_entries WHERE drop_id = :drop";
const RESULT: &str = "UPDATE draw_entries SET rank = :rank, won = :won, hold_seq = :hold
                      WHERE drop_id = :drop AND sku = :sku AND buyer = :buyer";
const MARK: &str = "UPDATE draws SET drawn_at = :now, winners = :winners WHERE drop_id = :drop";

/// The draw: every entry ranked by the seed's keyed hash, winners held, everyone else waiting
/// at their drawn place; the seed revealed in the ledger.
fn run(conn: &Connection, batch: &mut Batch<'_>, drop_id: &DropId) -> Result<(), Outcome> {
    let id = drop_id.as_str();
    let Some(seed) = conn
        .prepare_cached(SEED)?
        .query_row(named_params! {":drop": id}, |r| r.get::<_, Vec<u8>>(0))
        .optional()?
    else {
        return Ok(());
    };
    let salt: Vec<u8> = conn
        .prepare_cached(SALT)?
        .query_row(named_params! {":drop": id}, |r| r.get(0))
        .optional()?
        .unwrap_or_default();
    let entries: Vec<(String, String, i64)> = conn
        .prepare_cached(ENTRIES)?
        .query_map(named_params! {":drop": id}, |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let sku_order: Vec<String> = conn
        .prepare_cached(SKUS)?
        .query_map(named_params! {":drop": id}, |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = entries.iter().map(|e| buyer_ref(&salt, &e.1)).collect();
    let buyer_of: HashMap<&str, &str> = names
        .iter()
        .zip(&entries)
        .map(|(name, e)| (name.as_str(), e.1.as_str()))
        .collect();
    let quantity_of: HashMap<(&str, &str), i64> = entries
        .iter()
        .map(|(sku, buyer, quantity)| ((buyer.as_str(), sku.as_str()), *quantity))
        .collect();
    let entrants: Vec<Entrant<'_>> = names
        .iter()
        .zip(&entries)
        .map(|(name, e)| Entrant {
            buyer_ref: name,
            sku: &e.0,
            quantity: e.2,
        })
        .collect();

    let now = batch.now;
    let drop = batch
        .memory
        .drop_mut(conn, drop_id)?
        .ok_or(StoreError::Internal(
            "a raffle names a drop that does not exist",
        ))?;
    let (limit, hold_seconds) = (drop.rules.per_buyer_limit, drop.rules.hold_seconds);
    let mut units = Vec::with_capacity(sku_order.len());
    for sku in &sku_order {
        let available = drop
            .sku(conn, id, sku)?
            .map_or(0, |m| m.for_sale(0).available());
        units.push((sku.clone(), available));
    }
    let drawn = draw(&seed, limit, &units, &entrants);
    batch.record(
        drop_id,
        Event::Drawn {
            seed: hex::encode(&seed),
            entries: entries.len() as i64,
        },
    );
    let expires_at = now + Duration::seconds(hold_seconds);
    let mut losers = Vec::new();
    for result in &drawn {
        let buyer = buyer_of
            .get(result.buyer_ref.as_str())
            .copied()
            .unwrap_or_default();
        let mut hold_seq = None;
        if result.won > 0 {
            let drop = batch
                .memory
                .drop_mut(conn, drop_id)?
                .ok_or(StoreError::Internal("a raffle's drop left memory"))?;
            let attempt_seq = drop.next_seq();
            let (hold_id, stock) = hold_rows::insert(
                conn,
                batch.box_id,
                drop,
                &NewHold {
                    drop_id: id,
                    sku: &result.sku,
                    buyer,
                    quantity: result.won,
                    attempt_seq,
                    now,
                    expires_at,
                },
            )?;
            hold_seq = Some(conn.last_insert_rowid());
            let hold_text = hold_id.to_string();
            let data = HoldData {
                hold_id: &hold_text,
                sku: &result.sku,
                quantity: result.won,
                buyer,
                attempt_seq: Some(attempt_seq),
                expires_at: Some(rfc3339(expires_at)),
            };
            batch.announce_for(buyer, drop_id, EventKind::HoldCreated, &data);
            batch.announce_for(buyer, drop_id, EventKind::DrawWon, &data);
            batch.record(
                drop_id,
                Event::Win {
                    attempt_seq,
                    buyer: buyer.to_owned(),
                    sku: result.sku.clone(),
                    quantity: result.won,
                    hold_id: hold_text,
                },
            );
            if stock.available() == 0 {
                batch.announce(
                    drop_id,
                    EventKind::DropSoldOut,
                    &SoldOutData { sku: &result.sku },
                );
            }
        } else {
            losers.push((buyer, result));
        }
        conn.prepare_cached(RESULT)?.execute(named_params! {
            ":rank": result.rank, ":won": result.won, ":hold": hold_seq,
            ":drop": id, ":sku": result.sku, ":buyer": buyer,
        })?;
    }
    // Those not drawn wait at their drawn place: a winner who does not pay frees units for them.
    for (buyer, result) in losers {
        let quantity = quantity_of
            .get(&(buyer, result.sku.as_str()))
            .copied()
            .unwrap_or(1);
        batch.announce_for(
            buyer,
            drop_id,
            EventKind::DrawLost,
            &LostData {
                sku: &result.sku,
                quantity,
                buyer,
                rank: result.rank,
            },
        );
        let who = BuyerId::from_trusted(buyer.to_owned());
        waitlist::enqueue(
            conn,
            batch,
            drop_id,
            (&result.sku, &who, quantity),
            result.rank,
        )?;
    }
    let winners = drawn.iter().filter(|d| d.won > 0).count() as i64;
    conn.prepare_cached(MARK)?.execute(
        named_params! {":now": now.timestamp_millis(), ":winners": winners, ":drop": id},
    )?;
    batch.touch(drop_id);
    Ok(())
}

const ENTRIES_OF: &str = "SELECT e.sku, e.quantity, e.entered_at, e.rank, e.won, h.id
                          FROM draw_entries e LEFT JOIN holds h ON h.seq = e.hold_seq
                          WHERE e.drop_id = :drop AND e.buyer = :buyer
                          ORDER BY e.entered_at DESC, e.sku";

/// A buyer's entries in a raffle (a read off the pool).
pub fn entries_of(
    conn: &Connection,
    drop_id: &str,
    buyer: &BuyerId,
) -> Result<Vec<DrawEntry>, StoreError> {
    Ok(conn
        .prepare_cached(ENTRIES_OF)?
        .query_map(
            named_params! {":drop": drop_id, ":buyer": buyer.as_str()},
            |r| entry_from_row(drop_id, r),
        )?
        .collect::<Result<_, _>>()?)
}

const VIEW: &str = "SELECT seed, entered, drawn_at, winners FROM draws WHERE drop_id = :drop";

/// A raffle's public face: the commitment from the open, the seed and the winners once drawn.
pub fn view(conn: &Connection, drop_id: &str) -> rusqlite::Result<Option<DrawView>> {
    conn.prepare_cached(VIEW)?
        .query_row(named_params! {":drop": drop_id}, |r| {
            let (seed, entered, drawn_at, winners): (Vec<u8>, i64, Option<i64>, Option<i64>) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            Ok(DrawView {
                commitment: commitment(&seed),
                entered,
                seed: drawn_at.map(|_| hex::encode(&seed)),
                drawn_at: drawn_at.map(from_millis),
                winners,
            })
        })
        .optional()
}

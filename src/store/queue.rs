//! Queue drops in the database: the queue opened with a drop, buyers joining it, the draw of
//! the pre-start joiners' places at the start, and the admission rate's history.

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection, OptionalExtension};

use crate::domain::clock::from_millis;
use crate::domain::ledger::{buyer_ref, Event};
use crate::domain::queue::{commitment, seeded_order, Admission, Mode, Segment};
use crate::domain::views::QueueView;
use crate::domain::{BuyerId, DropId, DropState, Refusal};

use super::batch::Batch;
use super::drop_rows::load_rules;
use super::tx::Outcome;
use super::StoreError;

/// How long an admission lasts unless the drop says.
pub const ADMISSION_SECONDS: i64 = 300;

/// A buyer's place in a queue, as the writer or a read finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub drop_id: String,
    /// Their name in the drop's ledger: what the draw's order is computed over.
    pub buyer_ref: String,
    pub joined_at: DateTime<Utc>,
    /// Drawn at the start for those who joined before it.
    pub place: Option<i64>,
    /// Joined by this request (not before).
    pub fresh: bool,
}

const OPEN: &str = "INSERT INTO queues (drop_id, seed, admission_seconds)
                    VALUES (:drop, :seed, :seconds)";
const FIRST_RATE: &str = "INSERT INTO queue_rates (drop_id, at, base, rate, paused)
                          VALUES (:drop, :at, :base, :rate, :paused)";

/// Opens `drop_id`'s queue: a secret seed whose commitment goes into the ledger now, and the
/// admission rate from the start.
pub(crate) fn open(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    starts_at: DateTime<Utc>,
    rate: i64,
    admission_seconds: i64,
) -> rusqlite::Result<()> {
    let seed: [u8; 32] = rand::random();
    conn.prepare_cached(OPEN)?.execute(named_params! {
        ":drop": drop_id.as_str(), ":seed": seed.as_slice(), ":seconds": admission_seconds,
    })?;
    conn.prepare_cached(FIRST_RATE)?.execute(named_params! {
        ":drop": drop_id.as_str(), ":at": starts_at.timestamp_millis(), ":base": 0i64,
        ":rate": rate, ":paused": false,
    })?;
    batch.record(
        drop_id,
        Event::Queue {
            commitment: commitment(&seed),
            admission_rate: rate,
            admission_seconds,
        },
    );
    Ok(())
}

const ENTRY: &str = "SELECT joined_at, place FROM queue_entries
                     WHERE drop_id = :drop AND buyer = :buyer";
const STATE: &str = "SELECT joined, seeded_at FROM queues WHERE drop_id = :drop";
const INSERT_ENTRY: &str = "INSERT INTO queue_entries (drop_id, buyer, joined_at, place)
                            VALUES (:drop, :buyer, :now, :place)";
const COUNT_JOIN: &str = "UPDATE queues SET joined = joined + 1 WHERE drop_id = :drop";

/// `buyer` joins `drop_id`'s queue, once: joining again answers the place they have.
pub(crate) fn join(
    conn: &Connection,
    batch: &mut Batch<'_>,
    buyer: &BuyerId,
    drop_id: &DropId,
) -> Result<QueueEntry, Outcome> {
    let rules =
        load_rules(conn, drop_id)?.ok_or_else(|| Refusal::not_found(format!("drop {drop_id}")))?;
    if rules.mode != Mode::Queue {
        return Err(Refusal::NoQueue {
            drop_id: drop_id.to_string(),
        }
        .into());
    }
    let state = rules.schedule.state_at(batch.now);
    if state == DropState::Closed {
        return Err(Refusal::QueueClosed {
            drop_id: drop_id.to_string(),
            state: state.as_str().to_owned(),
        }
        .into());
    }
    // The draw comes first when it is due: whoever joins at or after the start is late.
    if rules.schedule.starts_at <= batch.now {
        seed(conn, batch, drop_id)?;
    }
    let salt = salt_of(conn, drop_id.as_str())?;
    let name = buyer_ref(&salt, buyer.as_str());
    let known = conn
        .prepare_cached(ENTRY)?
        .query_row(
            named_params! {":drop": drop_id.as_str(), ":buyer": buyer.as_str()},
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
        )
        .optional()?;
    if let Some((joined_at, place)) = known {
        return Ok(QueueEntry {
            drop_id: drop_id.to_string(),
            buyer_ref: name,
            joined_at: from_millis(joined_at),
            place,
            fresh: false,
        });
    }
    let (joined, seeded_at): (i64, Option<i64>) = conn
        .prepare_cached(STATE)?
        .query_row(named_params! {":drop": drop_id.as_str()}, |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let place = seeded_at.map(|_| joined + 1);
    conn.prepare_cached(INSERT_ENTRY)?.execute(named_params! {
        ":drop": drop_id.as_str(), ":buyer": buyer.as_str(),
        ":now": batch.now.timestamp_millis(), ":place": place,
    })?;
    conn.prepare_cached(COUNT_JOIN)?
        .execute(named_params! {":drop": drop_id.as_str()})?;
    batch.record(
        drop_id,
        Event::Join {
            buyer: buyer.as_str().to_owned(),
            place,
        },
    );
    batch.touch(drop_id);
    Ok(QueueEntry {
        drop_id: drop_id.to_string(),
        buyer_ref: name,
        joined_at: from_millis(batch.now.timestamp_millis()),
        place,
        fresh: true,
    })
}

const SALT: &str = "SELECT salt FROM ledgers WHERE drop_id = :drop";

/// The salt the drop's ledger names buyers with (none without a ledger: the benchmark's
/// unchained server).
fn salt_of(conn: &Connection, drop_id: &str) -> rusqlite::Result<Vec<u8>> {
    Ok(conn
        .prepare_cached(SALT)?
        .query_row(named_params! {":drop": drop_id}, |r| r.get(0))
        .optional()?
        .unwrap_or_default())
}

const DUE: &str = "SELECT q.drop_id FROM queues q JOIN drops d ON d.id = q.drop_id
                   WHERE q.seeded_at IS NULL AND d.starts_at <= :now ORDER BY d.starts_at";
const UNSEEDED: &str = "SELECT seed, seeded_at FROM queues WHERE drop_id = :drop";
const WAITING: &str = "SELECT buyer FROM queue_entries WHERE drop_id = :drop AND place IS NULL";
const PLACE: &str =
    "UPDATE queue_entries SET place = :place WHERE drop_id = :drop AND buyer = :buyer";
const MARK_SEEDED: &str = "UPDATE queues SET seeded_at = :now WHERE drop_id = :drop";

/// Draws the places of every queue whose drop has started; returns how many were drawn.
pub(crate) fn seed_due(conn: &Connection, batch: &mut Batch<'_>) -> rusqlite::Result<usize> {
    let due: Vec<String> = conn
        .prepare_cached(DUE)?
        .query_map(named_params! {":now": batch.now.timestamp_millis()}, |r| {
            r.get(0)
        })?
        .collect::<Result<_, _>>()?;
    for id in &due {
        seed(conn, batch, &DropId::from_trusted(id.clone()))?;
    }
    Ok(due.len())
}

/// The draw: everyone who joined before the start, ordered by the seed's keyed hash of their
/// ledger name, gets places 1..=N; the seed is revealed in the ledger.
fn seed(conn: &Connection, batch: &mut Batch<'_>, drop_id: &DropId) -> rusqlite::Result<()> {
    let row: Option<(Vec<u8>, Option<i64>)> = conn
        .prepare_cached(UNSEEDED)?
        .query_row(named_params! {":drop": drop_id.as_str()}, |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((seed, None)) = row else {
        return Ok(());
    };
    let salt = salt_of(conn, drop_id.as_str())?;
    let buyers: Vec<String> = conn
        .prepare_cached(WAITING)?
        .query_map(named_params! {":drop": drop_id.as_str()}, |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let named: Vec<(String, &str)> = buyers
        .iter()
        .map(|b| (buyer_ref(&salt, b), b.as_str()))
        .collect();
    let by_name: std::collections::HashMap<&str, &str> =
        named.iter().map(|(r, b)| (r.as_str(), *b)).collect();
    let order = seeded_order(&seed, named.iter().map(|(r, _)| r.as_str()));
    let mut stmt = conn.prepare_cached(PLACE)?;
    for (i, name) in order.iter().enumerate() {
        let buyer = by_name.get(name).copied().unwrap_or_default();
        stmt.execute(named_params! {
            ":place": i as i64 + 1, ":drop": drop_id.as_str(), ":buyer": buyer,
        })?;
    }
    conn.prepare_cached(MARK_SEEDED)?
        .execute(named_params! {":now": batch.now.timestamp_millis(), ":drop": drop_id.as_str()})?;
    batch.record(
        drop_id,
        Event::Seeded {
            seed: hex::encode(&seed),
            joined: order.len() as i64,
        },
    );
    batch.touch(drop_id);
    Ok(())
}

const RATES: &str = "SELECT at, base, rate, paused FROM queue_rates
                     WHERE drop_id = :drop ORDER BY seq";
const FIRST: &str = "SELECT MIN(seq) FROM queue_rates WHERE drop_id = :drop";
const MOVE_FIRST: &str = "UPDATE queue_rates SET at = :at, rate = :rate, paused = :paused
                          WHERE seq = :seq";

fn admission(conn: &Connection, drop_id: &str) -> rusqlite::Result<Admission> {
    let segments = conn
        .prepare_cached(RATES)?
        .query_map(named_params! {":drop": drop_id}, |r| {
            Ok(Segment {
                at: r.get(0)?,
                base: r.get(1)?,
                rate: r.get(2)?,
                paused: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Admission { segments })
}

/// An admin's change of the rate, the pause, or (before the draw) the start: serving goes on
/// from where it is at `now`. Before the draw the first segment itself moves.
pub(crate) fn set_admission(
    conn: &Connection,
    drop_id: &DropId,
    now: DateTime<Utc>,
    starts_at: DateTime<Utc>,
    rate: Option<i64>,
    paused: Option<bool>,
) -> rusqlite::Result<()> {
    let history = admission(conn, drop_id.as_str())?;
    let Some(current) = history.current().copied() else {
        return Ok(());
    };
    let (rate, paused) = (
        rate.unwrap_or(current.rate),
        paused.unwrap_or(current.paused),
    );
    let seeded: Option<i64> = conn
        .prepare_cached(STATE)?
        .query_row(named_params! {":drop": drop_id.as_str()}, |r| r.get(1))?;
    let now_ms = now.timestamp_millis();
    if seeded.is_none() && history.segments.len() == 1 {
        let seq: i64 = conn
            .prepare_cached(FIRST)?
            .query_row(named_params! {":drop": drop_id.as_str()}, |r| r.get(0))?;
        conn.prepare_cached(MOVE_FIRST)?.execute(named_params! {
            ":at": starts_at.timestamp_millis(),
            ":rate": rate, ":paused": paused, ":seq": seq,
        })?;
        return Ok(());
    }
    let next = history.change(now_ms, rate, paused);
    conn.prepare_cached(FIRST_RATE)?.execute(named_params! {
        ":drop": drop_id.as_str(), ":at": next.at, ":base": next.base,
        ":rate": next.rate, ":paused": next.paused,
    })?;
    Ok(())
}

const VIEW: &str = "SELECT seed, admission_seconds, joined, seeded_at FROM queues
                    WHERE drop_id = :drop";

/// A queue drop's public queue; the seed only once drawn.
pub fn view(conn: &Connection, drop_id: &str) -> rusqlite::Result<Option<QueueView>> {
    let row: Option<(Vec<u8>, i64, i64, Option<i64>)> = conn
        .prepare_cached(VIEW)?
        .query_row(named_params! {":drop": drop_id}, |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((seed, admission_seconds, joined, seeded_at)) = row else {
        return Ok(None);
    };
    let admission = admission(conn, drop_id)?;
    let current = admission.current().copied().unwrap_or(Segment {
        at: 0,
        base: 0,
        rate: 0,
        paused: true,
    });
    Ok(Some(QueueView {
        admission_rate: current.rate,
        admission_paused: current.paused,
        admission_seconds,
        joined,
        commitment: commitment(&seed),
        seed: seeded_at.map(|_| hex::encode(&seed)),
        seeded_at: seeded_at.map(from_millis),
        admission,
    }))
}

/// `buyer`'s place in `drop_id`'s queue, if they joined (a read off the pool).
pub fn entry(
    conn: &Connection,
    drop_id: &str,
    buyer: &BuyerId,
) -> Result<Option<QueueEntry>, StoreError> {
    let known = conn
        .prepare_cached(ENTRY)?
        .query_row(
            named_params! {":drop": drop_id, ":buyer": buyer.as_str()},
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
        )
        .optional()?;
    let Some((joined_at, place)) = known else {
        return Ok(None);
    };
    let salt = salt_of(conn, drop_id)?;
    Ok(Some(QueueEntry {
        drop_id: drop_id.to_owned(),
        buyer_ref: buyer_ref(&salt, buyer.as_str()),
        joined_at: from_millis(joined_at),
        place,
        fresh: false,
    }))
}

//! Idempotency records: one outcome per (buyer, key), written in the same transaction as the
//! effect it describes, so a crash can never leave one without the other.
//!
//! A record is an append to a log with no index on the key; memory (`KeyBook`) knows which row
//! is whose. It keeps the facts that rebuild the first answer, not the answer: the hold a hold
//! request made (for a confirmation, the hold of its order) or the refusal. Rebuilding reads rows
//! that never change after they were written, at the batch time in whole milliseconds the first
//! answer was rendered from, so a replay is the first answer byte for byte.

use rusqlite::{named_params, Connection, OptionalExtension, Row};
use serde::{de::DeserializeOwned, Serialize};

use crate::domain::views::{HoldState, HoldView, OrderView};
use crate::domain::Refusal;

use super::batch::Batch;
use super::keys::KeyBook;
use super::ledger;
use super::requests::{Answer, IdempotentRequest, ReceiptPart};
use super::tx::{decided, Outcome};
use super::{holds, orders, StoreError};
use crate::domain::ledger::Event;
use crate::domain::DropId;

/// Bytes of the request's fingerprint kept in a record: a digest prefix this long tells two
/// different requests apart as surely as the whole one does.
const FINGERPRINT_LEN: usize = 16;

const BY_SEQ: &str = "SELECT buyer, key, fingerprint, hold_id, refusal, outcome, drop_id,
                             ledger_position
                      FROM idempotency_keys WHERE seq = :seq";
const SCAN: &str = "SELECT buyer, key, fingerprint, hold_id, refusal, outcome, drop_id,
                           ledger_position
                    FROM idempotency_keys WHERE buyer = :buyer AND key = :key";
const INSERT: &str = "INSERT INTO idempotency_keys (buyer, key, fingerprint, created_at, drop_id,
                          attempt_seq, hold_id, refusal, ledger_position)
                      VALUES (:buyer, :key, :fingerprint, :now, :drop, :seq, :hold, :refusal,
                          :position)";

/// An answer a record can rebuild from the hold it names.
pub(crate) trait Rebuilt: Serialize + DeserializeOwned + Sized {
    fn hold_id(&self) -> &str;
    fn rebuild(conn: &Connection, hold_id: &str) -> Result<Option<Self>, StoreError>;
}

impl Rebuilt for HoldView {
    fn hold_id(&self) -> &str {
        &self.hold_id
    }

    /// The hold as the first answer showed it: just placed.
    fn rebuild(conn: &Connection, hold_id: &str) -> Result<Option<Self>, StoreError> {
        Ok(holds::get(conn, hold_id)?.map(|mut hold| {
            hold.state = HoldState::Active;
            hold.order_id = None;
            hold
        }))
    }
}

impl Rebuilt for OrderView {
    fn hold_id(&self) -> &str {
        &self.hold_id
    }

    fn rebuild(conn: &Connection, hold_id: &str) -> Result<Option<Self>, StoreError> {
        orders::for_hold(conn, hold_id)
    }
}

struct Record {
    buyer: String,
    key: String,
    fingerprint: Vec<u8>,
    hold_id: Option<String>,
    refusal: Option<String>,
    outcome: Option<String>,
    drop_id: Option<String>,
    ledger_position: Option<i64>,
}

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        buyer: r.get(0)?,
        key: r.get(1)?,
        fingerprint: r.get(2)?,
        hold_id: r.get(3)?,
        refusal: r.get(4)?,
        outcome: r.get(5)?,
        drop_id: r.get(6)?,
        ledger_position: r.get(7)?,
    })
}

fn find(
    conn: &Connection,
    batch: &Batch<'_>,
    hash: u64,
    req: &IdempotentRequest,
) -> Result<Option<Record>, StoreError> {
    let Some(seq) = batch
        .new_keys
        .get(&hash)
        .copied()
        .or_else(|| batch.keys.recorded(hash))
    else {
        return Ok(None);
    };
    let found = conn
        .prepare_cached(BY_SEQ)?
        .query_row(named_params! {":seq": seq}, record_from_row)
        .optional()?;
    match found {
        Some(r) if r.buyer == req.buyer.as_str() && r.key == req.key.as_str() => Ok(Some(r)),
        Some(_) => {
            // Two keys share a hash (about once in 2^64 pairs): look the slow way.
            tracing::warn!("idempotency key hash collision; scanning the records");
            Ok(conn
                .prepare_cached(SCAN)?
                .query_row(
                    named_params! {":buyer": req.buyer.as_str(), ":key": req.key.as_str()},
                    record_from_row,
                )
                .optional()?)
        }
        None => Ok(None),
    }
}

fn replay<T: Rebuilt>(conn: &Connection, record: Record) -> Result<Result<T, Refusal>, StoreError> {
    if let Some(outcome) = record.outcome {
        return Ok(serde_json::from_str(&outcome)?);
    }
    if let Some(refusal) = record.refusal {
        return Ok(Err(serde_json::from_str(&refusal)?));
    }
    let hold_id = record.hold_id.unwrap_or_default();
    T::rebuild(conn, &hold_id)?
        .map(Ok)
        .ok_or(StoreError::Internal(
            "an idempotency record names a hold that does not exist",
        ))
}

/// Replays the recorded outcome for this key, or runs `effect` and records what it decided.
/// `drop` names the drop of a hold attempt, whose record keeps the arrival number it took.
pub(crate) fn run_once<T, F, L>(
    conn: &Connection,
    batch: &mut Batch<'_>,
    req: &IdempotentRequest,
    drop: Option<&str>,
    effect: F,
    ledger_entry: Option<L>,
) -> Result<Answer<T>, StoreError>
where
    T: Rebuilt,
    F: FnOnce(&Connection, &mut Batch<'_>) -> Result<T, Outcome>,
    L: FnOnce(&Result<T, Refusal>, i64) -> Event,
{
    let hash = batch.keys.hash(&req.buyer, &req.key);
    if let Some(record) = find(conn, batch, hash, req)? {
        if record.fingerprint != req.fingerprint[..FINGERPRINT_LEN]
            && record.fingerprint != req.fingerprint[..]
        {
            return Ok(Answer {
                result: Err(Refusal::IdempotencyKeyReused),
                replayed: false,
                receipt: None,
            });
        }
        let receipt = match (&record.drop_id, record.ledger_position) {
            (Some(drop), Some(position)) => {
                ledger::receipt(conn, drop, position)?.map(|r| ReceiptPart::Sealed(Box::new(r)))
            }
            _ => None,
        };
        return Ok(Answer {
            result: replay(conn, record)?,
            replayed: true,
            receipt,
        });
    }

    // The effect and its record are in the same transaction: they commit together or not at all.
    batch.attempt = None;
    batch.attempt_code = None;
    let result = decided(conn, |c| effect(c, batch))?;
    let attempt = batch.attempt.take();
    let code = batch.attempt_code.take();
    // A numbered attempt is chained in the drop's ledger, and its record keeps its place.
    let mut position = None;
    let ledger_entry = ledger_entry.filter(|_| batch.chains);
    if let (Some(seq), Some(drop), Some(describe)) = (attempt, drop, ledger_entry) {
        let event = describe(&result, seq);
        let drop_id = DropId::from_trusted(drop.to_owned());
        if let Some(tier) = code {
            batch.record(
                &drop_id,
                Event::Code {
                    attempt_seq: seq,
                    tier,
                },
            );
        }
        position = Some(batch.record_attempt(conn, &drop_id, event)?);
    }
    batch.last_attempt = attempt.zip(position);
    if result.as_ref().err().is_none_or(Refusal::is_recorded) {
        let (hold, refusal) = match &result {
            Ok(value) => (Some(value.hold_id()), None),
            Err(refusal) => (None, Some(serde_json::to_string(refusal)?)),
        };
        conn.prepare_cached(INSERT)?.execute(named_params! {
            ":buyer": req.buyer.as_str(),
            ":key": req.key.as_str(),
            ":fingerprint": &req.fingerprint[..FINGERPRINT_LEN],
            ":now": batch.now.timestamp_millis(),
            ":drop": attempt.and(drop),
            ":seq": attempt,
            ":hold": hold,
            ":refusal": refusal,
            ":position": position,
        })?;
        batch.new_keys.insert(hash, conn.last_insert_rowid());
    }
    Ok(Answer {
        result,
        replayed: false,
        receipt: None,
    })
}

/// Deletes up to `limit` records older than `cutoff_ms` from the front of the log; returns how
/// many. Memory forgets them when the batch commits.
pub(crate) fn prune(
    conn: &Connection,
    batch: &mut Batch<'_>,
    cutoff_ms: i64,
    limit: i64,
) -> rusqlite::Result<usize> {
    const OLDEST: &str = "SELECT seq, buyer, key, created_at FROM idempotency_keys
                          ORDER BY seq LIMIT :limit";
    const DELETE: &str = "DELETE FROM idempotency_keys WHERE seq <= :last";
    let mut stmt = conn.prepare_cached(OLDEST)?;
    let mut rows = stmt.query(named_params! {":limit": limit})?;
    let mut last = None;
    while let Some(row) = rows.next()? {
        let created_at: i64 = row.get(3)?;
        if created_at >= cutoff_ms {
            break;
        }
        let seq: i64 = row.get(0)?;
        let buyer: String = row.get(1)?;
        let key: String = row.get(2)?;
        batch
            .gone_keys
            .push((batch.keys.hash_str(&buyer, &key), seq));
        last = Some(seq);
    }
    drop(rows);
    let Some(last) = last else {
        return Ok(0);
    };
    conn.prepare_cached(DELETE)?
        .execute(named_params! {":last": last})
}

/// When the oldest record was written, if there is any.
pub(crate) fn oldest(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT created_at FROM idempotency_keys ORDER BY seq LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()
}

/// Tells memory every record in the database (at start, before the writer runs).
pub fn load(conn: &Connection, keys: &KeyBook) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare("SELECT seq, buyer, key FROM idempotency_keys")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let buyer: String = row.get(1)?;
        let key: String = row.get(2)?;
        keys.record(keys.hash_str(&buyer, &key), seq);
        n += 1;
    }
    Ok(n)
}

//! Idempotency records: one outcome per (buyer, key), written in the same transaction as the
//! effect it describes, so a crash can never leave one without the other.

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};

use crate::domain::Refusal;

use super::commands::{Answer, IdempotentRequest};
use super::tx::{decided, Outcome};
use super::StoreError;

const FIND: &str = "SELECT fingerprint, outcome FROM idempotency_keys
                    WHERE buyer = :buyer AND key = :key";
const INSERT: &str = "INSERT INTO idempotency_keys (buyer, key, fingerprint, outcome, created_at)
                      VALUES (:buyer, :key, :fingerprint, :outcome, :now)";

const EXISTS: &str = "SELECT 1 FROM idempotency_keys WHERE buyer = :buyer AND key = :key";

/// Whether this buyer already used this key (a read, for answers given without the writer).
pub fn exists(
    conn: &Connection,
    buyer: &crate::domain::BuyerId,
    key: &crate::domain::IdempotencyKey,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(EXISTS)?
        .query_row(
            named_params! {":buyer": buyer.as_str(), ":key": key.as_str()},
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Replays the recorded outcome for this key, or runs `effect` and records what it decided.
pub(crate) fn run_once<T, F>(
    conn: &Connection,
    req: &IdempotentRequest,
    now: DateTime<Utc>,
    effect: F,
) -> Result<Answer<T>, StoreError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(&Connection) -> Result<T, Outcome>,
{
    let found: Option<(Vec<u8>, String)> = conn
        .prepare_cached(FIND)?
        .query_row(
            named_params! {":buyer": req.buyer.as_str(), ":key": req.key.as_str()},
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((fingerprint, outcome)) = found {
        if fingerprint != req.fingerprint {
            return Ok(Answer {
                result: Err(Refusal::IdempotencyKeyReused),
                replayed: false,
            });
        }
        return Ok(Answer {
            result: serde_json::from_str(&outcome)?,
            replayed: true,
        });
    }

    // The effect and its record are in the same transaction: they commit together or not at all.
    let result = decided(conn, effect)?;
    if result.as_ref().err().is_none_or(Refusal::is_recorded) {
        conn.prepare_cached(INSERT)?.execute(named_params! {
            ":buyer": req.buyer.as_str(),
            ":key": req.key.as_str(),
            ":fingerprint": &req.fingerprint[..],
            ":outcome": serde_json::to_string(&result)?,
            ":now": now.timestamp_millis(),
        })?;
    }
    Ok(Answer {
        result,
        replayed: false,
    })
}

//! The record of every numbered hold attempt, read from the idempotency log (where each attempt
//! that took a number in its drop's arrival order already keeps it, its outcome and its time):
//! the answer to a disputed "why did I lose?", with no row of its own per attempt.

use rusqlite::{named_params, Connection};
use serde::Serialize;

use crate::domain::clock::{from_millis, rfc3339};
use crate::domain::Refusal;

use super::StoreError;

/// One attempt, as the attempts export shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// Its place in the drop's arrival order: the writer took attempts in this order.
    pub attempt_seq: i64,
    /// When the writer decided it (RFC 3339, UTC).
    pub at: String,
    pub buyer: String,
    /// `held`, or the refusal's code (`sold-out`, `limit-exceeded`, ...).
    pub outcome: String,
    /// The hold it made, if it made one.
    pub hold_id: Option<String>,
    /// Where to resume a later export from (`?after=`).
    pub cursor: i64,
}

const PAGE: &str = "SELECT seq, created_at, buyer, attempt_seq, hold_id, refusal
                    FROM idempotency_keys
                    WHERE seq > :after AND drop_id = :drop AND attempt_seq IS NOT NULL
                    ORDER BY seq LIMIT :limit";

/// Up to `limit` attempts on `drop_id` recorded after `after`, in the order they were taken.
/// Pages walk the log by its row number, so each costs a range read whatever the drop.
pub fn page(
    conn: &Connection,
    drop_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Attempt>, StoreError> {
    let rows = conn
        .prepare_cached(PAGE)?
        .query_map(
            named_params! {":after": after, ":drop": drop_id, ":limit": limit},
            |r| {
                let refusal: Option<String> = r.get(5)?;
                let outcome = match refusal {
                    None => "held".to_owned(),
                    Some(json) => serde_json::from_str::<Refusal>(&json)
                        .map_or_else(|_| "refused".to_owned(), |r| r.code().to_owned()),
                };
                Ok(Attempt {
                    cursor: r.get(0)?,
                    at: rfc3339(from_millis(r.get(1)?)),
                    buyer: r.get(2)?,
                    attempt_seq: r.get(3)?,
                    hold_id: r.get(4)?,
                    outcome,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

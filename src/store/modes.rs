//! Changing a drop's `mode` by `PATCH`: only before its start and before anyone joined its queue
//! or entered its draw, so nobody loses a place or an entry. The old mode's rows go, and the new
//! one opens as at creation (its commitment in the ledger).

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection};

use crate::domain::queue::Mode;
use crate::domain::views::DropView;
use crate::domain::{DropId, DropState, Refusal};

use super::batch::Batch;
use super::tx::Outcome;

const SET_MODE: &str = "UPDATE drops SET mode = :mode WHERE id = :id";

/// Whether `current` may move to `mode` now; answers the admission rate a queue opens with.
/// Nothing is written: the patch's other checks come before any write.
pub(crate) fn check(
    current: &DropView,
    mode: Mode,
    now: DateTime<Utc>,
    rate: Option<i64>,
) -> Result<Option<i64>, Refusal> {
    let refuse = |why: &str| {
        Refusal::invalid(format!(
            "mode cannot change from {} to {}: {why}",
            current.mode.as_str(),
            mode.as_str()
        ))
    };
    let waiting = matches!(current.state, DropState::Scheduled | DropState::Paused);
    if !waiting || current.starts_at <= now {
        return Err(refuse("the drop has started"));
    }
    if current.queue.as_ref().is_some_and(|q| q.joined > 0) {
        return Err(refuse("buyers joined its queue"));
    }
    if current.draw.as_ref().is_some_and(|d| d.entered > 0) {
        return Err(refuse("buyers entered its draw"));
    }
    match (mode, rate) {
        (Mode::Queue, None) => Err(refuse("a queue drop needs admission_rate")),
        (Mode::Queue, Some(rate)) if rate < 1 => {
            Err(refuse("a queue drop admits at least 1 buyer per second"))
        }
        (_, rate) => Ok(rate),
    }
}

/// Moves a checked drop to `mode` (its start `starts_at` after the same patch).
pub(crate) fn apply(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    mode: Mode,
    starts_at: DateTime<Utc>,
    rate: Option<i64>,
) -> Result<(), Outcome> {
    let id = drop_id.as_str();
    for sql in [
        "DELETE FROM queue_rates WHERE drop_id = :drop",
        "DELETE FROM queues WHERE drop_id = :drop",
        "DELETE FROM draws WHERE drop_id = :drop",
    ] {
        conn.prepare_cached(sql)?
            .execute(named_params! {":drop": id})?;
    }
    conn.prepare_cached(SET_MODE)?
        .execute(named_params! {":mode": mode.as_str(), ":id": id})?;
    match (mode, rate) {
        (Mode::Queue, Some(rate)) => super::queue::open(
            conn,
            batch,
            drop_id,
            starts_at,
            rate,
            super::queue::ADMISSION_SECONDS,
        )?,
        (Mode::Draw, _) => super::draw::open(conn, batch, drop_id)?,
        _ => {}
    }
    Ok(())
}

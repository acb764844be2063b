//! The drops' schedule as commits: a drop reaching its `ends_at` is closed by the writer in a
//! batch of its own (or the next one), so its close is in the ledger with a signed head, in the
//! outbox and on the live stream even when nobody writes. The clock alone already refuses
//! attempts after `ends_at`; this records that it happened.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{named_params, Connection};

use crate::domain::clock::{from_millis, rfc3339};
use crate::domain::ledger::Event;
use crate::domain::outbox::{EventKind, StateData};
use crate::domain::DropId;

use super::batch::Batch;
use super::drop_rows::load_rules;

const DUE: &str = "SELECT id FROM drops WHERE closed_at IS NULL AND ends_at <= :now
                   ORDER BY ends_at";
const MARK: &str = "UPDATE drops SET closed_at = :now WHERE id = :id";
// A queue's draw, and a raffle's, at its drop's start are due on the same clock.
const NEXT: &str = "SELECT MIN(t) FROM (
                        SELECT MIN(ends_at) AS t FROM drops WHERE closed_at IS NULL
                        UNION ALL
                        SELECT MIN(d.starts_at) FROM queues q JOIN drops d ON d.id = q.drop_id
                        WHERE q.seeded_at IS NULL
                        UNION ALL
                        SELECT MIN(d.starts_at) FROM draws w JOIN drops d ON d.id = w.drop_id
                        WHERE w.drawn_at IS NULL)";

/// Commits the close of every drop whose `ends_at` has passed; returns how many.
pub(crate) fn close_due(conn: &Connection, batch: &mut Batch<'_>) -> rusqlite::Result<usize> {
    super::queue::seed_due(conn, batch)?;
    let due: Vec<String> = conn
        .prepare_cached(DUE)?
        .query_map(named_params! {":now": batch.now.timestamp_millis()}, |r| {
            r.get(0)
        })?
        .collect::<Result<_, _>>()?;
    for id in &due {
        let drop_id = DropId::from_trusted(id.clone());
        let Some(rules) = load_rules(conn, &drop_id)? else {
            continue;
        };
        conn.prepare_cached(MARK)?
            .execute(named_params! {":now": batch.now.timestamp_millis(), ":id": id})?;
        let ends_at = rules.schedule.ends_at;
        // What buyers saw just before the close.
        let before = rules.schedule.state_at(ends_at - Duration::milliseconds(1));
        batch.record(
            &drop_id,
            Event::Closed {
                ends_at: rfc3339(ends_at),
            },
        );
        batch.announce(
            &drop_id,
            EventKind::DropStateChanged,
            &StateData {
                from: before.as_str(),
                to: "closed",
            },
        );
    }
    Ok(due.len())
}

/// When the next drop's close falls due, if any drop is still to close.
pub(crate) fn next_close(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let ms: Option<i64> = conn.prepare_cached(NEXT)?.query_row([], |r| r.get(0))?;
    Ok(ms.map(from_millis))
}

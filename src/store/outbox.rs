//! The outbox table: events announced by the writer's commands, appended at the batch's flush
//! with the drop's new version, read by the delivery worker and the export, pruned after the
//! retention window once every active endpoint has them.

use rusqlite::{named_params, Connection};
use serde::Serialize;

use crate::domain::clock::{from_millis, rfc3339};
use crate::domain::outbox::EventKind;
use crate::domain::DropId;

/// An event a command announced; written when its batch flushes.
pub(crate) struct PendingEvent {
    pub drop_id: DropId,
    /// The buyer the event is about, who hears it on their own stream too.
    pub buyer: Option<String>,
    pub kind: EventKind,
    pub data: String,
}

const INSERT: &str = "INSERT INTO outbox (secret, type, drop_id, version, created_at, data)
                      VALUES (:secret, :type, :drop, :version, :now, :data)";

/// Appends `events`, each with the version its drop has once the batch commits.
pub(crate) fn append(
    conn: &Connection,
    events: &[PendingEvent],
    version_of: impl Fn(&DropId) -> i64,
    now_ms: i64,
) -> rusqlite::Result<()> {
    for event in events {
        conn.prepare_cached(INSERT)?.execute(named_params! {
            ":secret": rand::random::<i64>(), ":type": event.kind.as_str(),
            ":drop": event.drop_id.as_str(), ":version": version_of(&event.drop_id),
            ":now": now_ms, ":data": event.data,
        })?;
    }
    Ok(())
}

/// `data` as JSON text (what the outbox stores).
pub(crate) fn data(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub drop_id: String,
    pub version: i64,
    pub created_at: i64,
    pub data: String,
}

impl OutboxEvent {
    /// The JSON body a webhook receives and the export lists: one line, `data` as stored.
    pub fn body(&self) -> String {
        format!(
            r#"{{"id":{},"type":{},"created_at":"{}","drop_id":{},"version":{},"data":{}}}"#,
            serde_json::Value::from(self.id.as_str()),
            serde_json::Value::from(self.kind.as_str()),
            rfc3339(from_millis(self.created_at)),
            serde_json::Value::from(self.drop_id.as_str()),
            self.version,
            self.data
        )
    }
}

impl OutboxEvent {
    /// An export line: the body with the event's `seq`, its place in the outbox.
    pub fn line(&self) -> String {
        let body = self.body();
        format!(r#"{{"seq":{},{}"#, self.seq, &body[1..])
    }
}

const AFTER: &str = "SELECT seq, id, type, drop_id, version, created_at, data FROM outbox
                     WHERE seq > :after ORDER BY seq LIMIT :limit";

/// Up to `limit` events after `after`, in order.
pub fn after(conn: &Connection, after: i64, limit: i64) -> rusqlite::Result<Vec<OutboxEvent>> {
    conn.prepare_cached(AFTER)?
        .query_map(named_params! {":after": after, ":limit": limit}, |r| {
            Ok(OutboxEvent {
                seq: r.get(0)?,
                id: r.get(1)?,
                kind: r.get(2)?,
                drop_id: r.get(3)?,
                version: r.get(4)?,
                created_at: r.get(5)?,
                data: r.get(6)?,
            })
        })?
        .collect()
}

/// The newest event's number (0 for none).
pub fn last_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(seq), 0) FROM outbox")?
        .query_row([], |r| r.get(0))
}

/// Events are numbered in commit order and stamped with the batch's time, so everything before
/// the first event inside the window is older than it: finding that one reads the front of the
/// table, where a filter on `created_at` alone would read all of it every second.
const PRUNE: &str = "DELETE FROM outbox WHERE seq IN (
                         SELECT seq FROM outbox
                         WHERE seq < coalesce((SELECT seq FROM outbox WHERE created_at >= :cutoff
                                               ORDER BY seq LIMIT 1), 9223372036854775807)
                           AND seq <= (SELECT coalesce(min(delivered_seq), 9223372036854775807)
                                       FROM webhooks WHERE state = 'active')
                         ORDER BY seq LIMIT :limit)";

/// Deletes up to `limit` events older than `cutoff_ms` that every active endpoint has.
pub(crate) fn prune(conn: &Connection, cutoff_ms: i64, limit: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(PRUNE)?
        .execute(named_params! {":cutoff": cutoff_ms, ":limit": limit})
}

/// Rung after every commit that appended events, and (`endpoints`) after every commit that
/// changed a webhook endpoint or asked for a dead letter's retry: the delivery worker watches
/// both instead of polling the database.
#[derive(Debug)]
pub struct OutboxBell {
    events: tokio::sync::watch::Sender<u64>,
    endpoints: tokio::sync::watch::Sender<u64>,
}

impl Default for OutboxBell {
    fn default() -> Self {
        Self {
            events: tokio::sync::watch::Sender::new(0),
            endpoints: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl OutboxBell {
    pub fn ring(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn ring_endpoints(&self) {
        self.endpoints.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    pub fn subscribe_endpoints(&self) -> tokio::sync::watch::Receiver<u64> {
        self.endpoints.subscribe()
    }
}

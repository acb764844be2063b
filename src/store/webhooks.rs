//! Webhook endpoints and their dead letters. The admin API changes endpoints and the delivery
//! worker moves their cursors, both through the writer (`WebhookChange`); reads come from the
//! pool.

use rusqlite::{named_params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::domain::clock::{from_millis, rfc3339};

use super::outbox::OutboxEvent;

/// An endpoint as the admin API shows it (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `active` or `disabled`.
    pub state: String,
    /// Every outbox event up to this number is delivered or dead-lettered.
    pub delivered_seq: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A new endpoint: its signing secret is shown here, once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// Verifies `Dropd-Signature`: HMAC-SHA256 over `<t>.<body>`, hex, as `v1`.
    pub secret: String,
}

/// An endpoint with what the worker needs to sign for it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub webhook: Webhook,
    pub secret: String,
}

/// An event an endpoint did not take.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub webhook_id: String,
    pub event_seq: i64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub attempts: i64,
    pub last_error: String,
    /// `dead`, `retrying` (an operator asked for another try) or `delivered`.
    pub state: String,
    pub dead_at: String,
    #[serde(skip)]
    pub body: String,
}

/// What changes an endpoint; run by the writer.
#[derive(Debug)]
pub enum WebhookChange {
    Create {
        id: String,
        url: String,
        events: Vec<String>,
        secret: String,
    },
    SetState {
        id: String,
        state: &'static str,
    },
    Delete {
        id: String,
    },
    /// The worker delivered (or dead-lettered) every event up to `seq`.
    Advance {
        id: String,
        seq: i64,
    },
    /// The worker gave up on `event` after `attempts`; the cursor moves past it.
    Bury {
        id: String,
        event: OutboxEvent,
        body: String,
        attempts: i64,
        error: String,
    },
    /// An operator asks for another try of a dead letter.
    Retry {
        id: String,
        event_seq: i64,
    },
    /// A retried dead letter was delivered, or failed again.
    RetryDone {
        id: String,
        event_seq: i64,
        delivered: bool,
        error: String,
    },
}

/// What a change found: the endpoint after it, if it exists.
#[derive(Debug)]
pub enum WebhookAnswer {
    Endpoint(Option<Webhook>),
    Done(bool),
}

const COLUMNS: &str = "id, url, events, state, delivered_seq, created_at, updated_at, secret";

fn endpoint_from_row(r: &Row<'_>) -> rusqlite::Result<Endpoint> {
    let events: String = r.get(2)?;
    Ok(Endpoint {
        webhook: Webhook {
            id: r.get(0)?,
            url: r.get(1)?,
            events: serde_json::from_str(&events).unwrap_or_default(),
            state: r.get(3)?,
            delivered_seq: r.get(4)?,
            created_at: rfc3339(from_millis(r.get(5)?)),
            updated_at: rfc3339(from_millis(r.get(6)?)),
        },
        secret: r.get(7)?,
    })
}

pub fn list(conn: &Connection) -> rusqlite::Result<Vec<Endpoint>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM webhooks ORDER BY created_at, id"
    ))?
    .query_map([], endpoint_from_row)?
    .collect()
}

pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<Endpoint>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = :id"))?
        .query_row(named_params! {":id": id}, endpoint_from_row)
        .optional()
}

const DEAD_COLUMNS: &str =
    "webhook_id, event_seq, event_id, type, attempts, last_error, state, dead_at, body";

fn dead_from_row(r: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        webhook_id: r.get(0)?,
        event_seq: r.get(1)?,
        event_id: r.get(2)?,
        kind: r.get(3)?,
        attempts: r.get(4)?,
        last_error: r.get(5)?,
        state: r.get(6)?,
        dead_at: rfc3339(from_millis(r.get(7)?)),
        body: r.get(8)?,
    })
}

/// An endpoint's dead letters; with `state`, only those in it.
pub fn dead_letters(
    conn: &Connection,
    id: &str,
    state: Option<&str>,
) -> rusqlite::Result<Vec<DeadLetter>> {
    conn.prepare_cached(&format!(
        "SELECT {DEAD_COLUMNS} FROM webhook_dead_letters
         WHERE webhook_id = :id AND (:state IS NULL OR state = :state) ORDER BY event_seq"
    ))?
    .query_map(named_params! {":id": id, ":state": state}, dead_from_row)?
    .collect()
}

/// Runs a change inside the writer's transaction.
pub(crate) fn apply(
    conn: &Connection,
    change: &WebhookChange,
    now_ms: i64,
) -> rusqlite::Result<WebhookAnswer> {
    let endpoint = |id: &str| -> rusqlite::Result<WebhookAnswer> {
        Ok(WebhookAnswer::Endpoint(get(conn, id)?.map(|e| e.webhook)))
    };
    match change {
        WebhookChange::Create {
            id,
            url,
            events,
            secret,
        } => {
            // A new endpoint hears of what happens from now on, not of the past.
            conn.prepare_cached(
                "INSERT INTO webhooks (id, url, events, secret, state, delivered_seq,
                                       created_at, updated_at)
                 VALUES (:id, :url, :events, :secret, 'active',
                         (SELECT coalesce(max(seq), 0) FROM outbox), :now, :now)",
            )?
            .execute(named_params! {
                ":id": id, ":url": url, ":events": serde_json::to_string(events).unwrap_or_default(),
                ":secret": secret, ":now": now_ms,
            })?;
            endpoint(id)
        }
        WebhookChange::SetState { id, state } => {
            conn.prepare_cached(
                "UPDATE webhooks SET state = :state, updated_at = :now WHERE id = :id",
            )?
            .execute(named_params! {":id": id, ":state": state, ":now": now_ms})?;
            endpoint(id)
        }
        WebhookChange::Delete { id } => {
            conn.prepare_cached("DELETE FROM webhook_dead_letters WHERE webhook_id = :id")?
                .execute(named_params! {":id": id})?;
            let gone = conn
                .prepare_cached("DELETE FROM webhooks WHERE id = :id")?
                .execute(named_params! {":id": id})?;
            Ok(WebhookAnswer::Done(gone > 0))
        }
        WebhookChange::Advance { id, seq } => Ok(WebhookAnswer::Done(advance(conn, id, *seq)?)),
        WebhookChange::Bury {
            id,
            event,
            body,
            attempts,
            error,
        } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO webhook_dead_letters (webhook_id, event_seq, event_id,
                     type, body, attempts, last_error, state, dead_at, updated_at)
                 VALUES (:id, :seq, :event_id, :type, :body, :attempts, :error, 'dead', :now,
                     :now)",
            )?
            .execute(named_params! {
                ":id": id, ":seq": event.seq, ":event_id": event.id, ":type": event.kind,
                ":body": body, ":attempts": attempts, ":error": error, ":now": now_ms,
            })?;
            Ok(WebhookAnswer::Done(advance(conn, id, event.seq)?))
        }
        WebhookChange::Retry { id, event_seq } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE webhook_dead_letters SET state = 'retrying', updated_at = :now
                     WHERE webhook_id = :id AND event_seq = :seq AND state = 'dead'",
                )?
                .execute(named_params! {":id": id, ":seq": event_seq, ":now": now_ms})?;
            Ok(WebhookAnswer::Done(changed > 0))
        }
        WebhookChange::RetryDone {
            id,
            event_seq,
            delivered,
            error,
        } => {
            let state = if *delivered { "delivered" } else { "dead" };
            let changed = conn
                .prepare_cached(
                    "UPDATE webhook_dead_letters
                     SET state = :state, attempts = attempts + 1, updated_at = :now,
                         last_error = CASE WHEN :delivered THEN last_error ELSE :error END
                     WHERE webhook_id = :id AND event_seq = :seq AND state = 'retrying'",
                )?
                .execute(named_params! {
                    ":id": id, ":seq": event_seq, ":now": now_ms, ":state": state,
                    ":delivered": delivered, ":error": error,
                })?;
            Ok(WebhookAnswer::Done(changed > 0))
        }
    }
}

/// Moves the cursor forward only: a late report never takes it back.
fn advance(conn: &Connection, id: &str, seq: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE webhooks SET delivered_seq = :seq WHERE id = :id AND delivered_seq < :seq",
        )?
        .execute(named_params! {":id": id, ":seq": seq})?
        > 0)
}

//! The audit log: every admin and service-key action, with what it changed before and after,
//! appended in the transaction of the change itself, so the log can neither miss a change nor
//! name one that did not happen.
//!
//! It is also what makes admin writes safe to retry: an action sent with an `Idempotency-Key`
//! keeps the key and its request's fingerprint in its entry, and a retry under the key replays
//! the first answer instead of acting again (a `+50` retried after a timeout adds 50, once).
//! Refusals are not kept: they changed nothing, and a retry is judged afresh.

use rusqlite::{named_params, Connection, OptionalExtension};
use serde::Serialize;

use crate::domain::{IdempotencyKey, Refusal};

use super::StoreError;

/// Bytes of the request's fingerprint an entry keeps (as idempotency records do).
const FINGERPRINT_LEN: usize = 16;

/// Who acts, for which request, and under which retry key.
#[derive(Debug, Clone)]
pub struct Acting {
    /// The key's id (`ak_...`, `sk_...`), `payment-callback`, or `cli`.
    pub actor: String,
    pub request_id: Option<String>,
    /// The `Idempotency-Key` and the digest of route, target and canonical body.
    pub retry: Option<(IdempotencyKey, [u8; 32])>,
}

impl Acting {
    pub fn by(actor: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            request_id: None,
            retry: None,
        }
    }
}

/// An audited action's answer: done now, or the first answer replayed under its key.
#[derive(Debug)]
pub enum Acted<T> {
    Done(T),
    /// The JSON body the first request was answered with (empty for an answer without one).
    Replayed(String),
}

/// What one entry says happened.
pub(crate) struct Entry {
    pub action: &'static str,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// The answer, where it is not `after` (it shows something the log must not: a secret
    /// shown once); kept only with a retry key, for the replay.
    pub answer: Option<String>,
}

/// A thing as the log shows it.
pub(crate) fn json(value: &impl Serialize) -> Option<String> {
    serde_json::to_string(value).ok()
}

const BY_KEY: &str = "SELECT fingerprint, coalesce(answer, after, '') FROM audit_log
                      WHERE actor = :actor AND idempotency_key = :key";

/// The first answer under `act`'s retry key: `None` if the key is new, `Some(Err)` if it was
/// used for another request.
pub(crate) fn replay(
    conn: &Connection,
    act: &Acting,
) -> Result<Option<Result<String, Refusal>>, StoreError> {
    let Some((key, fingerprint)) = &act.retry else {
        return Ok(None);
    };
    let found: Option<(Vec<u8>, String)> = conn
        .prepare_cached(BY_KEY)?
        .query_row(
            named_params! {":actor": act.actor, ":key": key.as_str()},
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(found.map(|(kept, answer)| {
        if kept[..] == fingerprint[..FINGERPRINT_LEN] {
            Ok(answer)
        } else {
            Err(Refusal::IdempotencyKeyReused)
        }
    }))
}

const INSERT: &str = "INSERT INTO audit_log (at, actor, action, target, before, after,
                          request_id, idempotency_key, fingerprint, answer)
                      VALUES (:at, :actor, :action, :target, :before, :after, :request_id,
                          :key, :fingerprint, :answer)";

pub(crate) fn record(
    conn: &Connection,
    now_ms: i64,
    act: &Acting,
    entry: Entry,
) -> Result<(), StoreError> {
    let (key, fingerprint) = match &act.retry {
        Some((key, fingerprint)) => (Some(key.as_str()), Some(&fingerprint[..FINGERPRINT_LEN])),
        None => (None, None),
    };
    conn.prepare_cached(INSERT)?.execute(named_params! {
        ":at": now_ms, ":actor": act.actor, ":action": entry.action, ":target": entry.target,
        ":before": entry.before, ":after": entry.after, ":request_id": act.request_id,
        ":key": key, ":fingerprint": fingerprint,
        ":answer": if key.is_some() { entry.answer } else { None },
    })?;
    Ok(())
}

/// Runs an audited action: replays it if its retry key was used, or runs `effect` and records
/// the entry it returns with its value, in the same transaction.
pub(crate) fn run<T>(
    conn: &Connection,
    now_ms: i64,
    act: &Acting,
    effect: impl FnOnce(&Connection) -> Result<Result<(T, Entry), Refusal>, StoreError>,
) -> Result<Result<Acted<T>, Refusal>, StoreError> {
    if let Some(first) = replay(conn, act)? {
        return Ok(first.map(Acted::Replayed));
    }
    match effect(conn)? {
        Ok((done, entry)) => {
            record(conn, now_ms, act, entry)?;
            Ok(Ok(Acted::Done(done)))
        }
        Err(refusal) => Ok(Err(refusal)),
    }
}

/// One entry, as `GET /v1/admin/audit` lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// The acting key's id, `payment-callback`, or `cli`.
    pub actor: String,
    /// What was done, as `thing.verb` (`drop.update`, `stock.adjust`, `hold.confirm`, ...).
    pub action: String,
    /// The id of what it was done to.
    pub target: String,
    /// The thing before (absent for a creation).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The thing after (absent for a deletion).
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

const PAGE: &str = "SELECT seq, at, actor, action, target, before, after, request_id,
                           idempotency_key
                    FROM audit_log WHERE seq > :after ORDER BY seq LIMIT :limit";

/// Up to `limit` entries after `after`, oldest first.
pub fn page(conn: &Connection, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    let rows = conn
        .prepare_cached(PAGE)?
        .query_map(named_params! {":after": after, ":limit": limit}, |r| {
            Ok(AuditEntry {
                seq: r.get(0)?,
                at: crate::domain::clock::rfc3339(crate::domain::clock::from_millis(r.get(1)?)),
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                before: parse(r.get(5)?),
                after: parse(r.get(6)?),
                request_id: r.get(7)?,
                idempotency_key: r.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        super::super::migrations::migrate(&mut conn).expect("migrations apply");
        conn
    }

    fn keyed(key: &str, body: u8) -> Acting {
        Acting {
            actor: "ak_1".into(),
            request_id: Some("r1".into()),
            retry: Some((IdempotencyKey::parse(key).expect("valid key"), [body; 32])),
        }
    }

    fn entry() -> Entry {
        Entry {
            action: "stock.adjust",
            target: "d1/S1".into(),
            before: json(&serde_json::json!({"stock": 100})),
            after: json(&serde_json::json!({"stock": 150})),
            answer: None,
        }
    }

    #[test]
    fn a_retried_action_runs_once_and_replays_its_first_answer() {
        let conn = db();
        let mut runs = 0;
        for _ in 0..2 {
            let out = run(&conn, 1, &keyed("k1", 7), |_| {
                runs += 1;
                Ok(Ok(((), entry())))
            })
            .expect("runs");
            assert!(out.is_ok());
        }
        assert_eq!(runs, 1);
        let Some(Ok(answer)) = replay(&conn, &keyed("k1", 7)).expect("reads") else {
            panic!("the key replays");
        };
        assert_eq!(answer, r#"{"stock":150}"#);
        assert!(matches!(
            replay(&conn, &keyed("k1", 8)).expect("reads"),
            Some(Err(Refusal::IdempotencyKeyReused))
        ));
        let listed = page(&conn, 0, 10).expect("lists");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].before, Some(serde_json::json!({"stock": 100})));
        assert_eq!(listed[0].idempotency_key.as_deref(), Some("k1"));
    }

    #[test]
    fn a_refused_action_leaves_no_entry_and_a_retry_is_judged_again() {
        let conn = db();
        let refused = run(&conn, 1, &keyed("k2", 1), |_| {
            Ok(Err::<((), Entry), _>(Refusal::invalid("no")))
        })
        .expect("runs");
        assert!(refused.is_err());
        assert!(page(&conn, 0, 10).expect("lists").is_empty());
        assert!(replay(&conn, &keyed("k2", 1)).expect("reads").is_none());
    }
}

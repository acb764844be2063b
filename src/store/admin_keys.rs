//! Admin keys, stored only as SHA-256 hashes. The server keeps the active ones in memory
//! (`auth::AdminKeyBook`); `KeyWatch` tells it when the table may have changed, whoever
//! changed it.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection};
use serde::Serialize;

use super::audit::{self, json, Acting, Entry};
use super::StoreError;

const INSERT: &str = "INSERT INTO admin_keys (id, name, key_hash, created_at, scope)
                      VALUES (:id, :name, :hash, :now, :scope)";
const ACTIVE: &str = "SELECT id, key_hash, scope FROM admin_keys WHERE revoked_at IS NULL";
const LIST: &str =
    "SELECT id, name, created_at, revoked_at, scope FROM admin_keys ORDER BY created_at, id";
const REVOKE: &str =
    "UPDATE admin_keys SET revoked_at = :now WHERE id = :id AND revoked_at IS NULL";

/// An active key's id, the SHA-256 of the key, and its scope.
pub type ActiveKey = (String, Vec<u8>, String);

/// One key as `dropd admin-key list` shows it (never the key or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminKeyRow {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub scope: String,
}

pub fn insert(
    conn: &Connection,
    name: &str,
    key_hash: &[u8; 32],
    scope: &str,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let prefix = if scope == "admin" { "ak" } else { "sk" };
    let id = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    conn.prepare_cached(INSERT)?.execute(named_params! {
        ":id": id, ":name": name, ":hash": &key_hash[..], ":now": now.timestamp_millis(),
        ":scope": scope,
    })?;
    let entry = Entry {
        action: "key.create",
        target: id.clone(),
        before: None,
        after: json(&serde_json::json!({"name": name, "scope": scope})),
        answer: None,
    };
    audit::record(conn, now.timestamp_millis(), &Acting::by("cli"), entry)?;
    Ok(id)
}

/// True if the key was active and is revoked now.
pub fn revoke(conn: &Connection, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(REVOKE)?
        .execute(named_params! {":id": id, ":now": now.timestamp_millis()})?;
    if changed == 1 {
        let entry = Entry {
            action: "key.revoke",
            target: id.to_owned(),
            before: json(&serde_json::json!({"state": "active"})),
            after: json(&serde_json::json!({"state": "revoked"})),
            answer: None,
        };
        audit::record(conn, now.timestamp_millis(), &Acting::by("cli"), entry)?;
    }
    Ok(changed == 1)
}

/// The active keys: id and hash.
pub fn active(conn: &Connection) -> Result<Vec<ActiveKey>, StoreError> {
    let keys = conn
        .prepare_cached(ACTIVE)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(keys)
}

pub fn list(conn: &Connection) -> Result<Vec<AdminKeyRow>, StoreError> {
    let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let rows = conn
        .prepare_cached(LIST)?
        .query_map([], |r| {
            Ok(AdminKeyRow {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: at(r.get(2)?),
                revoked_at: r.get::<_, Option<i64>>(3)?.map(at),
                scope: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A read-only connection of its own that notices commits by any connection of any process
/// (`PRAGMA data_version` moves), so the key table is read again only when it may have changed.
pub struct KeyWatch {
    conn: Connection,
    seen: Option<i64>,
}

impl KeyWatch {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = super::open::open_reader(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { conn, seen: None })
    }

    /// The active keys if anything was committed since the last call (always on the first).
    pub fn changed(&mut self) -> Result<Option<Vec<ActiveKey>>, StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if self.seen == Some(version) {
            return Ok(None);
        }
        let keys = active(&self.conn)?;
        self.seen = Some(version);
        Ok(Some(keys))
    }
}

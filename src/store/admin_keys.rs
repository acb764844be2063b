//! Admin keys, stored only as SHA-256 hashes.

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection};

use super::StoreError;

const INSERT: &str = "INSERT INTO admin_keys (id, name, key_hash, created_at)
                      VALUES (:id, :name, :hash, :now)";
const ACTIVE: &str = "SELECT key_hash FROM admin_keys WHERE revoked_at IS NULL";

pub fn insert(
    conn: &Connection,
    name: &str,
    key_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let id = format!("ak_{}", uuid::Uuid::now_v7().simple());
    conn.prepare_cached(INSERT)?.execute(named_params! {
        ":id": id, ":name": name, ":hash": &key_hash[..], ":now": now.timestamp_millis(),
    })?;
    Ok(id)
}

pub fn active_hashes(conn: &Connection) -> Result<Vec<Vec<u8>>, StoreError> {
    let hashes = conn
        .prepare_cached(ACTIVE)?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(hashes)
}

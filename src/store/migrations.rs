//! Schema migrations, embedded in the binary and tracked with `PRAGMA user_version`.

use rusqlite::Connection;

use super::StoreError;

/// Each step runs once, in order; step N leaves `user_version = N`. Never edit a released step:
/// add a new one and update `schema.sql` to match.
const MIGRATIONS: &[(&str, &str)] = &[
    ("initial", include_str!("migrations/0001_initial.sql")),
    (
        "compact hot path",
        include_str!("migrations/0002_compact_hot_path.sql"),
    ),
    (
        "numbered holds",
        include_str!("migrations/0003_numbered_holds.sql"),
    ),
    ("outbox", include_str!("migrations/0004_outbox.sql")),
    ("key scopes", include_str!("migrations/0005_key_scopes.sql")),
    ("audit log", include_str!("migrations/0006_audit.sql")),
    ("ledger", include_str!("migrations/0007_ledger.sql")),
    ("schedule", include_str!("migrations/0008_schedule.sql")),
];

pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest_version() {
        return Err(StoreError::Setup(format!(
            "the database is at schema version {current}, newer than this dropd knows ({}); \
             run a newer dropd",
            latest_version()
        )));
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Setup(format!("migration {version} ({name}) failed: {e}")))?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, name, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(conn: &Connection) -> Vec<(String, String, String)> {
        let mut stmt = conn
            .prepare(
                "SELECT type, name, sql FROM sqlite_schema
                 WHERE sql IS NOT NULL ORDER BY type, name",
            )
            .expect("schema query prepares");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("schema query runs")
            .collect::<Result<_, _>>()
            .expect("schema rows read")
    }

    #[test]
    fn migrating_from_empty_gives_exactly_schema_sql() {
        let mut migrated = Connection::open_in_memory().expect("in-memory db");
        migrate(&mut migrated).expect("migrations apply");
        let declared = Connection::open_in_memory().expect("in-memory db");
        declared
            .execute_batch(include_str!("../../schema.sql"))
            .expect("schema.sql applies");
        assert_eq!(schema_of(&migrated), schema_of(&declared));
        let version: i64 = migrated
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("user_version");
        assert_eq!(version, latest_version());
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        migrate(&mut conn).expect("first run");
        let before = schema_of(&conn);
        migrate(&mut conn).expect("second run");
        assert_eq!(schema_of(&conn), before);
    }
}

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
    ("queue", include_str!("migrations/0009_queue.sql")),
    ("waitlist", include_str!("migrations/0010_waitlist.sql")),
    ("draws", include_str!("migrations/0011_draws.sql")),
    (
        "access codes",
        include_str!("migrations/0012_access_codes.sql"),
    ),
    (
        "code reserves",
        include_str!("migrations/0013_code_reserves.sql"),
    ),
];

pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The schema version a database is at.
pub fn version_of(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current = version_of(conn)?;
    if current > latest_version() {
        return Err(StoreError::Setup(format!(
            "the database is at schema version {current}, newer than this dropd knows ({}); \
             run a newer dropd",
            latest_version()
        )));
    }
    if current == latest_version() {
        return Ok(());
    }
    // A step may rebuild a table others refer to (SQLite's way to change a CHECK): foreign keys
    // are off while the steps run, as SQLite's procedure for it says, and checked before each
    // step commits.
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = run_steps(conn, current);
    conn.pragma_update(None, "foreign_keys", enforced)?;
    result
}

fn run_steps(conn: &mut Connection, current: i64) -> Result<(), StoreError> {
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let failed = |e: rusqlite::Error| {
            StoreError::Setup(format!("migration {version} ({name}) failed: {e}"))
        };
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Rows an outside process left dangling before are not this step's to refuse.
        let before = dangling(&tx).map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        let after = dangling(&tx).map_err(failed)?;
        if after > before {
            return Err(StoreError::Setup(format!(
                "migration {version} ({name}) would leave {} rows referring to rows that do \
                 not exist",
                after - before
            )));
        }
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, name, "applied schema migration");
    }
    Ok(())
}

/// Rows whose foreign key names no row.
fn dangling(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })
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
    fn the_draws_step_rebuilds_drops_keeping_every_row_and_reference() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        conn.pragma_update(None, "foreign_keys", true)
            .expect("foreign keys on");
        for (_, sql) in &MIGRATIONS[..10] {
            conn.execute_batch(sql).expect("an earlier step applies");
        }
        conn.pragma_update(None, "user_version", 10)
            .expect("version");
        conn.execute_batch(
            "INSERT INTO drops (id, name, starts_at, ends_at, per_buyer_limit, hold_seconds,
                                created_at, mode)
                 VALUES ('d', 'D', 1, 2, 1, 60, 0, 'queue');
             INSERT INTO skus (drop_id, sku, name, price_amount, currency, position, stock_total)
                 VALUES ('d', 'S1', 'S', 1, 'EUR', 0, 5);",
        )
        .expect("a version-10 drop");
        migrate(&mut conn).expect("migrates");
        let (mode, skus): (String, i64) = conn
            .query_row(
                "SELECT mode, (SELECT COUNT(*) FROM skus WHERE drop_id = d.id) FROM drops d",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the drop is kept");
        assert_eq!((mode.as_str(), skus), ("queue", 1));
        assert_eq!(dangling(&conn).expect("checks"), 0);
        let enforced: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .expect("pragma");
        assert!(enforced, "foreign keys are on again after the migrations");
        conn.execute("UPDATE drops SET mode = 'draw' WHERE id = 'd'", [])
            .expect("the wider mode is allowed");
        let orphan = conn.execute(
            "INSERT INTO skus (drop_id, sku, name, price_amount, currency, position, stock_total)
             VALUES ('nope', 'S1', 'S', 1, 'EUR', 0, 5)",
            [],
        );
        assert!(orphan.is_err(), "skus still refer to drops");
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        migrate(&mut conn).expect("first run");
        let before = schema_of(&conn);
        migrate(&mut conn).expect("second run");
        assert_eq!(schema_of(&conn), before);
    }

    #[test]
    fn the_schedule_step_moves_each_head_signature_onto_its_entry() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        for (_, sql) in &MIGRATIONS[..7] {
            conn.execute_batch(sql).expect("an earlier step applies");
        }
        conn.pragma_update(None, "user_version", 7)
            .expect("version");
        conn.execute_batch(
            "INSERT INTO ledgers VALUES ('d', x'00', 2, x'22');
             INSERT INTO ledger VALUES ('d', 1, '{}', x'11'), ('d', 2, '{}', x'22');
             INSERT INTO ledger_heads VALUES ('d', 2, 0, 'k1', x'5151');",
        )
        .expect("a version-7 ledger");
        migrate(&mut conn).expect("migrates");
        let rows: Vec<(i64, Option<String>, Option<Vec<u8>>)> = conn
            .prepare("SELECT position, key_id, signature FROM ledger ORDER BY position")
            .expect("prepares")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("runs")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            rows,
            vec![
                (1, None, None),
                (2, Some("k1".into()), Some(vec![0x51, 0x51]))
            ]
        );
        let salt: Vec<u8> = conn
            .query_row("SELECT salt FROM ledgers WHERE drop_id = 'd'", [], |r| {
                r.get(0)
            })
            .expect("the salt stays");
        assert_eq!(salt, vec![0]);
    }
}

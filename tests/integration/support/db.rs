//! The database under a test: opened read-only beside a running server, checked against the
//! invariants, and restored copies opened after their integrity check.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub fn open_db(path: &Path) -> Connection {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("db opens");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// The invariants of docs/design.md, checked from the database itself.
pub fn check_invariants(conn: &Connection) -> Result<(), String> {
    dropd::store::invariants::check_invariants(conn).map_err(|e| e.to_string())?
}

/// Row counts and the drops' and SKUs' counters: what any refused request must leave as it was.
pub fn table_counts(conn: &Connection) -> Vec<(String, String)> {
    let mut state: Vec<(String, String)> = ["drops", "skus", "holds", "orders", "idempotency_keys"]
        .iter()
        .map(|t| {
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .expect("count");
            (t.to_string(), n.to_string())
        })
        .collect();
    for (name, sql) in [
        ("drop counters", "SELECT group_concat(id || ':' || version || ':' || attempt_seq, ',') FROM drops"),
        ("sku counters", "SELECT group_concat(sku || ':' || stock_total || ':' || held || ':' || sold, ',') FROM skus"),
    ] {
        let value: Option<String> = conn.query_row(sql, [], |r| r.get(0)).expect("counters");
        state.push((name.to_owned(), value.unwrap_or_default()));
    }
    state
}

/// A restored database's bytes written to `dir/name` and opened, after its integrity check.
pub fn restored_db(db: &[u8], dir: &Path, name: &str) -> Connection {
    let path = dir.join(name);
    std::fs::write(&path, db).expect("copy");
    let conn = Connection::open(&path).expect("opens");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok", "{name}");
    conn
}

/// Every hold id and order id in a database.
pub fn hold_and_order_ids(conn: &Connection) -> HashSet<String> {
    let mut stmt = conn
        .prepare("SELECT id FROM holds UNION ALL SELECT id FROM orders")
        .expect("query");
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("ids")
        .collect::<Result<_, _>>()
        .expect("ids read");
    ids
}

/// Rows of `table` in a restored database, after its integrity check.
pub fn restored_rows(db: &[u8], dir: &Path, name: &str, table: &str) -> i64 {
    let conn = restored_db(db, dir, name);
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

/// Holds in a restored database, after its integrity check.
pub fn restored_holds(db: &[u8], dir: &Path, name: &str) -> i64 {
    restored_rows(db, dir, name, "holds")
}

/// Adds a `ballast` table of `rows` rows of 4,000 bytes, half random and half zero
/// (compressible like real data, not like zeros); returns the connection that wrote them.
pub fn add_ballast(db: &Path, rows: u64) -> Connection {
    let conn = Connection::open(db).expect("opens");
    conn.execute_batch(
        "PRAGMA synchronous = OFF;
         CREATE TABLE ballast (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
    )
    .expect("ballast table");
    let per_txn = 25_000;
    let mut made = 0;
    while made < rows {
        let n = per_txn.min(rows - made);
        conn.execute(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1) \
             INSERT INTO ballast (body) SELECT randomblob(2000) || zeroblob(2000) FROM s",
            [n as i64],
        )
        .expect("ballast rows");
        made += n;
    }
    conn
}

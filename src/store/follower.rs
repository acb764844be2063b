//! A follower's copy of the leader's database (`dropd serve --follow`). Nothing but the leader's
//! own pages ever changes it: each replica file's pages go in through SQLite's `sqlite_dbpage`
//! table inside one transaction, so the pool's readers see the copy at one replica TXID or the
//! next, never between, and SQLite keeps its own locks, WAL and cache coherent as for any write.
//! No migration, no PRAGMA that writes: the pages are the leader's, schema version included.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// The one read-write connection of a follower; only the follow thread holds it.
pub struct PageWriter {
    conn: Connection,
    open: bool,
}

impl PageWriter {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        super::open::check_sqlite_version()?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Checked at start, not at the first change: a build without the table cannot follow.
        conn.query_row(
            "SELECT count(*) FROM sqlite_dbpage WHERE pgno = 1",
            [],
            |_| Ok(()),
        )
        .map_err(|e| {
            StoreError::Setup(format!(
                "this build of SQLite cannot write pages (sqlite_dbpage: {e}); build with \
                 LIBSQLITE3_FLAGS=-DSQLITE_ENABLE_DBPAGE_VTAB (the checkout's .cargo/config.toml)"
            ))
        })?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Setup(format!(
                "{} is not a WAL database (journal mode {mode}): not a dropd replica",
                path.display()
            )));
        }
        // The copy is rebuilt from the replica at every start, so losing its last transactions
        // to a power cut costs nothing the replica does not hold.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536;")?;
        conn.set_prepared_statement_cache_capacity(4);
        Ok(Self { conn, open: false })
    }

    /// Starts the transaction one replica file (or one chain of them) goes into.
    pub fn begin(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.open = true;
        Ok(())
    }

    pub fn page(&mut self, pgno: u32, data: &[u8]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO sqlite_dbpage (pgno, data) VALUES (?1, ?2)")?
            .execute(rusqlite::params![pgno, data])?;
        Ok(())
    }

    /// Ends the database at `pages` pages (the file's commit size) and commits.
    pub fn commit(&mut self, pages: u32) -> Result<(), StoreError> {
        let count: u32 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        if pages >= 1 && pages < count {
            // A NULL page truncates the database from there (SQLite's own rule for the table).
            self.conn
                .prepare_cached("INSERT INTO sqlite_dbpage (pgno, data) VALUES (?1, NULL)")?
                .execute([pages + 1])?;
        }
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }

    /// Leaves the copy as it was before `begin`.
    pub fn rollback(&mut self) {
        if self.open {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a follower's page write");
            }
            self.open = false;
        }
    }

    /// The copy's WAL grows with every change it takes; folding it back is this connection's
    /// job, since readers never checkpoint. PASSIVE: a long read is never waited for.
    pub fn checkpoint(&self) {
        super::checkpoint::run(&self.conn, "PASSIVE");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages_of(path: &Path) -> Vec<(u32, Vec<u8>)> {
        let conn = Connection::open(path).expect("open");
        let mut stmt = conn
            .prepare("SELECT pgno, data FROM sqlite_dbpage ORDER BY pgno")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn wal_db(path: &Path, rows: usize) {
        let conn = Connection::open(path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS t (v BLOB); DELETE FROM t;",
        )
        .expect("schema");
        for _ in 0..rows {
            conn.execute("INSERT INTO t VALUES (randomblob(3000))", [])
                .expect("insert");
        }
        conn.execute_batch("VACUUM").expect("vacuum");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }

    #[test]
    fn a_copy_takes_another_databases_pages_and_shrinks_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (leader, copy) = (dir.path().join("leader.db"), dir.path().join("copy.db"));
        wal_db(&leader, 2);
        wal_db(&copy, 40);
        let reader = Connection::open(&copy).expect("reader");
        let before: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(before, 40);
        let pages = pages_of(&leader);
        let mut writer = PageWriter::open(&copy).expect("page writer");
        writer.begin().expect("begin");
        for (pgno, data) in &pages {
            writer.page(*pgno, data).expect("page");
        }
        writer.commit(pages.len() as u32).expect("commit");
        let after: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(after, 2, "a reader already open sees the new state");
        let copied = pages_of(&copy);
        let pgnos = |p: &[(u32, Vec<u8>)]| p.iter().map(|(n, _)| *n).collect::<Vec<_>>();
        assert_eq!(
            pgnos(&copied),
            pgnos(&pages),
            "the copy shrank to the leader's size"
        );
        // SQLite bumps the change counter (and its copy, "version-valid-for") in page 1 when
        // the copy commits; every other byte is the leader's.
        let unstamped = |page: &[u8]| {
            let mut page = page.to_vec();
            page[24..28].fill(0);
            page[92..96].fill(0);
            page
        };
        let differ: Vec<u32> = copied
            .iter()
            .zip(&pages)
            .filter(|(a, b)| unstamped(&a.1) != unstamped(&b.1))
            .map(|(a, _)| a.0)
            .collect();
        assert!(differ.is_empty(), "pages that differ: {differ:?}");
        let check: String = reader
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity");
        assert_eq!(check, "ok");
    }

    #[test]
    fn a_rolled_back_write_leaves_the_copy_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("copy.db");
        wal_db(&copy, 3);
        let pages = pages_of(&copy);
        let mut writer = PageWriter::open(&copy).expect("page writer");
        writer.begin().expect("begin");
        writer.page(2, &vec![0u8; 4096]).expect("page");
        writer.rollback();
        assert!(pages_of(&copy) == pages, "the copy is unchanged");
    }
}

//! The WAL guard: a read transaction that keeps other processes' checkpoints from folding away
//! WAL frames the replica lacks.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;
use crate::handshake::WalHold;

/// A read transaction held open on a connection of its own, so that other processes cannot
/// fold away WAL frames the replica lacks (as Litestream does).
///
/// While it holds a read mark (slots 1..), another process's checkpoint copies frames only up
/// to that mark, and neither it nor any writer can restart or truncate the WAL. While it holds
/// read lock 0, which SQLite gives a reader when every frame of the WAL is already in the
/// database (an empty WAL after the writer's truncation, or a truncation that copied everything
/// but was reported busy), nobody can copy frames at all; a writer may then restart the WAL,
/// but only over frames that are in the database file, and that generation change is noticed
/// by the shipper (`ShipperGate::generation`). So frames the replica lacks stay where the
/// shipper reads them, and the database file under them changes only in ways an image read in
/// the meantime sees through the WAL.
///
/// It is let go for the writer's own truncations (when everything is shipped, or forced at the
/// WAL limit, which ships the whole database next), when the tripwire stops the process, and
/// after the shipper's last sync. A checkpoint by another process in `FULL`, `RESTART` or
/// `TRUNCATE` mode holds SQLite's write lock while it waits for this reader, so it stalls
/// dropd's writes for as long as its busy timeout (the `sqlite3` CLI's is 0); `PASSIVE` never
/// waits.
pub struct WalGuard {
    conn: Connection,
    held: bool,
}

impl std::fmt::Debug for WalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WalGuard(held: {})", self.held)
    }
}

impl WalGuard {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = super::open::open_reader(path)?;
        let mut guard = Self { conn, held: false };
        guard.hold();
        Ok(guard)
    }
}

impl crate::handshake::WalHold for WalGuard {
    /// Starts the read transaction (a read is what takes SQLite's read lock).
    fn hold(&mut self) {
        if self.held {
            return;
        }
        let begun = self.conn.execute_batch("BEGIN").and_then(|()| {
            self.conn
                .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| {
                    r.get::<_, i64>(0)
                })
        });
        match begun {
            Ok(_) => self.held = true,
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                tracing::warn!(error = %err, "could not hold the WAL against other processes' checkpoints");
            }
        }
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            let _ = self.conn.execute_batch("COMMIT");
        }
    }
}

//! Pooled read-only connections. Blocking: use them inside `web::block` (or another blocking
//! thread), never on an async worker.

use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;

use super::StoreError;

pub type ReadConn = r2d2::PooledConnection<SqliteConnectionManager>;

#[derive(Clone)]
pub struct ReadPool {
    pool: r2d2::Pool<SqliteConnectionManager>,
}

impl ReadPool {
    pub fn open(path: &Path, size: u32) -> Result<Self, StoreError> {
        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            super::cost::watch(c);
            // Only the writer checkpoints, even when a reader happens to close last.
            c.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )?;
            c.execute_batch(
                "PRAGMA query_only = ON;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 5000;",
            )
        });
        let pool = r2d2::Pool::builder()
            .max_size(size.max(1))
            .connection_timeout(Duration::from_secs(5))
            .build(manager)?;
        Ok(Self { pool })
    }

    /// A connection; every one handed out counts in `dropd_db_reads_total`, so a request that
    /// should cost no read can be shown to cost none.
    pub fn get(&self) -> Result<ReadConn, StoreError> {
        metrics::counter!("dropd_db_reads_total").increment(1);
        Ok(self.pool.get()?)
    }
}

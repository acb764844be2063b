//! The benchmark's baseline only (`serve --naive-writes`, hidden, in builds with the `bench`
//! feature): every command runs in its own transaction on one of a pool of read-write
//! connections, the way a typical web app writes. It exists so the gain of group commit is
//! measured, not claimed; never use it in production.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::group_commit::{run_batch, BatchChores};
use crate::domain::Clock;
use crate::store::commands::Command;
use crate::store::keys::KeyBook;
use crate::store::memory::{BuyerLoad, Memory};
use crate::store::{CommitListener, StoreConfig, StoreError};

#[derive(Clone)]
pub(super) struct NaiveWriters {
    pool: r2d2::Pool<r2d2_sqlite::SqliteConnectionManager>,
    clock: Arc<dyn Clock>,
    listener: Option<Arc<dyn CommitListener>>,
    keys: Arc<KeyBook>,
    box_id: Option<String>,
}

impl NaiveWriters {
    pub(super) fn open(
        conn: &Connection,
        config: &StoreConfig,
        clock: &Arc<dyn Clock>,
        listener: &Option<Arc<dyn CommitListener>>,
        keys: &Arc<KeyBook>,
    ) -> Result<Self, StoreError> {
        // A typical web app would index holds by buyer to count a buyer's units per request.
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS naive_holds_by_buyer ON holds (drop_id, buyer)",
        )?;
        let sync = config.synchronous.as_str();
        let manager =
            r2d2_sqlite::SqliteConnectionManager::file(&config.path).with_init(move |c| {
                c.busy_timeout(Duration::from_secs(30))?;
                c.execute_batch(&format!(
                    "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
                ))
            });
        let pool = r2d2::Pool::builder().max_size(16).build(manager)?;
        Ok(Self {
            pool,
            clock: clock.clone(),
            listener: listener.clone(),
            keys: keys.clone(),
            box_id: config.box_id.clone(),
        })
    }

    /// Runs `cmd` in a transaction of its own on a blocking thread; it answers itself.
    pub(super) fn run(&self, cmd: Command) {
        let naive = self.clone();
        tokio::task::spawn_blocking(move || match naive.pool.get() {
            Ok(conn) => {
                let now = naive.clock.now();
                run_batch(
                    &conn,
                    now,
                    &mut Memory::new(BuyerLoad::OneBuyer),
                    &naive.keys,
                    &mut vec![cmd],
                    naive.listener.as_deref(),
                    &|| Ok(()),
                    BatchChores {
                        box_id: naive.box_id.as_deref(),
                        sweep: true,
                        sweep_limit: crate::defaults::SWEEP_LIMIT,
                        // The baseline does the same work per command, ledger included.
                        ledger: true,
                        ..BatchChores::default()
                    },
                );
            }
            Err(err) => {
                tracing::error!(error = %err, "no naive writer connection");
                cmd.answer(Some(StoreError::CommitFailed));
            }
        });
    }
}

//! Opening the database: the writer's connection with its PRAGMAs and migrations.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{migrations, StoreError};

/// SQLite older than this can corrupt a WAL database when one connection checkpoints while
/// another writes.
const MIN_SQLITE: i32 = 3_051_003;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged write survives power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a process crash, may lose the last commits on power loss.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        }
    }
}

pub fn check_sqlite_version() -> Result<(), StoreError> {
    if rusqlite::version_number() < MIN_SQLITE {
        return Err(StoreError::Setup(format!(
            "SQLite {} is too old: 3.51.3 or newer is needed",
            rusqlite::version()
        )));
    }
    Ok(())
}

/// Opens the read-write connection: WAL, the chosen durability, foreign keys, no automatic
/// checkpoints (the writer decides when), and the schema migrated to the latest version.
pub fn open_writer(path: &Path, synchronous: Synchronous) -> Result<Connection, StoreError> {
    check_sqlite_version()?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Setup(format!(
            "{} could not be put in WAL mode (got {mode}); is it on a network filesystem?",
            path.display()
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA foreign_keys = ON;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -262144;",
        synchronous.pragma()
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    super::cost::watch(&conn);
    // The writer checkpoints explicitly (and, with a replica, only what was shipped): SQLite's
    // own checkpoint when the last connection closes would fold unshipped frames away.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    migrations::migrate(&mut conn)?;
    Ok(conn)
}

/// A short-lived read-write connection for one-off CLI commands run beside (or without) a server.
pub fn open_for_cli(path: &Path) -> Result<Connection, StoreError> {
    open_writer(path, Synchronous::Full)
}

/// A read-only connection of its own (the WAL guard, the admin-key watch) that never
/// checkpoints, even when it happens to close last: only the writer does.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    Ok(conn)
}

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The writer's queue is full: the caller should retry shortly.
    #[error("the writer's queue is full")]
    Overloaded,
    /// The writer has stopped (shutdown, or it died).
    #[error("the writer is not running")]
    WriterStopped,
    /// The disk (or the data directory's filesystem) is full; nothing was written.
    #[error("the database disk is full: free space in the data directory, then retry")]
    DiskFull,
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The batch holding this command could not commit; nothing of it was written.
    #[error("the transaction could not commit")]
    CommitFailed,
    #[error("read pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("stored idempotency outcome is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("{0}")]
    Setup(String),
    /// The database's WAL (or the database, or its shared memory) was deleted or replaced by
    /// another process: commits would go into a file nobody reads again. The process stops.
    #[error("the database files were replaced: {0}")]
    StorageReplaced(String),
    /// A bug: a rule of the writer was broken. The batch is retried without the command.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull,
            _ => StoreError::Sqlite(err),
        }
    }
}

impl StoreError {
    /// An I/O error (the SQLITE_IOERR family, a failed fsync among them): after one, what is
    /// on disk is unknown, and a later commit could make a batch durable that was reported
    /// failed.
    pub fn is_io_failure(&self) -> bool {
        matches!(self, StoreError::Sqlite(err)
            if err.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure))
    }

    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull)
    }

    /// Failures that belong to one command (its data broke a constraint, or a bug), as opposed
    /// to failures of the database as a whole (disk full, I/O) that would fail any command.
    pub fn is_command_specific(&self) -> bool {
        match self {
            StoreError::Internal(_) | StoreError::Corrupt(_) => true,
            StoreError::Sqlite(err) => matches!(
                err.sqlite_error_code(),
                Some(rusqlite::ErrorCode::ConstraintViolation) | Some(rusqlite::ErrorCode::TooBig)
            ),
            _ => false,
        }
    }
}

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
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull)
    }
}

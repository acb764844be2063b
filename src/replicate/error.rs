//! What can stop a sync, compaction or snapshot: a leaf, so the parts of shipping can share it
//! without importing each other.

use super::ltx;
use super::replica::ReplicaError;
use super::restore::RestoreError;
use super::wal;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("reading the wal: {0}")]
    Wal(#[from] wal::WalError),
    #[error("encoding ltx: {0}")]
    Ltx(ltx::LtxError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

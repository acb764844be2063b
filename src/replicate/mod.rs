//! Replication in Litestream's format (see `../shared/docs/ltx-format.md`, mirrored in
//! docs/design.md): the LTX codec, the WAL reader, replicas (file and S3), the shipper that runs
//! inside `serve`, and restore. Never imports actix.

mod compact;
pub mod config;
mod error;
pub mod follow;
mod image;
pub mod lease;
pub mod ltx;
pub mod position;
pub mod replica;
pub mod restore;
pub mod retention;
pub mod shipper;
pub mod status;
pub mod wal;

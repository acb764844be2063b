//! Replication in Litestream's format (see `../shared/docs/ltx-format.md`, mirrored in
//! docs/design.md). Never imports actix.
//!
//! Built so far: the LTX v3 codec (`ltx`), the WAL reader (`wal`) and restore from a file
//! replica (`restore`). Not yet: the shipper inside `serve`, compaction, retention and the S3
//! client.

pub mod ltx;
pub mod restore;
pub mod shipper;
pub mod wal;

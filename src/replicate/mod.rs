//! Replication in Litestream's format (see `../shared/docs/ltx-format.md`, mirrored in
//! docs/design.md). Never imports actix.
//!
//! Built so far: the LTX v3 codec (`ltx`). Not yet: the WAL reader, the shipper, compaction,
//! the replica clients and restore.

pub mod ltx;
pub mod restore;

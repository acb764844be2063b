//! Where LTX files live: a directory (`file:///dir`) or an S3 bucket (`s3://bucket/path`).
//! Both backends name and timestamp objects exactly as Litestream does (see docs/design.md,
//! "Replication"), so either tool can restore what the other wrote.
//!
//! Calls block: the shipper and `restore` are plain threads. The S3 client runs on its own
//! small tokio runtime, never on an actix worker.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ltx::Header;

mod file;
mod s3;
mod target;

pub use file::FileReplica;
pub use s3::S3Replica;
pub use target::{parse_bool, ReplicaTarget, S3Target};

/// One LTX object of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxFile {
    pub level: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    /// The object's name in its replica (a path for files, a key for S3).
    pub key: String,
    pub size: u64,
    /// When it was written: the header timestamp Litestream keeps beside the object (file
    /// mtime; S3 `litestream-timestamp`), or the upload time until `refine_times` is called.
    pub written: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("{0}")]
    Url(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Store {
        context: String,
        source: object_store::Error,
    },
}

pub(super) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReplicaError {
    let context = context.into();
    move |source| ReplicaError::Io { context, source }
}

pub(super) fn store(
    context: impl Into<String>,
) -> impl FnOnce(object_store::Error) -> ReplicaError {
    let context = context.into();
    move |source| ReplicaError::Store { context, source }
}

impl ReplicaTarget {
    pub fn open(&self) -> Result<Arc<dyn Replica>, ReplicaError> {
        Ok(match self {
            ReplicaTarget::File(path) => Arc::new(FileReplica::new(path.clone())),
            ReplicaTarget::S3(s3) => Arc::new(S3Replica::connect(s3.clone())?),
        })
    }
}

/// One LTX file being stored, written as it is encoded; it appears in the replica, under its
/// Litestream name, only once `finish` returns.
pub trait Upload: Write + Send {
    fn finish(self: Box<Self>) -> Result<LtxFile, ReplicaError>;
    /// Leaves nothing behind (a temp file, an unfinished multipart upload).
    fn abort(self: Box<Self>);
}

/// What the shipper and restore need from a replica.
pub trait Replica: Send + Sync {
    /// Every LTX object, in no particular order; other names are ignored.
    fn list(&self) -> Result<Vec<LtxFile>, ReplicaError>;
    fn read(&self, file: &LtxFile) -> Result<Vec<u8>, ReplicaError>;
    /// Copies one object into `out` as it arrives, without holding it in memory.
    fn read_into(&self, file: &LtxFile, out: &mut dyn Write) -> Result<u64, ReplicaError> {
        let bytes = self.read(file)?;
        out.write_all(&bytes)
            .map_err(io(format!("copying {}", file.key)))?;
        Ok(bytes.len() as u64)
    }
    /// Starts storing the LTX file `header` describes at `level`.
    fn create(&self, level: u32, header: &Header) -> Result<Box<dyn Upload + '_>, ReplicaError>;
    /// Stores one LTX file under its Litestream name, with the header timestamp beside it.
    fn write(&self, level: u32, header: &Header, bytes: Vec<u8>) -> Result<LtxFile, ReplicaError> {
        let mut upload = self.create(level, header)?;
        if let Err(e) = upload.write_all(&bytes) {
            upload.abort();
            return Err(io(format!("writing {}", file_name(header)))(e));
        }
        upload.finish()
    }
    fn delete(&self, files: &[LtxFile]) -> Result<(), ReplicaError>;
    /// Replaces upload times with the timestamps kept beside the objects, where listing alone
    /// does not give them (S3). Needed only for a point-in-time restore.
    fn refine_times(&self, _files: &mut [LtxFile]) -> Result<(), ReplicaError> {
        Ok(())
    }
    /// The lease object beside the LTX files (`lease.json`, see `replicate::lease`) and its
    /// version (an ETag; for a directory, a hash of its bytes). None: there is none.
    fn read_lease(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError>;
    /// Writes the lease only if it is still the version last read (`expected` None: only if
    /// there is none). Returns the new version, or None when someone else wrote it first.
    fn write_lease(
        &self,
        bytes: Vec<u8>,
        expected: Option<&str>,
    ) -> Result<Option<String>, ReplicaError>;
}

/// The lease object's name, beside the levels in the replica's path.
pub const LEASE_NAME: &str = "lease.json";

/// Level-9 files are snapshots: the whole database, `[1, X]`.
pub const SNAPSHOT_LEVEL: u32 = 9;

/// `%016x-%016x.ltx`, lowercase hex.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".ltx")?;
    let (min, max) = stem.split_once('-')?;
    if min.len() != 16 || max.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(min, 16).ok()?,
        u64::from_str_radix(max, 16).ok()?,
    ))
}

pub fn file_name(header: &Header) -> String {
    format!("{:016x}-{:016x}.ltx", header.min_txid, header.max_txid)
}

pub(super) fn written(level: u32, header: &Header, key: String, size: usize) -> LtxFile {
    LtxFile {
        level,
        min_txid: header.min_txid,
        max_txid: header.max_txid,
        key,
        size: size as u64,
        written: header_time(header),
    }
}

pub(super) fn header_time(header: &Header) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(header.timestamp_ms.max(0) as u64)
}

pub fn sync_dir(dir: &Path) -> Result<(), ReplicaError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_two_sixteen_digit_hex_txids() {
        assert_eq!(
            parse_name("0000000000000001-00000000000000ff.ltx"),
            Some((1, 255))
        );
        assert_eq!(parse_name("1-2.ltx"), None);
        assert_eq!(parse_name("0000000000000001-0000000000000002.tmp"), None);
    }
}

//! Where a clean stop left the replica, kept beside the database so the next start need not
//! ship the whole database again.
//!
//! Written by the shipper after its last sync, once the writer has stopped and the replica
//! holds everything in the database and its WAL; read and deleted at the next start, before
//! the database is opened. It names the replica, the TXID the replica ends at, and the identity
//! of the database file and its WAL (device, inode, size, modification time): if any differ
//! (a crash never writes it, a restore replaces the file, another process wrote or
//! checkpointed meanwhile) or the replica no longer ends at that TXID, the whole database is
//! shipped as before. Only `stat` is used on the database's files, never `open`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileState {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_s: i64,
    mtime_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    version: u32,
    replica: String,
    txid: u64,
    db: Option<FileState>,
    wal: Option<FileState>,
}

pub fn path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.replica-position", db.display()))
}

fn state(path: &Path) -> Option<FileState> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileState {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime_s: meta.mtime(),
        mtime_ns: meta.mtime_nsec(),
    })
}

fn current(db: &Path, replica: &str, txid: u64) -> Position {
    Position {
        version: VERSION,
        replica: replica.to_owned(),
        txid,
        db: state(db),
        wal: state(&crate::store::files::wal_path(db)),
    }
}

/// Notes that `replica` ends at `txid` with exactly the database at `db` (temp file, fsync,
/// rename, directory fsync).
pub fn record(db: &Path, replica: &str, txid: u64) -> std::io::Result<()> {
    use std::io::Write;
    let target = path(db);
    let tmp = PathBuf::from(format!("{}.tmp", target.display()));
    let text = serde_json::to_vec(&current(db, replica, txid)).map_err(std::io::Error::other)?;
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &target)?;
    sync_parent(&target)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The TXID `replica` ended at when this database was last stopped cleanly, if nothing has
/// touched the database or its WAL since. The record is removed either way: from now on only
/// a new clean stop vouches for the files.
pub fn take(db: &Path, replica: &str) -> Option<u64> {
    let target = path(db);
    let text = std::fs::read(&target).ok()?;
    if let Err(err) = std::fs::remove_file(&target).and_then(|()| sync_parent(&target)) {
        tracing::warn!(error = %err, path = %target.display(), "could not remove the replica position; shipping the whole database");
        return None;
    }
    let Ok(recorded) = serde_json::from_slice::<Position>(&text) else {
        tracing::warn!(path = %target.display(), "the replica position is unreadable; shipping the whole database");
        return None;
    };
    let now = current(db, replica, recorded.txid);
    if recorded != now {
        tracing::info!(
            "the database, its WAL or the replica changed since the last clean stop; shipping \
             the whole database"
        );
        return None;
    }
    Some(recorded.txid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_vouches_only_for_untouched_files_and_only_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("d.db");
        std::fs::write(&db, b"pages").expect("db");
        std::fs::write(crate::store::files::wal_path(&db), b"").expect("wal");
        record(&db, "file:///r", 7).expect("recorded");
        assert_eq!(take(&db, "file:///other"), None, "another replica");
        record(&db, "file:///r", 7).expect("recorded");
        assert_eq!(take(&db, "file:///r"), Some(7));
        assert_eq!(take(&db, "file:///r"), None, "used once");

        record(&db, "file:///r", 8).expect("recorded");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&db, b"other").expect("written");
        assert_eq!(take(&db, "file:///r"), None, "the database changed");

        // A restore puts a new file in place (same bytes, another inode).
        record(&db, "file:///r", 9).expect("recorded");
        let restored = dir.path().join("restored.db");
        std::fs::copy(&db, &restored).expect("copied");
        std::fs::rename(&restored, &db).expect("in place");
        assert_eq!(take(&db, "file:///r"), None, "the database was replaced");
    }
}

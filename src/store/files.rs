//! The database's three files as this process holds them: one descriptor each for `dropd.db`,
//! its `-wal` and its `-shm`, opened once and never closed while the process lives.
//!
//! POSIX advisory locks belong to the process, not to a descriptor, and closing *any*
//! descriptor of a file drops *every* lock the process holds on it, SQLite's included. SQLite's
//! shared lock on the database is how other processes (an operator's `sqlite3`, a backup
//! script) learn that someone still uses the WAL; without it the last of them to close
//! checkpoints and deletes the WAL and the shared memory while dropd still writes into them.
//! So nothing in dropd may `open` and `close` these files outside SQLite: whoever needs their
//! bytes (the shipper) or their identity (the writer's tripwire) reads through these
//! descriptors, which are kept in a process-wide list and never dropped.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A file's identity: which inode on which device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

#[derive(Debug)]
struct Kept {
    path: PathBuf,
    file: File,
    identity: Identity,
}

impl Kept {
    fn open(path: PathBuf) -> io::Result<Self> {
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        Ok(Self {
            path,
            file,
            identity: Identity {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        })
    }

    /// Whether the path still names the file this descriptor has open.
    fn check(&self) -> Result<(), Replaced> {
        let replaced = |how| Replaced {
            path: self.path.clone(),
            how,
        };
        let open = self.file.metadata().map_err(|_| replaced("unreadable"))?;
        if open.nlink() == 0 {
            return Err(replaced("deleted"));
        }
        match std::fs::metadata(&self.path) {
            Ok(now) if now.dev() == self.identity.dev && now.ino() == self.identity.ino => Ok(()),
            Ok(_) => Err(replaced("replaced by another file")),
            Err(_) => Err(replaced("deleted")),
        }
    }
}

/// The path of one of the database's files no longer names the file SQLite writes into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} was {how} by another process while dropd had it open", path.display())]
pub struct Replaced {
    pub path: PathBuf,
    pub how: &'static str,
}

/// Descriptors on the database, its WAL and its shared memory, for the life of the process.
#[derive(Debug)]
pub struct DbFiles {
    db: Kept,
    wal: Kept,
    shm: Kept,
}

/// Every `DbFiles` ever opened: never dropped, so their descriptors are never closed.
static KEPT: Mutex<Vec<Arc<DbFiles>>> = Mutex::new(Vec::new());

pub fn wal_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

pub fn shm_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-shm", db.display()))
}

impl DbFiles {
    /// The kept descriptors of the database at `db` (which SQLite has open in WAL mode, so
    /// all three files exist). Opened on the first call for these files, reused after.
    pub fn keep(db: &Path) -> io::Result<Arc<DbFiles>> {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        let same = |k: &Kept| k.check().is_ok();
        if let Some(files) = kept
            .iter()
            .find(|f| f.db.path == db && same(&f.db) && same(&f.wal) && same(&f.shm))
        {
            return Ok(files.clone());
        }
        let files = Arc::new(DbFiles {
            db: Kept::open(db.to_owned())?,
            wal: Kept::open(wal_path(db))?,
            shm: Kept::open(shm_path(db))?,
        });
        kept.push(files.clone());
        Ok(files)
    }

    pub fn db_path(&self) -> &Path {
        &self.db.path
    }

    pub fn db(&self) -> &File {
        &self.db.file
    }

    pub fn wal(&self) -> &File {
        &self.wal.file
    }

    pub fn db_len(&self) -> io::Result<u64> {
        Ok(self.db.file.metadata()?.len())
    }

    pub fn wal_len(&self) -> u64 {
        self.wal.file.metadata().map_or(0, |m| m.len())
    }

    /// The WAL's frame count and salts as SQLite's WAL index (the `-shm`) has them after the
    /// last commit: `mxFrame` at byte 16 of the index header and the salts at 32 (native byte
    /// order, as SQLite maps it). `None` before SQLite made the index.
    pub fn wal_index_frames(&self) -> Option<(u32, u64)> {
        let mut hdr = [0u8; 40];
        self.shm.file.read_exact_at(&mut hdr, 0).ok()?;
        let frames = u32::from_ne_bytes(hdr[16..20].try_into().ok()?);
        let salts = u64::from_ne_bytes(hdr[32..40].try_into().ok()?);
        Some((frames, salts))
    }

    /// Reads exactly `buf.len()` bytes of the database at `offset`.
    pub fn read_db_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.db.file.read_exact_at(buf, offset)
    }

    /// After the tripwire fired and the open WAL was checkpointed: renames the file at the WAL
    /// path aside (never deletes it, so an operator can still look at it) if it is ours
    /// (`ours`: the database was replaced, and our frames belong to the old one) or if it is not
    /// (`!ours`: the database is ours, and a foreign WAL was written against another state).
    /// Either would be replayed over the database at the next start.
    pub fn move_aside_wal(&self, ours: bool) -> Option<PathBuf> {
        let now = std::fs::metadata(&self.wal.path).ok()?;
        let is_ours = now.dev() == self.wal.identity.dev && now.ino() == self.wal.identity.ino;
        if is_ours != ours {
            return None;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = PathBuf::from(format!("{}.replaced-{stamp}", self.wal.path.display()));
        std::fs::rename(&self.wal.path, &aside).ok()?;
        Some(aside)
    }

    /// Whether the database path still names the database file this process writes.
    pub fn db_intact(&self) -> bool {
        self.db.check().is_ok()
    }

    /// The writer's tripwire, after each commit: the paths still name the files SQLite has
    /// open. If not, commits go into a file nobody will ever read again.
    pub fn check(&self) -> Result<(), Replaced> {
        self.wal.check()?;
        self.db.check()?;
        self.shm.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_replaced_wal_trips_the_check() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&db).expect("db");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .expect("schema");
        let files = DbFiles::keep(&db).expect("kept");
        assert!(files.check().is_ok());
        assert!(Arc::ptr_eq(&files, &DbFiles::keep(&db).expect("kept")));

        std::fs::rename(wal_path(&db), dir.path().join("elsewhere")).expect("moved");
        std::fs::write(wal_path(&db), b"").expect("a new file");
        let err = files.check().expect_err("replaced");
        assert_eq!(err.how, "replaced by another file");
        std::fs::remove_file(wal_path(&db)).expect("removed");
        std::fs::remove_file(dir.path().join("elsewhere")).expect("removed");
        assert_eq!(files.check().expect_err("deleted").how, "deleted");
        drop(conn);
    }
}

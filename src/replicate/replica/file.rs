//! A directory replica, laid out as Litestream's file backend: `<root>/ltx/<level>/<min>-<max>.ltx`.

use std::io::Write;
use std::path::PathBuf;

use super::{
    file_name, header_time, io, parse_name, sync_dir, written, LtxFile, Replica, ReplicaError,
    Upload,
};
use crate::replicate::ltx::Header;

/// `<root>/ltx/<level>/<min>-<max>.ltx`.
pub struct FileReplica {
    root: PathBuf,
}

impl FileReplica {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }
}

impl FileReplica {
    /// Runs `f` holding an exclusive lock on `<root>/lease.lock`, so that reading, comparing
    /// and replacing `lease.json` is one step for every process on this machine (and on a
    /// shared filesystem whose locks work).
    fn locked<T>(&self, f: impl FnOnce() -> Result<T, ReplicaError>) -> Result<T, ReplicaError> {
        std::fs::create_dir_all(&self.root)
            .map_err(io(format!("creating {}", self.root.display())))?;
        let path = self.root.join("lease.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        lock.lock()
            .map_err(io(format!("locking {}", path.display())))?;
        let result = f();
        drop(lock);
        result
    }

    fn lease_version(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    fn read_lease_unlocked(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError> {
        let path = self.root.join(super::LEASE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let version = Self::lease_version(&bytes);
                Ok(Some((bytes, version)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("reading {}", path.display()))(e)),
        }
    }
}

impl Replica for FileReplica {
    fn read_lease(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError> {
        self.locked(|| self.read_lease_unlocked())
    }

    fn write_lease(
        &self,
        bytes: Vec<u8>,
        expected: Option<&str>,
    ) -> Result<Option<String>, ReplicaError> {
        self.locked(|| {
            let current = self.read_lease_unlocked()?.map(|(_, v)| v);
            if current.as_deref() != expected {
                return Ok(None);
            }
            let path = self.root.join(super::LEASE_NAME);
            let tmp = self.root.join(format!("{}.tmp", super::LEASE_NAME));
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(io(format!("writing {}", path.display())))?;
            sync_dir(&self.root)?;
            Ok(Some(Self::lease_version(&bytes)))
        })
    }

    fn list(&self) -> Result<Vec<LtxFile>, ReplicaError> {
        let mut files = Vec::new();
        let ltx_dir = self.root.join("ltx");
        let levels = match std::fs::read_dir(&ltx_dir) {
            Ok(levels) => levels,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(io(format!("listing {}", ltx_dir.display()))(e)),
        };
        for level in levels {
            let level = level.map_err(io(format!("listing {}", ltx_dir.display())))?;
            let Some(number) = level
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = level.path();
            for entry in
                std::fs::read_dir(&dir).map_err(io(format!("listing {}", dir.display())))?
            {
                let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
                let Some((min, max)) = entry.file_name().to_str().and_then(parse_name) else {
                    continue;
                };
                // Compaction or retention may remove a file between the listing and this
                // look at it: one that is gone is not part of the replica any more.
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(format!("reading {}", entry.path().display()))(e)),
                };
                files.push(LtxFile {
                    level: number,
                    min_txid: min,
                    max_txid: max,
                    key: entry.path().display().to_string(),
                    size: meta.len(),
                    written: meta
                        .modified()
                        .map_err(io(format!("reading {}", entry.path().display())))?,
                });
            }
        }
        Ok(files)
    }

    fn read(&self, file: &LtxFile) -> Result<Vec<u8>, ReplicaError> {
        std::fs::read(&file.key).map_err(io(format!("reading {}", file.key)))
    }

    fn read_into(&self, file: &LtxFile, out: &mut dyn Write) -> Result<u64, ReplicaError> {
        let mut source =
            std::fs::File::open(&file.key).map_err(io(format!("reading {}", file.key)))?;
        std::io::copy(&mut source, out).map_err(io(format!("reading {}", file.key)))
    }

    /// Temp file, fsync, rename, directory fsync, then the mtime Litestream reads as the
    /// file's timestamp.
    fn create(&self, level: u32, header: &Header) -> Result<Box<dyn Upload + '_>, ReplicaError> {
        let dir = self.root.join("ltx").join(level.to_string());
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let name = file_name(header);
        let tmp = dir.join(format!("{name}.tmp"));
        let file =
            std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        Ok(Box::new(FileUpload {
            out: std::io::BufWriter::with_capacity(1 << 20, file),
            path: dir.join(&name),
            dir,
            tmp,
            level,
            header: *header,
            size: 0,
        }))
    }

    fn delete(&self, files: &[LtxFile]) -> Result<(), ReplicaError> {
        for file in files {
            match std::fs::remove_file(&file.key) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("deleting {}", file.key))(e)),
            }
        }
        Ok(())
    }
}

struct FileUpload {
    out: std::io::BufWriter<std::fs::File>,
    dir: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
    level: u32,
    header: Header,
    size: usize,
}

impl Write for FileUpload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.size += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Upload for FileUpload {
    fn finish(self: Box<Self>) -> Result<LtxFile, ReplicaError> {
        let this = *self;
        let tmp = this.tmp.clone();
        let result = (|| {
            let file = this
                .out
                .into_inner()
                .map_err(|e| io(format!("writing {}", tmp.display()))(e.into_error()))?;
            file.sync_all()
                .map_err(io(format!("syncing {}", tmp.display())))?;
            file.set_modified(header_time(&this.header))
                .map_err(io(format!("setting the time of {}", tmp.display())))?;
            drop(file);
            std::fs::rename(&tmp, &this.path).map_err(io(format!("renaming {}", tmp.display())))?;
            sync_dir(&this.dir)
        })();
        if let Err(err) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
        Ok(written(
            this.level,
            &this.header,
            this.path.display().to_string(),
            this.size,
        ))
    }

    fn abort(self: Box<Self>) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

//! The `wal-shipper`: every sync interval, the WAL frames committed since the last sync become
//! one level-0 LTX file in the replica (latest version of each page); the writer is then told
//! it may checkpoint them. Opt-in with `serve --replica file:///dir`.
//!
//! Continuity: TXIDs continue from the replica's highest. At start the shipper cannot know which
//! of the local frames the replica already has, so it ships the whole database once: as the
//! snapshot (TXID 1) on an empty replica, else as a level-0 file holding every page. That file
//! is larger than a delta but never leaves a gap or an overlap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ltx::{self, Header};
use super::restore::list_file_replica;
use super::wal::{self, WAL_HEADER_SIZE};
use crate::store::CheckpointGate;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("reading the wal: {0}")]
    Wal(#[from] wal::WalError),
    #[error("encoding ltx: {0}")]
    Ltx(#[from] ltx::LtxError),
    #[error("listing the replica: {0}")]
    Replica(#[from] super::restore::RestoreError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShipError {
    let context = context.into();
    move |source| ShipError::Io { context, source }
}

pub struct Shipper {
    db_path: PathBuf,
    wal_path: PathBuf,
    replica: PathBuf,
    gate: Arc<CheckpointGate>,
    txid: u64,
    offset: u64,
    salts: Option<(u32, u32)>,
}

impl Shipper {
    /// Ships the whole database once (see the module doc) and returns a shipper ready to sync.
    pub fn start(
        db_path: &Path,
        replica: &Path,
        gate: Arc<CheckpointGate>,
    ) -> Result<Shipper, ShipError> {
        let txid = list_file_replica(replica)?
            .iter()
            .map(|f| f.max_txid)
            .max()
            .unwrap_or(0);
        let mut shipper = Shipper {
            db_path: db_path.to_owned(),
            wal_path: PathBuf::from(format!("{}-wal", db_path.display())),
            replica: replica.to_owned(),
            gate,
            txid,
            offset: WAL_HEADER_SIZE,
            salts: None,
        };
        shipper.ship_image()?;
        Ok(shipper)
    }

    pub fn txid(&self) -> u64 {
        self.txid
    }

    fn ship_image(&mut self) -> Result<(), ShipError> {
        let file = std::fs::read(&self.db_path)
            .map_err(io(format!("reading {}", self.db_path.display())))?;
        if file.len() < 100 {
            return Ok(());
        }
        let page_size = match u16::from_be_bytes([file[16], file[17]]) {
            1 => 65536,
            n => u32::from(n),
        };
        let mut pages: BTreeMap<u32, Vec<u8>> = file
            .chunks(page_size as usize)
            .enumerate()
            .map(|(i, p)| (i as u32 + 1, p.to_vec()))
            .collect();
        let mut commit = pages.len() as u32;
        if let Some(segment) = wal::read_committed(&self.wal_path, WAL_HEADER_SIZE)? {
            if segment.commit > 0 {
                commit = segment.commit;
                pages.extend(segment.pages);
            }
            self.offset = segment.end;
            self.salts = Some((segment.header.salt1, segment.header.salt2));
        }
        let lock = ltx::lock_page(page_size);
        pages.retain(|p, _| *p <= commit && *p != lock);
        let first = self.txid == 0;
        self.txid += 1;
        let header = Header {
            page_size,
            commit,
            min_txid: if first { 1 } else { self.txid },
            max_txid: self.txid,
            timestamp_ms: now_ms(),
            ..Header::default()
        };
        if first {
            self.write(9, &header, &pages)?;
        }
        self.write(0, &header, &pages)?;
        self.gate.shipped(self.offset);
        Ok(())
    }

    /// Ships what was committed since the last sync; returns whether a file was written.
    pub fn try_sync(&mut self) -> Result<bool, ShipError> {
        let Some(mut segment) = wal::read_committed(&self.wal_path, self.offset)? else {
            // No WAL (or an empty one after a truncating checkpoint): start over at its top.
            self.offset = WAL_HEADER_SIZE;
            self.salts = None;
            return Ok(false);
        };
        let salts = Some((segment.header.salt1, segment.header.salt2));
        if salts != self.salts {
            // A new WAL generation: everything in the old one was shipped before the checkpoint.
            segment = match wal::read_committed(&self.wal_path, WAL_HEADER_SIZE)? {
                Some(segment) => segment,
                None => return Ok(false),
            };
            self.salts = salts;
        }
        if segment.pages.is_empty() {
            self.offset = segment.end;
            self.gate.shipped(self.offset);
            return Ok(false);
        }
        self.txid += 1;
        let header = Header {
            page_size: segment.header.page_size,
            commit: segment.commit,
            min_txid: self.txid,
            max_txid: self.txid,
            timestamp_ms: now_ms(),
            ..Header::default()
        };
        let lock = ltx::lock_page(segment.header.page_size);
        segment
            .pages
            .retain(|p, _| *p <= segment.commit && *p != lock);
        self.write(0, &header, &segment.pages)?;
        self.offset = segment.end;
        self.gate.shipped(self.offset);
        Ok(true)
    }

    /// Temp file, fsync, rename, directory fsync, then the mtime Litestream reads as the
    /// file's timestamp.
    fn write(
        &self,
        level: u32,
        header: &Header,
        pages: &BTreeMap<u32, Vec<u8>>,
    ) -> Result<(), ShipError> {
        let bytes = ltx::encode(header, pages.iter().map(|(p, d)| (*p, d.as_slice())))?;
        let dir = self.replica.join("ltx").join(level.to_string());
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let name = format!("{:016x}-{:016x}.ltx", header.min_txid, header.max_txid);
        let tmp = dir.join(format!("{name}.tmp"));
        let path = dir.join(&name);
        let file =
            std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        use std::io::Write;
        (&file)
            .write_all(&bytes)
            .map_err(io(format!("writing {}", tmp.display())))?;
        file.sync_all()
            .map_err(io(format!("syncing {}", tmp.display())))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io(format!("renaming {}", tmp.display())))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing {}", dir.display())))?;
        let when = UNIX_EPOCH + Duration::from_millis(header.timestamp_ms as u64);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(when))
            .map_err(io(format!("setting the time of {}", path.display())))?;
        Ok(())
    }

    /// Syncs every `interval` until `stop`, then once more.
    pub fn run_until_stopped(mut self, interval: Duration, stop: Arc<AtomicBool>) {
        let mut failing = false;
        loop {
            let stopping = stop.load(Ordering::Acquire);
            match self.try_sync() {
                Ok(_) => failing = false,
                Err(err) if !failing => {
                    tracing::error!(error = %err, "shipping to the replica failed; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
            if stopping {
                break;
            }
            let deadline = std::time::Instant::now() + interval;
            while std::time::Instant::now() < deadline && !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10).min(interval));
            }
        }
        tracing::info!(txid = self.txid, "wal-shipper stopped");
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

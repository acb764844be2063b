//! Following a replica (`dropd serve --follow`), as `litestream restore -f` does: restore the
//! latest state once, then apply each new LTX file as it appears. Each step takes the file that
//! extends the copy furthest (a compacted file as well as a level-0 one: its pages are the
//! newest of its range, so laid over any state inside that range they give the state at its
//! end). When nothing extends the copy but the replica is elsewhere (the files it needed were
//! removed by retention, or the replica was started again from an older state), the copy is
//! rebuilt from the replica's own restore chain, in one transaction.
//!
//! The copy itself is written through `Apply`, which the caller backs with SQLite.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::ltx::{self, LtxError};
use super::replica::{LtxFile, Replica, ReplicaError, SNAPSHOT_LEVEL};
use super::restore::{self, RestoreError, Target};

/// Where a follower writes what it takes from the replica: one transaction per step.
pub trait Apply {
    fn begin(&mut self) -> Result<(), String>;
    fn page(&mut self, pgno: u32, data: &[u8]) -> Result<(), String>;
    /// Ends the database at `pages` pages and commits: the copy is now at the file's TXID.
    fn commit(&mut self, pages: u32) -> Result<(), String>;
    fn rollback(&mut self);
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("{key}: {source}")]
    Corrupt { key: String, source: LtxError },
    #[error("writing the follower's copy: {0}")]
    Apply(String),
}

/// How far behind the replica a follower is, for `/readyz` and `/metrics`.
#[derive(Debug)]
pub struct FollowStatus {
    inner: Mutex<FollowSnapshot>,
    started: SystemTime,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowSnapshot {
    pub url: String,
    /// The TXID the follower serves, as hex (Litestream's file names).
    pub txid: String,
    /// The highest TXID the replica held at the last listing.
    pub replica_txid: String,
    /// TXIDs the replica holds that the follower does not serve yet.
    pub behind_txids: u64,
    /// How old the follower's view is: the time since a listing last found nothing more to
    /// apply (it grows while the replica cannot be read, or the follower cannot keep up).
    pub behind_seconds: f64,
    #[serde(with = "super::status::optional_time")]
    pub caught_up_at: Option<SystemTime>,
    pub files_applied: u64,
    /// Times the copy was rebuilt whole because no file extended it.
    pub rebuilds: u64,
    pub error: Option<String>,
    #[serde(skip)]
    txid_value: u64,
    #[serde(skip)]
    replica_txid_value: u64,
}

impl FollowSnapshot {
    pub fn txid(&self) -> u64 {
        self.txid_value
    }

    pub fn replica_txid(&self) -> u64 {
        self.replica_txid_value
    }
}

impl FollowStatus {
    pub fn new(url: String) -> Self {
        Self {
            inner: Mutex::new(FollowSnapshot {
                url,
                ..FollowSnapshot::default()
            }),
            started: SystemTime::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FollowSnapshot> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// As of `now`, with `behind_seconds` computed.
    pub fn snapshot(&self, now: SystemTime) -> FollowSnapshot {
        let mut snapshot = self.lock().clone();
        let since = snapshot.caught_up_at.unwrap_or(self.started);
        snapshot.behind_seconds = now
            .duration_since(since)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        snapshot.txid = format!("{:016x}", snapshot.txid_value);
        snapshot.replica_txid = format!("{:016x}", snapshot.replica_txid_value);
        snapshot.behind_txids = snapshot
            .replica_txid_value
            .saturating_sub(snapshot.txid_value);
        snapshot
    }

    fn record(&self, txid: u64, replica_txid: u64, applied: u64, rebuilt: bool, caught_up: bool) {
        let mut s = self.lock();
        s.txid_value = txid;
        s.replica_txid_value = replica_txid;
        s.files_applied += applied;
        s.rebuilds += u64::from(rebuilt);
        s.error = None;
        if caught_up {
            s.caught_up_at = Some(SystemTime::now());
        }
    }

    pub fn failed(&self, error: &FollowError) {
        self.lock().error = Some(error.to_string());
    }
}

/// Restores the replica's latest state into `output` (which must not exist), and returns a
/// follower at its TXID.
pub fn bootstrap(
    replica: Arc<dyn Replica>,
    status: Arc<FollowStatus>,
    output: &Path,
) -> Result<Follower, FollowError> {
    let url = status.lock().url.clone();
    let files = replica.list()?;
    let chain = restore::plan(&files, Target::Latest, &url)?;
    let txid = restore::apply(&*replica, &chain, output, 4, &|_| {})?;
    let replica_txid = files.iter().map(|f| f.max_txid).max().unwrap_or(txid);
    status.record(
        txid,
        replica_txid,
        chain.len() as u64,
        false,
        replica_txid <= txid,
    );
    tracing::info!(
        txid = format!("{txid:016x}"),
        files = chain.len(),
        "follower restored"
    );
    Ok(Follower {
        replica,
        status,
        txid,
        url,
    })
}

pub struct Follower {
    replica: Arc<dyn Replica>,
    status: Arc<FollowStatus>,
    txid: u64,
    url: String,
}

/// Of the files that extend a copy at `txid`, the one reaching furthest (the plan's own rule).
fn next_step(files: &[LtxFile], txid: u64) -> Option<&LtxFile> {
    files
        .iter()
        .filter(|f| f.level < SNAPSHOT_LEVEL && f.min_txid <= txid + 1 && f.max_txid > txid)
        .max_by_key(|f| (f.max_txid, std::cmp::Reverse(f.min_txid), f.level))
}

impl Follower {
    pub fn txid(&self) -> u64 {
        self.txid
    }

    /// Lists the replica once and applies what it holds beyond the copy. Returns how many
    /// files were applied (zero: nothing changed).
    pub fn poll(&mut self, sink: &mut dyn Apply) -> Result<u64, FollowError> {
        let result = self.poll_once(sink);
        if let Err(err) = &result {
            self.status.failed(err);
        }
        result
    }

    fn poll_once(&mut self, sink: &mut dyn Apply) -> Result<u64, FollowError> {
        let files = self.replica.list()?;
        if files.is_empty() {
            // Not "caught up": a replica that lost everything (or a wrong path) is an outage.
            return Err(RestoreError::Empty(self.url.clone()).into());
        }
        let replica_txid = files.iter().map(|f| f.max_txid).max().unwrap_or(0);
        let mut applied = 0;
        while let Some(next) = next_step(&files, self.txid) {
            let next = next.clone();
            self.apply(sink, std::slice::from_ref(&next))?;
            self.txid = next.max_txid;
            applied += 1;
            self.status.record(self.txid, replica_txid, 1, false, false);
        }
        let mut rebuilt = 0;
        if replica_txid != self.txid {
            // Nothing extends the copy (a gap), or the replica is behind it (started again from
            // an older state): the replica is the truth.
            let chain = restore::plan(&files, Target::Latest, &self.url)?;
            let reached = chain.last().map_or(self.txid, |f| f.max_txid);
            tracing::warn!(
                from = format!("{:016x}", self.txid),
                to = format!("{reached:016x}"),
                files = chain.len(),
                "no replica file continues the follower's copy: rebuilding it from the replica"
            );
            self.apply(sink, &chain)?;
            self.txid = reached;
            rebuilt = chain.len() as u64;
            applied += rebuilt;
        }
        self.status
            .record(self.txid, replica_txid, rebuilt, rebuilt > 0, true);
        Ok(applied)
    }

    /// Lays `chain`'s pages over the copy in one transaction (later files win).
    fn apply(&self, sink: &mut dyn Apply, chain: &[LtxFile]) -> Result<(), FollowError> {
        sink.begin().map_err(FollowError::Apply)?;
        let result = (|| {
            let mut pages = 0;
            for file in chain {
                let bytes = self.replica.read(file)?;
                let mut failed = None;
                let header = ltx::decode_with(&bytes, |pgno, page| {
                    if failed.is_none() {
                        failed = sink.page(pgno, page).err();
                    }
                })
                .map_err(|source| FollowError::Corrupt {
                    key: file.key.clone(),
                    source,
                })?;
                if let Some(e) = failed {
                    return Err(FollowError::Apply(e));
                }
                pages = header.commit;
            }
            sink.commit(pages).map_err(FollowError::Apply)
        })();
        if result.is_err() {
            sink.rollback();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::replicate::ltx::Header;
    use crate::replicate::replica::FileReplica;

    /// What a copy would be: its pages and each commit's size.
    #[derive(Default)]
    struct Copy {
        pages: BTreeMap<u32, u8>,
        pending: BTreeMap<u32, u8>,
        commits: Vec<u32>,
    }

    impl Apply for Copy {
        fn begin(&mut self) -> Result<(), String> {
            self.pending = self.pages.clone();
            Ok(())
        }
        fn page(&mut self, pgno: u32, data: &[u8]) -> Result<(), String> {
            self.pending.insert(pgno, data[0]);
            Ok(())
        }
        fn commit(&mut self, pages: u32) -> Result<(), String> {
            self.pending.retain(|pgno, _| *pgno <= pages);
            self.pages = std::mem::take(&mut self.pending);
            self.commits.push(pages);
            Ok(())
        }
        fn rollback(&mut self) {
            self.pending.clear();
        }
    }

    /// One file of a database `commit` pages long; each page is filled with its byte.
    fn ship(
        replica: &FileReplica,
        (level, min, max): (u32, u64, u64),
        commit: u32,
        pages: &[(u32, u8)],
    ) {
        let header = Header {
            page_size: 512,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: 1,
            ..Header::default()
        };
        let data: Vec<(u32, Vec<u8>)> = pages.iter().map(|(n, b)| (*n, vec![*b; 512])).collect();
        let bytes =
            ltx::encode(&header, data.iter().map(|(n, d)| (*n, d.as_slice()))).expect("encode");
        replica.write(level, &header, bytes).expect("write");
    }

    #[test]
    fn a_follower_steps_along_the_files_and_rebuilds_across_a_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let replica = Arc::new(FileReplica::new(dir.path().to_owned()));
        let status = Arc::new(FollowStatus::new("file:///r".into()));
        let mut follower = Follower {
            replica: replica.clone(),
            status: status.clone(),
            txid: 2,
            url: "file:///r".into(),
        };
        let mut copy = Copy::default();
        // The files after TXID 2 are gone: only a snapshot at 5 and a change at 6 remain.
        ship(&replica, (9, 1, 5), 3, &[(1, 5), (2, 5), (3, 5)]);
        ship(&replica, (0, 6, 6), 3, &[(2, 6)]);
        assert_eq!(follower.poll(&mut copy).expect("poll"), 2);
        assert_eq!(follower.txid(), 6);
        assert_eq!(copy.commits, vec![3], "the whole chain in one transaction");
        assert_eq!(copy.pages, BTreeMap::from([(1, 5), (2, 6), (3, 5)]));
        assert_eq!(status.snapshot(SystemTime::now()).rebuilds, 1);

        // A compacted file reaching further wins over the level-0 files it folds.
        ship(&replica, (0, 7, 7), 3, &[(3, 7)]);
        ship(&replica, (0, 8, 8), 3, &[(1, 8), (2, 8)]);
        ship(&replica, (1, 7, 8), 3, &[(1, 8), (2, 8), (3, 7)]);
        assert_eq!(follower.poll(&mut copy).expect("poll"), 1);
        assert_eq!(follower.txid(), 8);
        assert_eq!(copy.pages, BTreeMap::from([(1, 8), (2, 8), (3, 7)]));

        // A shrink drops the pages past the new end; nothing new applies nothing.
        ship(&replica, (0, 9, 9), 2, &[(1, 9), (2, 9)]);
        assert_eq!(follower.poll(&mut copy).expect("poll"), 1);
        assert_eq!(copy.pages, BTreeMap::from([(1, 9), (2, 9)]));
        assert_eq!(follower.poll(&mut copy).expect("poll"), 0);
        let snapshot = status.snapshot(SystemTime::now());
        assert_eq!((snapshot.txid(), snapshot.behind_txids), (9, 0));
        assert_eq!(snapshot.rebuilds, 1);
    }

    fn file(level: u32, min: u64, max: u64) -> LtxFile {
        LtxFile {
            level,
            min_txid: min,
            max_txid: max,
            key: format!("{level}/{min}-{max}"),
            size: 0,
            written: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_step_takes_the_file_reaching_furthest_from_the_copy() {
        let files = [
            file(9, 1, 9),
            file(1, 1, 8),
            file(0, 6, 6),
            file(0, 7, 7),
            file(0, 8, 8),
            file(0, 9, 9),
        ];
        assert_eq!(next_step(&files, 6).map(|f| f.key.as_str()), Some("1/1-8"));
        assert_eq!(next_step(&files, 8).map(|f| f.key.as_str()), Some("0/9-9"));
        assert!(next_step(&files, 9).is_none(), "a snapshot is never a step");
        assert!(
            next_step(&[file(0, 11, 12)], 9).is_none(),
            "a gap is not a step"
        );
    }
}

//! Restore: rebuild a database from a replica, as Litestream does (see docs/design.md,
//! "How restore picks files"): the last snapshot within the target, then the chain of files that
//! extends it furthest at each step, newest page wins, written to a temp file, fsynced, renamed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::ltx::{self, LtxError};
pub use super::replica::LtxFile;
use super::replica::{Replica, ReplicaError};

/// How far to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    #[default]
    Latest,
    Txid(u64),
    Time(SystemTime),
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("replica {0} holds no ltx files")]
    Empty(String),
    #[error("no snapshot at or before the target in {0}")]
    NoSnapshot(String),
    #[error(
        "non-contiguous ltx files: after txid {after:016x} the next file starts at {next:016x}"
    )]
    Gap { after: u64, next: u64 },
    #[error("the replica only reaches txid {reached:016x}, not {target:016x}")]
    Unreachable { reached: u64, target: u64 },
    #[error("{path}: {source}")]
    Corrupt { path: String, source: LtxError },
    #[error("{0}: its page size differs from the files before it")]
    PageSizeChanged(String),
    #[error("page {0} is missing from the restored database")]
    MissingPage(u32),
    #[error("{0} already exists: remove it, choose another -o, or pass --if-db-not-exists")]
    OutputExists(String),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("the restored database failed its integrity check: {0}")]
    Integrity(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RestoreError {
    let context = context.into();
    move |source| RestoreError::Io { context, source }
}

fn within(file: &LtxFile, target: Target) -> bool {
    match target {
        Target::Latest => true,
        Target::Txid(txid) => file.max_txid <= txid,
        Target::Time(at) => file.written <= at,
    }
}

/// The files to apply, in order.
pub fn plan(
    files: &[LtxFile],
    target: Target,
    replica: &str,
) -> Result<Vec<LtxFile>, RestoreError> {
    if files.is_empty() {
        return Err(RestoreError::Empty(replica.to_owned()));
    }
    let snapshot_within = |level: Option<u32>| {
        files
            .iter()
            .filter(|f| f.min_txid == 1 && level.is_none_or(|l| f.level == l))
            .filter(|f| match target {
                Target::Time(at) => f.written < at,
                other => within(f, other),
            })
            .max_by_key(|f| (f.max_txid, f.level))
    };
    let snapshot = snapshot_within(Some(9))
        .or_else(|| snapshot_within(None))
        .ok_or_else(|| RestoreError::NoSnapshot(replica.to_owned()))?;
    let mut chain = vec![snapshot.clone()];
    let mut cur = snapshot.max_txid;
    loop {
        let next = files
            .iter()
            .filter(|f| {
                f.level < 9 && f.min_txid <= cur + 1 && f.max_txid > cur && within(f, target)
            })
            .max_by(|a, b| {
                (
                    a.max_txid,
                    std::cmp::Reverse(a.min_txid),
                    a.level,
                    std::cmp::Reverse(a.written),
                )
                    .cmp(&(
                        b.max_txid,
                        std::cmp::Reverse(b.min_txid),
                        b.level,
                        std::cmp::Reverse(b.written),
                    ))
            });
        let Some(next) = next else { break };
        cur = next.max_txid;
        chain.push(next.clone());
    }
    match target {
        Target::Latest => {
            if let Some(after) = files
                .iter()
                .filter(|f| f.min_txid > cur + 1)
                .map(|f| f.min_txid)
                .min()
            {
                return Err(RestoreError::Gap {
                    after: cur,
                    next: after,
                });
            }
        }
        Target::Txid(txid) if cur < txid => {
            return Err(RestoreError::Unreachable {
                reached: cur,
                target: txid,
            });
        }
        _ => {}
    }
    Ok(chain)
}

/// Downloads `window` at once, one thread per file; `progress` hears each file's bytes.
fn fetch(
    replica: &dyn Replica,
    window: &[LtxFile],
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Result<Vec<u8>, RestoreError>> {
    std::thread::scope(|scope| {
        let jobs: Vec<_> = window
            .iter()
            .map(|file| {
                scope.spawn(move || {
                    let bytes = replica.read(file)?;
                    progress(bytes.len() as u64);
                    Ok(bytes)
                })
            })
            .collect();
        jobs.into_iter()
            .map(|job| {
                job.join()
                    .unwrap_or_else(|_| Err(RestoreError::Integrity("a download panicked".into())))
            })
            .collect()
    })
}

/// Applies the plan's files and writes the database to `output` (temp file, fsync, rename,
/// directory fsync), then checks its integrity. Returns the TXID restored. Pages go straight
/// from each decoded file to their place in the temp file (later files overwrite earlier
/// ones), so memory stays at `parallelism` downloaded files whatever the database's size.
pub fn apply(
    replica: &dyn Replica,
    chain: &[LtxFile],
    output: &Path,
    parallelism: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, RestoreError> {
    use std::os::unix::fs::FileExt;
    let started = std::time::Instant::now();
    let tmp = PathBuf::from(format!("{}.tmp", output.display()));
    let out = std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let result = (|| {
        let mut page_size = 0u32;
        let mut commit = 0u32;
        let mut max_txid = 0;
        // Which pages 1..=commit hold data, to refuse a chain that leaves a hole.
        let mut present: Vec<bool> = Vec::new();
        for window in chain.chunks(parallelism.max(1)) {
            let fetched = fetch(replica, window, progress);
            for (file, bytes) in window.iter().zip(fetched) {
                let bytes = bytes?;
                let mut write_error = None;
                let header = ltx::decode_with(&bytes, |pgno, page| {
                    if write_error.is_some() {
                        return;
                    }
                    let at = u64::from(pgno - 1) * page.len() as u64;
                    match out.write_all_at(page, at) {
                        Ok(()) => {
                            let index = pgno as usize;
                            if present.len() <= index {
                                present.resize(index + 1, false);
                            }
                            present[index] = true;
                        }
                        Err(e) => write_error = Some(e),
                    }
                })
                .map_err(|source| RestoreError::Corrupt {
                    path: file.key.clone(),
                    source,
                })?;
                if let Some(e) = write_error {
                    return Err(io(format!("writing {}", tmp.display()))(e));
                }
                if page_size != 0 && header.page_size != page_size {
                    return Err(RestoreError::PageSizeChanged(file.key.clone()));
                }
                page_size = header.page_size;
                commit = header.commit;
                max_txid = header.max_txid;
                // A smaller commit drops the pages above it (a shrink); they read as zeros if
                // the database grows again without carrying them, which a valid chain never does.
                present.truncate(commit as usize + 1);
                out.set_len(u64::from(commit) * u64::from(page_size))
                    .map_err(io(format!("sizing {}", tmp.display())))?;
            }
        }
        let lock = ltx::lock_page(page_size);
        if let Some(missing) =
            (1..=commit).find(|p| *p != lock && !present.get(*p as usize).copied().unwrap_or(false))
        {
            return Err(RestoreError::MissingPage(missing));
        }
        out.sync_all()
            .map_err(io(format!("syncing {}", tmp.display())))?;
        Ok(max_txid)
    })();
    drop(out);
    let max_txid = match result {
        Ok(txid) => txid,
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
    };
    let fetched = started.elapsed();
    if let Err(err) = check_integrity(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    tracing::info!(
        files = chain.len(),
        fetch_decode_write_ms = fetched.as_millis() as u64,
        integrity_check_ms = (started.elapsed() - fetched).as_millis() as u64,
        "restored"
    );
    std::fs::rename(&tmp, output).map_err(io(format!("renaming {} into place", tmp.display())))?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::replica::sync_dir(dir)?;
    }
    Ok(max_txid)
}

fn check_integrity(path: &Path) -> Result<(), RestoreError> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| RestoreError::Integrity(e.to_string()))?;
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| RestoreError::Integrity(e.to_string()))?;
    if result != "ok" {
        return Err(RestoreError::Integrity(result));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn ranges(chain: &[LtxFile]) -> Vec<(u32, u64, u64)> {
        chain
            .iter()
            .map(|f| (f.level, f.min_txid, f.max_txid))
            .collect()
    }

    #[test]
    fn the_plan_starts_at_the_snapshot_and_takes_the_longest_step_each_time() {
        let files = [
            file(9, 1, 5),
            file(1, 1, 8),
            file(0, 6, 6),
            file(0, 7, 7),
            file(0, 8, 8),
            file(0, 9, 9),
        ];
        let chain = plan(&files, Target::Latest, "r").expect("plan");
        assert_eq!(ranges(&chain), vec![(9, 1, 5), (1, 1, 8), (0, 9, 9)]);
        let chain = plan(&files, Target::Txid(7), "r").expect("plan");
        assert_eq!(ranges(&chain), vec![(9, 1, 5), (0, 6, 6), (0, 7, 7)]);
    }

    #[test]
    fn a_gap_or_an_unreachable_target_is_refused() {
        let files = [file(9, 1, 5), file(0, 7, 7)];
        assert!(matches!(
            plan(&files, Target::Latest, "r"),
            Err(RestoreError::Gap { after: 5, next: 7 })
        ));
        assert!(matches!(
            plan(&files, Target::Txid(7), "r"),
            Err(RestoreError::Unreachable { reached: 5, .. })
        ));
        assert!(matches!(
            plan(&[], Target::Latest, "r"),
            Err(RestoreError::Empty(_))
        ));
    }
}

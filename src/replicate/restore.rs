//! Restore: rebuild a database from a replica, as Litestream does (see docs/design.md,
//! "How restore picks files"): the last snapshot within the target, then the chain of files that
//! extends it furthest at each step, newest page wins, written to a temp file, fsynced, renamed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::ltx::{self, LtxError};

/// One LTX object of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxFile {
    pub level: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    pub path: PathBuf,
    /// When it was written (the file's mtime, set to its header timestamp).
    pub written: SystemTime,
}

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
    #[error("page {0} is missing from the restored database")]
    MissingPage(u32),
    #[error("{0} already exists: remove it, choose another -o, or pass --if-db-not-exists")]
    OutputExists(String),
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

/// Lists a file replica: `<root>/ltx/<level>/<min>-<max>.ltx`; other names are ignored.
pub fn list_file_replica(root: &Path) -> Result<Vec<LtxFile>, RestoreError> {
    let mut files = Vec::new();
    let ltx_dir = root.join("ltx");
    let levels = match std::fs::read_dir(&ltx_dir) {
        Ok(levels) => levels,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io(format!("listing {}", ltx_dir.display()))(e)),
    };
    for level in levels {
        let level = level.map_err(io("listing levels"))?;
        let Some(number) = level
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        for entry in std::fs::read_dir(level.path())
            .map_err(io(format!("listing {}", level.path().display())))?
        {
            let entry = entry.map_err(io("listing ltx files"))?;
            let name = entry.file_name();
            let Some((min, max)) = name.to_str().and_then(parse_name) else {
                continue;
            };
            let written = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(io(format!("reading {}", entry.path().display())))?;
            files.push(LtxFile {
                level: number,
                min_txid: min,
                max_txid: max,
                path: entry.path(),
                written,
            });
        }
    }
    Ok(files)
}

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

/// Applies the plan's files and writes the database to `output` (temp file, fsync, rename,
/// directory fsync), then checks its integrity. Returns the TXID restored.
pub fn apply(chain: &[LtxFile], output: &Path) -> Result<u64, RestoreError> {
    let mut pages: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut commit = 0;
    let mut page_size = 0;
    for file in chain {
        let bytes =
            std::fs::read(&file.path).map_err(io(format!("reading {}", file.path.display())))?;
        let decoded = ltx::decode(&bytes).map_err(|source| RestoreError::Corrupt {
            path: file.path.display().to_string(),
            source,
        })?;
        commit = decoded.header.commit;
        page_size = decoded.header.page_size;
        for (pgno, page) in decoded.pages {
            pages.insert(pgno, page);
        }
        pages.retain(|pgno, _| *pgno <= commit);
    }
    let lock = ltx::lock_page(page_size);
    let tmp = PathBuf::from(format!("{}.tmp", output.display()));
    let mut out = std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let zeros = vec![0u8; page_size as usize];
    for pgno in 1..=commit {
        let page = match pages.get(&pgno) {
            Some(page) => page.as_slice(),
            None if pgno == lock => zeros.as_slice(),
            None => return Err(RestoreError::MissingPage(pgno)),
        };
        out.write_all(page)
            .map_err(io(format!("writing {}", tmp.display())))?;
    }
    out.sync_all()
        .map_err(io(format!("syncing {}", tmp.display())))?;
    drop(out);
    check_integrity(&tmp)?;
    std::fs::rename(&tmp, output).map_err(io(format!("renaming {} into place", tmp.display())))?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing {}", dir.display())))?;
    }
    Ok(chain.last().map_or(0, |f| f.max_txid))
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
            path: PathBuf::from(format!("{level}/{min}-{max}")),
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

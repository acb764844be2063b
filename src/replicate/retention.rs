//! Retention: which replica files may go, never leaving the replica unrestorable.

use std::time::{Duration, SystemTime};

use super::config::ReplicationConfig;
use super::replica::LtxFile;
use super::replica::SNAPSHOT_LEVEL;
use super::restore::{self, Target};

/// The files retention may delete: snapshots older than `snapshot.retention` (never the
/// newest), anything every kept snapshot already covers, and level-0 files that level 1 holds
/// and that are older than `l0-retention`. Deletes nothing if the rest could not be restored.
pub fn expired(files: &[LtxFile], now: SystemTime, config: &ReplicationConfig) -> Vec<LtxFile> {
    let old =
        |f: &LtxFile, keep: Duration| now.duration_since(f.written).is_ok_and(|age| age > keep);
    let mut snapshots: Vec<&LtxFile> = files.iter().filter(|f| f.level == SNAPSHOT_LEVEL).collect();
    snapshots.sort_by_key(|f| f.max_txid);
    let Some(newest) = snapshots.last() else {
        return Vec::new();
    };
    let newest_max = newest.max_txid;
    let kept_snapshots: Vec<&&LtxFile> = snapshots
        .iter()
        .filter(|f| f.max_txid == newest_max || !old(f, config.snapshot_retention))
        .collect();
    let oldest_kept = kept_snapshots
        .iter()
        .map(|f| f.max_txid)
        .min()
        .unwrap_or(newest_max);
    let level1_max = files
        .iter()
        .filter(|f| f.level == 1)
        .map(|f| f.max_txid)
        .max();
    let expired: Vec<LtxFile> = files
        .iter()
        .filter(|f| {
            if f.level == SNAPSHOT_LEVEL {
                return !kept_snapshots.iter().any(|k| **k == *f);
            }
            if f.max_txid <= oldest_kept {
                return true;
            }
            f.level == 0
                && !config.levels.is_empty()
                && level1_max.is_some_and(|m| f.max_txid <= m)
                && old(f, config.l0_retention)
        })
        .cloned()
        .collect();
    let kept: Vec<LtxFile> = files
        .iter()
        .filter(|f| !expired.contains(f))
        .cloned()
        .collect();
    if restore::plan(&kept, Target::Latest, "the replica").is_err() {
        tracing::warn!("retention would leave the replica unrestorable; deleting nothing");
        return Vec::new();
    }
    expired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicate::replica::ReplicaTarget;

    fn file(level: u32, min: u64, max: u64, age_secs: u64, now: SystemTime) -> LtxFile {
        LtxFile {
            level,
            min_txid: min,
            max_txid: max,
            key: format!("{level}/{min}-{max}"),
            size: 0,
            written: now - Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn retention_drops_old_snapshots_and_compacted_level_zero_but_never_leaves_a_gap() {
        let now = SystemTime::now();
        let config = ReplicationConfig::for_target(ReplicaTarget::File("/r".into()));
        let day = 24 * 3600;
        let files = vec![
            file(9, 1, 10, 2 * day, now),
            file(0, 9, 9, 2 * day, now),
            file(0, 10, 10, 2 * day, now),
            file(1, 11, 20, day + 60, now),
            file(9, 1, 20, day - 60, now),
            file(0, 11, 11, day, now),
            file(1, 21, 30, 600, now),
            file(0, 21, 21, 600, now),
            file(0, 30, 30, 400, now),
            file(0, 31, 31, 10, now),
            file(0, 32, 32, 1, now),
        ];
        let expired = expired(&files, now, &config);
        let names: Vec<(u32, u64, u64)> = expired
            .iter()
            .map(|f| (f.level, f.min_txid, f.max_txid))
            .collect();
        assert_eq!(
            names,
            vec![
                (9, 1, 10),
                (0, 9, 9),
                (0, 10, 10),
                (1, 11, 20),
                (0, 11, 11),
                (0, 21, 21),
                (0, 30, 30)
            ]
        );
        let kept: Vec<LtxFile> = files.into_iter().filter(|f| !expired.contains(f)).collect();
        let chain = restore::plan(&kept, Target::Latest, "r").expect("still restorable");
        assert_eq!(chain.last().map(|f| f.max_txid), Some(32));
    }

    #[test]
    fn retention_keeps_everything_when_deleting_would_break_the_chain() {
        let now = SystemTime::now();
        let config = ReplicationConfig::for_target(ReplicaTarget::File("/r".into()));
        // Level 1 claims to cover 1..20, but a level-0 file in between is all that links the
        // snapshot to the rest: deleting would leave 11..15 unreachable.
        let files = vec![
            file(9, 1, 10, 60, now),
            file(1, 16, 20, 3600, now),
            file(0, 11, 15, 3600, now),
            file(0, 21, 21, 1, now),
        ];
        assert!(expired(&files, now, &config).is_empty());
    }
}

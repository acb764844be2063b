//! Upkeep after a sync: compaction of levels 1..n on wall-clock multiples of their intervals,
//! level-9 snapshots every `snapshot.interval`, and retention that never leaves a gap.

use std::time::SystemTime;

use super::{unix_secs, ShipError, Shipper};
use crate::replicate::replica::{LtxFile, SNAPSHOT_LEVEL};
use crate::replicate::restore::{self, Target};
use crate::replicate::{compact, retention};

impl Shipper {
    /// Compaction, snapshots and retention, each when due.
    pub fn maintain(&mut self, now: SystemTime) -> Result<(), ShipError> {
        let secs = unix_secs(now);
        let mut first_error = None;
        for i in 0..self.config.levels.len() {
            let slot = secs / self.config.levels[i].as_secs().max(1);
            if slot != self.compacted_slot[i] {
                match self.compact(i as u32 + 1) {
                    Ok(()) => self.compacted_slot[i] = slot,
                    // A level that failed stops the levels above it this round.
                    Err(err) => {
                        first_error.get_or_insert(err);
                        break;
                    }
                }
            }
        }
        if self.snapshot_due(now) {
            if let Err(err) = self.snapshot() {
                first_error.get_or_insert(err);
            }
        }
        if self.config.retention_enabled {
            let files = self.listed.as_deref().unwrap_or_default();
            let expired = retention::expired(files, now, &self.config);
            if !expired.is_empty() {
                match self.replica.delete(&expired) {
                    Ok(()) => {
                        if let Some(files) = &mut self.listed {
                            files.retain(|f| !expired.contains(f));
                        }
                    }
                    Err(err) => {
                        first_error.get_or_insert(err.into());
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Folds the files of `level - 1` that `level` does not cover yet into one file.
    pub fn compact(&mut self, level: u32) -> Result<(), ShipError> {
        let files = self.listed.as_deref().unwrap_or_default();
        let done = files
            .iter()
            .filter(|f| f.level == level)
            .map(|f| f.max_txid)
            .max()
            .unwrap_or(0);
        let mut sources: Vec<&LtxFile> = files
            .iter()
            .filter(|f| f.level == level - 1 && f.max_txid > done)
            .collect();
        sources.sort_by_key(|f| (f.min_txid, std::cmp::Reverse(f.max_txid)));
        let mut chain: Vec<LtxFile> = Vec::new();
        for file in sources {
            match chain.last() {
                None => chain.push(file.clone()),
                Some(last) if file.min_txid > last.max_txid + 1 => break,
                Some(last) if file.max_txid > last.max_txid => chain.push(file.clone()),
                Some(_) => {}
            }
        }
        let Some(first) = chain.first() else {
            return Ok(());
        };
        let min_txid = first.min_txid;
        self.merged(compact::merge(&*self.replica, &chain, level, min_txid)?);
        Ok(())
    }

    pub(super) fn merged(&mut self, written: Option<LtxFile>) {
        if let Some(file) = written {
            self.status.uploaded(file.size);
            if let Some(files) = &mut self.listed {
                files.push(file);
            }
        }
    }

    pub(super) fn snapshot_due(&self, now: SystemTime) -> bool {
        let files = self.listed.as_deref().unwrap_or_default();
        let newest = files
            .iter()
            .filter(|f| f.level == SNAPSHOT_LEVEL)
            .max_by_key(|f| f.max_txid);
        match newest {
            None => !files.is_empty(),
            Some(s) => {
                s.max_txid < self.txid
                    && now
                        .duration_since(s.written)
                        .is_ok_and(|age| age >= self.config.snapshot_interval)
            }
        }
    }

    /// Writes the replica's latest state as a level-9 file `[1, txid]`.
    pub fn snapshot(&mut self) -> Result<(), ShipError> {
        let files = self.listed.as_deref().unwrap_or_default();
        let chain = restore::plan(files, Target::Latest, "the replica")?;
        self.merged(compact::merge(&*self.replica, &chain, SNAPSHOT_LEVEL, 1)?);
        Ok(())
    }
}

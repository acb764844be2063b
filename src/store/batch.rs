//! What one writer batch carries besides its commands: the batch's clock reading, the drops whose
//! state changed (their `version` grows once per batch), and the attempt counters.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection};

use crate::domain::DropId;

pub(crate) struct Batch<'a> {
    /// One reading of the clock for the whole batch: expiry and drop state agree within it.
    pub now: DateTime<Utc>,
    pub touched: HashSet<DropId>,
    pub seqs: &'a mut AttemptSeqs,
}

impl<'a> Batch<'a> {
    pub fn new(now: DateTime<Utc>, seqs: &'a mut AttemptSeqs) -> Self {
        Self {
            now,
            touched: HashSet::new(),
            seqs,
        }
    }

    pub fn touch(&mut self, drop_id: &DropId) {
        if !self.touched.contains(drop_id) {
            self.touched.insert(drop_id.clone());
        }
    }

    /// Writes the batch's bookkeeping into the transaction, before it commits.
    pub fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        const BUMP: &str = "UPDATE drops SET version = version + 1 WHERE id = :id";
        for drop_id in &self.touched {
            conn.prepare_cached(BUMP)?
                .execute(named_params! {":id": drop_id.as_str()})?;
        }
        self.seqs.flush(conn)
    }
}

/// The drop-wide attempt counters, kept in memory and written once per batch. An attempt that is
/// refused still uses its number: the sequence records arrival order, not success.
#[derive(Default)]
pub(crate) struct AttemptSeqs {
    last: HashMap<DropId, i64>,
    dirty: HashSet<DropId>,
}

impl AttemptSeqs {
    pub fn next(&mut self, conn: &Connection, drop_id: &DropId) -> rusqlite::Result<i64> {
        const LOAD: &str = "SELECT attempt_seq FROM drops WHERE id = :id";
        let last = match self.last.get(drop_id) {
            Some(last) => *last,
            None => conn
                .prepare_cached(LOAD)?
                .query_row(named_params! {":id": drop_id.as_str()}, |r| r.get(0))?,
        };
        self.last.insert(drop_id.clone(), last + 1);
        self.dirty.insert(drop_id.clone());
        Ok(last + 1)
    }

    fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        const SAVE: &str = "UPDATE drops SET attempt_seq = :seq WHERE id = :id";
        for drop_id in self.dirty.drain() {
            let seq = self.last.get(&drop_id).copied().unwrap_or_default();
            conn.prepare_cached(SAVE)?
                .execute(named_params! {":seq": seq, ":id": drop_id.as_str()})?;
        }
        Ok(())
    }

    /// After a failed commit the database holds older counters than memory: forget them.
    pub fn forget(&mut self) {
        self.last.clear();
        self.dirty.clear();
    }
}

//! What one writer batch carries besides its commands: the batch's clock reading, the drops whose
//! state changed (their `version` grows once per batch), the writer's memory, and the
//! idempotency keys the batch recorded or deleted (memory learns them only after the commit).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection};

use crate::domain::DropId;

use super::keys::KeyBook;
use super::ledger::{self, PendingEntry};
use super::memory::Memory;
use super::outbox::{self, PendingEvent};
use crate::domain::ledger::{Event, LedgerKey};

pub(crate) struct Batch<'a> {
    /// One reading of the clock for the whole batch, in whole milliseconds (as stored, so a
    /// replay rebuilt from the rows answers with the same bytes): expiry and drop state agree
    /// within it.
    pub now: DateTime<Utc>,
    pub touched: HashSet<DropId>,
    pub memory: &'a mut Memory,
    pub keys: &'a KeyBook,
    /// `--box-id`: carried in the ids of the holds this server makes.
    pub box_id: Option<&'a str>,
    /// Records written by this batch: key hash to row.
    pub new_keys: HashMap<u64, i64>,
    /// Records this batch deleted after their retention window.
    pub gone_keys: Vec<(u64, i64)>,
    /// False while holds due at `now` may remain active (the sweep stops at its limit, or did
    /// not run): then attempts count such holds for nothing by asking the database.
    pub all_due_swept: bool,
    /// The arrival number the command running now took, if it took one (its record keeps it).
    pub attempt: Option<i64>,
    /// The access code's tier that attempt came with, if any: chained just before it.
    pub attempt_code: Option<String>,
    /// Events the batch's commands announced, appended to the outbox at the flush.
    pub events: Vec<PendingEvent>,
    /// A webhook endpoint or dead letter changed: the delivery worker must look again.
    pub endpoints_changed: bool,
    /// Ledger entries the batch's commands recorded, chained at the flush.
    pub ledger: Vec<PendingEntry>,
    /// Signs the drops' new ledger heads.
    pub ledger_key: Option<&'a LedgerKey>,
    /// The last hold attempt's arrival number and ledger position, for its receipt.
    pub last_attempt: Option<(i64, i64)>,
    /// Whether changes are chained (off only in the benchmark's baseline).
    pub chains: bool,
    /// Each drop's ledger position before this batch (read on the first attempt).
    ledger_base: HashMap<DropId, i64>,
    /// Entries recorded so far in this batch, per drop.
    recorded: HashMap<DropId, i64>,
    /// What the flush chained and signed, for the receipts.
    pub chained: ledger::Chained,
}

impl<'a> Batch<'a> {
    pub fn new(
        now: DateTime<Utc>,
        memory: &'a mut Memory,
        keys: &'a KeyBook,
        box_id: Option<&'a str>,
        ledger_key: Option<&'a LedgerKey>,
    ) -> Self {
        Self {
            now: crate::domain::clock::from_millis(now.timestamp_millis()),
            touched: HashSet::new(),
            memory,
            keys,
            box_id,
            new_keys: HashMap::new(),
            gone_keys: Vec::new(),
            all_due_swept: false,
            attempt: None,
            attempt_code: None,
            events: Vec::new(),
            endpoints_changed: false,
            ledger: Vec::new(),
            ledger_key,
            last_attempt: None,
            ledger_base: HashMap::new(),
            recorded: HashMap::new(),
            chains: true,
            chained: ledger::Chained::default(),
        }
    }

    pub fn touch(&mut self, drop_id: &DropId) {
        if !self.touched.contains(drop_id) {
            self.touched.insert(drop_id.clone());
        }
    }

    /// Tells the rest of the business about a change of `drop_id` (which it touches), in this
    /// transaction.
    pub fn announce(
        &mut self,
        drop_id: &DropId,
        kind: crate::domain::outbox::EventKind,
        data: &impl serde::Serialize,
    ) {
        self.touch(drop_id);
        self.events.push(PendingEvent {
            drop_id: drop_id.clone(),
            buyer: None,
            kind,
            data: outbox::data(data),
        });
    }

    /// As `announce`, for news `buyer` hears on their own stream as well.
    pub fn announce_for(
        &mut self,
        buyer: &str,
        drop_id: &DropId,
        kind: crate::domain::outbox::EventKind,
        data: &impl serde::Serialize,
    ) {
        self.announce(drop_id, kind, data);
        if let Some(event) = self.events.last_mut() {
            event.buyer = Some(buyer.to_owned());
        }
    }

    /// As `announce_for`, for news that changes nothing of the drop (its version stays).
    pub fn announce_quietly(
        &mut self,
        buyer: &str,
        drop_id: &DropId,
        kind: crate::domain::outbox::EventKind,
        data: &impl serde::Serialize,
    ) {
        self.events.push(PendingEvent {
            drop_id: drop_id.clone(),
            buyer: Some(buyer.to_owned()),
            kind,
            data: outbox::data(data),
        });
    }

    /// Records what happened to `drop_id` in its ledger, in this transaction.
    pub fn record(&mut self, drop_id: &DropId, event: Event) {
        if !self.chains {
            return;
        }
        match self.recorded.get_mut(drop_id) {
            Some(n) => *n += 1,
            None => {
                self.recorded.insert(drop_id.clone(), 1);
            }
        }
        self.ledger.push(PendingEntry {
            drop_id: drop_id.clone(),
            event,
        });
    }

    /// Records an attempt and returns the ledger position its entry will have.
    pub fn record_attempt(
        &mut self,
        conn: &Connection,
        drop_id: &DropId,
        event: Event,
    ) -> rusqlite::Result<i64> {
        let base = match self.ledger_base.get(drop_id) {
            Some(base) => *base,
            None => {
                let base = ledger::position(conn, drop_id.as_str())?;
                self.ledger_base.insert(drop_id.clone(), base);
                base
            }
        };
        let before = self.recorded.get(drop_id).copied().unwrap_or(0);
        self.record(drop_id, event);
        Ok(base + before + 1)
    }

    /// Writes the batch's bookkeeping into the transaction, before it commits.
    pub fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        const BUMP: &str =
            "UPDATE drops SET version = version + 1 WHERE id = :id RETURNING version";
        let mut versions = HashMap::with_capacity(self.touched.len());
        for drop_id in &self.touched {
            let version: Option<i64> = conn
                .prepare_cached(BUMP)?
                .query_map(named_params! {":id": drop_id.as_str()}, |r| r.get(0))?
                .next()
                .transpose()?;
            versions.insert(drop_id.clone(), version.unwrap_or(0));
        }
        // Quiet news carries the version the drop already has.
        const VERSION: &str = "SELECT version FROM drops WHERE id = :id";
        for event in &self.events {
            if !versions.contains_key(&event.drop_id) {
                let version: Option<i64> = conn
                    .prepare_cached(VERSION)?
                    .query_map(named_params! {":id": event.drop_id.as_str()}, |r| r.get(0))?
                    .next()
                    .transpose()?;
                versions.insert(event.drop_id.clone(), version.unwrap_or(0));
            }
        }
        self.chained = ledger::append(
            conn,
            &mut self.ledger,
            self.now.timestamp_millis(),
            self.ledger_key,
        )?;
        outbox::append(
            conn,
            &self.events,
            |drop_id| versions.get(drop_id).copied().unwrap_or(0),
            self.now.timestamp_millis(),
        )?;
        self.memory.flush(conn)
    }
}

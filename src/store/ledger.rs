//! The ledger's rows. Commands record what they did (`Batch::record`); at the batch's flush the
//! writer chains the entries of each drop in its memory (one read of the head, one insert per
//! entry, one update of the head) and signs each drop's new head once, in the transaction of
//! the changes themselves.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{named_params, Connection, OptionalExtension};

use crate::domain::clock::{from_millis, rfc3339};
use crate::domain::ledger::{self, Entry, Event, Head, LedgerKey, Receipt, SignedHead};
use crate::domain::DropId;

use super::StoreError;

/// An entry before its place is known; an attempt's `buyer` is still the buyer's id (the drop's
/// salt hashes it at the flush).
pub(crate) struct PendingEntry {
    pub drop_id: DropId,
    pub event: Event,
}

const OPEN: &str = "INSERT INTO ledgers (drop_id, salt) VALUES (:drop, :salt)";
const SALT: &str = "SELECT salt FROM ledgers WHERE drop_id = :drop";
/// The chain's end is its last entry: nothing else is written per batch to keep it.
const LAST: &str = "SELECT position, hash FROM ledger WHERE drop_id = :drop
                    ORDER BY position DESC LIMIT 1";
/// The batch's last entry of a drop carries the signature over the head it makes.
const APPEND: &str = "INSERT INTO ledger (drop_id, position, entry, hash, key_id, signature)
                      VALUES (:drop, :position, :entry, :hash, :key_id, :signature)";

/// Starts a new drop's chain, with the salt its buyers' names are hashed with.
pub(crate) fn open(conn: &Connection, drop_id: &str) -> rusqlite::Result<()> {
    let salt: [u8; 16] = rand::random();
    conn.prepare_cached(OPEN)?
        .execute(named_params! {":drop": drop_id, ":salt": &salt[..]})?;
    Ok(())
}

/// What a batch chained: each attempt's entry hash and buyer name by (drop, position), and
/// each drop's signed head, to seal the batch's receipts with.
#[derive(Default)]
pub(crate) struct Chained {
    pub at: String,
    /// Per drop, its attempts' positions, entry hashes and buyer names, in chain order.
    pub attempts: HashMap<DropId, Vec<(i64, [u8; 32], String)>>,
    pub heads: HashMap<DropId, Arc<SignedHead>>,
}

impl Chained {
    /// The receipt of the attempt at `position` of `drop_id`, if the batch chained and signed
    /// it. Each is taken once: its buyer name moves into it, and the head is shared.
    pub(crate) fn take_receipt(
        &mut self,
        drop_id: &DropId,
        attempt_seq: i64,
        position: i64,
        outcome: String,
    ) -> Option<FreshReceipt> {
        let head = self.heads.get(drop_id)?.clone();
        let attempts = self.attempts.get_mut(drop_id)?;
        let i = attempts.binary_search_by_key(&position, |a| a.0).ok()?;
        let (_, entry_hash, buyer) = &mut attempts[i];
        Some(FreshReceipt {
            attempt_seq,
            position,
            outcome,
            entry_hash: *entry_hash,
            buyer: std::mem::take(buyer),
            head,
        })
    }
}

/// A receipt as the batch that decided it seals it, cheaply (the head shared by the batch's
/// receipts); it serializes exactly as [`Receipt`] does, so a replay rebuilt from the rows is
/// the same bytes.
#[derive(Debug, Clone)]
pub struct FreshReceipt {
    attempt_seq: i64,
    position: i64,
    outcome: String,
    entry_hash: [u8; 32],
    buyer: String,
    head: Arc<SignedHead>,
}

impl serde::Serialize for FreshReceipt {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct AsReceipt<'a> {
            drop_id: &'a str,
            attempt_seq: i64,
            received_at: &'a str,
            outcome: &'a str,
            position: i64,
            entry_hash: String,
            buyer: &'a str,
            head: &'a SignedHead,
        }
        AsReceipt {
            drop_id: &self.head.head.drop_id,
            attempt_seq: self.attempt_seq,
            received_at: &self.head.head.at,
            outcome: &self.outcome,
            position: self.position,
            entry_hash: hex::encode(self.entry_hash),
            buyer: &self.buyer,
            head: &self.head,
        }
        .serialize(serializer)
    }
}

/// Where `drop_id`'s chain stands (before the batch's entries): its last position and hash.
fn last(conn: &Connection, drop_id: &str) -> rusqlite::Result<(i64, [u8; 32])> {
    Ok(conn
        .prepare_cached(LAST)?
        .query_row(named_params! {":drop": drop_id}, |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
        .unwrap_or((0, ledger::GENESIS)))
}

/// The position of `drop_id`'s last entry (before the batch's entries).
pub(crate) fn position(conn: &Connection, drop_id: &str) -> rusqlite::Result<i64> {
    Ok(last(conn, drop_id)?.0)
}

/// Chains `pending` onto each drop's ledger, in order, and signs every head it moved. A drop
/// without a chain is an error (every drop gets one at creation or by migration).
pub(crate) fn append(
    conn: &Connection,
    pending: &mut Vec<PendingEntry>,
    now_ms: i64,
    key: Option<&LedgerKey>,
) -> rusqlite::Result<Chained> {
    let mut chained = Chained::default();
    if pending.is_empty() {
        return Ok(chained);
    }
    let at = rfc3339(from_millis(now_ms));
    chained.at = at.clone();
    let mut drops: Vec<DropId> = Vec::new();
    for entry in pending.iter() {
        if !drops.contains(&entry.drop_id) {
            drops.push(entry.drop_id.clone());
        }
    }
    for drop_id in drops {
        let salt: Vec<u8> = conn
            .prepare_cached(SALT)?
            .query_row(named_params! {":drop": drop_id.as_str()}, |r| r.get(0))?;
        let (mut position, mut hash) = last(conn, drop_id.as_str())?;
        let mut attempts = Vec::new();
        // Chained in memory first: the last row carries the head's signature.
        let mut rows: Vec<(i64, Vec<u8>, [u8; 32])> = Vec::new();
        for pending in pending.iter_mut().filter(|p| p.drop_id == drop_id) {
            position += 1;
            let mut attempt_by = None;
            match &mut pending.event {
                Event::Attempt { buyer, .. } => {
                    *buyer = ledger::buyer_ref(&salt, buyer);
                    attempt_by = Some(buyer.clone());
                }
                Event::Join { buyer, .. }
                | Event::Wait { buyer, .. }
                | Event::Unwait { buyer, .. }
                | Event::Offer { buyer, .. }
                | Event::Enter { buyer, .. }
                | Event::Win { buyer, .. } => *buyer = ledger::buyer_ref(&salt, buyer),
                _ => {}
            }
            // The pending entries are cleared after: take each event rather than copy it.
            let placeholder = Event::Edit {
                changes: serde_json::Value::Null,
            };
            let entry = Entry {
                position,
                at: at.clone(),
                event: std::mem::replace(&mut pending.event, placeholder),
            };
            let text = ledger::canonical_entry(&entry);
            hash = ledger::chain(&hash, &text);
            if let Some(buyer) = attempt_by {
                attempts.push((position, hash, buyer));
            }
            rows.push((position, text, hash));
        }
        let signed = key.map(|key| key.sign(drop_id.as_str(), position, &hash, at.clone()));
        let last_row = rows.len().saturating_sub(1);
        for (i, (position, text, hash)) in rows.iter().enumerate() {
            let seal = signed.as_ref().filter(|_| i == last_row);
            let signature = seal.map(|s| hex::decode(&s.signature).unwrap_or_default());
            conn.prepare_cached(APPEND)?.execute(named_params! {
                ":drop": drop_id.as_str(), ":position": position,
                ":entry": std::str::from_utf8(text).unwrap_or_default(), ":hash": &hash[..],
                ":key_id": seal.map(|s| s.head.key_id.as_str()), ":signature": signature,
            })?;
        }
        if let Some(signed) = signed {
            chained.heads.insert(drop_id.clone(), Arc::new(signed));
        }
        if !attempts.is_empty() {
            chained.attempts.insert(drop_id.clone(), attempts);
        }
    }
    pending.clear();
    Ok(chained)
}

const ENTRY: &str = "SELECT entry, hash FROM ledger WHERE drop_id = :drop AND position = :position";
const HEAD_AFTER: &str = "SELECT position, entry, key_id, signature, hash FROM ledger
                          WHERE drop_id = :drop AND position >= :position
                            AND signature IS NOT NULL
                          ORDER BY position LIMIT 1";

/// The receipt of the attempt at `position`, rebuilt from its entry and the head signed after
/// its batch (the first at or after it): what its first answer carried.
pub(crate) fn receipt(
    conn: &Connection,
    drop_id: &str,
    position: i64,
) -> Result<Option<Receipt>, StoreError> {
    let found: Option<(String, Vec<u8>)> = conn
        .prepare_cached(ENTRY)?
        .query_row(
            named_params! {":drop": drop_id, ":position": position},
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((text, hash)) = found else {
        return Ok(None);
    };
    let entry: Entry = serde_json::from_str(&text)?;
    let Event::Attempt {
        attempt_seq,
        buyer,
        outcome,
        ..
    } = entry.event
    else {
        return Ok(None);
    };
    let head = conn
        .prepare_cached(HEAD_AFTER)?
        .query_row(
            named_params! {":drop": drop_id, ":position": position},
            |r| head_from_row(r, drop_id),
        )
        .optional()?;
    Ok(head.map(|head| Receipt {
        drop_id: drop_id.to_owned(),
        attempt_seq,
        received_at: entry.at,
        outcome,
        position,
        entry_hash: hex::encode(hash),
        buyer,
        head,
    }))
}

/// A signed head from the ledger row that carries it: the head's time is its entry's.
fn head_from_row(r: &rusqlite::Row<'_>, drop_id: &str) -> rusqlite::Result<SignedHead> {
    #[derive(serde::Deserialize)]
    struct At {
        at: String,
    }
    let hash: Vec<u8> = r.get(4)?;
    let signature: Vec<u8> = r.get(3)?;
    let entry: String = r.get(1)?;
    let at = serde_json::from_str::<At>(&entry)
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
        })?
        .at;
    Ok(SignedHead {
        head: Head {
            kind: ledger::HEAD_TYPE.into(),
            drop_id: drop_id.to_owned(),
            position: r.get(0)?,
            hash: hex::encode(hash),
            at,
            key_id: r.get(2)?,
        },
        signature: hex::encode(signature),
    })
}

const PAGE: &str = "SELECT position, entry, hash FROM ledger
                    WHERE drop_id = :drop AND position >= :from
                    ORDER BY position LIMIT :limit";

/// One ledger line: the entry with its hash.
pub struct Line {
    pub position: i64,
    pub text: String,
}

/// Up to `limit` lines of `drop_id`'s ledger from position `from` on.
pub fn page(
    conn: &Connection,
    drop_id: &str,
    from: i64,
    limit: i64,
) -> Result<Vec<Line>, StoreError> {
    let rows = conn
        .prepare_cached(PAGE)?
        .query_map(
            named_params! {":drop": drop_id, ":from": from, ":limit": limit},
            |r| {
                let position: i64 = r.get(0)?;
                let entry: String = r.get(1)?;
                let hash: Vec<u8> = r.get(2)?;
                // The stored entry is canonical JSON: its hash goes in before the last brace.
                let body = entry.strip_suffix('}').unwrap_or(&entry);
                Ok(Line {
                    position,
                    text: format!("{body},\"hash\":\"{}\"}}", hex::encode(hash)),
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

const LATEST: &str = "SELECT position, entry, key_id, signature, hash FROM ledger
                      WHERE drop_id = :drop AND signature IS NOT NULL
                      ORDER BY position DESC LIMIT 1";

/// The latest signed head of `drop_id`'s chain, if it has one.
pub fn latest_head(conn: &Connection, drop_id: &str) -> Result<Option<SignedHead>, StoreError> {
    let head = conn
        .prepare_cached(LATEST)?
        .query_row(named_params! {":drop": drop_id}, |r| {
            head_from_row(r, drop_id)
        })
        .optional()?;
    Ok(head)
}

const HISTORY: &str = "SELECT position, entry, hash FROM ledger WHERE drop_id = :drop
                       ORDER BY position";

/// Every stored entry of `drop_id`'s ledger in order (its position, canonical text and hash),
/// handed to `each` one at a time so a long history never sits in memory whole.
pub fn history(
    conn: &Connection,
    drop_id: &str,
    mut each: impl FnMut(i64, &str, &[u8]),
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(HISTORY)?;
    let mut rows = stmt.query(named_params! {":drop": drop_id})?;
    while let Some(row) = rows.next()? {
        let position: i64 = row.get(0)?;
        let entry = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        let hash = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        each(position, entry, hash);
    }
    Ok(())
}

const FIRST_HOLD: &str = "SELECT (expires_at - created_at) / 1000 FROM holds
                          WHERE drop_id = :drop ORDER BY seq LIMIT 1";

/// How long `drop_id`'s first hold lasted: its `hold_seconds` until any edit changed it, for
/// ledgers whose creation entry does not say.
pub fn first_hold_seconds(conn: &Connection, drop_id: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(FIRST_HOLD)?
        .query_row(named_params! {":drop": drop_id}, |r| r.get(0))
        .optional()?)
}

/// The secret salt `drop_id`'s buyers are named with in its ledger, if it has a ledger.
pub fn salt(conn: &Connection, drop_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached(SALT)?
        .query_row(named_params! {":drop": drop_id}, |r| r.get(0))
        .optional()?)
}

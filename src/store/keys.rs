//! What memory knows about idempotency keys, shared by the writer and the HTTP workers.
//!
//! - `recorded`: every key with a record in `idempotency_keys` inside the retention window, by a
//!   keyed hash of (buyer, key), pointing at the record's row. The table itself has no index on
//!   the key (an index on random text dirties pages all over its b-tree on every batch); the
//!   writer reads the row and compares buyer and key before trusting a hit.
//! - `in_flight`: keys of requests that are on their way to the writer or in it.
//! - `remembered`: refusals answered from memory without the writer (`sold-out` on a SKU the
//!   last commit left at zero). They are never written: a restart forgets them.
//!
//! One key gets one answer: a refusal is remembered only when no other request under the key is
//! in flight and nothing is recorded for it, decided under the shard's lock; after that every
//! request under the key replays it.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::domain::{BuyerId, IdempotencyKey, Refusal};

const SHARDS: usize = 64;
/// Most refusals remembered at once (about 60 bytes each): past it the oldest are forgotten
/// first, so a sold-out stampede cannot grow memory without bound.
const MAX_REMEMBERED: usize = 1_000_000;

pub struct KeyBook {
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    retention_ms: i64,
}

#[derive(Default)]
struct Shard {
    recorded: HashMap<u64, i64>,
    in_flight: HashMap<u64, u32>,
    remembered: HashMap<u64, Remembered>,
    /// When each remembered refusal was given, oldest first, for expiry.
    remembered_at: VecDeque<(i64, u64)>,
}

/// A refusal answered from memory, with (a prefix of) the fingerprint of the request it
/// answered. Refusals are shared: every buyer refused the same way holds the same one.
#[derive(Debug, Clone)]
pub struct Remembered {
    pub fingerprint: [u8; 16],
    pub refusal: Arc<Refusal>,
}

/// What memory knows about a key when a request under it arrives.
#[derive(Debug)]
pub enum Seen {
    /// Nothing: no record, no other request in flight, nothing remembered.
    Fresh,
    /// Recorded, or another request under it is in flight: only the writer may answer.
    Busy,
    /// Answered from memory before: the answer to replay.
    Remembered(Remembered),
}

/// A request under a key, counted in flight until dropped.
pub struct Ticket {
    book: Arc<KeyBook>,
    hash: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut shard = self.book.shard(self.hash);
        if let Some(n) = shard.in_flight.get_mut(&self.hash) {
            *n -= 1;
            if *n == 0 {
                shard.in_flight.remove(&self.hash);
            }
        }
    }
}

impl KeyBook {
    pub fn new(retention: Duration) -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
        }
    }

    pub fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    pub fn hash(&self, buyer: &BuyerId, key: &IdempotencyKey) -> u64 {
        self.hash_str(buyer.as_str(), key.as_str())
    }

    pub(crate) fn hash_str(&self, buyer: &str, key: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        buyer.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard leaves plain maps behind, still usable.
        self.shards[(hash >> 58) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request under `hash` in flight and says what memory knows of the key.
    pub fn begin(self: &Arc<Self>, hash: u64) -> (Ticket, Seen) {
        let mut shard = self.shard(hash);
        let seen = if let Some(r) = shard.remembered.get(&hash) {
            Seen::Remembered(r.clone())
        } else if shard.recorded.contains_key(&hash) || shard.in_flight.contains_key(&hash) {
            Seen::Busy
        } else {
            Seen::Fresh
        };
        *shard.in_flight.entry(hash).or_default() += 1;
        drop(shard);
        let ticket = Ticket {
            book: self.clone(),
            hash,
        };
        (ticket, seen)
    }

    /// Remembers a refusal given from memory, if the ticket's request is still the only one
    /// under its key and nothing was recorded for it. False: send the request to the writer.
    pub fn remember(&self, ticket: &Ticket, remembered: Remembered, now_ms: i64) -> bool {
        let hash = ticket.hash;
        let mut shard = self.shard(hash);
        let alone = shard.in_flight.get(&hash).copied() == Some(1)
            && !shard.recorded.contains_key(&hash)
            && !shard.remembered.contains_key(&hash);
        if !alone {
            return false;
        }
        let cutoff = now_ms - self.retention_ms;
        while let Some(&(at, old)) = shard.remembered_at.front() {
            if at > cutoff && shard.remembered.len() < MAX_REMEMBERED / SHARDS {
                break;
            }
            shard.remembered_at.pop_front();
            shard.remembered.remove(&old);
        }
        shard.remembered.insert(hash, remembered);
        shard.remembered_at.push_back((now_ms, hash));
        true
    }

    /// The row of the record that may be this key's (the caller checks buyer and key).
    pub(crate) fn recorded(&self, hash: u64) -> Option<i64> {
        self.shard(hash).recorded.get(&hash).copied()
    }

    /// After the commit that wrote the record.
    pub(crate) fn record(&self, hash: u64, seq: i64) {
        self.shard(hash).recorded.insert(hash, seq);
    }

    /// After the commit that deleted an expired record.
    pub(crate) fn forget_recorded(&self, hash: u64, seq: i64) {
        let mut shard = self.shard(hash);
        if shard.recorded.get(&hash) == Some(&seq) {
            shard.recorded.remove(&hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> Arc<KeyBook> {
        Arc::new(KeyBook::new(Duration::from_secs(60)))
    }

    fn refusal() -> Remembered {
        Remembered {
            fingerprint: [7; 16],
            refusal: Arc::new(Refusal::HoldReleased),
        }
    }

    fn hash(book: &KeyBook, key: &str) -> u64 {
        book.hash(
            &BuyerId::parse("b").expect("valid buyer"),
            &IdempotencyKey::parse(key).expect("valid key"),
        )
    }

    #[test]
    fn a_refusal_is_remembered_only_for_a_request_alone_under_its_key() {
        let book = book();
        let h = hash(&book, "k1");
        let (first, seen) = book.begin(h);
        assert!(matches!(seen, Seen::Fresh));
        let (second, seen) = book.begin(h);
        assert!(matches!(seen, Seen::Busy), "the first is still in flight");
        assert!(!book.remember(&first, refusal(), 0));
        drop(second);
        assert!(book.remember(&first, refusal(), 0));
        drop(first);
        let (_third, seen) = book.begin(h);
        assert!(matches!(seen, Seen::Remembered(_)));
    }

    #[test]
    fn a_recorded_key_is_busy_and_never_remembered() {
        let book = book();
        let h = hash(&book, "k2");
        book.record(h, 42);
        let (ticket, seen) = book.begin(h);
        assert!(matches!(seen, Seen::Busy));
        assert!(!book.remember(&ticket, refusal(), 0));
        assert_eq!(book.recorded(h), Some(42));
        book.forget_recorded(h, 41);
        assert_eq!(
            book.recorded(h),
            Some(42),
            "only the record it names is forgotten"
        );
        book.forget_recorded(h, 42);
        assert_eq!(book.recorded(h), None);
    }

    #[test]
    fn remembered_refusals_expire_after_the_retention_window() {
        let book = book();
        let old = hash(&book, "old");
        let (t, _) = book.begin(old);
        assert!(book.remember(&t, refusal(), 0));
        drop(t);
        let new = hash(&book, "new");
        // Expiry is per shard; find a key in the same shard as `old` to trigger it.
        let same_shard = (0..10_000)
            .map(|i| hash(&book, &format!("n{i}")))
            .find(|h| (h >> 58) == (old >> 58))
            .unwrap_or(new);
        let (t, _) = book.begin(same_shard);
        assert!(book.remember(&t, refusal(), 61_000));
        drop(t);
        let (_t, seen) = book.begin(old);
        assert!(matches!(seen, Seen::Fresh), "expired after 60 s");
    }
}

//! Raffles (`mode: draw`), free of I/O: who wins the units of each SKU.
//!
//! Buyers enter before the start, once per SKU. At the start the writer reveals the seed whose
//! SHA-256 the ledger published when the drop opened, and orders each SKU's entries by an HMAC
//! keyed by the seed over the entrant's ledger name and the SKU. Walking that order, each entrant
//! wins what they asked for, as far as the units and their limit (across the drop's SKUs, taken
//! in the drop's order) allow. Anyone with the ledger's `enter` entries, its stock and the seed
//! recomputes the same winners; the writer and `dropd verify` both call [`draw`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::clock::serde_rfc3339;

/// Where a buyer's entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryOutcome {
    /// Waiting for the draw at the drop's start.
    Pending,
    /// Drawn: `won` units are held for the buyer (`hold_id`); pay before the hold expires.
    Won,
    /// Not drawn: the buyer waits on the SKU's waiting list at their drawn place (`rank`).
    Lost,
}

/// A buyer's entry in a raffle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DrawEntry {
    pub drop_id: String,
    pub sku: String,
    /// Units asked for.
    pub quantity: i64,
    #[serde(with = "serde_rfc3339")]
    pub entered_at: DateTime<Utc>,
    pub outcome: EntryOutcome,
    /// 1-based place in the SKU's drawn order, once drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<i64>,
    /// Units won (0 when not drawn), once drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub won: Option<i64>,
    /// The winner's hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<String>,
    /// Entered by this request (not before).
    #[serde(skip)]
    #[schema(ignore)]
    pub fresh: bool,
}

/// One entry as the draw sees it: the entrant's ledger name, the SKU, the units asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrant<'a> {
    pub buyer_ref: &'a str,
    pub sku: &'a str,
    pub quantity: i64,
}

/// What the draw gave one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drawn {
    pub buyer_ref: String,
    pub sku: String,
    /// 1-based place in the SKU's drawn order.
    pub rank: i64,
    /// Units won; 0 for an entry not drawn.
    pub won: i64,
}

/// Where an entry sorts: HMAC-SHA256 keyed by the seed over `<buyer_ref>/<sku>` (the ledger
/// name in hex, a slash, the SKU code), so one buyer's entries for different SKUs fall apart.
pub fn draw_key(seed: &[u8], buyer_ref: &str, sku: &str) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed).unwrap_or_else(|_| unreachable!());
    mac.update(buyer_ref.as_bytes());
    mac.update(b"/");
    mac.update(sku.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The draw: `skus` in the drop's order with the units each has, every entry, and the drop's
/// per-buyer limit. Answers every entry's rank and winnings, SKU by SKU in drawn order.
pub fn draw(
    seed: &[u8],
    limit: i64,
    skus: &[(String, i64)],
    entries: &[Entrant<'_>],
) -> Vec<Drawn> {
    let mut used: HashMap<&str, i64> = HashMap::new();
    let mut results = Vec::with_capacity(entries.len());
    for (sku, units) in skus {
        let mut keyed: Vec<([u8; 32], &Entrant<'_>)> = entries
            .iter()
            .filter(|e| e.sku == sku)
            .map(|e| (draw_key(seed, e.buyer_ref, sku), e))
            .collect();
        // A tie of 256-bit keys never happens; the name keeps the order total all the same.
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.buyer_ref.cmp(b.1.buyer_ref)));
        let mut left = (*units).max(0);
        for (i, (_, entry)) in keyed.iter().enumerate() {
            let taken = used.entry(entry.buyer_ref).or_default();
            let won = entry.quantity.min(left).min(limit - *taken).max(0);
            left -= won;
            *taken += won;
            results.push(Drawn {
                buyer_ref: entry.buyer_ref.to_owned(),
                sku: sku.clone(),
                rank: i as i64 + 1,
                won,
            });
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entrant<'a>(buyer_ref: &'a str, sku: &'a str, quantity: i64) -> Entrant<'a> {
        Entrant {
            buyer_ref,
            sku,
            quantity,
        }
    }

    #[test]
    fn the_order_is_the_keyed_hash_and_no_unit_is_given_twice() {
        let seed = [7u8; 32];
        let names: Vec<String> = (0..50).map(|i| format!("{i:032x}")).collect();
        let entries: Vec<Entrant<'_>> = names.iter().map(|n| entrant(n, "S1", 1)).collect();
        let drawn = draw(&seed, 1, &[("S1".into(), 10)], &entries);
        assert_eq!(drawn.len(), 50);
        assert_eq!(drawn.iter().map(|d| d.won).sum::<i64>(), 10);
        assert!(drawn[..10].iter().all(|d| d.won == 1));
        let mut keys: Vec<[u8; 32]> = drawn
            .iter()
            .map(|d| draw_key(&seed, &d.buyer_ref, "S1"))
            .collect();
        let sorted = {
            let mut k = keys.clone();
            k.sort_unstable();
            k
        };
        assert_eq!(keys, sorted, "ranked by key");
        keys.dedup();
        assert_eq!(keys.len(), 50);
        // The order is the entries', not their arrival.
        let reversed: Vec<Entrant<'_>> = entries.iter().rev().cloned().collect();
        assert_eq!(draw(&seed, 1, &[("S1".into(), 10)], &reversed), drawn);
    }

    #[test]
    fn the_limit_spans_skus_and_a_short_sku_gives_what_is_left() {
        let seed = [1u8; 32];
        let entries = [entrant("a", "S1", 2), entrant("a", "S2", 2)];
        let drawn = draw(&seed, 3, &[("S1".into(), 5), ("S2".into(), 5)], &entries);
        assert_eq!(drawn.iter().map(|d| d.won).collect::<Vec<_>>(), [2, 1]);
        let drawn = draw(&seed, 3, &[("S1".into(), 1)], &entries[..1]);
        assert_eq!(drawn[0].won, 1);
    }

    proptest! {
        #[test]
        fn never_more_than_the_stock_or_the_limit(
            wants in proptest::collection::vec((0usize..20, 0usize..3, 1i64..4), 0..80),
            stock in proptest::collection::vec(0i64..10, 3),
            limit in 1i64..5,
        ) {
            let names: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
            let skus = ["S0", "S1", "S2"];
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<Entrant<'_>> = wants
                .iter()
                .filter(|(b, s, _)| seen.insert((*b, *s)))
                .map(|(b, s, q)| entrant(&names[*b], skus[*s], *q))
                .collect();
            let table: Vec<(String, i64)> =
                skus.iter().zip(&stock).map(|(s, n)| ((*s).to_owned(), *n)).collect();
            let drawn = draw(&[9u8; 32], limit, &table, &entries);
            prop_assert_eq!(drawn.len(), entries.len());
            for (sku, units) in &table {
                let won: i64 = drawn.iter().filter(|d| &d.sku == sku).map(|d| d.won).sum();
                prop_assert!(won <= *units);
            }
            for name in &names {
                let won: i64 = drawn.iter().filter(|d| &d.buyer_ref == name).map(|d| d.won).sum();
                prop_assert!(won <= limit);
            }
        }
    }
}

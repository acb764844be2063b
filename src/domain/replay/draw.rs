//! Replaying a raffle: the entries before the start, the seed against its commitment, and every
//! `win` against the winners the draw gives from the seed and the entries.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::Replay;
use crate::domain::draw::{draw, Entrant};
use crate::domain::queue::commitment;

/// A raffle as the replay found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrawCheck {
    pub entries: i64,
    /// Whether the revealed seed's SHA-256 is the commitment published at the open.
    pub commitment_kept: bool,
    /// Wins the ledger records, and wins the draw gives that it does not.
    pub winners: i64,
    pub missing: i64,
}

/// What a replay keeps of a raffle between its entries.
#[derive(Debug, Default)]
pub(super) struct Raffle {
    commitment: String,
    entries: Vec<(String, String, i64)>,
    /// Winnings the draw gives, by (buyer, SKU), until their `win` entry takes them.
    owed: BTreeMap<(String, String), i64>,
    check: DrawCheck,
}

impl Replay {
    pub(super) fn open_draw(&mut self, commitment: &str) {
        self.raffle = Some(Raffle {
            commitment: commitment.to_owned(),
            ..Raffle::default()
        });
    }

    pub(super) fn enter(
        &mut self,
        position: i64,
        now: DateTime<Utc>,
        (buyer, sku, quantity): (&str, &str, i64),
    ) {
        let (limit, known, early) = (
            self.limit,
            self.stock.contains_key(sku),
            now < self.schedule.starts_at,
        );
        let Some(raffle) = self.raffle.as_mut() else {
            return self.mismatch(position, "an entry on a drop that is not a raffle".into());
        };
        let twice = raffle
            .entries
            .iter()
            .any(|(b, s, _)| b == buyer && s == sku);
        raffle
            .entries
            .push((buyer.to_owned(), sku.to_owned(), quantity));
        raffle.check.entries += 1;
        let fault = if twice {
            Some(format!("{buyer} entered twice for {sku}"))
        } else if !known {
            Some(format!("an entry for unknown SKU {sku}"))
        } else if !(1..=limit).contains(&quantity) {
            Some(format!(
                "an entry for {quantity} units, over the limit of {limit}"
            ))
        } else if !early {
            Some("an entry at or after the start, when the draw closes entries".into())
        } else {
            None
        };
        if let Some(fault) = fault {
            self.mismatch(position, fault);
        }
    }

    pub(super) fn drawn(&mut self, position: i64, seed_hex: &str, entries: i64) {
        let units: Vec<(String, i64)> = self
            .sku_order
            .iter()
            .map(|sku| {
                (
                    sku.clone(),
                    self.stock.get(sku).map_or(0, |s| s.available()) - self.reserved_out(sku),
                )
            })
            .collect();
        let limit = self.limit;
        let Some(raffle) = self.raffle.as_mut() else {
            return self.mismatch(position, "a draw on a drop that is not a raffle".into());
        };
        let seed = hex::decode(seed_hex).unwrap_or_default();
        raffle.check.commitment_kept = commitment(&seed) == raffle.commitment;
        let entrants: Vec<Entrant<'_>> = raffle
            .entries
            .iter()
            .map(|(buyer, sku, quantity)| Entrant {
                buyer_ref: buyer,
                sku,
                quantity: *quantity,
            })
            .collect();
        raffle.owed = draw(&seed, limit, &units, &entrants)
            .into_iter()
            .filter(|d| d.won > 0)
            .map(|d| ((d.buyer_ref, d.sku), d.won))
            .collect();
        let mut faults = Vec::new();
        if !raffle.check.commitment_kept {
            faults.push("the revealed seed does not match the commitment".to_owned());
        }
        if entries != raffle.entries.len() as i64 {
            faults.push(format!(
                "the draw counted {entries} entries, the ledger lists {}",
                raffle.entries.len()
            ));
        }
        for fault in faults {
            self.mismatch(position, fault);
        }
    }

    pub(super) fn win(
        &mut self,
        position: i64,
        now: DateTime<Utc>,
        (attempt_seq, buyer, sku, quantity): (i64, &str, &str, i64),
        hold_id: &str,
    ) {
        let owed = self.raffle.as_mut().and_then(|r| {
            r.check.winners += 1;
            r.owed.remove(&(buyer.to_owned(), sku.to_owned()))
        });
        if owed != Some(quantity) {
            self.mismatch(
                position,
                format!(
                    "win {attempt_seq}: {quantity} x {sku} to {buyer}, where the draw gives {}",
                    owed.unwrap_or(0)
                ),
            );
        }
        let expires_at = now + Duration::seconds(self.hold_seconds);
        self.add_hold(hold_id, (buyer, sku, quantity), expires_at);
    }

    /// The raffle's check once every entry is in: a winner the draw gives but the ledger never
    /// gave a hold is a mismatch.
    pub(super) fn finish_draw(&mut self) {
        let Some(raffle) = self.raffle.as_mut() else {
            return;
        };
        let missing: Vec<String> = raffle
            .owed
            .iter()
            .map(|((buyer, sku), won)| format!("the draw gives {buyer} {won} x {sku}, never held"))
            .collect();
        raffle.check.missing = missing.len() as i64;
        self.report.draw = Some(raffle.check.clone());
        let at = self.next_position;
        for fault in missing {
            self.mismatch(at, fault);
        }
    }
}

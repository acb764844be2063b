//! Replaying waiting lists: who waits for which SKU, and whether each offer went to the right
//! waiter with units that were free and within their limit.

use chrono::{DateTime, Duration, Utc};

use super::Replay;
use crate::domain::ledger::Entry;
use crate::domain::waitlist::offer_seconds;

/// A waiter as the ledger lists them: their name and the units they asked for.
#[derive(Debug, Clone)]
pub(super) struct Waiter {
    buyer: String,
    wanted: i64,
}

impl Replay {
    pub(super) fn wait(&mut self, position: i64, buyer: &str, sku: &str, wanted: i64) {
        if !self.stock.contains_key(sku) {
            self.mismatch(position, format!("a wait for unknown SKU {sku}"));
        }
        let list = self.waiting.entry(sku.to_owned()).or_default();
        if list.iter().any(|w| w.buyer == buyer) {
            self.mismatch(position, format!("{buyer} waits twice for {sku}"));
            return;
        }
        list.push(Waiter {
            buyer: buyer.to_owned(),
            wanted,
        });
    }

    pub(super) fn unwait(&mut self, position: i64, buyer: &str, sku: &str) {
        if self.take_waiter(sku, buyer).is_none() {
            self.mismatch(
                position,
                format!("{buyer} left {sku}'s list without waiting"),
            );
        }
    }

    fn take_waiter(&mut self, sku: &str, buyer: &str) -> Option<(usize, Waiter)> {
        let list = self.waiting.get_mut(sku)?;
        let index = list.iter().position(|w| w.buyer == buyer)?;
        Some((index, list.remove(index)))
    }

    /// The units a buyer has as the writer counts them when it offers: every active hold (a due
    /// one until the sweep ends it) and every order.
    fn counted_units(&self, buyer: &str) -> i64 {
        self.units.get(buyer).copied().unwrap_or(0)
    }

    pub(super) fn offer(
        &mut self,
        entry: &Entry,
        now: DateTime<Utc>,
        (attempt_seq, buyer, sku, quantity): (i64, &str, &str, i64),
        hold_id: &str,
    ) {
        let position = entry.position;
        self.report.offers += 1;
        let available = self.stock.get(sku).map_or(0, |s| s.available()) - self.reserved_out(sku);
        let room = self.limit - self.counted_units(buyer);
        let Some((index, waiter)) = self.take_waiter(sku, buyer) else {
            self.mismatch(
                position,
                format!("offer {attempt_seq} to {buyer}, who was not waiting for {sku}"),
            );
            return;
        };
        if quantity < 1 || quantity > waiter.wanted || quantity > available || quantity > room {
            self.mismatch(
                position,
                format!(
                    "offer {attempt_seq} of {quantity} x {sku}: {} wanted, {available} free, \
                     {room} left under the limit",
                    waiter.wanted
                ),
            );
        }
        // First come, first offered (a queue drop orders its waiters by queue place, which the
        // ledger does not list for everyone).
        if self.queue.is_none() {
            let skipped: Vec<String> = self.waiting.get(sku).map_or_else(Vec::new, |list| {
                list.iter()
                    .take(index)
                    .filter(|w| self.limit - self.counted_units(&w.buyer) > 0)
                    .map(|w| w.buyer.clone())
                    .collect()
            });
            if let Some(first) = skipped.first() {
                self.mismatch(
                    position,
                    format!(
                        "offer {attempt_seq} to {buyer} passed over {first}, who waited before"
                    ),
                );
            }
        }
        let expires_at = now + Duration::seconds(offer_seconds(self.hold_seconds));
        self.add_hold(hold_id, (buyer, sku, quantity), expires_at);
    }
}

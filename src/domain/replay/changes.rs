//! Replaying what changes a drop besides attempts: holds that end (a release, an expiry), holds
//! that become orders, an admin's stock changes and edits.

use chrono::{DateTime, Utc};

use super::{millis, Hold, Mode, Replay};
use crate::domain::views::DropPatch;
use crate::domain::{DropSchedule, SkuStock};

impl Replay {
    /// A hold the ledger made (an attempt, an offer, a win): its units held for its buyer.
    pub(super) fn add_hold(
        &mut self,
        hold_id: &str,
        (buyer, sku, quantity): (&str, &str, i64),
        expires_at: DateTime<Utc>,
    ) {
        self.expiring.insert((expires_at, hold_id.to_owned()));
        self.holds.insert(
            hold_id.to_owned(),
            Hold {
                buyer: buyer.to_owned(),
                sku: sku.to_owned(),
                quantity,
                expires_at,
                confirmed: false,
            },
        );
        *self.units.entry(buyer.to_owned()).or_default() += quantity;
        if let Some(s) = self.stock.get_mut(sku) {
            s.held += quantity;
        }
    }

    /// An admin set units aside for a tier: out of what was free.
    pub(super) fn reserve(&mut self, position: i64, sku: &str, tier: &str, units: i64) {
        let free = self.stock.get(sku).map_or(0, |s| s.available()) - self.reserved_out(sku);
        if units < 1 || units > free {
            self.mismatch(
                position,
                format!("{units} units of {sku} reserved for {tier}, with {free} free"),
            );
        }
        *self
            .reserves
            .entry((sku.to_owned(), tier.to_owned()))
            .or_default() += units;
    }

    /// Units of `sku` still reserved for any tier.
    pub(super) fn reserved_out(&self, sku: &str) -> i64 {
        self.reserves
            .iter()
            .filter(|((s, _), _)| s == sku)
            .map(|(_, left)| *left)
            .sum()
    }

    pub(super) fn reserved_left(&self, sku: &str, tier: &str) -> i64 {
        self.reserves
            .get(&(sku.to_owned(), tier.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn take_reserved(&mut self, sku: &str, tier: &str, units: i64) {
        if let Some(left) = self.reserves.get_mut(&(sku.to_owned(), tier.to_owned())) {
            *left -= units;
        }
    }

    /// An admin's stock change: the rule must allow it and give the recorded total.
    pub(super) fn restock(&mut self, position: i64, sku: &str, delta: i64, stock: i64) {
        match self.stock.get(sku).map(|s| s.restock(sku, delta)) {
            Some(Ok(next)) => {
                if next.total != stock {
                    self.mismatch(
                        position,
                        format!(
                            "restock of {sku} by {delta} gives {}, not {stock}",
                            next.total
                        ),
                    );
                }
                let next = SkuStock {
                    total: stock,
                    ..next
                };
                self.stock.insert(sku.to_owned(), next);
            }
            Some(Err(refusal)) => {
                self.mismatch(position, format!("restock refused by the rule: {refusal}"))
            }
            None => self.mismatch(position, format!("restock of unknown SKU {sku}")),
        }
    }

    /// The active hold `hold_id`, if it is one and matches the entry's SKU and quantity.
    pub(super) fn active(
        &mut self,
        position: i64,
        what: &str,
        hold_id: &str,
        unit: (&str, i64),
    ) -> bool {
        match self.holds.get(hold_id) {
            Some(h) if h.confirmed => {
                self.mismatch(position, format!("{what} of {hold_id}, already confirmed"));
                false
            }
            Some(h) if h.sku != unit.0 || h.quantity != unit.1 => {
                let found = format!("{} x{}", h.sku, h.quantity);
                self.mismatch(position, format!("{what} of {hold_id}: it held {found}"));
                false
            }
            Some(_) => true,
            None => {
                self.mismatch(position, format!("{what} of {hold_id}, not an active hold"));
                false
            }
        }
    }

    pub(super) fn end(
        &mut self,
        position: i64,
        what: &str,
        hold_id: &str,
        unit: (&str, i64),
        expired_at: Option<DateTime<Utc>>,
    ) {
        if !self.active(position, what, hold_id, unit) {
            return;
        }
        let Some(hold) = self.holds.remove(hold_id) else {
            return;
        };
        self.expiring.remove(&(hold.expires_at, hold_id.to_owned()));
        if expired_at.is_some_and(|now| hold.expires_at > now) {
            self.mismatch(position, format!("{hold_id} expired before its time"));
        }
        *self.units.entry(hold.buyer).or_default() -= hold.quantity;
        if let Some(s) = self.stock.get_mut(&hold.sku) {
            s.held -= hold.quantity;
        }
    }

    pub(super) fn confirm(
        &mut self,
        position: i64,
        now: DateTime<Utc>,
        hold_id: &str,
        unit: (&str, i64),
    ) {
        if !self.active(position, "confirmation", hold_id, unit) {
            return;
        }
        let Some(hold) = self.holds.get_mut(hold_id) else {
            return;
        };
        let expired = hold.expires_at <= now;
        hold.confirmed = true;
        let key = (hold.expires_at, hold_id.to_owned());
        let (sku, quantity) = (hold.sku.clone(), hold.quantity);
        self.expiring.remove(&key);
        if expired {
            self.mismatch(position, format!("{hold_id} confirmed after it expired"));
        }
        if let Some(s) = self.stock.get_mut(&sku) {
            *s = s.confirm(quantity);
        }
    }

    pub(super) fn edit(&mut self, position: i64, now: DateTime<Utc>, changes: &serde_json::Value) {
        let patch: DropPatch = match serde_json::from_value(changes.clone()) {
            Ok(patch) => patch,
            Err(err) => {
                self.mismatch(position, format!("an edit that is not a drop patch: {err}"));
                return;
            }
        };
        let from = self.schedule.state_at(now);
        let mut schedule = DropSchedule {
            starts_at: patch.starts_at.map_or(self.schedule.starts_at, millis),
            ends_at: patch.ends_at.map_or(self.schedule.ends_at, millis),
            ..self.schedule
        };
        if let Some(target) = patch.state {
            match schedule.set_state(from, target, now) {
                Ok(next) => schedule = next,
                Err(refusal) => {
                    self.mismatch(position, format!("an edit the rule refuses: {refusal}"));
                    return;
                }
            }
        }
        self.schedule = schedule;
        if let Some(limit) = patch.per_buyer_limit {
            self.limit = limit;
        }
        if let Some(seconds) = patch.hold_seconds {
            self.hold_seconds = seconds;
        }
        // A new mode's commitment (`queue`, `draw`) came just before this entry; the old one's
        // is void.
        match patch.mode {
            Some(Mode::Fcfs) => {
                self.queue = None;
                self.raffle = None;
            }
            Some(Mode::Queue) => self.raffle = None,
            Some(Mode::Draw) => self.queue = None,
            None => {}
        }
    }
}

//! Replaying a drop's ledger: from its `created` entry, every entry in order rebuilds the drop's
//! state (stock, holds, each buyer's units, schedule), and every numbered attempt is decided
//! again by the writer's own rule ([`decide_attempt`]) at the time the writer took it. An
//! outcome the rule does not give, or an entry the state does not allow (a release of a hold
//! that is not active, an expiry before its time, a restock to another total), is a mismatch:
//! reported, and the recorded fact is applied all the same so the rest is still checked. No
//! I/O here: the CLI reads the ledger from a restored database.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::domain::inventory::decide_attempt;
use crate::domain::ledger::{Entry, Event};
use crate::domain::queue::Mode;
pub use crate::domain::queue::QueueDraw;
use crate::domain::{Allowance, DropSchedule, DropState, SkuStock};
pub use draw::DrawCheck;

/// An active or confirmed hold, as the ledger made it.
#[derive(Debug, Clone)]
struct Hold {
    buyer: String,
    sku: String,
    quantity: i64,
    expires_at: DateTime<Utc>,
    confirmed: bool,
}

/// A held attempt, kept for "why did I lose?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Win {
    pub attempt_seq: i64,
    pub position: i64,
    pub at: String,
    pub buyer: String,
    pub sku: String,
    pub quantity: i64,
}

/// One of a buyer's attempts, and what stood before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempted {
    pub attempt_seq: i64,
    pub position: i64,
    pub at: String,
    pub sku: String,
    pub quantity: i64,
    pub outcome: String,
    /// Units of the SKU a buyer could take at that moment (stock less live holds and sales).
    pub available: i64,
    /// The buyer's own units in the drop at that moment, against the limit.
    pub used: i64,
    pub limit: i64,
    /// Attempts on the same SKU that were held before this one, in order.
    pub won_before: Vec<Win>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub position: i64,
    pub what: String,
}

/// What a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub entries: i64,
    pub attempts: i64,
    pub held: i64,
    pub refused: i64,
    /// Outcomes the rule reproduced.
    pub reproduced: i64,
    pub mismatches: Vec<Mismatch>,
    /// The asked-about buyer's attempts, if a buyer was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer: Option<Vec<Attempted>>,
    /// A queue drop's draw, recomputed from the revealed seed and the `join` entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueDraw>,
    /// Offers made to waiters from freed units (each checked like an attempt).
    pub offers: i64,
    /// A raffle's entries and winners, recomputed from the revealed seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draw: Option<draw::DrawCheck>,
}

/// A drop's state as its ledger rebuilds it.
pub struct Replay {
    schedule: DropSchedule,
    limit: i64,
    hold_seconds: i64,
    stock: BTreeMap<String, SkuStock>,
    holds: HashMap<String, Hold>,
    /// Active holds by expiry, so the due ones are found without a scan.
    expiring: BTreeSet<(DateTime<Utc>, String)>,
    units: HashMap<String, i64>,
    wins: Vec<Win>,
    /// The buyer (ledger name) whose attempts are explained.
    watch: Option<String>,
    report: Report,
    next_position: i64,
    /// A queue drop's published commitment, and who joined before its draw.
    queue: Option<String>,
    early_joins: Vec<String>,
    /// Each SKU's waiters, in the order they joined.
    waiting: HashMap<String, Vec<waitlist::Waiter>>,
    /// The SKUs in the drop's order (the draw takes them so).
    sku_order: Vec<String>,
    raffle: Option<draw::Raffle>,
    /// The attempt the last `code` entry names (it came with a valid access code).
    coded: Option<(i64, String)>,
    /// Units still reserved, by SKU and tier.
    reserves: BTreeMap<(String, String), i64>,
}

/// A time as the writer compares it, in whole milliseconds (ledgers written before the store
/// recorded stored times carry finer schedule times).
fn time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| crate::domain::clock::from_millis(t.timestamp_millis()))
}

fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    crate::domain::clock::from_millis(t.timestamp_millis())
}

/// Why a ledger cannot be replayed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreplayable {
    #[error(
        "the ledger does not start with the drop's creation (its first entry is {0}): the drop \
         was made before the ledger existed, so its early history is not in it"
    )]
    NoCreation(String),
    #[error("entry {0}: a time that is not RFC 3339")]
    BadTime(i64),
    #[error(
        "the ledger's creation entry does not say how long holds last; pass --hold-seconds \
         (the drop's `hold_seconds` when it was created)"
    )]
    NoHoldSeconds,
}

impl Replay {
    /// Starts from the drop's `created` entry. `hold_seconds` stands in for entries written
    /// before creation recorded it; `watch` names a buyer (as the ledger does) to explain.
    pub fn start(
        first: &Entry,
        hold_seconds: Option<i64>,
        watch: Option<String>,
    ) -> Result<Replay, Unreplayable> {
        let Event::Created {
            skus,
            per_buyer_limit,
            starts_at,
            ends_at,
            hold_seconds: recorded,
        } = &first.event
        else {
            return Err(Unreplayable::NoCreation(first.event.kind().into()));
        };
        let bad = || Unreplayable::BadTime(first.position);
        let schedule = DropSchedule {
            starts_at: time(starts_at).ok_or_else(bad)?,
            ends_at: time(ends_at).ok_or_else(bad)?,
            override_state: None,
        };
        let mut replay = Replay {
            schedule,
            limit: *per_buyer_limit,
            hold_seconds: recorded
                .or(hold_seconds)
                .ok_or(Unreplayable::NoHoldSeconds)?,
            stock: skus
                .iter()
                .map(|s| {
                    let stock = SkuStock {
                        total: s.stock,
                        held: 0,
                        sold: 0,
                    };
                    (s.sku.clone(), stock)
                })
                .collect(),
            holds: HashMap::new(),
            expiring: BTreeSet::new(),
            units: HashMap::new(),
            wins: Vec::new(),
            report: Report {
                buyer: watch.as_ref().map(|_| Vec::new()),
                queue: None,
                ..Report::default()
            },
            watch,
            next_position: first.position + 1,
            queue: None,
            early_joins: Vec::new(),
            waiting: HashMap::new(),
            sku_order: skus.iter().map(|s| s.sku.clone()).collect(),
            raffle: None,
            coded: None,
            reserves: BTreeMap::new(),
        };
        replay.report.entries = 1;
        Ok(replay)
    }

    fn mismatch(&mut self, position: i64, what: String) {
        self.report.mismatches.push(Mismatch { position, what });
    }

    /// Applies the next entry, checking it against the state before it.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), Unreplayable> {
        let position = entry.position;
        if position != self.next_position {
            self.mismatch(
                position,
                format!(
                    "position {position} where {} comes next",
                    self.next_position
                ),
            );
        }
        self.next_position = position + 1;
        self.report.entries += 1;
        let now = time(&entry.at).ok_or(Unreplayable::BadTime(position))?;
        match &entry.event {
            Event::Created { .. } => self.mismatch(position, "a second creation".into()),
            Event::Attempt {
                attempt_seq,
                buyer,
                sku,
                quantity,
                outcome,
                hold_id,
            } => self.attempt(
                entry,
                now,
                (*attempt_seq, buyer, sku, *quantity, outcome),
                hold_id.as_deref(),
            ),
            Event::Release {
                hold_id,
                sku,
                quantity,
            } => self.end(position, "release", hold_id, (sku, *quantity), None),
            Event::Expiry {
                hold_id,
                sku,
                quantity,
            } => self.end(position, "expiry", hold_id, (sku, *quantity), Some(now)),
            Event::Confirmation {
                hold_id,
                sku,
                quantity,
                ..
            } => self.confirm(position, now, hold_id, (sku, *quantity)),
            Event::Restock { sku, delta, stock } => self.restock(position, sku, *delta, *stock),
            Event::Edit { changes } => self.edit(position, now, changes),
            Event::Queue { commitment, .. } => self.queue = Some(commitment.clone()),
            Event::Join { buyer, place } => match place {
                None => self.early_joins.push(buyer.clone()),
                Some(place) => {
                    if self.watch.as_deref() == Some(buyer.as_str()) {
                        self.report
                            .queue
                            .get_or_insert_with(QueueDraw::default)
                            .place = Some(*place);
                    }
                }
            },
            Event::Seeded { seed, joined } => self.draw(position, seed, *joined),
            Event::Wait {
                buyer,
                sku,
                quantity,
            } => self.wait(position, buyer, sku, *quantity),
            Event::Unwait { buyer, sku } => self.unwait(position, buyer, sku),
            Event::Offer {
                attempt_seq,
                buyer,
                sku,
                quantity,
                hold_id,
            } => self.offer(entry, now, (*attempt_seq, buyer, sku, *quantity), hold_id),
            Event::Draw { commitment } => self.open_draw(commitment),
            Event::Code { attempt_seq, tier } => self.coded = Some((*attempt_seq, tier.clone())),
            Event::Reserve { sku, tier, units } => self.reserve(position, sku, tier, *units),
            Event::Enter {
                buyer,
                sku,
                quantity,
            } => self.enter(position, now, (buyer, sku, *quantity)),
            Event::Drawn { seed, entries } => self.drawn(position, seed, *entries),
            Event::Win {
                attempt_seq,
                buyer,
                sku,
                quantity,
                hold_id,
            } => self.win(
                position,
                now,
                (*attempt_seq, buyer, sku, *quantity),
                hold_id,
            ),
            Event::Closed { .. } => {
                if self.schedule.state_at(now) != DropState::Closed {
                    self.mismatch(position, "closed before its ends_at".into());
                }
            }
        }
        Ok(())
    }

    /// The draw again: the seed against its commitment, and the order it gives.
    fn draw(&mut self, position: i64, seed: &str, joined: i64) {
        let commitment = self.queue.as_deref().unwrap_or_default();
        let (draw, faults) = QueueDraw::recompute(
            commitment,
            seed,
            joined,
            &self.early_joins,
            self.watch.as_deref(),
        );
        for fault in faults {
            self.mismatch(position, fault);
        }
        self.report.queue = Some(draw);
    }

    /// Active holds past their expiry at `now` that no entry ended yet: they count for nothing.
    fn due(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Hold> {
        self.expiring
            .range(..=(now, String::from("\u{10FFFF}")))
            .filter_map(|(_, id)| self.holds.get(id))
    }

    /// Units of `sku` held by holds still running at `now`.
    fn live_held(&self, sku: &str, now: DateTime<Utc>) -> i64 {
        let held = self.stock.get(sku).map_or(0, |s| s.held);
        held - self
            .due(now)
            .filter(|h| h.sku == sku)
            .map(|h| h.quantity)
            .sum::<i64>()
    }

    /// The buyer's units at `now`: running holds and orders.
    fn used(&self, buyer: &str, now: DateTime<Utc>) -> i64 {
        let units = self.units.get(buyer).copied().unwrap_or(0);
        units
            - self
                .due(now)
                .filter(|h| h.buyer == buyer)
                .map(|h| h.quantity)
                .sum::<i64>()
    }

    fn attempt(
        &mut self,
        entry: &Entry,
        now: DateTime<Utc>,
        (attempt_seq, buyer, sku, quantity, outcome): (i64, &str, &str, i64, &str),
        hold_id: Option<&str>,
    ) {
        let position = entry.position;
        self.report.attempts += 1;
        let state = self.schedule.state_at(now);
        let Some(stock) = self.stock.get(sku).copied() else {
            self.mismatch(position, format!("attempt on unknown SKU {sku}"));
            return;
        };
        let used = self.used(buyer, now);
        // An attempt with a valid access code may come before the start (a presale), and may
        // take its tier's reserved units; nobody takes another tier's.
        let tier = self
            .coded
            .take()
            .filter(|(seq, _)| *seq == attempt_seq)
            .map(|(_, tier)| tier);
        let coded = tier.is_some();
        let own = tier.as_ref().map_or(0, |t| self.reserved_left(sku, t));
        let freed = SkuStock {
            held: self.live_held(sku, now) + self.reserved_out(sku) - own,
            ..stock
        };
        let open = state == DropState::Live || (coded && state == DropState::Scheduled);
        let decided = if !open {
            // The writer numbers attempts on a live drop only.
            format!("drop-not-live ({})", state.as_str())
        } else {
            let allowance = Allowance {
                limit: self.limit,
                used,
            };
            match decide_attempt(allowance, freed, sku, quantity) {
                Ok(_) => "held".to_owned(),
                Err(refusal) => refusal.code().to_owned(),
            }
        };
        if decided == outcome {
            self.report.reproduced += 1;
        } else {
            self.mismatch(
                position,
                format!("attempt {attempt_seq} was answered {outcome}; the rule gives {decided}"),
            );
        }
        if self.watch.as_deref() == Some(buyer) {
            let won_before = self.wins.iter().filter(|w| w.sku == sku).cloned().collect();
            let mine = Attempted {
                attempt_seq,
                position,
                at: entry.at.clone(),
                sku: sku.to_owned(),
                quantity,
                outcome: outcome.to_owned(),
                available: freed.available(),
                used,
                limit: self.limit,
                won_before,
            };
            if let Some(list) = &mut self.report.buyer {
                list.push(mine);
            }
        }
        // What was answered is what happened.
        if outcome != "held" {
            self.report.refused += 1;
            return;
        }
        self.report.held += 1;
        if let Some(tier) = &tier {
            self.take_reserved(sku, tier, own.min(quantity));
        }
        let Some(hold_id) = hold_id else {
            self.mismatch(
                position,
                format!("held attempt {attempt_seq} names no hold"),
            );
            return;
        };
        let expires_at = now + Duration::seconds(self.hold_seconds);
        self.add_hold(hold_id, (buyer, sku, quantity), expires_at);
        self.wins.push(Win {
            attempt_seq,
            position,
            at: entry.at.clone(),
            buyer: buyer.to_owned(),
            sku: sku.to_owned(),
            quantity,
        });
    }

    /// The report, once every entry is applied.
    pub fn finish(mut self) -> Report {
        self.finish_draw();
        self.report
    }
}

mod changes;
mod draw;
#[cfg(test)]
mod tests;
mod waitlist;

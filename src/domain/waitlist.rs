//! Waiting lists, free of I/O: who may wait for a sold-out SKU, how many units an offer hands a
//! waiter, and how long an offer lasts.
//!
//! Units freed by an expiry, a release or a restock go to the waiters in order (first come, or
//! the queue's order on a queue drop) as offer holds, in the same transaction that freed them,
//! so nobody who refreshes faster can take them first.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::clock::serde_rfc3339;
use super::drop::rules::MIN_HOLD_SECONDS;
use super::{Allowance, Refusal, SkuStock};

/// Where a waiting-list entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitState {
    /// In line for the SKU.
    Waiting,
    /// Freed units became an offer hold for this buyer (`hold_id`).
    Offered,
    /// The buyer left the list.
    Left,
}

impl WaitState {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitState::Waiting => "waiting",
            WaitState::Offered => "offered",
            WaitState::Left => "left",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "waiting" => Some(WaitState::Waiting),
            "offered" => Some(WaitState::Offered),
            "left" => Some(WaitState::Left),
            _ => None,
        }
    }
}

/// A buyer's entry in a SKU's waiting list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WaitlistEntry {
    pub drop_id: String,
    pub sku: String,
    /// Units the buyer waits for; an offer may hand fewer (what was freed, or what their limit
    /// leaves).
    pub quantity: i64,
    pub state: WaitState,
    #[serde(with = "serde_rfc3339")]
    pub joined_at: DateTime<Utc>,
    /// 1-based place among the SKU's waiters, while waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// The offer hold, once offered: confirm it like any hold before it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<String>,
    /// Joined by this request (not before).
    #[serde(skip)]
    #[schema(ignore)]
    pub fresh: bool,
}

/// How long an offer hold lasts: half the drop's hold time (the waiter was not at the screen
/// when it came, but others wait behind them), never under the shortest hold.
pub fn offer_seconds(hold_seconds: i64) -> i64 {
    (hold_seconds / 2).max(MIN_HOLD_SECONDS).min(hold_seconds)
}

/// Units an offer hands a waiter who wants `wanted`: no more than is free and than their limit
/// leaves (`room`). `None` when that is nothing: the waiter keeps their place.
pub fn offer_quantity(wanted: i64, available: i64, room: i64) -> Option<i64> {
    let units = wanted.min(available).min(room);
    (units > 0).then_some(units)
}

/// Whether a buyer may join a SKU's waiting list for `quantity` units: within their limit, and
/// only when the SKU cannot give them that many now (otherwise they should simply hold).
pub fn check_join(
    allowance: Allowance,
    stock: SkuStock,
    sku: &str,
    quantity: i64,
) -> Result<(), Refusal> {
    allowance.check(quantity)?;
    if stock.available() >= quantity {
        return Err(Refusal::NotSoldOut {
            sku: sku.to_owned(),
            available: stock.available(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stock(total: i64, held: i64, sold: i64) -> SkuStock {
        SkuStock { total, held, sold }
    }

    #[test]
    fn an_offer_lasts_half_the_hold_but_never_less_than_the_shortest_hold() {
        assert_eq!(offer_seconds(600), 300);
        assert_eq!(offer_seconds(15), MIN_HOLD_SECONDS);
        assert_eq!(offer_seconds(MIN_HOLD_SECONDS), MIN_HOLD_SECONDS);
    }

    #[test]
    fn a_waiter_at_their_limit_is_offered_nothing_and_keeps_their_place() {
        assert_eq!(offer_quantity(2, 5, 0), None);
        assert_eq!(offer_quantity(2, 0, 2), None);
        assert_eq!(offer_quantity(3, 1, 2), Some(1));
        assert_eq!(offer_quantity(3, 5, 2), Some(2));
    }

    #[test]
    fn joining_is_for_what_the_sku_cannot_give_now() {
        let room = Allowance { limit: 2, used: 0 };
        assert!(check_join(room, stock(5, 5, 0), "S", 1).is_ok());
        assert!(check_join(room, stock(5, 4, 0), "S", 2).is_ok());
        assert_eq!(
            check_join(room, stock(5, 4, 0), "S", 1).map_err(|r| r.code()),
            Err("not-sold-out")
        );
        let full = Allowance { limit: 2, used: 2 };
        assert_eq!(
            check_join(full, stock(5, 5, 0), "S", 1).map_err(|r| r.code()),
            Err("limit-exceeded")
        );
    }

    proptest! {
        #[test]
        fn an_offer_never_exceeds_what_is_wanted_free_or_allowed(
            wanted in 1i64..10, available in -2i64..10, room in -2i64..10,
        ) {
            if let Some(units) = offer_quantity(wanted, available, room) {
                prop_assert!(units >= 1 && units <= wanted && units <= available && units <= room);
            } else {
                prop_assert!(available <= 0 || room <= 0);
            }
        }
    }
}

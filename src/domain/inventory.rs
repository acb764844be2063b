//! Where units are: every unit of a SKU is available, held or sold, and these moves are the only
//! ways a unit changes place. `available + held + sold = total` and none is negative.

use crate::domain::Refusal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkuStock {
    pub total: i64,
    pub held: i64,
    pub sold: i64,
}

impl SkuStock {
    pub fn available(&self) -> i64 {
        self.total - self.held - self.sold
    }

    pub fn is_consistent(&self) -> bool {
        self.held >= 0 && self.sold >= 0 && self.available() >= 0
    }

    /// Takes `quantity` available units into a hold.
    pub fn hold(&self, sku: &str, quantity: i64) -> Result<SkuStock, Refusal> {
        if quantity <= 0 {
            return Err(Refusal::invalid("quantity must be at least 1"));
        }
        if self.available() < quantity {
            return Err(Refusal::SoldOut {
                sku: sku.to_owned(),
                available: self.available(),
                requested: quantity,
            });
        }
        Ok(SkuStock {
            held: self.held + quantity,
            ..*self
        })
    }

    /// A confirmed hold's units become sold.
    pub fn confirm(&self, quantity: i64) -> SkuStock {
        debug_assert!(quantity <= self.held, "confirming more than is held");
        SkuStock {
            held: self.held - quantity,
            sold: self.sold + quantity,
            ..*self
        }
    }

    /// A released or expired hold's units go back on sale.
    pub fn release(&self, quantity: i64) -> SkuStock {
        debug_assert!(quantity <= self.held, "releasing more than is held");
        SkuStock {
            held: self.held - quantity,
            ..*self
        }
    }

    /// Adds (or with a negative delta removes) stock; never below what is held or sold.
    pub fn restock(&self, sku: &str, delta: i64) -> Result<SkuStock, Refusal> {
        let committed = self.held + self.sold;
        let total = self
            .total
            .checked_add(delta)
            .filter(|t| *t <= MAX_STOCK)
            .ok_or_else(|| Refusal::invalid(format!("stock may not exceed {MAX_STOCK}")))?;
        if total < committed {
            return Err(Refusal::StockBelowCommitted {
                sku: sku.to_owned(),
                committed,
                requested: total,
            });
        }
        Ok(SkuStock { total, ..*self })
    }
}

/// The writer's decision on a numbered hold attempt, and the replay's: the buyer's limit
/// first, then the stock. `stock` and `allowance` leave out holds past their expiry, swept or
/// not. Returns the stock with the hold taken.
pub fn decide_attempt(
    allowance: Allowance,
    stock: SkuStock,
    sku: &str,
    quantity: i64,
) -> Result<SkuStock, Refusal> {
    allowance.check(quantity)?;
    stock.hold(sku, quantity)
}

/// The largest stock a SKU may have; keeps every sum far from overflow.
pub const MAX_STOCK: i64 = 1_000_000_000;

/// A buyer's units in one drop: active holds plus orders, against the drop's per-buyer limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: i64,
    pub used: i64,
}

impl Allowance {
    pub fn check(&self, quantity: i64) -> Result<(), Refusal> {
        if quantity < 1 || quantity > self.limit {
            return Err(Refusal::invalid(format!(
                "quantity must be between 1 and the drop's per-buyer limit of {}",
                self.limit
            )));
        }
        if self.used + quantity > self.limit {
            return Err(Refusal::LimitExceeded {
                limit: self.limit,
                used: self.used,
                requested: quantity,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_hold_beyond_remaining_stock_is_rejected() {
        let s = SkuStock {
            total: 3,
            held: 1,
            sold: 1,
        };
        assert!(matches!(
            s.hold("X", 2),
            Err(Refusal::SoldOut { available: 1, .. })
        ));
        assert_eq!(s.hold("X", 1).map(|s| s.available()), Ok(0));
    }

    #[test]
    fn stock_cannot_shrink_below_what_is_held_or_sold() {
        let s = SkuStock {
            total: 10,
            held: 3,
            sold: 4,
        };
        assert!(matches!(
            s.restock("X", -4),
            Err(Refusal::StockBelowCommitted { committed: 7, .. })
        ));
        assert_eq!(s.restock("X", -3).map(|s| s.total), Ok(7));
    }

    #[test]
    fn a_buyer_cannot_pass_the_limit_across_holds() {
        let a = Allowance { limit: 2, used: 1 };
        assert!(a.check(1).is_ok());
        assert!(matches!(a.check(2), Err(Refusal::LimitExceeded { .. })));
        assert!(matches!(a.check(3), Err(Refusal::ValidationFailed { .. })));
        assert!(matches!(a.check(0), Err(Refusal::ValidationFailed { .. })));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Hold { buyer: usize, quantity: i64 },
        Confirm(usize),
        Release(usize),
        Expire(usize),
        Restock(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..5, -1i64..4).prop_map(|(buyer, quantity)| Op::Hold { buyer, quantity }),
            any::<usize>().prop_map(Op::Confirm),
            any::<usize>().prop_map(Op::Release),
            any::<usize>().prop_map(Op::Expire),
            (-6i64..6).prop_map(Op::Restock),
        ]
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum HoldState {
        Active,
        Confirmed,
        Gone,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Invariant: whatever sequence of moves, units are conserved, none is negative, and no
        /// buyer holds or owns more than the limit.
        #[test]
        fn any_sequence_of_moves_keeps_the_invariants(
            total in 0i64..20, limit in 1i64..4, ops in proptest::collection::vec(op(), 0..200)
        ) {
            let mut stock = SkuStock { total, held: 0, sold: 0 };
            let mut holds: Vec<(usize, i64, HoldState)> = Vec::new();
            for op in ops {
                match op {
                    Op::Hold { buyer, quantity } => {
                        let used = holds.iter()
                            .filter(|(b, _, s)| *b == buyer && *s != HoldState::Gone)
                            .map(|(_, q, _)| q).sum();
                        let allowed = Allowance { limit, used }.check(quantity);
                        if allowed.is_ok() {
                            if let Ok(next) = stock.hold("X", quantity) {
                                stock = next;
                                holds.push((buyer, quantity, HoldState::Active));
                            }
                        }
                    }
                    Op::Confirm(i) | Op::Release(i) | Op::Expire(i) if !holds.is_empty() => {
                        let i = i % holds.len();
                        if holds[i].2 == HoldState::Active {
                            let q = holds[i].1;
                            if matches!(op, Op::Confirm(_)) {
                                stock = stock.confirm(q);
                                holds[i].2 = HoldState::Confirmed;
                            } else {
                                stock = stock.release(q);
                                holds[i].2 = HoldState::Gone;
                            }
                        }
                    }
                    Op::Restock(delta) => {
                        if let Ok(next) = stock.restock("X", delta) {
                            stock = next;
                        }
                    }
                    _ => {}
                }
                prop_assert!(stock.is_consistent(), "{stock:?}");
                let held: i64 = holds.iter().filter(|h| h.2 == HoldState::Active).map(|h| h.1).sum();
                let sold: i64 = holds.iter().filter(|h| h.2 == HoldState::Confirmed).map(|h| h.1).sum();
                prop_assert_eq!((stock.held, stock.sold), (held, sold));
                for buyer in 0..5 {
                    let used: i64 = holds.iter()
                        .filter(|(b, _, s)| *b == buyer && *s != HoldState::Gone)
                        .map(|(_, q, _)| q).sum();
                    prop_assert!(used <= limit);
                }
            }
        }
    }
}

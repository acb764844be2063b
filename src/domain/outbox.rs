//! What the rest of the business hears about: the kinds of outbox events, each announced in the
//! same transaction as the change it describes.

macro_rules! kinds {
    ($($variant:ident = $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($variant,)*
        }

        impl EventKind {
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }
        }
    };
}

kinds! {
    HoldCreated = "hold.created",
    HoldExpired = "hold.expired",
    HoldReleased = "hold.released",
    OrderCreated = "order.created",
    DropSoldOut = "drop.sold_out",
    DropStateChanged = "drop.state_changed",
    StockAdjusted = "stock.adjusted",
    CheckoutRequested = "checkout.requested",
    WaitlistOffered = "waitlist.offered",
    DrawWon = "draw.won",
    DrawLost = "draw.lost",
}

impl EventKind {
    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.iter().copied().find(|k| k.as_str() == text)
    }
}

/// `data` of `hold.created`, `hold.expired`, `hold.released` and `waitlist.offered` (an offer
/// hold made for a waiter from freed units).
#[derive(Debug, serde::Serialize)]
pub struct HoldData<'a> {
    pub hold_id: &'a str,
    pub sku: &'a str,
    pub quantity: i64,
    pub buyer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `data` of `draw.lost`: an entry the draw did not reach; it waits on the SKU's waiting list
/// at its drawn place (`rank`).
#[derive(Debug, serde::Serialize)]
pub struct LostData<'a> {
    pub sku: &'a str,
    pub quantity: i64,
    pub buyer: &'a str,
    pub rank: i64,
}

/// `data` of `order.created`.
#[derive(Debug, serde::Serialize)]
pub struct OrderData<'a> {
    pub order_id: &'a str,
    pub hold_id: &'a str,
    pub sku: &'a str,
    pub quantity: i64,
    pub buyer: &'a str,
    pub unit_price: &'a crate::domain::Money,
    pub total: &'a crate::domain::Money,
    pub payment_ref: &'a str,
}

/// `data` of `checkout.requested`: a buyer asks to pay for a hold; the payment service charges
/// `total` and confirms the hold before `expires_at`.
#[derive(Debug, serde::Serialize)]
pub struct CheckoutData<'a> {
    pub hold_id: &'a str,
    pub sku: &'a str,
    pub quantity: i64,
    pub buyer: &'a str,
    pub total: &'a crate::domain::Money,
    pub expires_at: String,
}

/// `data` of `drop.sold_out`.
#[derive(Debug, serde::Serialize)]
pub struct SoldOutData<'a> {
    pub sku: &'a str,
}

/// `data` of `drop.state_changed`.
#[derive(Debug, serde::Serialize)]
pub struct StateData<'a> {
    pub from: &'a str,
    pub to: &'a str,
}

/// `data` of `stock.adjusted`.
#[derive(Debug, serde::Serialize)]
pub struct StockData<'a> {
    pub sku: &'a str,
    pub delta: i64,
    pub stock: i64,
    pub available: i64,
}

/// Which events an endpoint takes: a list of kinds, or `*` for all of them.
pub fn parse_filter(names: &[String]) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Err("events must name at least one event type, or \"*\" for all".into());
    }
    let mut kept = Vec::new();
    for name in names {
        if name != "*" && EventKind::parse(name).is_none() {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(format!(
                "unknown event type {name:?}; known: {}, or \"*\"",
                known.join(", ")
            ));
        }
        if !kept.contains(name) {
            kept.push(name.clone());
        }
    }
    Ok(kept)
}

/// True if an endpoint with `filter` takes events of type `kind`.
pub fn wants(filter: &[String], kind: &str) -> bool {
    filter.iter().any(|f| f == "*" || f == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_names_known_kinds_or_everything() {
        assert!(parse_filter(&[]).is_err());
        assert!(parse_filter(&["hold.made".into()]).is_err());
        let f = parse_filter(&["order.created".into(), "order.created".into()]).expect("known");
        assert_eq!(f, ["order.created"]);
        assert!(wants(&f, "order.created") && !wants(&f, "hold.created"));
        assert!(wants(&["*".into()], "stock.adjusted"));
    }
}

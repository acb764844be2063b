//! What changed between two committed views of a drop, as the stream tells it: stock per SKU
//! (`stock` events) and the drop's own fields (`drop` events). Pure, so it is tested without
//! the hub's locks.

use serde_json::{json, Map, Value};

use crate::domain::clock::rfc3339;
use crate::domain::views::DropView;

#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// SKUs whose available count moved, with the new count.
    pub skus: Vec<(String, i64)>,
    /// Drop fields with a new value, by their name in the API.
    pub fields: Map<String, Value>,
    /// A SKU reached zero: pages must hear it at once, not at the next tick.
    pub sold_out: bool,
}

pub fn diff(old: &DropView, new: &DropView) -> Changes {
    let mut changes = Changes::default();
    for sku in &new.skus {
        let before = old
            .skus
            .iter()
            .find(|s| s.sku == sku.sku)
            .map(|s| s.available);
        if before != Some(sku.available) {
            changes.sold_out |= sku.available == 0;
            changes.skus.push((sku.sku.clone(), sku.available));
        }
    }
    let pairs = [
        ("name", json!(old.name), json!(new.name)),
        (
            "description",
            json!(old.description),
            json!(new.description),
        ),
        (
            "starts_at",
            json!(rfc3339(old.starts_at)),
            json!(rfc3339(new.starts_at)),
        ),
        (
            "ends_at",
            json!(rfc3339(old.ends_at)),
            json!(rfc3339(new.ends_at)),
        ),
        (
            "per_buyer_limit",
            json!(old.per_buyer_limit),
            json!(new.per_buyer_limit),
        ),
        (
            "hold_seconds",
            json!(old.hold_seconds),
            json!(new.hold_seconds),
        ),
    ];
    // The draw's count of entries, then its seed and winners, reach every page, as does a new
    // mode (the page draws itself again).
    let draw = ("draw", json!(old.draw), json!(new.draw));
    let mode = ("mode", json!(old.mode), json!(new.mode));
    for (name, before, after) in pairs.into_iter().chain([draw, mode]) {
        if before != after {
            changes.fields.insert(name.into(), after);
        }
    }
    // A new price or name must reach the pages that show it before the buyer confirms.
    let relabelled = new.skus.iter().any(|sku| {
        !old.skus
            .iter()
            .any(|o| o.sku == sku.sku && o.price == sku.price && o.name == sku.name)
    });
    if relabelled {
        let skus: Vec<Value> = new
            .skus
            .iter()
            .map(|s| json!({"sku": s.sku, "name": s.name, "price": s.price, "available": s.available}))
            .collect();
        changes.fields.insert("skus".into(), Value::Array(skus));
    }
    changes
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::views::SkuView;
    use crate::domain::{Currency, DropState, Money};

    pub(crate) fn view(version: i64, available: i64) -> DropView {
        let start = DateTime::parse_from_rfc3339("2026-12-01T18:00:00Z")
            .expect("valid literal")
            .with_timezone(&Utc);
        DropView {
            id: "d".into(),
            name: "d".into(),
            description: String::new(),
            starts_at: start,
            ends_at: start + chrono::Duration::hours(2),
            per_buyer_limit: 2,
            hold_seconds: 600,
            state: DropState::Live,
            version,
            revision: 1,
            skus: vec![SkuView {
                sku: "S1".into(),
                name: "S1".into(),
                price: Money {
                    amount: 1,
                    currency: Currency::parse("EUR").expect("valid"),
                },
                stock: 100,
                available,
                held: 100 - available,
                sold: 0,
                reserved: None,
            }],
            mode: Default::default(),
            queue: None,
            draw: None,
        }
    }

    #[test]
    fn the_same_view_changes_nothing() {
        assert_eq!(diff(&view(1, 10), &view(2, 10)), Changes::default());
    }

    #[test]
    fn stock_that_moves_is_reported_and_zero_is_urgent() {
        let moved = diff(&view(1, 10), &view(2, 9));
        assert_eq!(moved.skus, vec![("S1".to_string(), 9)]);
        assert!(!moved.sold_out && moved.fields.is_empty());
        let gone = diff(&view(2, 9), &view(3, 0));
        assert_eq!(gone.skus, vec![("S1".to_string(), 0)]);
        assert!(gone.sold_out);
    }

    #[test]
    fn changed_fields_carry_their_new_value_and_a_new_price_resends_the_skus() {
        let old = view(1, 10);
        let mut new = view(2, 10);
        new.name = "Renamed".into();
        new.per_buyer_limit = 1;
        new.skus[0].price.amount = 5;
        let changes = diff(&old, &new);
        assert!(changes.skus.is_empty());
        assert_eq!(changes.fields["name"], json!("Renamed"));
        assert_eq!(changes.fields["per_buyer_limit"], json!(1));
        assert_eq!(changes.fields["skus"][0]["price"]["amount"], json!(5));
        assert!(!changes.fields.contains_key("description"));
    }

    #[test]
    fn a_new_sku_counts_as_moved_stock_and_as_a_relabel() {
        let old = view(1, 10);
        let mut new = view(2, 10);
        let mut added = new.skus[0].clone();
        added.sku = "S2".into();
        added.available = 3;
        new.skus.push(added);
        let changes = diff(&old, &new);
        assert_eq!(changes.skus, vec![("S2".to_string(), 3)]);
        assert_eq!(
            changes.fields["skus"].as_array().map(Vec::len),
            Some(2),
            "{changes:?}"
        );
    }
}

//! Drop specs for `POST /v1/admin/drops`.

use serde_json::{json, Value};

use super::app::start_time;

/// A drop that is live at the test clock's start: one SKU `S1` with the given stock.
pub fn live_drop(id: &str, stock: i64, limit: i64) -> Value {
    let now = start_time();
    json!({
        "id": id, "name": format!("Drop {id}"), "description": "test drop",
        "starts_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "ends_at": (now + chrono::Duration::hours(2)).to_rfc3339(),
        "per_buyer_limit": limit, "hold_seconds": 600,
        "skus": [{"sku": "S1", "name": "Size 1", "price": {"amount": 18000, "currency": "EUR"}, "stock": stock}]
    })
}

/// A drop live now by the real clock (a spawned binary's), with stock and a limit no stampede
/// reaches.
pub fn live_spec(id: &str) -> Value {
    let mut spec = live_drop(id, 1_000_000, 1_000);
    let now = chrono::Utc::now();
    spec["starts_at"] = json!((now - chrono::Duration::minutes(1)).to_rfc3339());
    spec["ends_at"] = json!((now + chrono::Duration::hours(1)).to_rfc3339());
    spec
}

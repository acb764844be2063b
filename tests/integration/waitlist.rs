//! Waiting lists: units freed by an expiry, a release or a restock become offer holds for the
//! waiters in order, in the same transaction, never above a buyer's limit and never to whoever
//! attempts next. The clock is the test's.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::support::api::expect_problem;
use crate::support::app::{spawn_app, TestApp};
use crate::support::db::{check_invariants, open_db};
use crate::support::spec::live_drop;
use crate::support::sse::Events;

async fn hold_id(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 201, "a hold");
    let body: Value = res.json().await.expect("json");
    body["hold_id"].as_str().expect("hold id").to_owned()
}

async fn joined(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status, "joining the waiting list");
    res.json().await.expect("json")
}

/// The offer hold a waiter's entry names, as the hold reads.
async fn offer_of(app: &TestApp, buyer: &str, drop: &str) -> Value {
    let entry = app.buyer(buyer).waitlist_entry(drop, "S1").await;
    assert_eq!(entry["state"], "offered", "{buyer}: {entry}");
    let hold = entry["hold_id"].as_str().expect("an offer hold");
    let res = app.buyer(buyer).get_hold(hold).await;
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

fn at(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .expect("rfc3339")
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freed_units_go_to_waiters_in_order_within_their_limits() {
    let app = spawn_app().await;
    let drop = "wl";
    let mut spec = live_drop(drop, 2, 2);
    spec["skus"]
        .as_array_mut()
        .expect("skus")
        .push(json!({"sku": "S2", "name": "Size 2", "price": {"amount": 100, "currency": "EUR"}, "stock": 5}));
    app.create_drop(&spec).await;
    let held_a = hold_id(app.buyer("a").hold(drop, "S1", 1, "a1").await).await;
    hold_id(app.buyer("b").hold(drop, "S1", 1, "b1").await).await;

    // Who may wait: only for what the SKU cannot give, within the limit, once.
    expect_problem(
        app.buyer("x").join_waitlist(drop, "S2", 1).await,
        409,
        "not-sold-out",
    )
    .await;
    expect_problem(
        app.buyer("x").join_waitlist(drop, "S1", 3).await,
        422,
        "validation-failed",
    )
    .await;
    expect_problem(
        app.buyer("x").join_waitlist(drop, "S9", 1).await,
        422,
        "unknown-sku",
    )
    .await;
    let c = joined(app.buyer("c").join_waitlist(drop, "S1", 1).await, 201).await;
    assert_eq!(
        (c["state"].as_str(), c["position"].as_i64()),
        (Some("waiting"), Some(1))
    );
    let d = joined(app.buyer("d").join_waitlist(drop, "S1", 2).await, 201).await;
    assert_eq!(d["position"], 2);
    joined(app.buyer("e").join_waitlist(drop, "S1", 1).await, 201).await;
    let again = joined(app.buyer("c").join_waitlist(drop, "S1", 1).await, 200).await;
    assert_eq!(again["position"], 1, "a reload keeps the place");
    let mut c_stream = Events::mine(&app, "c").await;

    // A release: the unit is c's offer in the same transaction, with a shorter expiry, and c's
    // own stream says so.
    assert_eq!(app.buyer("a").release(&held_a).await.status(), 204);
    let offer_c = offer_of(&app, "c", drop).await;
    assert_eq!(
        (offer_c["state"].as_str(), offer_c["quantity"].as_i64()),
        (Some("active"), Some(1))
    );
    let lasts = at(&offer_c["expires_at"]) - at(&offer_c["created_at"]);
    assert_eq!(lasts, Duration::seconds(300), "half the drop's 600 s hold");
    let mut names = Vec::new();
    while names.len() < 2 {
        let event = c_stream.next().await.expect("c's stream goes on");
        assert_eq!(event.data["hold_id"], offer_c["hold_id"]);
        names.push(event.name);
    }
    assert_eq!(names, ["hold.created", "waitlist.offered"]);
    assert_eq!(app.api().available(drop, "S1").await, 0);
    expect_problem(
        app.buyer("x").hold(drop, "S1", 1, "x1").await,
        409,
        "sold-out",
    )
    .await;
    assert_eq!(
        app.buyer("d").waitlist_entry(drop, "S1").await["position"],
        1
    );

    // Expiry: b's hold and c's unconfirmed offer are due but not swept when x attempts. Their
    // units are d's (who asked for 2), not x's.
    app.clock.advance(Duration::seconds(601));
    expect_problem(
        app.buyer("x").hold(drop, "S1", 1, "x2").await,
        409,
        "sold-out",
    )
    .await;
    let offer_d = offer_of(&app, "d", drop).await;
    assert_eq!(offer_d["quantity"], 2);
    let res = app
        .buyer("d")
        .confirm(offer_d["hold_id"].as_str().expect("id"), "d-pay")
        .await;
    assert_eq!(res.status(), 201, "an offer is confirmed like any hold");

    // Restock, with a waiter at their limit: h keeps their place, i behind them is offered.
    let h = joined(app.buyer("h").join_waitlist(drop, "S1", 1).await, 201).await;
    assert_eq!(h["position"], 2, "behind e");
    joined(app.buyer("i").join_waitlist(drop, "S1", 1).await, 201).await;
    let h_s2 = hold_id(app.buyer("h").hold(drop, "S2", 2, "h-s2").await).await;
    let res = app.api().adjust_stock(drop, "S1", 2).await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.expect("json");
    let s1 = view["skus"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["sku"] == "S1"))
        .expect("S1")
        .clone();
    assert_eq!(
        s1["available"], 0,
        "the restock went to the waiters: {view}"
    );
    let offer_e = offer_of(&app, "e", drop).await;
    offer_of(&app, "i", drop).await;
    let h = app.buyer("h").waitlist_entry(drop, "S1").await;
    assert_eq!(
        (h["state"].as_str(), h["position"].as_i64()),
        (Some("waiting"), Some(1))
    );

    // Room again (h lets go of S2), then a unit freed: h's turn.
    assert_eq!(app.buyer("h").release(&h_s2).await.status(), 204);
    let e_hold = offer_e["hold_id"].as_str().expect("id");
    assert_eq!(app.buyer("e").release(e_hold).await.status(), 204);
    assert_eq!(offer_of(&app, "h", drop).await["quantity"], 1);

    // Leaving: once, then the entry as it is; someone never on the list is told so.
    joined(app.buyer("j").join_waitlist(drop, "S1", 1).await, 201).await;
    let left = app.buyer("j").leave_waitlist(drop, "S1").await;
    assert_eq!(left.status(), 200);
    assert_eq!(left.json::<Value>().await.expect("json")["state"], "left");
    let again = app.buyer("j").leave_waitlist(drop, "S1").await;
    assert_eq!(again.json::<Value>().await.expect("json")["state"], "left");
    expect_problem(
        app.buyer("k").leave_waitlist(drop, "S1").await,
        404,
        "not-found",
    )
    .await;
    expect_problem(app.buyer("k").waitlist("nope").await, 404, "not-found").await;

    // The rest of the business heard of every offer.
    let outbox = app
        .api()
        .admin(reqwest::Method::GET, "/v1/admin/outbox", None)
        .await
        .text()
        .await
        .expect("body");
    let offered: Vec<String> = outbox
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "waitlist.offered")
        .map(|e| e["data"]["buyer"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(offered, ["c", "d", "e", "i", "h"]);

    app.writer.sync().await.expect("a batch");
    check_invariants(&open_db(&app.db_path)).expect("invariants");
    let report = app.replay(drop, &[]);
    assert_eq!(report["mismatches"], json!([]), "{report}");
    assert_eq!(report["offers"], 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_of_releases_and_attempts_leaves_every_freed_unit_to_the_waiters() {
    const UNITS: usize = 60;
    const WAITERS: usize = 80;
    const RIVALS: usize = 200;
    let app = spawn_app().await;
    let drop = "wl-stampede";
    app.create_drop(&live_drop(drop, UNITS as i64, 1)).await;
    let holds: Vec<(String, String)> = futures::stream::iter(0..UNITS)
        .map(|i| {
            let buyer = format!("holder-{i}");
            let api = app.buyer(&buyer);
            async move { (buyer, hold_id(api.hold(drop, "S1", 1, "k").await).await) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for i in 0..WAITERS {
        let entry = joined(
            app.buyer(&format!("waiter-{i}"))
                .join_waitlist(drop, "S1", 1)
                .await,
            201,
        )
        .await;
        assert_eq!(entry["position"], i + 1);
    }

    // Every holder lets go while rivals hammer the SKU.
    let releases = futures::stream::iter(holds.iter())
        .map(|(buyer, hold)| {
            let api = app.buyer(buyer);
            async move { api.release(hold).await.status().as_u16() }
        })
        .buffer_unordered(32)
        .collect::<Vec<u16>>();
    let attempts = futures::stream::iter(0..RIVALS)
        .map(|i| {
            let api = app.buyer(&format!("rival-{i}"));
            async move { api.hold(drop, "S1", 1, "r").await.status().as_u16() }
        })
        .buffer_unordered(64)
        .collect::<Vec<u16>>();
    let (released, attempted) = futures::join!(releases, attempts);
    assert!(released.iter().all(|s| *s == 204), "{released:?}");
    assert!(
        attempted.iter().all(|s| *s == 409),
        "a rival got a unit a waiter was owed: {:?}",
        attempted.iter().filter(|s| **s != 409).collect::<Vec<_>>()
    );

    // The first UNITS waiters hold an offer each; the rest wait in their order.
    let mut offered = HashSet::new();
    for i in 0..WAITERS {
        let entry = app
            .buyer(&format!("waiter-{i}"))
            .waitlist_entry(drop, "S1")
            .await;
        if i < UNITS {
            assert_eq!(entry["state"], "offered", "waiter {i}: {entry}");
            offered.insert(entry["hold_id"].as_str().expect("hold").to_owned());
        } else {
            assert_eq!(entry["state"], "waiting", "waiter {i}: {entry}");
            assert_eq!(entry["position"], i - UNITS + 1);
        }
    }
    assert_eq!(offered.len(), UNITS, "one offer hold each");
    assert_eq!(app.api().available(drop, "S1").await, 0);
    check_invariants(&open_db(&app.db_path)).expect("invariants");
    let report = app.replay(drop, &[]);
    assert_eq!(report["mismatches"], json!([]), "{report}");
    assert_eq!(report["offers"], UNITS);
    app.stop().await;
}

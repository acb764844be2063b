use chrono::Duration;
use serde_json::{json, Value};

use crate::support::api::expect_problem;
use crate::support::app::{spawn_app, start_time};
use crate::support::db::check_invariants;
use crate::support::spec::live_drop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_release_and_expiry_move_units_where_they_belong() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("life", 10, 3)).await;
    let alice = app.buyer("alice");

    let h1: Value = alice
        .hold("life", "S1", 1, "h1")
        .await
        .json()
        .await
        .expect("json");
    let h2: Value = alice
        .hold("life", "S1", 1, "h2")
        .await
        .json()
        .await
        .expect("json");
    let h3: Value = alice
        .hold("life", "S1", 1, "h3")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(app.available("life", "S1").await, 7);

    // Confirm: an order, the units sold.
    let order = alice
        .confirm(h1["hold_id"].as_str().expect("id"), "c1")
        .await;
    assert_eq!(order.status(), 201);
    let order: Value = order.json().await.expect("json");
    assert_eq!(order["hold_id"], h1["hold_id"]);
    assert_eq!(order["total"]["amount"], 18000);
    let listed = alice.orders().await;
    assert_eq!(listed["orders"][0]["order_id"], order["order_id"]);

    // Release: units back on sale; a released hold cannot be confirmed; DELETE of a confirmed is 409.
    let h2_id = h2["hold_id"].as_str().expect("id");
    let del = alice.release(h2_id).await;
    assert_eq!(del.status(), 204);
    assert_eq!(app.available("life", "S1").await, 8);
    expect_problem(alice.confirm(h2_id, "c2").await, 409, "hold-released").await;
    let h1_id = h1["hold_id"].as_str().expect("id");
    let del = alice.release(h1_id).await;
    expect_problem(del, 409, "hold-confirmed").await;

    // Expiry: move the clock past hold_seconds; the writer returns the units.
    app.clock.advance(Duration::seconds(601));
    app.writer.sync().await.expect("writer batch");
    assert_eq!(app.available("life", "S1").await, 9);
    let h3_id = h3["hold_id"].as_str().expect("id");
    let shown = alice.get_hold(h3_id).await;
    assert_eq!(
        shown.json::<Value>().await.expect("json")["state"],
        "expired"
    );
    expect_problem(alice.confirm(h3_id, "c3").await, 410, "hold-expired").await;

    check_invariants(&app.db()).expect("invariants hold");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_its_expiry_cannot_be_confirmed_even_before_the_sweeper_ran() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("late", 5, 2)).await;
    let alice = app.token("alice");
    let hold: Value = app
        .hold(&alice, "late", "S1", 1, "h")
        .await
        .json()
        .await
        .expect("json");
    app.clock.advance(Duration::seconds(600));
    let res = app
        .confirm(&alice, hold["hold_id"].as_str().expect("id"), "c")
        .await;
    expect_problem(res, 410, "hold-expired").await;
    assert_eq!(app.available("late", "S1").await, 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_outside_the_live_window_are_drop_not_live() {
    let app = spawn_app().await;
    let mut spec = live_drop("window", 5, 2);
    spec["starts_at"] = json!((start_time() + Duration::hours(1)).to_rfc3339());
    spec["ends_at"] = json!((start_time() + Duration::hours(2)).to_rfc3339());
    let created = app.create_drop(&spec).await;
    assert_eq!(created["state"], "scheduled");
    let alice = app.token("alice");

    let early = expect_problem(
        app.hold(&alice, "window", "S1", 1, "k1").await,
        409,
        "drop-not-live",
    )
    .await;
    assert_eq!(early["state"], "scheduled");

    app.clock.advance(Duration::hours(1));
    assert_eq!(
        app.hold(&alice, "window", "S1", 1, "k2").await.status(),
        201
    );

    let paused = app.patch_drop("window", json!({"state": "paused"})).await;
    assert_eq!(paused.status(), 200);
    assert_eq!(
        paused.json::<Value>().await.expect("json")["state"],
        "paused"
    );
    expect_problem(
        app.hold(&alice, "window", "S1", 1, "k3").await,
        409,
        "drop-not-live",
    )
    .await;

    assert_eq!(
        app.patch_drop("window", json!({"state": "live"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.hold(&alice, "window", "S1", 1, "k4").await.status(),
        201
    );

    app.clock.advance(Duration::hours(1));
    let late = expect_problem(
        app.hold(&alice, "window", "S1", 1, "k5").await,
        409,
        "drop-not-live",
    )
    .await;
    assert_eq!(late["state"], "closed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_close_is_final() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("closing", 5, 2)).await;
    let alice = app.token("alice");
    assert_eq!(
        app.patch_drop("closing", json!({"state": "closed"}))
            .await
            .status(),
        200
    );
    expect_problem(
        app.hold(&alice, "closing", "S1", 1, "k").await,
        409,
        "drop-not-live",
    )
    .await;
    let reopen = app.patch_drop("closing", json!({"state": "live"})).await;
    expect_problem(reopen, 409, "invalid-state-transition").await;

    // A drop closed by its schedule cannot be reopened by moving its end either.
    app.create_drop(&live_drop("ended", 5, 2)).await;
    app.clock.advance(Duration::hours(3));
    let later = (start_time() + Duration::hours(5)).to_rfc3339();
    let extend = app.patch_drop("ended", json!({"ends_at": later})).await;
    expect_problem(extend, 409, "invalid-state-transition").await;
    let renamed = app.patch_drop("ended", json!({"name": "Ended drop"})).await;
    assert_eq!(renamed.status(), 200);
    expect_problem(
        app.hold(&alice, "ended", "S1", 1, "k2").await,
        409,
        "drop-not-live",
    )
    .await;
    app.stop().await;
}

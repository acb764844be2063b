//! What the hot path's memory must never change: one key gets one answer (also for refusals
//! given from memory), a replay is the first answer byte for byte, due holds count for nothing
//! before the sweep reaches them, and keys are forgotten only after the retention window.

use std::time::Duration as StdDuration;

use chrono::Duration;
use serde_json::{json, Value};

use crate::support::api::expect_problem;
use crate::support::app::{spawn_app, spawn_app_with, start_time, TestApp};
use crate::support::db::check_invariants;
use crate::support::spec::live_drop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_answer_from_memory_is_the_answer_for_its_key_even_after_a_release() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("mem", 1, 1)).await;
    let (alice, bob) = (app.buyer("alice"), app.buyer("bob"));
    let hold: Value = alice
        .hold("mem", "S1", 1, "a1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(app.available("mem", "S1").await, 0);

    // Refused from memory (the writer never sees it, nothing is written).
    let first = bob.hold("mem", "S1", 1, "b1").await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = expect_problem(first, 409, "sold-out").await;

    let released = alice.release(hold["hold_id"].as_str().expect("id")).await;
    assert_eq!(released.status(), 204);
    assert_eq!(app.available("mem", "S1").await, 1);

    // A unit is free again, but this key already had its answer.
    let retry = bob.hold("mem", "S1", 1, "b1").await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(expect_problem(retry, 409, "sold-out").await, first_body);
    let other_body = bob.hold("mem", "S1", 2, "b1").await;
    expect_problem(other_body, 422, "idempotency-key-reused").await;
    assert_eq!(app.available("mem", "S1").await, 1, "nothing was held");

    // A new key is a new attempt.
    assert_eq!(bob.hold("mem", "S1", 1, "b2").await.status(), 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_replay_shows_the_hold_as_first_answered_after_it_was_confirmed() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("replay", 5, 2)).await;
    let alice = app.token("alice");
    let first = app.hold(&alice, "replay", "S1", 1, "h1").await;
    assert_eq!(first.status(), 201);
    let first_body = first.text().await.expect("body");
    let hold: Value = serde_json::from_str(&first_body).expect("json");
    let hold_id = hold["hold_id"].as_str().expect("id");

    let order = app.confirm(&alice, hold_id, "c1").await;
    assert_eq!(order.status(), 201);
    let order_body = order.text().await.expect("body");
    // The record keeps facts, not the rendered answer; what it rebuilds is the first answer.
    let again = app.hold(&alice, "replay", "S1", 1, "h1").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.expect("body"), first_body);
    let again = app.confirm(&alice, hold_id, "c1").await;
    assert_eq!(again.text().await.expect("body"), order_body);

    // A recorded refusal replays with its original figures, whatever the state is now.
    let refused = app.hold(&alice, "replay", "S1", 2, "h2").await;
    let refused_body = expect_problem(refused, 409, "limit-exceeded").await;
    assert_eq!(refused_body["used"], 1);
    let released = app.hold(&alice, "replay", "S1", 2, "h2").await;
    assert_eq!(released.headers()["idempotent-replayed"], "true");
    assert_eq!(
        expect_problem(released, 409, "limit-exceeded").await,
        refused_body
    );
    app.stop().await;
}

/// Holds for `buyers` buyers, one unit each, on a drop of exactly that stock and a limit of one.
async fn fill(app: &TestApp, drop: &str, buyers: usize) -> Vec<String> {
    app.create_drop(&live_drop(drop, buyers as i64, 1)).await;
    let mut tokens = Vec::new();
    for b in 0..buyers {
        let token = app.token(&format!("buyer-{b}"));
        let res = app.hold(&token, drop, "S1", 1, &format!("first-{b}")).await;
        assert_eq!(res.status(), 201);
        tokens.push(token);
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_holds_count_for_nothing_before_the_sweep_reaches_them() {
    // A sweep of 2 per batch: after a mass expiry most due holds wait several batches.
    let app = spawn_app_with(|s| s.sweep_limit = 2).await;
    let tokens = fill(&app, "due", 40).await;
    assert_eq!(app.available("due", "S1").await, 0);
    app.clock.advance(Duration::seconds(601));

    // The last buyers' holds are the last the sweep reaches: their buyers are not over the
    // limit, and their units are not held.
    for (b, token) in tokens.iter().enumerate().skip(30).rev() {
        let res = app.hold(token, "due", "S1", 1, &format!("again-{b}")).await;
        assert_eq!(res.status(), 201, "buyer {b} whose hold is due");
    }
    let newcomer = app.token("newcomer");
    let res = app.hold(&newcomer, "due", "S1", 1, "new").await;
    assert_eq!(res.status(), 201, "units of due holds are on sale");
    check_invariants(&app.db()).expect("invariants");

    // Everything due ends; the new holds stand.
    app.writer.sync().await.expect("batch");
    for _ in 0..40 {
        app.writer.sync().await.expect("batch");
    }
    let active: i64 = app
        .db()
        .query_row(
            "SELECT COUNT(*) FROM holds WHERE drop_id = 'due' AND state = 'active'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(active, 11);
    assert_eq!(app.available("due", "S1").await, 40 - 11);
    check_invariants(&app.db()).expect("invariants");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_forgotten_only_after_the_retention_window() {
    let app = spawn_app_with(|s| s.idempotency_retention = StdDuration::from_secs(60)).await;
    app.create_drop(&live_drop("keep", 10, 5)).await;
    let alice = app.token("alice");
    assert_eq!(app.hold(&alice, "keep", "S1", 1, "k").await.status(), 201);
    let records = || -> i64 {
        app.db()
            .query_row("SELECT COUNT(*) FROM idempotency_keys", [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(records(), 1);

    app.clock.advance(Duration::seconds(59));
    tokio::time::sleep(StdDuration::from_millis(1_500)).await;
    let reused = app.hold(&alice, "keep", "S1", 2, "k").await;
    expect_problem(reused, 422, "idempotency-key-reused").await;
    assert_eq!(records(), 1, "inside the window the record stays");

    app.clock.advance(Duration::seconds(2));
    let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
    while records() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired record was not deleted"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    // Past the window the key is new again.
    let fresh = app.hold(&alice, "keep", "S1", 2, "k").await;
    assert_eq!(fresh.status(), 201);
    assert!(fresh.headers().get("idempotent-replayed").is_none());
    let body: Value = fresh.json().await.expect("json");
    assert_eq!(body["quantity"], json!(2));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_ids_carry_the_box_and_a_secret_that_is_checked() {
    let app = spawn_app_with(|s| s.box_id = Some("eu1".into())).await;
    app.create_drop(&live_drop("boxed", 10, 5)).await;
    let alice = app.buyer("alice");
    let hold: Value = alice
        .hold("boxed", "S1", 1, "k1")
        .await
        .json()
        .await
        .expect("json");
    let id = hold["hold_id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("hld_eu1_"), "{id}");
    assert_eq!(alice.get_hold(&id).await.status(), 200);
    // The same number with another secret, or under another box, names no hold.
    let (numbered, secret) = id.rsplit_once('-').expect("secret part");
    let guessed = format!(
        "{numbered}-{:016x}",
        u64::from_str_radix(secret, 16).expect("hex") ^ 1
    );
    expect_problem(alice.get_hold(&guessed).await, 404, "not-found").await;
    let other_box = id.replacen("hld_eu1_", "hld_us1_", 1);
    expect_problem(alice.get_hold(&other_box).await, 404, "not-found").await;
    let stored: String = app
        .db()
        .query_row("SELECT id FROM holds", [], |r| r.get(0))
        .expect("the database derives the same id");
    assert_eq!(stored, id);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_numbered_holds_keeps_its_ids_and_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join(dropd::app::DB_FILE);
    let start = start_time().timestamp_millis();
    {
        let conn = rusqlite::Connection::open(&db).expect("db");
        conn.execute_batch(include_str!("../../src/store/migrations/0001_initial.sql"))
            .expect("schema version 1");
        conn.execute_batch(&format!(
            "PRAGMA user_version = 1;
             INSERT INTO drops (id, name, starts_at, ends_at, per_buyer_limit, hold_seconds,
                                attempt_seq, created_at)
                 VALUES ('old', 'Old', {a}, {b}, 5, 600, 2, {a});
             INSERT INTO skus (drop_id, sku, name, price_amount, currency, position, stock_total,
                               held, sold)
                 VALUES ('old', 'S1', 'S1', 1000, 'EUR', 0, 10, 1, 1);
             INSERT INTO holds (id, drop_id, sku, buyer, quantity, attempt_seq, state, created_at,
                                expires_at)
                 VALUES ('hld_0190c1c2d3e4f5a6b7c8d9e0f1a2b3c4', 'old', 'S1', 'alice', 1, 1,
                         'active', {s}, {e}),
                        ('hld_0190c1c2d3e4f5a6b7c8d9e0f1a2b3c5', 'old', 'S1', 'alice', 1, 2,
                         'confirmed', {s}, {e});
             INSERT INTO orders (id, hold_id, drop_id, sku, buyer, quantity, unit_amount, currency,
                                 total_amount, payment_ref, created_at)
                 VALUES ('ord_old', 'hld_0190c1c2d3e4f5a6b7c8d9e0f1a2b3c5', 'old', 'S1', 'alice',
                         1, 1000, 'EUR', 1000, 'pi_old', {s});",
            a = start - 60_000,
            b = start + 7_200_000,
            s = start - 1_000,
            e = start + 599_000,
        ))
        .expect("old rows");
    }
    let data_dir = dir.path().to_owned();
    let app = spawn_app_with(move |s| s.data_dir = data_dir).await;
    let alice = app.buyer("alice");
    for (id, state) in [
        ("hld_0190c1c2d3e4f5a6b7c8d9e0f1a2b3c4", "active"),
        ("hld_0190c1c2d3e4f5a6b7c8d9e0f1a2b3c5", "confirmed"),
    ] {
        let res = alice.get_hold(id).await;
        assert_eq!(res.status(), 200, "{id}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["state"], state);
    }
    let order: Value = alice.get_order("ord_old").await.json().await.expect("json");
    assert_eq!(order["hold_id"], "hld_0190c1c2d3e4f5a6b7c8d9e0f1a2b3c5");
    let order = alice
        .confirm("hld_0190c1c2d3e4f5a6b7c8d9e0f1a2b3c4", "c-new")
        .await;
    assert_eq!(order.status(), 201);
    check_invariants(&app.db()).expect("invariants");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_replay_is_still_the_first_answer_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_owned();
    let first_app = spawn_app_with({
        let data_dir = data_dir.clone();
        move |s| s.data_dir = data_dir
    })
    .await;
    first_app.create_drop(&live_drop("again", 3, 2)).await;
    let alice = first_app.token("alice");
    let held = first_app.hold(&alice, "again", "S1", 1, "h1").await;
    assert_eq!(held.status(), 201);
    let held_body = held.text().await.expect("body");
    let refused = first_app.hold(&alice, "again", "S1", 2, "h2").await;
    let refused_body = expect_problem(refused, 409, "limit-exceeded").await;
    first_app.stop().await;

    // Memory starts empty: the keys come back from the records, the answers from the rows.
    let app = spawn_app_with(move |s| s.data_dir = data_dir).await;
    let alice = app.token("alice");
    let replay = app.hold(&alice, "again", "S1", 1, "h1").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.expect("body"), held_body);
    let replay = app.hold(&alice, "again", "S1", 2, "h2").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        expect_problem(replay, 409, "limit-exceeded").await,
        refused_body
    );
    let reused = app.hold(&alice, "again", "S1", 2, "h1").await;
    expect_problem(reused, 422, "idempotency-key-reused").await;
    assert_eq!(
        app.available("again", "S1").await,
        2,
        "nothing was held twice"
    );
    app.stop().await;
}

use serde_json::json;

use crate::support::api::expect_problem;
use crate::support::app::spawn_app;
use crate::support::db::table_counts;
use crate::support::spec::live_drop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_and_body_replays_the_first_answer_and_writes_nothing() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("idem", 10, 2)).await;
    let token = app.token("alice");

    let first = app.hold(&token, "idem", "S1", 1, "key-1").await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.text().await.expect("body");
    let before = table_counts(&app.db());

    let again = app.hold(&token, "idem", "S1", 1, "key-1").await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.expect("body"), first_body);
    assert_eq!(table_counts(&app.db()), before);
    assert_eq!(app.available("idem", "S1").await, 9);

    // The same key for another buyer is another request.
    let bob = app.token("bob");
    assert_eq!(app.hold(&bob, "idem", "S1", 1, "key-1").await.status(), 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_key_with_another_body_is_refused_and_a_missing_key_is_400() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("idem2", 10, 2)).await;
    let token = app.token("alice");
    assert_eq!(app.hold(&token, "idem2", "S1", 1, "k").await.status(), 201);
    let before = table_counts(&app.db());

    let other = app.hold(&token, "idem2", "S1", 2, "k").await;
    expect_problem(other, 422, "idempotency-key-reused").await;

    let missing = app
        .client
        .post(app.url("/v1/drops/idem2/holds"))
        .bearer_auth(&token)
        .json(&json!({"sku": "S1", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    expect_problem(missing, 400, "idempotency-key-missing").await;
    assert_eq!(table_counts(&app.db()), before);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_replayed_too_and_confirmation_is_idempotent() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("idem3", 2, 2)).await;
    let (alice, bob) = (app.buyer("alice"), app.buyer("bob"));
    let hold: serde_json::Value = alice
        .hold("idem3", "S1", 1, "a1")
        .await
        .json()
        .await
        .expect("json");
    // One unit left, two asked: the writer decides, and records the decision.
    let refused = bob.hold("idem3", "S1", 2, "b1").await;
    let refused_body = expect_problem(refused, 409, "sold-out").await;

    // Stock comes back, but the key already has its outcome.
    let hold_id = hold["hold_id"].as_str().expect("hold id");
    let released = alice.release(hold_id).await;
    assert_eq!(released.status(), 204);
    let replay = bob.hold("idem3", "S1", 2, "b1").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(expect_problem(replay, 409, "sold-out").await, refused_body);

    let fresh: serde_json::Value = bob
        .hold("idem3", "S1", 1, "b2")
        .await
        .json()
        .await
        .expect("json");
    let hold_id = fresh["hold_id"].as_str().expect("hold id");
    let order = bob.confirm(hold_id, "c1").await;
    assert_eq!(order.status(), 201);
    let order_body = order.text().await.expect("body");
    let again = bob.confirm(hold_id, "c1").await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.text().await.expect("body"), order_body);
    let orders: i64 = app
        .db()
        .query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
        .expect("count");
    assert_eq!(orders, 1);
    app.stop().await;
}

use serde_json::{json, Value};

use crate::support::api::{expect_problem, token_for};
use crate::support::app::spawn_app;
use crate::support::spec::live_drop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyers_need_a_valid_token() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("auth", 5, 2)).await;
    let url = app.url("/v1/drops/auth/holds");
    let body = json!({"sku": "S1", "quantity": 1});

    let none = app
        .client
        .post(&url)
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    expect_problem(none, 401, "unauthorized").await;

    let foreign = dropd::auth::TokenKeys::new(&[9u8; 32]).expect("keys");
    let forged = token_for(&foreign, "mallory");
    let res = app
        .client
        .post(&url)
        .bearer_auth(forged)
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await
        .expect("sent");
    expect_problem(res, 401, "unauthorized").await;

    let garbage = app
        .client
        .post(&url)
        .bearer_auth("not-a-token")
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await
        .expect("sent");
    expect_problem(garbage, 401, "unauthorized").await;
    assert_eq!(app.available("auth", "S1").await, 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_buyers_hold_or_order_is_not_found() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("mine", 5, 2)).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let hold: Value = app
        .hold(&alice, "mine", "S1", 1, "h")
        .await
        .json()
        .await
        .expect("json");
    let hold_id = hold["hold_id"].as_str().expect("id").to_owned();

    let peek = app
        .client
        .get(app.url(&format!("/v1/holds/{hold_id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("sent");
    expect_problem(peek, 404, "not-found").await;
    expect_problem(app.confirm(&bob, &hold_id, "c").await, 404, "not-found").await;
    let del = app
        .client
        .delete(app.url(&format!("/v1/holds/{hold_id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("sent");
    expect_problem(del, 404, "not-found").await;

    let order: Value = app
        .confirm(&alice, &hold_id, "c")
        .await
        .json()
        .await
        .expect("json");
    let order_id = order["order_id"].as_str().expect("id");
    let peek = app
        .client
        .get(app.url(&format!("/v1/orders/{order_id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("sent");
    expect_problem(peek, 404, "not-found").await;
    let own = app
        .client
        .get(app.url(&format!("/v1/orders/{order_id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("sent");
    assert_eq!(own.status(), 200);
    let bobs: Value = app
        .client
        .get(app.url("/v1/orders"))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(bobs["orders"], json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_buyer_tokens_and_bad_keys() {
    let app = spawn_app().await;
    let spec = live_drop("adm", 5, 2);
    let url = app.url("/v1/admin/drops");
    let buyer = app
        .client
        .post(&url)
        .bearer_auth(app.token("alice"))
        .json(&spec)
        .send()
        .await
        .expect("sent");
    expect_problem(buyer, 403, "forbidden").await;
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("dak_0000")
        .json(&spec)
        .send()
        .await
        .expect("sent");
    expect_problem(wrong, 401, "unauthorized").await;
    let none = app
        .client
        .post(&url)
        .json(&spec)
        .send()
        .await
        .expect("sent");
    expect_problem(none, 401, "unauthorized").await;
    let lookup = app
        .client
        .get(app.url("/v1/drops/adm"))
        .send()
        .await
        .expect("sent");
    expect_problem(lookup, 404, "not-found").await;
    app.stop().await;
}

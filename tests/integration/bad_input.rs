use serde_json::json;

use crate::support::api::expect_problem;
use crate::support::app::{spawn_app, TestApp};
use crate::support::db::table_counts;
use crate::support::spec::live_drop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hold_requests_get_documented_problems_and_change_nothing() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("bad", 5, 2)).await;
    let token = app.token("alice");
    let before = table_counts(&app.db());
    let sku_state = |app: &TestApp| -> (i64, i64) {
        app.db()
            .query_row(
                "SELECT held, sold FROM skus WHERE drop_id = 'bad'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("sku row")
    };

    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "malformed json",
            r#"{"sku": "S1", "quantity": "#.into(),
            400,
            "malformed-json",
        ),
        ("not an object", "[1, 2]".into(), 422, "validation-failed"),
        (
            "unknown field",
            r#"{"sku": "S1", "quantity": 1, "price": 0}"#.into(),
            422,
            "validation-failed",
        ),
        (
            "missing field",
            r#"{"sku": "S1"}"#.into(),
            422,
            "validation-failed",
        ),
        (
            "quantity zero",
            r#"{"sku": "S1", "quantity": 0}"#.into(),
            422,
            "validation-failed",
        ),
        (
            "negative",
            r#"{"sku": "S1", "quantity": -1}"#.into(),
            422,
            "validation-failed",
        ),
        (
            "above the limit",
            r#"{"sku": "S1", "quantity": 3}"#.into(),
            422,
            "validation-failed",
        ),
        (
            "not an integer",
            r#"{"sku": "S1", "quantity": 1.5}"#.into(),
            422,
            "validation-failed",
        ),
        (
            "huge",
            r#"{"sku": "S1", "quantity": 99999999999999999999999}"#.into(),
            422,
            "validation-failed",
        ),
        (
            "a string",
            r#"{"sku": "S1", "quantity": "1"}"#.into(),
            422,
            "validation-failed",
        ),
        (
            "unknown sku",
            r#"{"sku": "NOPE", "quantity": 1}"#.into(),
            422,
            "unknown-sku",
        ),
        (
            "oversize body",
            format!(r#"{{"sku": "{}", "quantity": 1}}"#, "x".repeat(200_000)),
            413,
            "payload-too-large",
        ),
    ];
    for (i, (name, body, status, code)) in cases.into_iter().enumerate() {
        let res = app
            .client
            .post(app.url("/v1/drops/bad/holds"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("case-{i}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), status, "case {name}");
        expect_problem(res, status, code).await;
    }

    let wrong_type = app
        .client
        .post(app.url("/v1/drops/bad/holds"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "text")
        .header("Content-Type", "text/plain")
        .body(r#"{"sku": "S1", "quantity": 1}"#)
        .send()
        .await
        .expect("sent");
    expect_problem(wrong_type, 415, "unsupported-media-type").await;
    let bad_key = app.hold(&token, "bad", "S1", 1, "has space").await;
    expect_problem(bad_key, 400, "idempotency-key-invalid").await;
    let no_drop = app.hold(&token, "no-such-drop", "S1", 1, "k").await;
    expect_problem(no_drop, 404, "not-found").await;
    let bad_path = app.hold(&token, "NOT_A_SLUG", "S1", 1, "k").await;
    expect_problem(bad_path, 404, "not-found").await;

    assert_eq!(table_counts(&app.db()), before);
    assert_eq!(sku_state(&app), (0, 0));

    // A request that was refused for its shape can be fixed and sent again under the same key.
    assert_eq!(
        app.hold(&token, "bad", "S1", 1, "case-6").await.status(),
        201
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_get_documented_problems_and_change_nothing() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("adm-bad", 5, 2)).await;
    let before = table_counts(&app.db());
    let post = |spec: serde_json::Value| {
        app.client
            .post(app.url("/v1/admin/drops"))
            .bearer_auth(&app.admin_key)
            .json(&spec)
            .send()
    };

    expect_problem(
        post(live_drop("adm-bad", 5, 2)).await.expect("sent"),
        409,
        "drop-exists",
    )
    .await;
    expect_problem(
        post(live_drop("Bad Id", 5, 2)).await.expect("sent"),
        422,
        "validation-failed",
    )
    .await;
    let mut backwards = live_drop("backwards", 5, 2);
    backwards["ends_at"] = backwards["starts_at"].clone();
    expect_problem(
        post(backwards).await.expect("sent"),
        422,
        "validation-failed",
    )
    .await;
    let mut no_limit = live_drop("nolimit", 5, 2);
    no_limit["per_buyer_limit"] = json!(0);
    expect_problem(
        post(no_limit).await.expect("sent"),
        422,
        "validation-failed",
    )
    .await;
    let mut bad_money = live_drop("money", 5, 2);
    bad_money["skus"][0]["price"] = json!({"amount": 10.5, "currency": "EUR"});
    expect_problem(
        post(bad_money).await.expect("sent"),
        422,
        "validation-failed",
    )
    .await;
    let mut bad_currency = live_drop("money2", 5, 2);
    bad_currency["skus"][0]["price"] = json!({"amount": 10, "currency": "euro"});
    expect_problem(
        post(bad_currency).await.expect("sent"),
        422,
        "validation-failed",
    )
    .await;
    let mut dup = live_drop("dup", 5, 2);
    dup["skus"] = json!([dup["skus"][0].clone(), dup["skus"][0].clone()]);
    expect_problem(post(dup).await.expect("sent"), 422, "validation-failed").await;

    let patch = app
        .patch_drop("adm-bad", json!({"state": "scheduled"}))
        .await;
    expect_problem(patch, 409, "invalid-state-transition").await;
    let patch = app.patch_drop("adm-bad", json!({"colour": "red"})).await;
    expect_problem(patch, 422, "validation-failed").await;
    let patch = app.patch_drop("missing", json!({"name": "x"})).await;
    expect_problem(patch, 404, "not-found").await;

    assert_eq!(table_counts(&app.db()), before);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_problems() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/nowhere"))
        .send()
        .await
        .expect("sent");
    expect_problem(res, 404, "not-found").await;
    let res = app
        .client
        .put(app.url("/v1/drops"))
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_client_error());
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_path_with_another_method_is_405_naming_the_allowed_ones() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("m", 5, 1)).await;
    for (method, path, allow) in [
        ("TRACE", "/v1/drops", "GET, HEAD"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("GET", "/v1/drops/m/holds", "POST"),
        ("PUT", "/v1/holds/hld_1-00", "GET, HEAD, DELETE"),
        ("POST", "/v1/admin/drops/m", "PATCH"),
    ] {
        let res = app
            .client
            .request(method.parse().expect("method"), app.url(path))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        expect_problem(res, 405, "method-not-allowed").await;
    }
    let unknown = app
        .client
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .expect("sent");
    expect_problem(unknown, 404, "not-found").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_wherever_get_does_without_a_body() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("h", 5, 1)).await;
    for path in ["/v1/drops/h", "/v1/drops", "/healthz", "/openapi.json", "/"] {
        let got = app.client.get(app.url(path)).send().await.expect("sent");
        let head = app.client.head(app.url(path)).send().await.expect("sent");
        assert_eq!(head.status(), got.status(), "{path}");
        assert_eq!(
            head.headers().get("content-type"),
            got.headers().get("content-type"),
            "{path}"
        );
        assert!(
            head.bytes().await.expect("body").is_empty(),
            "{path}: HEAD has no body"
        );
    }
    app.stop().await;
}

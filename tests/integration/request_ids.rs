use serde_json::Value;

use crate::support::api::{buyer_token, client};
use crate::support::app::spawn_app;
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::{live_drop, live_spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_comes_back_in_the_header_and_in_problem_bodies() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("rid", 0, 1)).await;
    let res = app
        .client
        .get(app.url("/v1/drops/rid"))
        .header("X-Request-Id", "trace-4bf92f35")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.headers()["x-request-id"], "trace-4bf92f35");
    // A refusal (here sold-out, answered from memory) names the request it refuses.
    let res = app
        .client
        .post(app.url("/v1/drops/rid/holds"))
        .bearer_auth(app.token("alice"))
        .header("Idempotency-Key", "k")
        .header("X-Request-Id", "trace-sold-out")
        .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 409);
    assert_eq!(res.headers()["x-request-id"], "trace-sold-out");
    let problem: Value = res.json().await.expect("problem");
    assert_eq!(problem["request_id"], "trace-sold-out");
    assert_eq!(problem["code"], "sold-out");
    // No id, or one that is not sane: the server makes one.
    for sent in [None, Some("has spaces in it"), Some("quote\"d")] {
        let mut req = app.client.get(app.url("/v1/nothing"));
        if let Some(id) = sent {
            req = req.header("X-Request-Id", id);
        }
        let res = req.send().await.expect("sent");
        let id = res.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(id.len() == 32 && Some(id.as_str()) != sent, "{id}");
        let problem: Value = res.json().await.expect("problem");
        assert_eq!(problem["request_id"], id.as_str());
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_one_access_line_with_its_id_route_and_caller_and_no_credential() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = create_admin_key(dir.path());
    let log = dir.path().join("server.log");
    let server = ServerProcess::start_logging(
        dir.path(),
        &[],
        &[("DROPD_LOG", "info"), ("DROPD_LOG_FORMAT", "json")],
        &log,
    );
    let http = client();
    server
        .api(&http)
        .with_admin_key(&admin)
        .create_drop(&live_spec("logged"))
        .await;
    let token = buyer_token("alice");
    let res = http
        .post(format!("{}/v1/drops/logged/holds", server.base))
        .bearer_auth(&token)
        .header("Idempotency-Key", "k")
        .header("X-Request-Id", "hold-1")
        .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    server.terminate();
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "dropd::access")
        .collect();
    let hold = access
        .iter()
        .find(|l| l["span"]["request_id"] == "hold-1")
        .unwrap_or_else(|| panic!("no access line for hold-1 in {text}"));
    assert_eq!(hold["fields"]["route"], "/v1/drops/{drop}/holds");
    assert_eq!(hold["fields"]["method"], "POST");
    assert_eq!(hold["fields"]["status"], 201);
    assert_eq!(hold["fields"]["buyer"], "alice");
    assert!(hold["fields"]["ms"].as_f64().is_some());
    let create = access
        .iter()
        .find(|l| l["fields"]["route"] == "/v1/admin/drops")
        .expect("the admin request's line");
    assert!(
        create["fields"]["admin_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("ak_")),
        "{create}"
    );
    assert_eq!(
        access
            .iter()
            .filter(|l| l["span"]["request_id"] == "hold-1")
            .count(),
        1,
        "one line per request"
    );
    assert!(!text.contains(&token), "a token never reaches the log");
    assert!(!text.contains(&admin), "an admin key never reaches the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_under_the_same_request_id_gets_the_first_refusal_byte_for_byte() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("again", 5, 1)).await;
    let alice = app.token("alice");
    let held = app.hold(&alice, "again", "S1", 1, "first").await;
    assert_eq!(held.status(), 201);
    let attempt = || {
        app.client
            .post(app.url("/v1/drops/again/holds"))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "second")
            .header("X-Request-Id", "retry-me")
            .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
            .send()
    };
    let first = attempt().await.expect("sent");
    assert_eq!(first.status(), 409);
    let first = first.bytes().await.expect("body");
    let again = attempt().await.expect("sent");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.bytes().await.expect("body"), first, "the same bytes");
    app.stop().await;
}

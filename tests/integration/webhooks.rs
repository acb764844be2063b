//! Sales reach the rest of the business: the outbox is written with each change, and webhooks
//! deliver it at least once, in order per endpoint, signed, past failures, hangs and crashes,
//! to a real HTTP receiver on 127.0.0.1.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::api::{client, expect_problem, Api};
use crate::support::app::spawn_app_with;
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::receiver::{signature_verifies, Receiver, Reply};
use crate::support::spec::live_spec;

/// Retries come quickly, so a test sees several in well under a second.
const FAST: &[&str] = &[
    "--webhook-backoff",
    "20ms",
    "--webhook-backoff-max",
    "100ms",
];

/// A real server with fast retries (and `extra` flags) and a live drop `hooked`: its data
/// directory, the server, an HTTP client and the admin API.
async fn hooked_server(extra: &[&str]) -> (tempfile::TempDir, ServerProcess, reqwest::Client, Api) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = create_admin_key(dir.path());
    let mut args = FAST.to_vec();
    args.extend(extra);
    let server = ServerProcess::start_with(dir.path(), &args, &[]);
    let http = client();
    let admin = server.api(&http).with_admin_key(&key);
    admin.create_drop(&live_spec("hooked")).await;
    (dir, server, http, admin)
}

async fn add_webhook(admin: &Api, url: &str, events: Value) -> Value {
    let res = admin
        .admin(
            Method::POST,
            "/v1/admin/webhooks",
            Some(&json!({"url": url, "events": events})),
        )
        .await;
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    res.json().await.expect("json")
}

async fn admin_json(admin: &Api, path: &str) -> Value {
    let res = admin.admin(Method::GET, path, None).await;
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.expect("json")
}

/// The outbox as the export lists it.
async fn outbox(admin: &Api) -> Vec<Value> {
    let res = admin.admin(Method::GET, "/v1/admin/outbox", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    res.text()
        .await
        .expect("body")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Holds, a confirmation and a release: five events of three kinds.
async fn some_sales(server: &ServerProcess, http: &reqwest::Client) -> usize {
    let buyer = server.api(http).buyer("webhook-buyer");
    let holds = buyer.hold_many("hooked", "k", 3).await;
    assert_eq!(buyer.confirm(&holds[0], "c0").await.status(), 201);
    assert_eq!(buyer.release(&holds[1]).await.status(), 204);
    5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_gets_every_event_once_in_order_and_signed_after_it_recovers() {
    let (_dir, server, http, admin) = hooked_server(&[]).await;
    let receiver = Receiver::start(vec![Reply::Status(500); 5], Reply::Status(200)).await;
    let hook = add_webhook(&admin, &receiver.url, json!(["*"])).await;
    let secret = hook["secret"].as_str().expect("a secret shown once");
    assert!(secret.starts_with("whsec_"));
    let n = some_sales(&server, &http).await;

    let got = receiver.until_accepted(n, Duration::from_secs(20)).await;
    let accepted: Vec<_> = got.iter().filter(|r| r.accepted).collect();
    assert_eq!(got.len(), n + 5, "five refusals, then each event once");
    assert!(got[..6].iter().all(|r| r.event_id == got[0].event_id));
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for r in &accepted {
        *per_id.entry(&r.event_id).or_default() += 1;
    }
    assert!(per_id.values().all(|&c| c == 1), "{per_id:?}");
    for r in &got {
        assert!(
            signature_verifies(secret, &r.signature, &r.body),
            "{}",
            r.signature
        );
        let body: Value = serde_json::from_str(&r.body).expect("a JSON body");
        assert_eq!(body["id"], r.event_id.as_str());
        assert_eq!(body["type"], r.event_type.as_str());
    }
    // The order of the outbox, which is the order of the commits.
    let events = outbox(&admin).await;
    let ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    let delivered: Vec<&str> = accepted.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(delivered, ids);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "hold.created",
            "hold.created",
            "hold.created",
            "order.created",
            "hold.released"
        ]
    );
    // The endpoint's cursor reaches the last event.
    let last = events.last().expect("events")["seq"].as_i64().expect("seq");
    let mut cursor = 0;
    for _ in 0..100 {
        let list = admin_json(&admin, "/v1/admin/webhooks").await;
        cursor = list["webhooks"][0]["delivered_seq"]
            .as_i64()
            .expect("cursor");
        if cursor == last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cursor, last);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_times_out_and_is_retried_without_delaying_another() {
    let (_dir, server, http, admin) = hooked_server(&["--webhook-timeout", "700ms"]).await;
    let hanging = Receiver::start(vec![Reply::Hang], Reply::Status(200)).await;
    let healthy = Receiver::start(Vec::new(), Reply::Status(200)).await;
    add_webhook(&admin, &hanging.url, json!(["hold.created"])).await;
    add_webhook(&admin, &healthy.url, json!(["hold.created"])).await;
    let buyer = server.api(&http).buyer("patient");
    buyer.hold_many("hooked", "h", 1).await;

    let slow = hanging.until_accepted(1, Duration::from_secs(20)).await;
    let fast = healthy.until_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(slow.len(), 2, "the hung attempt, then the retry");
    assert_eq!(slow[0].event_id, slow[1].event_id);
    assert!(!slow[0].accepted && slow[1].accepted);
    assert!(
        slow[1].at.duration_since(slow[0].at) >= Duration::from_millis(700),
        "the retry came after the timeout"
    );
    assert_eq!(fast.len(), 1);
    assert_eq!(fast[0].event_id, slow[0].event_id);
    assert!(
        fast[0].at < slow[1].at,
        "the healthy endpoint was served while the other hung"
    );
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_past_its_attempts_is_dead_lettered_and_a_manual_retry_delivers_it() {
    let (_dir, server, http, admin) = hooked_server(&["--webhook-max-attempts", "3"]).await;
    let receiver = Receiver::start(vec![Reply::Status(500); 3], Reply::Status(200)).await;
    let hook = add_webhook(&admin, &receiver.url, json!(["hold.created"])).await;
    let id = hook["id"].as_str().expect("id");
    let buyer = server.api(&http).buyer("unlucky");
    buyer.hold_many("hooked", "first", 1).await;
    // Later events are not held up by the dead one.
    buyer.hold_many("hooked", "second", 1).await;
    let got = receiver.until_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 4, "three failed attempts, then the next event");
    let dead_id = got[0].event_id.clone();
    assert_ne!(got[3].event_id, dead_id);

    let letters = admin_json(&admin, &format!("/v1/admin/webhooks/{id}/dead-letters")).await;
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["event_id"], dead_id.as_str());
    assert_eq!(letter["state"], "dead");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["last_error"], "HTTP 500");

    let retry = format!("/v1/admin/webhooks/{id}/dead-letters/{dead_id}/retry");
    let res = admin.admin(Method::POST, &retry, None).await;
    assert_eq!(res.status(), 202);
    let got = receiver.until_accepted(2, Duration::from_secs(20)).await;
    let retried = got.last().expect("the retry");
    assert_eq!(retried.event_id, dead_id);
    assert_eq!(retried.body, got[0].body, "the same event, byte for byte");
    let mut state = String::new();
    for _ in 0..100 {
        let letters = admin_json(&admin, &format!("/v1/admin/webhooks/{id}/dead-letters")).await;
        state = letters["dead_letters"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if state == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "delivered");
    // A letter that is not dead cannot be retried.
    let res = admin.admin(Method::POST, &retry, None).await;
    expect_problem(res, 404, "not-found").await;
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pending_at_a_sigkill_are_made_after_the_restart() {
    let (dir, server, http, admin) = hooked_server(&[]).await;
    let receiver = Receiver::start(Vec::new(), Reply::Status(503)).await;
    add_webhook(&admin, &receiver.url, json!(["hold.created"])).await;
    let held = server
        .api(&http)
        .buyer("crashy")
        .hold_many("hooked", "k", 20)
        .await;
    // Delivery has begun (and failed) before the kill.
    for _ in 0..200 {
        if !receiver.received().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!receiver.received().is_empty());
    server.kill();

    receiver.answer_from_now(Reply::Status(200));
    let server = ServerProcess::start_with(dir.path(), FAST, &[]);
    let got = receiver.until_accepted(20, Duration::from_secs(30)).await;
    let mut delivered: Vec<String> = got
        .iter()
        .filter(|r| r.accepted)
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).expect("json");
            body["data"]["hold_id"].as_str().expect("a hold").to_owned()
        })
        .collect();
    delivered.sort();
    delivered.dedup();
    let mut expected = held.clone();
    expected.sort();
    assert_eq!(delivered, expected, "every acknowledged hold was announced");
    server.terminate();
}

/// Every change other systems must hear of is in the outbox, with the drop's version as it
/// committed, in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_announced_with_the_version_it_made() {
    let app = spawn_app_with(|_| {}).await;
    app.create_drop(&crate::support::spec::live_drop("told", 2, 2))
        .await;
    let buyer = app.buyer("teller");
    let a: Value = buyer
        .hold("told", "S1", 1, "a")
        .await
        .json()
        .await
        .expect("json");
    let b: Value = buyer
        .hold("told", "S1", 1, "b")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        buyer
            .release(b["hold_id"].as_str().expect("id"))
            .await
            .status(),
        204
    );
    assert_eq!(
        buyer
            .confirm(a["hold_id"].as_str().expect("id"), "c")
            .await
            .status(),
        201
    );
    assert_eq!(app.api().adjust_stock("told", "S1", -1).await.status(), 200);
    let paused = app.patch_drop("told", json!({"state": "paused"})).await;
    assert_eq!(paused.status(), 200);
    let version = app.get_json("/v1/drops/told").await["version"]
        .as_i64()
        .expect("version");

    let events = outbox(&app.api()).await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "hold.created",
            "hold.created",
            "drop.sold_out",
            "hold.released",
            "order.created",
            "stock.adjusted",
            "drop.sold_out",
            "drop.state_changed"
        ]
    );
    let versions: Vec<i64> = events
        .iter()
        .filter_map(|e| e["version"].as_i64())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    assert_eq!(*versions.last().expect("one"), version);
    assert_eq!(events[0]["data"]["hold_id"], a["hold_id"]);
    assert_eq!(events[0]["data"]["attempt_seq"], a["attempt_seq"]);
    assert_eq!(events[4]["data"]["total"]["amount"], 18000);
    assert_eq!(events[5]["data"]["delta"], -1);
    assert_eq!(events[7]["data"], json!({"from": "live", "to": "paused"}));
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_private_or_unlisted_addresses_and_unknown_events_are_refused() {
    let strict = spawn_app_with(|s| s.outbox.targets.allow.clear()).await;
    let api = strict.api();
    let add = |url: &str, events: Value| {
        let body = json!({"url": url, "events": events});
        let api = api.clone();
        async move {
            api.admin(Method::POST, "/v1/admin/webhooks", Some(&body))
                .await
        }
    };
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest",
        "http://[::1]:9/",
        "ftp://127.0.0.1/",
    ] {
        expect_problem(add(url, json!(["*"])).await, 422, "webhook-target-refused").await;
    }
    let res = add("http://127.0.0.1:9/", json!(["hold.made"])).await;
    expect_problem(res, 422, "validation-failed").await;
    strict.stop().await;

    let listed = spawn_app_with(|_| {}).await;
    let api = listed.api();
    let body = json!({"url": "http://127.0.0.2:9/", "events": ["*"]});
    let res = api
        .admin(Method::POST, "/v1/admin/webhooks", Some(&body))
        .await;
    expect_problem(res, 422, "webhook-target-refused").await;
    let hook = add_webhook(&api, "http://127.0.0.1:9/", json!(["*"])).await;
    let list = admin_json(&api, "/v1/admin/webhooks").await;
    assert_eq!(list["webhooks"][0]["id"], hook["id"]);
    assert!(
        list["webhooks"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    let path = format!("/v1/admin/webhooks/{}", hook["id"].as_str().expect("id"));
    let res = api
        .admin(Method::PATCH, &path, Some(&json!({"state": "disabled"})))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.expect("json")["state"],
        "disabled"
    );
    assert_eq!(api.admin(Method::DELETE, &path, None).await.status(), 204);
    expect_problem(api.admin(Method::GET, &path, None).await, 404, "not-found").await;
    listed.stop().await;
}

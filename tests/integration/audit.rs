//! Every admin and service-key action is in the audit log with what it changed; admin writes are
//! safe to retry under an `Idempotency-Key`; `PATCH` with a stale `If-Match` writes nothing.

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use crate::support::api::{client, expect_problem};
use crate::support::process::{create_admin_key, create_service_key, ServerProcess};
use crate::support::spec::live_spec;

struct Admin {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Admin {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: Vec<(&'static str, &str)>,
    ) -> reqwest::Response {
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            map.insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .headers(map);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request sent")
    }

    async fn audit(&self) -> Vec<Value> {
        let res = self
            .send(reqwest::Method::GET, "/v1/admin/audit", None, vec![])
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/x-ndjson");
        let text = res.text().await.expect("body");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }
}

fn of<'a>(entries: &'a [Value], action: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["action"] == action).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_are_audited_retry_safe_and_guarded_by_their_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = create_admin_key(dir.path());
    let service_key = create_service_key(dir.path());
    let server = ServerProcess::start_with(dir.path(), &[], &[("DROPD_BUYER_CONFIRMS", "false")]);
    let http = client();
    let admin = Admin {
        http: http.clone(),
        base: server.base.clone(),
        key,
    };
    use reqwest::Method;

    // A drop created under a key, then the same request retried: one drop, the first answer.
    let mut spec = live_spec("aud");
    spec["skus"][0]["stock"] = json!(100);
    let create = |k: &'static str| {
        admin.send(
            Method::POST,
            "/v1/admin/drops",
            Some(spec.clone()),
            vec![("idempotency-key", k)],
        )
    };
    let first = create("make-aud").await;
    assert_eq!(first.status(), 201);
    assert_eq!(first.headers()["etag"], "\"1\"");
    let first: Value = first.json().await.expect("json");
    let again = create("make-aud").await;
    assert_eq!(again.status(), 201, "a retry is not drop-exists");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], "/v1/drops/aud");
    assert_eq!(again.json::<Value>().await.expect("json"), first);

    // +50 retried after a "timeout" adds 50 once; the key with another body is refused.
    let stock = |delta: i64, k: &'static str| {
        admin.send(
            Method::POST,
            "/v1/admin/drops/aud/skus/S1/stock",
            Some(json!({"delta": delta})),
            vec![("idempotency-key", k), ("x-request-id", "restock-1")],
        )
    };
    let added = stock(50, "restock-aud").await;
    assert_eq!(added.status(), 200);
    let added: Value = added.json().await.expect("json");
    assert_eq!(added["skus"][0]["stock"], 150);
    let retried = stock(50, "restock-aud").await;
    assert_eq!(retried.status(), 200);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    assert_eq!(retried.json::<Value>().await.expect("json"), added);
    expect_problem(
        stock(60, "restock-aud").await,
        422,
        "idempotency-key-reused",
    )
    .await;
    let view = server.api(&http).drop_view("aud").await;
    assert_eq!(
        view["skus"][0]["stock"], 150,
        "the retry and the reuse added nothing"
    );

    // If-Match on the settings revision: a sale does not move it, an edit does, and a stale
    // one is 412 and writes nothing.
    let buyer = server.api(&http).buyer("aud-buyer");
    let hold_id = buyer.hold_many("aud", "h", 1).await.remove(0);
    let view = server.api(&http).drop_view("aud").await;
    assert_eq!(view["revision"], 1, "a sale is not an edit");
    let patch = |name: &str, if_match: &'static str| {
        admin.send(
            Method::PATCH,
            "/v1/admin/drops/aud",
            Some(json!({"name": name})),
            vec![("if-match", if_match)],
        )
    };
    let renamed = patch("Renamed", "\"1\"").await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(renamed.headers()["etag"], "\"2\"");
    let stale = patch("Lost update", "\"1\"").await;
    let problem = expect_problem(stale, 412, "stale-revision").await;
    assert!(
        problem["detail"].as_str().unwrap_or("").contains('2'),
        "{problem}"
    );
    let view = server.api(&http).drop_view("aud").await;
    assert_eq!(view["name"], "Renamed", "the stale PATCH wrote nothing");
    assert_eq!(view["revision"], 2);
    let bad = admin
        .send(
            Method::PATCH,
            "/v1/admin/drops/aud",
            Some(json!({"name": "x"})),
            vec![("if-match", "yesterday")],
        )
        .await;
    expect_problem(bad, 400, "bad-request").await;

    // A webhook created under a key: the retry shows the same id and the same secret.
    let hook = |k: &'static str| {
        admin.send(
            Method::POST,
            "/v1/admin/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["order.created"]})),
            vec![("idempotency-key", k)],
        )
    };
    let made: Value = hook("hook-1").await.json().await.expect("json");
    let replay = hook("hook-1").await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.json::<Value>().await.expect("json"), made);
    let listed: Value = admin
        .send(Method::GET, "/v1/admin/webhooks", None, vec![])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["webhooks"].as_array().map(Vec::len), Some(1));

    // The payment service's confirmation is audited under its key.
    let service = server.api(&http).with_token(&service_key);
    assert_eq!(service.confirm(&hold_id, "pay-aud").await.status(), 201);

    let entries = admin.audit().await;
    let keys = of(&entries, "key.create");
    assert_eq!(keys.len(), 2, "both keys made by the CLI: {entries:?}");
    assert!(keys.iter().all(|e| e["actor"] == "cli"));
    let admin_id = keys
        .iter()
        .find(|e| e["after"]["scope"] == "admin")
        .and_then(|e| e["target"].as_str())
        .expect("the admin key's id")
        .to_owned();
    let service_id = keys
        .iter()
        .find(|e| e["after"]["scope"] == "payments")
        .and_then(|e| e["target"].as_str())
        .expect("the service key's id")
        .to_owned();

    let created = of(&entries, "drop.create");
    assert_eq!(created.len(), 1, "the retried creation is one action");
    assert_eq!(created[0]["actor"], admin_id.as_str());
    assert_eq!(created[0]["before"], Value::Null);
    assert_eq!(created[0]["after"]["id"], "aud");

    let restocks = of(&entries, "stock.adjust");
    assert_eq!(restocks.len(), 1, "the retried +50 is one action");
    assert_eq!(restocks[0]["target"], "aud/S1");
    assert_eq!(restocks[0]["before"]["skus"][0]["stock"], 100);
    assert_eq!(restocks[0]["after"]["skus"][0]["stock"], 150);
    assert_eq!(restocks[0]["request_id"], "restock-1");
    assert_eq!(restocks[0]["idempotency_key"], "restock-aud");

    let updates = of(&entries, "drop.update");
    assert_eq!(updates.len(), 1, "the stale PATCH is not an action");
    assert_eq!(updates[0]["before"]["name"], "Drop aud");
    assert_eq!(updates[0]["after"]["name"], "Renamed");

    let hooks = of(&entries, "webhook.create");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["after"]["id"], made["id"]);
    assert!(
        hooks[0]["after"].get("secret").is_none(),
        "the log never shows a secret: {}",
        hooks[0]
    );

    let confirmations = of(&entries, "hold.confirm");
    assert_eq!(confirmations.len(), 1);
    assert_eq!(confirmations[0]["actor"], service_id.as_str());
    assert_eq!(confirmations[0]["target"], hold_id.as_str());
    assert_eq!(confirmations[0]["before"]["state"], "active");
    assert_eq!(confirmations[0]["after"]["hold_id"], hold_id.as_str());

    let seqs: Vec<i64> = entries.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first");
    let after = seqs[seqs.len() - 2];
    let tail = admin
        .send(
            Method::GET,
            &format!("/v1/admin/audit?after={after}"),
            None,
            vec![],
        )
        .await
        .text()
        .await
        .expect("body");
    assert_eq!(tail.lines().count(), 1, "?after resumes");
    server.terminate();
}

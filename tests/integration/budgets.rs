//! Per-request database budgets: every request's SQL statements and time in SQLite are counted
//! per route, and a request over its route's budget logs a warning naming its route, request id
//! and figures, and counts in the metrics.

use serde_json::Value;

use crate::support::api::{buyer_token, client};
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::live_spec;

/// The value of the metric line that starts with `prefix`.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_over_its_budget_is_logged_with_its_request_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = create_admin_key(dir.path());
    let log = dir.path().join("server.log");
    // Holds may run no statement at all (so every hold is over); the rest keep the default.
    let server = ServerProcess::start_logging(
        dir.path(),
        &["--request-budget", "*=50/50ms,/v1/drops/{drop}/holds=0/10s"],
        &[("DROPD_LOG", "info"), ("DROPD_LOG_FORMAT", "json")],
        &log,
    );
    let http = client();
    let api = server.api(&http);
    api.with_admin_key(&admin)
        .create_drop(&live_spec("budget"))
        .await;
    let res = http
        .post(format!("{}/v1/drops/budget/holds", server.base))
        .bearer_auth(buyer_token("spender"))
        .header("Idempotency-Key", "k1")
        .header("X-Request-Id", "over-1")
        .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201, "a request over budget is still answered");
    // A page read comes from memory: no statement at all.
    for _ in 0..3 {
        assert_eq!(api.drop_view("budget").await["id"], "budget");
    }
    let orders = api.buyer("spender").orders().await;
    assert!(orders["orders"].is_array());

    let text = api.metrics().await.text().await.expect("metrics");
    let holds = r#"{route="/v1/drops/{drop}/holds",method="POST"}"#;
    let statements = metric(&text, &format!("dropd_http_sql_statements_total{holds}"))
        .unwrap_or_else(|| panic!("hold statements counted:\n{text}"));
    assert!(
        statements >= 1.0,
        "a hold runs SQL in the writer: {statements}"
    );
    assert_eq!(
        metric(&text, &format!("dropd_http_over_budget_total{holds}")),
        Some(1.0)
    );
    assert!(
        metric(&text, &format!("dropd_http_sql_seconds_count{holds}")).is_some(),
        "time in SQLite is a histogram per route:\n{text}"
    );
    let page = r#"{route="/v1/drops/{drop}",method="GET"}"#;
    assert_eq!(
        metric(&text, &format!("dropd_http_sql_statements_total{page}")),
        Some(0.0),
        "the drop page is served from memory"
    );
    let orders = r#"{route="/v1/orders",method="GET"}"#;
    assert!(
        metric(&text, &format!("dropd_http_sql_statements_total{orders}")).unwrap_or(0.0) >= 1.0
    );
    assert_eq!(
        metric(&text, &format!("dropd_http_over_budget_total{orders}")),
        Some(0.0)
    );
    server.terminate();

    let text = std::fs::read_to_string(&log).expect("log");
    let warnings: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "request over its database budget")
        .collect();
    assert_eq!(warnings.len(), 1, "only the hold is over: {text}");
    let warning = &warnings[0];
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["fields"]["route"], "/v1/drops/{drop}/holds");
    assert_eq!(warning["fields"]["request_id"], "over-1");
    assert_eq!(warning["fields"]["statements"].as_f64(), Some(statements));
    assert_eq!(warning["fields"]["budget_statements"], 0);
    assert!(warning["fields"]["sql_ms"].as_f64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_budget_is_refused_at_start_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, _, err) = crate::support::process::dropd(&[
        "serve",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--request-budget",
        "holds=3",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--request-budget") && err.contains("ROUTE="),
        "{err}"
    );
}

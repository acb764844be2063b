use serde_json::{json, Value};

use crate::support::api::expect_problem;
use crate::support::app::spawn_app;
use crate::support::db::check_invariants;
use crate::support::spec::live_drop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_restock_and_export_orders_as_ndjson() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("ops", 2, 2)).await;
    let alice = app.token("alice");
    let hold: Value = app
        .hold(&alice, "ops", "S1", 2, "h")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        app.confirm(&alice, hold["hold_id"].as_str().expect("id"), "c")
            .await
            .status(),
        201
    );

    let admin = app.api();
    let shrink = admin.adjust_stock("ops", "S1", -1).await;
    let problem = expect_problem(shrink, 409, "stock-below-committed").await;
    assert_eq!(problem["committed"], 2);
    let grow = admin.adjust_stock("ops", "S1", 5).await;
    assert_eq!(grow.status(), 200);
    let view: Value = grow.json().await.expect("json");
    assert_eq!(view["skus"][0]["stock"], 7);
    assert_eq!(view["skus"][0]["available"], 5);
    assert_eq!(app.available("ops", "S1").await, 5);
    let missing = admin.adjust_stock("ops", "NOPE", 1).await;
    expect_problem(missing, 422, "unknown-sku").await;

    let bob = app.token("bob");
    let hold: Value = app
        .hold(&bob, "ops", "S1", 1, "h")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        app.confirm(&bob, hold["hold_id"].as_str().expect("id"), "c")
            .await
            .status(),
        201
    );
    let export = app
        .client
        .get(app.url("/v1/admin/drops/ops/orders"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(export.status(), 200);
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.expect("body");
    let orders: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0]["buyer"], "alice");
    assert_eq!(orders[1]["buyer"], "bob");
    check_invariants(&app.db()).expect("invariants hold");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_grow_with_every_change_and_lists_show_every_drop() {
    let app = spawn_app().await;
    let created = app.create_drop(&live_drop("v", 5, 2)).await;
    app.create_drop(&live_drop("w", 5, 2)).await;
    let v0 = created["version"].as_i64().expect("version");
    let alice = app.token("alice");
    app.hold(&alice, "v", "S1", 1, "k").await;
    let v1 = app.get_json("/v1/drops/v").await["version"]
        .as_i64()
        .expect("version");
    assert!(v1 > v0);
    let renamed = app
        .patch_drop("v", json!({"name": "Renamed"}))
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(renamed["name"], "Renamed");
    assert!(renamed["version"].as_i64().expect("version") > v1);
    assert_eq!(
        app.get_json("/v1/drops/v").await["version"],
        renamed["version"]
    );
    let list = app.get_json("/v1/drops").await;
    let ids: Vec<&str> = list["drops"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["v", "w"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let api = app.api();
    assert_eq!(api.healthz().await["status"], "ok");
    assert_eq!(api.readyz().await["status"], "ready");
    let metrics = api.metrics().await;
    assert_eq!(metrics.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_feed_needs_an_admin_key_and_reports_drops_and_attempts() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("ops-feed", 3, 1)).await;
    let alice = app.token("alice");
    assert_eq!(
        app.hold(&alice, "ops-feed", "S1", 1, "k").await.status(),
        201
    );

    let refused = app
        .client
        .get(app.url("/v1/admin/events"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("sent");
    expect_problem(refused, 403, "forbidden").await;
    let mut res = app
        .client
        .get(app.url("/v1/admin/events"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let stats = crate::support::sse::first_data(&mut res).await;
    assert!(stats["attempts"]["held"].as_u64().expect("held count") >= 1);
    let listed = stats["drops"]
        .as_array()
        .expect("drops")
        .iter()
        .find(|d| d["id"] == "ops-feed")
        .expect("the drop is listed");
    assert_eq!(listed["skus"][0]["held"], 1);
    assert_eq!(listed["skus"][0]["available"], 2);

    let page = app
        .client
        .get(app.url("/admin"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .expect("html")
        .contains("/assets/admin.js"));
    drop(res);
    app.stop().await;
}

/// The API description lists every route the server answers, with the methods it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_describes_every_route() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = [
        ("get", "/v1/drops"),
        ("get", "/v1/drops/{drop}"),
        ("get", "/v1/drops/{drop}/events"),
        ("post", "/v1/drops/{drop}/holds"),
        ("get", "/v1/holds/{hold}"),
        ("delete", "/v1/holds/{hold}"),
        ("post", "/v1/holds/{hold}/confirm"),
        ("get", "/v1/orders"),
        ("get", "/v1/orders/{order}"),
        ("post", "/v1/admin/drops"),
        ("patch", "/v1/admin/drops/{drop}"),
        ("post", "/v1/admin/drops/{drop}/skus/{sku}/stock"),
        ("get", "/v1/admin/drops/{drop}/orders"),
        ("get", "/v1/admin/events"),
        ("get", "/v1/demo/token"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    for (method, path) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is described"
        );
    }
    let codes = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .expect("codes");
    for code in [
        "sold-out",
        "limit-exceeded",
        "drop-not-live",
        "hold-expired",
        "overloaded",
    ] {
        assert!(codes.iter().any(|c| c == code), "{code} is listed");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_route_and_show_the_process_build_and_stock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = crate::support::process::create_admin_key(dir.path());
    let server = crate::support::process::ServerProcess::start(dir.path());
    let http = crate::support::api::client();
    let api = server.api(&http).with_admin_key(&admin);
    api.create_drop(&crate::support::spec::live_spec("metered"))
        .await;
    let buyer = server
        .api(&http)
        .with_token(&crate::support::api::buyer_token("alice"));
    for i in 0..3 {
        let res = buyer.hold("metered", "S1", 1, &format!("k{i}")).await;
        assert!(
            res.status().is_success() || res.status() == 409,
            "{}",
            res.status()
        );
    }
    let _ = http.get(format!("{}/v1/nothing", server.base)).send().await;
    let text = api.metrics().await.text().await.expect("metrics");
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_owned()
    };
    let holds = line(
        r#"dropd_http_requests_total{route="/v1/drops/{drop}/holds",method="POST",status="201"}"#,
    );
    assert!(
        holds.ends_with(" 1") || holds.ends_with(" 2") || holds.ends_with(" 3"),
        "{holds}"
    );
    line(r#"dropd_http_requests_total{route="(unmatched)",method="GET",status="404"}"#);
    line(
        r#"dropd_http_request_duration_seconds_bucket{route="/v1/drops/{drop}/holds",method="POST",le="0.005"}"#,
    );
    line(
        r#"dropd_http_request_duration_seconds_count{route="/v1/drops/{drop}/holds",method="POST"}"#,
    );
    let value = |name: &str| -> f64 {
        line(name)
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number")
    };
    // CPU is counted in hundredths of a second: a short test may not have used one yet.
    assert!(value("process_cpu_seconds_total ") >= 0.0);
    assert!(value("process_resident_memory_bytes ") > 1_000_000.0);
    assert!(
        value("process_open_fds ") >= 5.0,
        "a listener, the database, its WAL..."
    );
    let build = line("dropd_build_info{");
    assert!(
        build.contains(&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION")))
            && build.contains(&format!(r#"revision="{}""#, dropd::REVISION)),
        "{build}"
    );
    let stock = line(r#"dropd_sku_available{drop="metered",sku="S1"}"#);
    let available: f64 = stock
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("number");
    let view = api.drop_view("metered").await;
    assert_eq!(
        available as i64,
        view["skus"][0]["available"].as_i64().expect("available")
    );
    server.terminate();
}

#[test]
fn version_names_the_release_and_the_git_revision() {
    let (ok, out, err) = crate::support::process::dropd(&["--version"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("dropd {} ({})", env!("CARGO_PKG_VERSION"), dropd::REVISION)
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        assert_eq!(
            dropd::REVISION,
            String::from_utf8_lossy(&head.stdout).trim()
        );
    }
}

#[test]
fn dropd_config_prints_what_flags_env_and_file_make_of_serve_without_a_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "a-token-secret-that-must-not-be-printed-0123";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args(["config", "--data-dir"])
        .arg(dir.path())
        .args(["--token-secret", secret, "--ip-rate", "7"])
        .args([
            "--replica",
            "s3://bucket/prod?endpoint=http://127.0.0.1:9&region=eu-1",
        ])
        .env("DROPD_BUYER_RATE", "3")
        .env("LITESTREAM_ACCESS_KEY_ID", "key-id-not-printed")
        .env("LITESTREAM_SECRET_ACCESS_KEY", "secret-key-not-printed")
        .output()
        .expect("dropd config runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let config: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(config["ip_bucket"]["rate"], 7, "from the flag");
    assert_eq!(config["buyer_bucket"]["rate"], 3, "from the environment");
    assert_eq!(config["queue_size"], 8192, "the default");
    assert_eq!(
        config["token_secrets"]["key_ids"][0],
        dropd::auth::key_id(secret.as_bytes())
    );
    assert!(config["replica"]["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("s3://bucket/prod")));
    assert_eq!(
        config["replica"]["credentials_set"]["secret_access_key"],
        true
    );
    for hidden in [secret, "key-id-not-printed", "secret-key-not-printed"] {
        assert!(!text.contains(hidden), "{hidden} printed");
    }
}

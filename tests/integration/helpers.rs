use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dropd::app::{AppHandle, Application, Settings};
use dropd::auth::{self, TokenKeys};
use dropd::domain::{BuyerId, ManualClock};
use dropd::store::Writer;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

pub fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        dropd::telemetry::init("info");
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub admin_key: String,
    pub writer: Writer,
    pub hub: std::sync::Arc<dropd::events::Hub>,
    /// Kept so the data directory lives as long as the app.
    _dir: tempfile::TempDir,
    pub db_path: std::path::PathBuf,
    tokens: TokenKeys,
    handle: AppHandle,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T17:00:00Z")
        .expect("valid literal")
        .with_timezone(&Utc)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::for_data_dir(dir.path());
    settings.listen = "127.0.0.1:0".into();
    settings.token_secrets = vec![SECRET.into()];
    settings.workers = Some(2);
    adjust(&mut settings);
    let clock = ManualClock::new(start_time());
    let app = Application::build(&settings, Arc::new(clock.clone())).expect("app builds");
    let (admin_key, hash) = auth::generate_admin_key();
    app.writer()
        .create_admin_key("test".into(), hash)
        .await
        .expect("admin key stored");
    let base = format!("http://127.0.0.1:{}", app.port());
    let db_path = settings.db_path();
    let tokens = app.tokens().clone();
    let writer = app.writer();
    let hub = app.hub();
    let handle = app.handle();
    let running = tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        client: client(),
        clock,
        admin_key,
        writer,
        hub,
        _dir: dir,
        db_path,
        tokens,
        handle,
        running,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client builds")
}

/// A drop that is live at the test clock's start: one SKU `S1` with the given stock.
pub fn live_drop(id: &str, stock: i64, limit: i64) -> Value {
    let now = start_time();
    json!({
        "id": id, "name": format!("Drop {id}"), "description": "test drop",
        "starts_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "ends_at": (now + chrono::Duration::hours(2)).to_rfc3339(),
        "per_buyer_limit": limit, "hold_seconds": 600,
        "skus": [{"sku": "S1", "name": "Size 1", "price": {"amount": 18000, "currency": "EUR"}, "stock": stock}]
    })
}

impl TestApp {
    pub fn token(&self, sub: &str) -> String {
        token_for(&self.tokens, sub)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn create_drop(&self, spec: &Value) -> Value {
        let res = self
            .client
            .post(self.url("/v1/admin/drops"))
            .bearer_auth(&self.admin_key)
            .json(spec)
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), 201, "creating a drop");
        res.json().await.expect("json body")
    }

    pub async fn hold(
        &self,
        token: &str,
        drop: &str,
        sku: &str,
        quantity: i64,
        key: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/drops/{drop}/holds")))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({"sku": sku, "quantity": quantity}))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn confirm(&self, token: &str, hold_id: &str, key: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/holds/{hold_id}/confirm")))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({"payment_ref": "pi_test"}))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let res = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.expect("json body")
    }

    pub async fn available(&self, drop: &str, sku: &str) -> i64 {
        let view = self.get_json(&format!("/v1/drops/{drop}")).await;
        view["skus"]
            .as_array()
            .expect("skus")
            .iter()
            .find(|s| s["sku"] == sku)
            .and_then(|s| s["available"].as_i64())
            .expect("sku listed")
    }

    pub async fn patch_drop(&self, drop: &str, patch: Value) -> reqwest::Response {
        self.client
            .patch(self.url(&format!("/v1/admin/drops/{drop}")))
            .bearer_auth(&self.admin_key)
            .json(&patch)
            .send()
            .await
            .expect("request sent")
    }

    pub fn db(&self) -> Connection {
        open_db(&self.db_path)
    }

    pub async fn stop(self) {
        self.handle.stop().await;
        self.running
            .await
            .expect("server task joins")
            .expect("server stops cleanly");
    }
}

pub fn token_for(tokens: &TokenKeys, sub: &str) -> String {
    tokens
        .mint(
            &BuyerId::parse(sub).expect("valid sub"),
            Duration::from_secs(3600),
        )
        .expect("token mints")
}

pub fn open_db(path: &Path) -> Connection {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("db opens");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// Asserts the problem+json shape and returns the body.
pub async fn expect_problem(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status(), status, "status for expected {code}");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = res.json().await.expect("problem body is json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}

/// The invariants of docs/design.md, checked from the database itself.
pub fn check_invariants(conn: &Connection) -> Result<(), String> {
    dropd::store::audit::check_invariants(conn).map_err(|e| e.to_string())?
}

/// Row counts and the drops' and SKUs' counters: what any refused request must leave as it was.
pub fn table_counts(conn: &Connection) -> Vec<(String, String)> {
    let mut state: Vec<(String, String)> = ["drops", "skus", "holds", "orders", "idempotency_keys"]
        .iter()
        .map(|t| {
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .expect("count");
            (t.to_string(), n.to_string())
        })
        .collect();
    for (name, sql) in [
        ("drop counters", "SELECT group_concat(id || ':' || version || ':' || attempt_seq, ',') FROM drops"),
        ("sku counters", "SELECT group_concat(sku || ':' || stock_total || ':' || held || ':' || sold, ',') FROM skus"),
    ] {
        let value: Option<String> = conn.query_row(sql, [], |r| r.get(0)).expect("counters");
        state.push((name.to_owned(), value.unwrap_or_default()));
    }
    state
}

/// A restored database's bytes written to `dir/name` and opened, after its integrity check.
pub fn restored_db(db: &[u8], dir: &Path, name: &str) -> Connection {
    let path = dir.join(name);
    std::fs::write(&path, db).expect("copy");
    let conn = Connection::open(&path).expect("opens");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok", "{name}");
    conn
}

/// Every hold id and order id in a database.
pub fn hold_and_order_ids(conn: &Connection) -> std::collections::HashSet<String> {
    let mut stmt = conn
        .prepare("SELECT id FROM holds UNION ALL SELECT id FROM orders")
        .expect("query");
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("ids")
        .collect::<Result<_, _>>()
        .expect("ids read");
    ids
}

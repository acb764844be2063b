//! The app in process: `spawn_app` builds it on port 0 with its own data directory, a manual
//! clock and an admin key; `TestApp` drives it through its API, its writer and its database.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dropd::app::{AppHandle, Application, Settings};
use dropd::auth::TokenKeys;
use dropd::domain::ManualClock;
use dropd::store::Writer;
use rusqlite::Connection;
use serde_json::Value;

use super::api::{client, token_for, Api, SECRET};
use super::db::open_db;

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
    // Tests act as many buyers from one address, often several writes at once by one buyer;
    // admission's tests turn it on.
    settings.admission.enabled = false;
    settings.buyer_confirms = true;
    settings.outbox.targets.allow = vec!["127.0.0.1/32".parse().expect("a network")];
    adjust(&mut settings);
    let clock = ManualClock::new(start_time());
    let app = Application::build(&settings, Arc::new(clock.clone())).expect("app builds");
    let (admin_key, _) = app
        .create_admin_key("test")
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

impl TestApp {
    /// `dropd replay --db <this app's database> --drop D --json` plus `extra`, which must
    /// succeed; answers its report.
    pub fn replay(&self, drop: &str, extra: &[&str]) -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropd"))
            .args(["replay", "--db"])
            .arg(&self.db_path)
            .args(["--drop", drop, "--json"])
            .args(extra)
            .output()
            .expect("dropd runs");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(
            out.status.success(),
            "{drop}: {report} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        report
    }

    /// The drop's public ledger, one entry per line, from `GET /v1/drops/{drop}/ledger`.
    pub async fn ledger(&self, drop: &str) -> Vec<Value> {
        let text = self
            .client
            .get(self.url(&format!("/v1/drops/{drop}/ledger")))
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("body");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
            .collect()
    }

    /// The app's handle (signals, the watchdog feed).
    pub fn handle(&self) -> &AppHandle {
        &self.handle
    }

    pub fn token(&self, sub: &str) -> String {
        token_for(&self.tokens, sub)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The API as this app's admin.
    pub fn api(&self) -> Api {
        Api::new(&self.client, &self.base).with_admin_key(&self.admin_key)
    }

    /// The API as the buyer `sub`.
    pub fn buyer(&self, sub: &str) -> Api {
        self.api().with_token(&self.token(sub))
    }

    pub async fn create_drop(&self, spec: &Value) -> Value {
        self.api().create_drop(spec).await
    }

    pub async fn hold(
        &self,
        token: &str,
        drop: &str,
        sku: &str,
        quantity: i64,
        key: &str,
    ) -> reqwest::Response {
        self.api()
            .with_token(token)
            .hold(drop, sku, quantity, key)
            .await
    }

    pub async fn confirm(&self, token: &str, hold_id: &str, key: &str) -> reqwest::Response {
        self.api().with_token(token).confirm(hold_id, key).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.api().get_json(path).await
    }

    pub async fn available(&self, drop: &str, sku: &str) -> i64 {
        self.api().available(drop, sku).await
    }

    pub async fn patch_drop(&self, drop: &str, patch: Value) -> reqwest::Response {
        self.api().patch_drop(drop, &patch).await
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

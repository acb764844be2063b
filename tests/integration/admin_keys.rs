use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;

use crate::support::api::{buyer_token, client};
use crate::support::process::{create_admin_key, dropd, ServerProcess};
use crate::support::spec::live_spec;

async fn admin_status(http: &reqwest::Client, base: &str, key: &str) -> u16 {
    http.get(format!("{base}/v1/admin/events"))
        .bearer_auth(key)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

/// How long until `key` is refused, polling; panics after 5 s.
async fn refused_within(http: &reqwest::Client, base: &str, key: &str) -> Duration {
    let started = Instant::now();
    while admin_status(http, base, key).await != 401 {
        assert!(started.elapsed() < Duration::from_secs(5), "still accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn key_id(dir: &std::path::Path, name: &str) -> String {
    let (ok, listed, err) = dropd(&[
        "admin-key",
        "list",
        "--data-dir",
        &dir.display().to_string(),
    ]);
    assert!(ok, "{err}");
    listed
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name) && l.ends_with(" -"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no active key {name} in {listed}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admin_key_is_refused_by_the_running_server_within_a_second() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = create_admin_key(dir.path());
    let server = ServerProcess::start(dir.path());
    let http = client();
    let data_dir = dir.path().display().to_string();
    assert_eq!(admin_status(&http, &server.base, &first).await, 200);

    // Created beside the running server: through its writer, valid at once.
    let (ok, second, err) = dropd(&[
        "admin-key",
        "create",
        "--name",
        "second",
        "--data-dir",
        &data_dir,
    ]);
    assert!(ok, "{err}");
    let second = second.trim().to_owned();
    assert_eq!(admin_status(&http, &server.base, &second).await, 200);

    let id = key_id(dir.path(), "test");
    let (ok, _, err) = dropd(&["admin-key", "revoke", &id, "--data-dir", &data_dir]);
    assert!(ok, "{err}");
    let took = refused_within(&http, &server.base, &first).await;
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    let (ok, _, err) = dropd(&["admin-key", "revoke", &id, "--data-dir", &data_dir]);
    assert!(!ok && err.contains("no active admin key"), "{err}");

    // An operator's own sqlite3 revoking the other key counts too.
    let id = key_id(dir.path(), "second");
    let status = std::process::Command::new("sqlite3")
        .arg(dir.path().join("dropd.db"))
        .arg(format!(
            "PRAGMA busy_timeout = 5000; UPDATE admin_keys SET revoked_at = 1 WHERE id = '{id}';"
        ))
        .status()
        .expect("sqlite3 runs");
    assert!(status.success());
    let took = refused_within(&http, &server.base, &second).await;
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    server.terminate();
    assert!(
        !dir.path().join("dropd.sock").exists(),
        "a clean stop removes the control socket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_random_credentials_and_drop_ids_cost_no_database_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = create_admin_key(dir.path());
    let server = ServerProcess::start(dir.path());
    let http = client();
    let api = server.api(&http).with_admin_key(&admin);
    api.create_drop(&live_spec("real")).await;
    let reads = |metrics: String| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with("dropd_db_reads_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let metrics = || async { api.metrics().await.text().await.expect("metrics") };
    let before = reads(metrics().await);
    let base = server.base.clone();
    let flood = (0..10_000).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let random = format!("{:032x}", rand::random::<u128>());
            let req = match i % 5 {
                0 => http.get(format!("{base}/v1/drops/{random}")),
                1 => http
                    .get(format!("{base}/v1/admin/events"))
                    .bearer_auth(&random),
                2 => http
                    .get(format!("{base}/v1/admin/events"))
                    .bearer_auth(format!("dak_{random}{random}")),
                3 => http
                    .post(format!("{base}/v1/drops/real/holds"))
                    .bearer_auth(format!("eyJhbGciOiJIUzI1NiJ9.{random}.{random}"))
                    .header("Idempotency-Key", &random)
                    .json(&json!({"sku": "S1", "quantity": 1})),
                _ => http.get(format!("{base}/v1/drops/real")),
            };
            (i % 5, req.send().await.expect("sent").status().as_u16())
        }
    });
    let mut answers = Vec::new();
    let mut flood = flood.peekable();
    while flood.peek().is_some() {
        let chunk: Vec<_> = flood.by_ref().take(64).collect();
        answers.extend(join_all(chunk).await);
    }
    for (kind, status) in &answers {
        let want = [404, 401, 401, 401, 200][*kind];
        assert_eq!(*status, want, "request kind {kind}");
    }
    assert_eq!(
        reads(metrics().await) - before,
        0,
        "random credentials and ids read nothing from SQLite"
    );
    // A buyer's own read still goes to the database and works.
    let res = server
        .api(&http)
        .with_token(&buyer_token("alice"))
        .hold("real", "S1", 1, "k")
        .await;
    assert_eq!(res.status(), 201);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_keeps_its_admin_key_across_restarts_and_replaces_a_revoked_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let demo_key = |server: &ServerProcess| {
        server
            .printed
            .iter()
            .find_map(|l| {
                l.strip_prefix("admin key (in ")
                    .and_then(|r| r.split("): ").nth(1))
            })
            .map(str::to_owned)
            .expect("the demo prints its admin key")
    };
    let first = ServerProcess::start_with(dir.path(), &["--demo"], &[]);
    let key = demo_key(&first);
    first.terminate();
    let second = ServerProcess::start_with(dir.path(), &["--demo"], &[]);
    assert_eq!(demo_key(&second), key, "the same key after a restart");
    let http = client();
    assert_eq!(admin_status(&http, &second.base, &key).await, 200);
    let data_dir = dir.path().display().to_string();
    let id = key_id(dir.path(), "demo");
    let (ok, _, err) = dropd(&["admin-key", "revoke", &id, "--data-dir", &data_dir]);
    assert!(ok, "{err}");
    second.terminate();
    let third = ServerProcess::start_with(dir.path(), &["--demo"], &[]);
    let replaced = demo_key(&third);
    assert_ne!(replaced, key, "a revoked demo key is not brought back");
    assert_eq!(admin_status(&http, &third.base, &replaced).await, 200);
    let (_, listed, _) = dropd(&["admin-key", "list", "--data-dir", &data_dir]);
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("demo"))
            .count(),
        2,
        "one demo key per revocation, not one per start: {listed}"
    );
    third.terminate();
}

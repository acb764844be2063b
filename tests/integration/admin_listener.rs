use serde_json::Value;

use crate::support::api::{buyer_token, client};
use crate::support::litestream::file_url;
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::live_spec;

async fn status(http: &reqwest::Client, url: String, key: Option<&str>) -> u16 {
    let mut req = http.get(url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.expect("sent").status().as_u16()
}

async fn readyz(http: &reqwest::Client, base: &str, key: Option<&str>) -> Value {
    let mut req = http.get(format!("{base}/readyz"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.expect("sent").json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_admin_listen_the_admin_api_and_metrics_answer_there_and_not_on_the_public_listener() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let key = create_admin_key(&data);
    let replica = file_url(&dir.path().join("replica"));
    let server = ServerProcess::start_with(
        &data,
        &["--admin-listen", "127.0.0.1:0", "--replica", &replica],
        &[],
    );
    let admin = server
        .printed
        .iter()
        .find_map(|l| l.strip_prefix("dropd admin listening on "))
        .expect("the admin address is printed")
        .to_owned();
    let public = server.base.clone();
    assert_ne!(admin, public);
    let http = client();
    // The admin side: its API, the operator page, metrics.
    crate::support::api::Api::new(&http, &admin)
        .with_admin_key(&key)
        .create_drop(&live_spec("split"))
        .await;
    for path in ["/v1/admin/drops/split/orders", "/metrics", "/admin"] {
        assert_eq!(
            status(&http, format!("{admin}{path}"), Some(&key)).await,
            200,
            "{path} on admin"
        );
        assert_eq!(
            status(&http, format!("{public}{path}"), Some(&key)).await,
            404,
            "{path} on public"
        );
    }
    // The public side: what buyers use, and not on the admin listener.
    let buyer = server.api(&http).with_token(&buyer_token("alice"));
    assert_eq!(buyer.hold("split", "S1", 1, "k").await.status(), 201);
    assert_eq!(
        status(&http, format!("{admin}/v1/drops/split"), None).await,
        404
    );
    assert_eq!(
        status(&http, format!("{public}/v1/drops/split"), None).await,
        200
    );
    // Readiness on both; its detail only on the admin listener, whatever key is sent.
    let outside = readyz(&http, &public, Some(&key)).await;
    assert_eq!(outside["status"], "ready");
    assert!(outside["replica"].get("url").is_none(), "{outside}");
    let inside = readyz(&http, &admin, None).await;
    assert!(
        inside["replica"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("file://")),
        "{inside}"
    );
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_listener_readiness_detail_needs_an_admin_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let key = create_admin_key(&data);
    let replica = file_url(&dir.path().join("replica"));
    let server = ServerProcess::start_with(&data, &["--replica", &replica], &[]);
    let http = client();
    let anonymous = readyz(&http, &server.base, None).await;
    assert_eq!(anonymous["status"], "ready");
    assert!(anonymous["replica"]["state"].is_string());
    assert!(anonymous["replica"].get("url").is_none(), "{anonymous}");
    let operator = readyz(&http, &server.base, Some(&key)).await;
    assert!(operator["replica"]["url"].as_str().is_some(), "{operator}");
    server.terminate();
}

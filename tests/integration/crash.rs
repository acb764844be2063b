//! Kills the real binary mid-stampede and checks that every acknowledged hold survived.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{check_invariants, client, live_drop, open_db, SECRET};

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
}

impl ServerProcess {
    /// Starts `dropd serve` on port 0 and waits for the line that names its address.
    pub fn start(data_dir: &Path) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dropd"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token-secret",
                SECRET,
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(if std::env::var("TEST_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("dropd starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("dropd printed its address before exiting")
                .expect("stdout readable");
            if let Some(base) = line.strip_prefix("dropd listening on ") {
                break base.to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ServerProcess { child, base }
    }

    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        self.child.wait().expect("child reaped");
    }
}

pub fn create_admin_key(data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args(["admin-key", "create", "--name", "test", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("dropd admin-key runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_hold_survives_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let server = ServerProcess::start(dir.path());
    let http = client();
    let mut spec = live_drop("crash", 1_000_000, 1_000);
    let now = chrono::Utc::now();
    spec["starts_at"] = serde_json::json!((now - chrono::Duration::minutes(1)).to_rfc3339());
    spec["ends_at"] = serde_json::json!((now + chrono::Duration::hours(1)).to_rfc3339());
    let res = http
        .post(format!("{}/v1/admin/drops", server.base))
        .bearer_auth(&admin_key)
        .json(&spec)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);

    let tokens = dropd::auth::TokenKeys::new(SECRET.as_bytes()).expect("keys");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut buyers = Vec::new();
    for b in 0..64 {
        let (http, base, acked, stop) = (
            http.clone(),
            server.base.clone(),
            acked.clone(),
            stop.clone(),
        );
        let sub = format!("buyer-{b}");
        let token = crate::helpers::token_for(&tokens, &sub);
        buyers.push(tokio::spawn(async move {
            for i in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = http
                    .post(format!("{base}/v1/drops/crash/holds"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("{sub}-{i}"))
                    .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
                    .send()
                    .await;
                let Ok(res) = sent else { break };
                if res.status() == 201 {
                    if let Ok(body) = res.json::<Value>().await {
                        let id = body["hold_id"].as_str().expect("hold id").to_owned();
                        acked.lock().expect("lock").push((sub.clone(), id));
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for buyer in buyers {
        buyer.await.expect("buyer task");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 400,
        "the stampede ran before the kill ({} acked)",
        acked.len()
    );

    let server = ServerProcess::start(dir.path());
    for (sub, hold_id) in &acked {
        let res = http
            .get(format!("{}/v1/holds/{hold_id}", server.base))
            .bearer_auth(crate::helpers::token_for(&tokens, sub))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            res.status(),
            200,
            "acknowledged hold {hold_id} is missing after the crash"
        );
    }
    check_invariants(&open_db(&dir.path().join("dropd.db"))).expect("invariants hold");
    server.kill();
}

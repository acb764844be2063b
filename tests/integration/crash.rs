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
        Self::start_with(data_dir, &[], &[])
    }

    /// With extra `serve` arguments and environment.
    pub fn start_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dropd"))
            .envs(envs.iter().copied())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token-secret",
                SECRET,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(args)
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

    /// SIGTERM, then waits for the graceful exit (which includes the shipper's last sync).
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("child reaped");
        assert!(exit.success(), "dropd exits 0 on SIGTERM: {exit}");
    }

    /// Waits up to `within` for the process to end on its own.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
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

/// What the server acknowledged before it died.
#[derive(Default)]
pub struct Acked {
    pub holds: Vec<(String, String)>,
    pub orders: Vec<(String, String)>,
}

pub fn live_spec(id: &str) -> Value {
    let mut spec = live_drop(id, 1_000_000, 1_000);
    let now = chrono::Utc::now();
    spec["starts_at"] = serde_json::json!((now - chrono::Duration::minutes(1)).to_rfc3339());
    spec["ends_at"] = serde_json::json!((now + chrono::Duration::hours(1)).to_rfc3339());
    spec
}

pub async fn create_drop(http: &reqwest::Client, base: &str, admin_key: &str, id: &str) {
    let res = http
        .post(format!("{base}/v1/admin/drops"))
        .bearer_auth(admin_key)
        .json(&live_spec(id))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
}

/// 64 buyers place holds (and confirm every other one) until `kill` says the server is gone.
/// Returns what was acknowledged with 2xx.
pub async fn stampede_until<F, Fut>(
    http: &reqwest::Client,
    base: &str,
    drop: &str,
    cycle: usize,
    kill: F,
) -> Acked
where
    F: FnOnce(Arc<Mutex<Acked>>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let tokens = dropd::auth::TokenKeys::new(SECRET.as_bytes()).expect("keys");
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut buyers = Vec::new();
    for b in 0..64 {
        let (http, base, acked, stop) =
            (http.clone(), base.to_owned(), acked.clone(), stop.clone());
        let drop = drop.to_owned();
        let sub = format!("buyer-{b}");
        let token = crate::helpers::token_for(&tokens, &sub);
        buyers.push(tokio::spawn(async move {
            for i in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = http
                    .post(format!("{base}/v1/drops/{drop}/holds"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("{cycle}-{sub}-{i}"))
                    .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
                    .send()
                    .await;
                let Ok(res) = sent else { break };
                if res.status() != 201 {
                    continue;
                }
                let Ok(body) = res.json::<Value>().await else {
                    break;
                };
                let hold_id = body["hold_id"].as_str().expect("hold id").to_owned();
                acked
                    .lock()
                    .expect("lock")
                    .holds
                    .push((sub.clone(), hold_id.clone()));
                if i % 2 == 0 {
                    let sent = http
                        .post(format!("{base}/v1/holds/{hold_id}/confirm"))
                        .bearer_auth(&token)
                        .header("Idempotency-Key", format!("{cycle}-{sub}-{i}-confirm"))
                        .json(&serde_json::json!({"payment_ref": "pi_crash"}))
                        .send()
                        .await;
                    let Ok(res) = sent else { break };
                    if res.status() == 201 {
                        if let Ok(order) = res.json::<Value>().await {
                            let id = order["order_id"].as_str().expect("order id").to_owned();
                            acked.lock().expect("lock").orders.push((sub.clone(), id));
                        }
                    }
                }
            }
        }));
    }
    kill(acked.clone()).await;
    stop.store(true, Ordering::Relaxed);
    for buyer in buyers {
        buyer.await.expect("buyer task");
    }
    let mut acked = acked.lock().expect("lock");
    std::mem::take(&mut *acked)
}

/// Every acknowledged hold and order is there after the restart, and the invariants hold.
pub async fn verify_survived(http: &reqwest::Client, base: &str, dir: &Path, acked: &Acked) {
    let tokens = dropd::auth::TokenKeys::new(SECRET.as_bytes()).expect("keys");
    let lookups = acked
        .holds
        .iter()
        .map(|(sub, id)| (sub, format!("/v1/holds/{id}")))
        .chain(
            acked
                .orders
                .iter()
                .map(|(sub, id)| (sub, format!("/v1/orders/{id}"))),
        );
    for (sub, path) in lookups {
        let res = http
            .get(format!("{base}{path}"))
            .bearer_auth(crate::helpers::token_for(&tokens, sub))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            res.status(),
            200,
            "acknowledged {path} is missing after the crash"
        );
    }
    let db = open_db(&dir.join("dropd.db"));
    check_invariants(&db).expect("invariants hold");
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(integrity, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_hold_survives_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let server = ServerProcess::start(dir.path());
    let http = client();
    let base = server.base.clone();
    create_drop(&http, &base, &admin_key, "crash").await;
    let acked = stampede_until(&http, &base, "crash", 0, |acked| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().expect("lock").holds.len() < 400 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill();
    })
    .await;
    assert!(
        acked.holds.len() >= 400,
        "the stampede ran before the kill ({} acked)",
        acked.holds.len()
    );

    let server = ServerProcess::start(dir.path());
    verify_survived(&http, &server.base, dir.path(), &acked).await;
    server.kill();
}

/// Ten cycles of stampede, SIGKILL at a random moment, restart: nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_loop_loses_no_acknowledged_hold_or_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let http = client();
    let mut total_holds = 0;
    for cycle in 0..10 {
        let server = ServerProcess::start(dir.path());
        let base = server.base.clone();
        if cycle == 0 {
            create_drop(&http, &base, &admin_key, "loop").await;
        }
        let after = Duration::from_millis(rand::random_range(20..400));
        let acked = stampede_until(&http, &base, "loop", cycle, |_| async move {
            tokio::time::sleep(after).await;
            server.kill();
        })
        .await;
        total_holds += acked.holds.len();

        let server = ServerProcess::start(dir.path());
        verify_survived(&http, &server.base, dir.path(), &acked).await;
        server.kill();
        let stored: i64 = open_db(&dir.path().join("dropd.db"))
            .query_row("SELECT COUNT(*) FROM holds", [], |r| r.get(0))
            .expect("count");
        assert!(
            stored as usize >= total_holds,
            "cycle {cycle}: {stored} holds stored, {total_holds} acknowledged"
        );
    }
    assert!(total_holds > 0, "the loop acknowledged some holds");
}

//! Exports stream in constant memory: 100,000 orders and 100,000 attempts leave the server's
//! resident memory about where it was (measured from /proc, not by time).

use futures_util::StreamExt;
use rusqlite::Connection;
use serde_json::Value;

use crate::support::api::client;
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::live_spec;

const ROWS: i64 = 100_000;

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS line")
        * 1024
}

/// What a server would have written for `ROWS` sales of one unit each: holds, their orders,
/// and the idempotency records of the attempts that made them (seeded with SQL while the
/// server is stopped, which takes a second where buying them through HTTP takes minutes).
fn seed_sales(db: &std::path::Path, drop: &str) {
    let conn = Connection::open(db).expect("db opens");
    let now = chrono::Utc::now().timestamp_millis();
    conn.execute_batch(&format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO holds (seq, secret, drop_id, sku, buyer, quantity, attempt_seq, state,
                            created_at, expires_at, ended_at)
         SELECT 5000000 + i, i * 7919, '{drop}', 'S1', 'buyer-' || i, 1, i, 'confirmed',
                {now}, {now} + 600000, {now} FROM n;
         INSERT INTO orders (id, hold_seq, hold_id, drop_id, sku, buyer, quantity, unit_amount,
                             currency, total_amount, payment_ref, created_at)
         SELECT printf('ord_%010d', seq), seq, id, drop_id, sku, buyer, 1, 18000, 'EUR', 18000,
                'pay-' || seq, {now}
         FROM holds WHERE drop_id = '{drop}';
         INSERT INTO idempotency_keys (buyer, key, fingerprint, created_at, drop_id,
                                       attempt_seq, hold_id)
         SELECT buyer, 'attempt-' || attempt_seq, zeroblob(16), {now}, drop_id, attempt_seq, id
         FROM holds WHERE drop_id = '{drop}' ORDER BY attempt_seq;
         UPDATE skus SET stock_total = {ROWS}, sold = {ROWS} WHERE drop_id = '{drop}';
         UPDATE drops SET attempt_seq = {ROWS} WHERE id = '{drop}';
         COMMIT;"
    ))
    .expect("sales seeded");
}

/// Streams `path` to its end, keeping nothing but counts; samples the server's RSS as it goes.
/// Returns lines, bytes, the highest RSS seen, and the first and last line.
async fn stream(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    pid: u32,
) -> (usize, usize, u64, Value, Value) {
    let res = http
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status(), 200, "{url}");
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let mut body = res.bytes_stream();
    let (mut lines, mut bytes, mut peak) = (0usize, 0usize, rss(pid));
    let mut partial = Vec::new();
    let (mut first, mut last) = (Value::Null, Value::Null);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body chunk");
        bytes += chunk.len();
        partial.extend_from_slice(&chunk);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            if lines == 0 {
                first = serde_json::from_slice(&line).expect("a JSON line");
            }
            lines += 1;
            if partial.is_empty() {
                last = serde_json::from_slice(&line).expect("a JSON line");
            }
        }
        if lines % 5_000 < 500 {
            peak = peak.max(rss(pid));
        }
    }
    assert!(partial.is_empty(), "the export ends with a whole line");
    (lines, bytes, peak.max(rss(pid)), first, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_of_100000_orders_and_attempts_stream_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = create_admin_key(dir.path());
    let http = client();
    let server = ServerProcess::start(dir.path());
    let mut spec = live_spec("big");
    spec["skus"][0]["stock"] = serde_json::json!(ROWS);
    server
        .api(&http)
        .with_admin_key(&key)
        .create_drop(&spec)
        .await;
    server.terminate();
    seed_sales(&dir.path().join("dropd.db"), "big");

    let server = ServerProcess::start(dir.path());
    let pid = server.child.id();
    // One small export first, so what every request allocates once (pool, caches) is counted
    // before the baseline.
    let warm = format!("{}/v1/admin/drops/big/attempts?after={}", server.base, 0);
    let _ = http.get(&warm).bearer_auth(&key).send().await;
    let before = rss(pid);

    let orders = format!("{}/v1/admin/drops/big/orders", server.base);
    let (lines, order_bytes, peak_orders, first, _) = stream(&http, &orders, &key, pid).await;
    assert_eq!(lines as i64, ROWS, "every order is exported");
    assert_eq!(first["drop_id"], "big");

    let attempts = format!("{}/v1/admin/drops/big/attempts", server.base);
    let (lines, attempt_bytes, peak_attempts, first, last) =
        stream(&http, &attempts, &key, pid).await;
    assert_eq!(lines as i64, ROWS, "every attempt is exported");
    assert_eq!(first["attempt_seq"], 1, "in the order they were taken");
    assert_eq!(first["outcome"], "held");
    assert_eq!(last["attempt_seq"], ROWS);
    // A later export resumes from a line's cursor.
    let cursor = last["cursor"].as_i64().expect("cursor");
    let tail = http
        .get(format!("{attempts}?after={}", cursor - 1))
        .bearer_auth(&key)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    assert_eq!(tail.lines().count(), 1);

    let peak = peak_orders.max(peak_attempts);
    let grown = peak.saturating_sub(before);
    let mib = |b: u64| b as f64 / 1_048_576.0;
    eprintln!(
        "exports: orders {:.1} MiB, attempts {:.1} MiB; RSS {:.1} MiB before, {:.1} MiB at peak \
         (+{:.1} MiB)",
        mib(order_bytes as u64),
        mib(attempt_bytes as u64),
        mib(before),
        mib(peak),
        mib(grown)
    );
    // Holding either export in memory would grow the server by its size; streaming it page by
    // page grows it by a few pages and the read connections' caches.
    let smaller = order_bytes.min(attempt_bytes) as u64;
    assert!(
        grown < smaller / 2,
        "RSS grew {grown} bytes over exports of {order_bytes} and {attempt_bytes} bytes"
    );
    server.terminate();
}

//! Followers (`serve --follow URL`), real binaries on both sides: a leader ships its replica, a
//! follower restores it, applies each new file, serves drop reads and live stock from its copy,
//! and sends everything else to the leader. The real `litestream restore -f` follows the same
//! replica.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::api::{buyer_token, client, expect_problem, Api};
use crate::support::litestream::{file_url, list_replica, litestream_command};
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::replica::wait_replicated;
use crate::support::s3::S3Server;
use crate::support::spec::live_spec;
use crate::support::sse::Events;

const SYNC: Duration = Duration::from_secs(1);

fn leader(data: &Path, replica_args: &[&str]) -> ServerProcess {
    let mut args = vec!["--sync-interval", "1s"];
    args.extend_from_slice(replica_args);
    ServerProcess::start_with(data, &args, &[])
}

fn follower(data: &Path, url: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--follow", url, "--follow-interval", "200ms"];
    args.extend_from_slice(extra);
    ServerProcess::start_with(data, &args, &[])
}

fn replica_txid(replica: &Path) -> u64 {
    list_replica(replica)
        .iter()
        .map(|f| f.max_txid)
        .max()
        .unwrap_or(0)
}

/// Waits until the replica reaches past `txid` (0: holds anything), so what the leader
/// committed is there for a follower to restore.
async fn wait_past(replica: &Path, txid: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica_txid(replica) <= txid {
        assert!(
            Instant::now() < deadline,
            "the leader shipped nothing past {txid}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET path` on `base` until it answers 200; returns how long it took.
async fn until_served(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let res = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("sent");
        if res.status() == 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{path} not served by the follower within {within:?} (last {})",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls until the follower shows `available` units of the drop's S1.
async fn until_available(api: &Api, drop: &str, available: i64, within: Duration) {
    let started = Instant::now();
    loop {
        if api.available(drop, "S1").await == available {
            return;
        }
        assert!(
            started.elapsed() < within,
            "the follower never showed {available} available of {drop}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_the_leaders_drops_and_stock_and_sends_writes_to_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (lead_data, follow_data) = (dir.path().join("leader"), dir.path().join("follower"));
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let http = client();
    let mut lead = leader(&lead_data, &["--replica", &url]);
    let key = create_admin_key(&lead_data);
    let admin = lead.api(&http).with_admin_key(&key);
    wait_past(&replica, 0).await;
    let before = replica_txid(&replica);
    admin.create_drop(&live_spec("first")).await;
    wait_past(&replica, before).await;

    let follow = follower(&follow_data, &url, &["--leader-url", &lead.base]);
    let reader = follow.api(&http);
    assert_eq!(
        reader.drop_view("first").await["id"],
        "first",
        "restored at start"
    );

    // A drop created on the leader is served by the follower within two sync intervals.
    admin.create_drop(&live_spec("second")).await;
    let took = until_served(&http, &follow.base, "/v1/drops/second", 2 * SYNC).await;
    eprintln!("the follower served the new drop {took:?} after its creation");

    // Live stock moves on the follower's stream as holds commit on the leader.
    let mut events = Events::at(&http, &follow.base, "second").await;
    let before = reader.available("second", "S1").await;
    let buyer = lead.api(&http).buyer("alice");
    for i in 0..3 {
        let res = buyer.hold("second", "S1", 1, &format!("h{i}")).await;
        assert_eq!(res.status(), 201);
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        events.until_available("S1", before - 3),
    )
    .await
    .expect("the follower's stream showed the leader's holds");

    // Writes, and what belongs to one buyer, go to the leader: the same path, the method kept.
    let bare = no_redirects();
    let res = bare
        .post(format!("{}/v1/drops/second/holds?x=1", follow.base))
        .bearer_auth(buyer_token("bob"))
        .header("Idempotency-Key", "k1")
        .json(&json!({"sku": "S1", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 307);
    assert_eq!(
        res.headers()["location"],
        format!("{}/v1/drops/second/holds?x=1", lead.base).as_str()
    );
    for path in ["/v1/orders", "/v1/keys", "/v1/me/events", "/admin"] {
        let res = bare
            .get(format!("{}{path}", follow.base))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 307, "{path}");
    }
    let res = bare
        .delete(format!("{}/v1/drops/second", follow.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 307, "only GET and HEAD are served");
    // A redirect-following client gets the leader's answer.
    let keys: Value = http
        .get(format!("{}/v1/keys", follow.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(!keys["keys"].as_array().expect("keys").is_empty());

    // Its lag is in /readyz and /metrics.
    let ready = reader.readyz().await;
    assert!(ready["writer"].is_null(), "{ready}");
    assert_eq!(ready["follower"]["url"], url.as_str());
    assert!(
        ready["follower"]["behind_seconds"]
            .as_f64()
            .expect("seconds")
            < 5.0
    );
    let metrics = reader.metrics().await.text().await.expect("text");
    for name in ["dropd_follower_txid", "dropd_follower_behind_seconds"] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }

    // It survives the leader's restart (which ships the whole database again).
    lead.terminate();
    lead = leader(&lead_data, &["--replica", &url]);
    let buyer = lead.api(&http).buyer("carol");
    let res = buyer.hold("second", "S1", 2, "after-restart").await;
    assert_eq!(res.status(), 201);
    until_available(&reader, "second", before - 5, Duration::from_secs(10)).await;
    let admin = lead.api(&http).with_admin_key(&key);
    admin.create_drop(&live_spec("third")).await;
    until_served(&http, &follow.base, "/v1/drops/third", 4 * SYNC).await;
    let ready = reader.readyz().await;
    assert_eq!(
        ready["follower"]["txid"], ready["follower"]["replica_txid"],
        "{ready}"
    );
    follow.terminate();
    lead.terminate();
}

fn compacting_config(dir: &Path, db: &Path, replica: &Path) -> std::path::PathBuf {
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n      \
             sync-interval: 100ms\nlevels:\n  - interval: 1s\n  - interval: 2s\n\
             snapshot:\n  interval: 2s\n  retention: 3s\nl0-retention: 1s\n",
            db.display(),
            replica.display()
        ),
    )
    .expect("config written");
    config
}

/// Compaction, snapshots and retention delete and merge files under a running follower (and
/// one polling slower than retention), and a follower that cannot read its replica says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeps_up_through_compaction_and_says_when_it_falls_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lead_data = dir.path().join("leader");
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let http = client();
    std::fs::create_dir_all(&lead_data).expect("dir");
    let config = compacting_config(dir.path(), &lead_data.join("dropd.db"), &replica);
    let lead = ServerProcess::start_with(
        &lead_data,
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let admin = lead
        .api(&http)
        .with_admin_key(&create_admin_key(&lead_data));
    admin.create_drop(&live_spec("levels")).await;
    wait_past(&replica, 0).await;
    let quick = follower(
        &dir.path().join("quick"),
        &url,
        &["--no-redirect", "--max-lag", "2s"],
    );
    let slow = ServerProcess::start_with(
        &dir.path().join("slow"),
        &["--follow", &url, "--follow-interval", "3s"],
        &[],
    );
    let buyer = lead.api(&http).buyer("dave");
    let started = Instant::now();
    let mut made = 0;
    let mut levels = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(7) {
        let res = buyer.hold("levels", "S1", 1, &format!("k{made}")).await;
        assert_eq!(res.status(), 201);
        made += 1;
        levels.extend(list_replica(&replica).iter().map(|f| f.level));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(levels.contains(&1) && levels.contains(&9), "{levels:?}");
    let leader_view = lead.api(&http).available("levels", "S1").await;
    until_available(
        &quick.api(&http),
        "levels",
        leader_view,
        Duration::from_secs(10),
    )
    .await;
    until_available(
        &slow.api(&http),
        "levels",
        leader_view,
        Duration::from_secs(15),
    )
    .await;

    // Without a redirect, writes get 421 naming where they belong (none is known here).
    let res = http
        .post(format!("{}/v1/drops/levels/holds", quick.base))
        .json(&json!({"sku": "S1", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    expect_problem(res, 421, "not-leader").await;

    // The replica out of reach: the follower keeps serving what it has, and /readyz says 503
    // once its view is older than --max-lag; it is ready again once the replica is back.
    let away = dir.path().join("replica-away");
    std::fs::rename(&replica, &away).expect("replica moved away");
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let res = http
            .get(format!("{}/readyz", quick.base))
            .send()
            .await
            .expect("sent");
        if res.status() == 503 {
            break expect_problem(res, 503, "unavailable").await;
        }
        assert!(Instant::now() < deadline, "never unready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        body["detail"].as_str().expect("detail").contains("behind"),
        "{body}"
    );
    assert!(body["follower"]["error"].is_string(), "{body}");
    assert_eq!(
        quick.api(&http).available("levels", "S1").await,
        leader_view
    );
    std::fs::rename(&away, &replica).expect("replica back");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let res = http
            .get(format!("{}/readyz", quick.base))
            .send()
            .await
            .expect("sent");
        if res.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    quick.terminate();
    slow.terminate();
    lead.terminate();
}

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drops_in(db: &Path) -> Option<Vec<String>> {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg("SELECT id FROM drops ORDER BY id")
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

/// The real `litestream restore -f` follows a replica dropd ships, as dropd's follower does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litestream_restore_follow_tracks_a_dropd_replica() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lead_data = dir.path().join("leader");
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let http = client();
    let lead = leader(&lead_data, &["--replica", &url]);
    let admin = lead
        .api(&http)
        .with_admin_key(&create_admin_key(&lead_data));
    admin.create_drop(&live_spec("one")).await;
    wait_past(&replica, 0).await;
    let out = dir.path().join("followed.db");
    let _litestream = Killed(
        litestream_command()
            .args(["restore", "-f", "-follow-interval", "200ms", "-o"])
            .arg(&out)
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("litestream starts"),
    );
    admin.create_drop(&live_spec("two")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if drops_in(&out).is_some_and(|d| d == ["one", "two"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "litestream -f never showed both drops: {:?}",
            drops_in(&out)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lead.terminate();
}

/// The same through a real S3-protocol server: a follower of an S3 replica serves what the
/// leader ships there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_an_s3_replica_serves_what_the_leader_ships() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let url = s3.url("followed");
    let lead_data = dir.path().join("leader");
    let http = client();
    let lead = ServerProcess::start_with(
        &lead_data,
        &["--replica", &url, "--sync-interval", "200ms"],
        &S3Server::credentials(),
    );
    let admin = lead
        .api(&http)
        .with_admin_key(&create_admin_key(&lead_data));
    admin.create_drop(&live_spec("early")).await;
    wait_replicated(&admin, Duration::from_millis(200)).await;
    let follow = ServerProcess::start_with(
        &dir.path().join("follower"),
        &["--follow", &url, "--follow-interval", "200ms"],
        &S3Server::credentials(),
    );
    until_served(
        &http,
        &follow.base,
        "/v1/drops/early",
        Duration::from_secs(5),
    )
    .await;
    admin.create_drop(&live_spec("late")).await;
    until_served(
        &http,
        &follow.base,
        "/v1/drops/late",
        Duration::from_secs(5),
    )
    .await;
    let res = lead
        .api(&http)
        .buyer("erin")
        .hold("late", "S1", 4, "e1")
        .await;
    assert_eq!(res.status(), 201);
    let leader_view = lead.api(&http).available("late", "S1").await;
    until_available(
        &follow.api(&http),
        "late",
        leader_view,
        Duration::from_secs(5),
    )
    .await;
    follow.terminate();
    lead.terminate();
}

//! Replication end to end with real parts: an S3-protocol server on 127.0.0.1 (`s3.rs`), the
//! real `litestream` 0.5.17 restoring what dropd ships, and the real binary killed between
//! uploads.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dropd::handshake::Handshake;
use dropd::replicate::config::ReplicationConfig;
use dropd::replicate::replica::{FileReplica, ReplicaTarget};
use dropd::replicate::shipper::Shipper;
use dropd::replicate::status::ReplicaStatus;
use rusqlite::Connection;
use serde_json::Value;

use crate::crash::{create_admin_key, live_spec, ServerProcess};
use crate::helpers::{client, live_drop, spawn_app_with, token_for, TestApp, SECRET};
use crate::litestream::{list_replica, litestream};
use crate::s3::S3Server;

/// `litestream restore` of `url` into `out` with extra flags; returns the database bytes.
pub fn litestream_restore(url: &str, out: &Path, flags: &[&str]) -> Vec<u8> {
    let run = Command::new(litestream())
        .env_remove("AWS_CA_BUNDLE")
        .envs(S3Server::credentials())
        .args(["restore", "-o"])
        .arg(out)
        .args(flags)
        .arg(url)
        .output()
        .expect("litestream runs");
    assert!(
        run.status.success(),
        "litestream restore {flags:?} failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(out).expect("restored db")
}

/// `dropd restore` (the real binary) of `url` into `out`.
pub fn dropd_restore(url: &str, out: &Path, flags: &[&str]) -> Result<Vec<u8>, String> {
    let run = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .envs(S3Server::credentials())
        .args(["restore", "-o"])
        .arg(out)
        .args(flags)
        .arg(url)
        .output()
        .expect("dropd runs");
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).into_owned());
    }
    Ok(std::fs::read(out).expect("restored db"))
}

/// Holds in a restored database, after its integrity check.
fn holds_in(db: &[u8], dir: &Path, name: &str) -> i64 {
    let conn = crate::helpers::restored_db(db, dir, name);
    conn.query_row("SELECT COUNT(*) FROM holds", [], |r| r.get(0))
        .expect("count")
}

async fn readyz_replica(app: &TestApp) -> Value {
    app.get_json("/readyz").await["replica"].clone()
}

/// Waits until a sync that started after this call has shipped everything.
async fn wait_replicated(app: &TestApp, interval: Duration) -> Value {
    let since = SystemTime::now() + interval * 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replica = readyz_replica(app).await;
        let synced_after = replica["last_sync_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| SystemTime::from(t) > since);
        if replica["state"] == "ok" && replica["pending_wal_bytes"] == 0 && synced_after {
            return replica;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never caught up: {replica}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn hold_many(app: &TestApp, drop: &str, prefix: &str, n: usize) {
    let token = app.token("alice");
    for i in 0..n {
        let res = app
            .hold(&token, drop, "S1", 1, &format!("{prefix}{i}"))
            .await;
        assert_eq!(res.status(), 201, "hold {prefix}{i}");
    }
}

fn replication(target: ReplicaTarget, sync: Duration) -> ReplicationConfig {
    ReplicationConfig {
        sync_interval: sync,
        ..ReplicationConfig::for_target(target)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_replica_restores_with_litestream_to_latest_txid_and_timestamp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let sync = Duration::from_millis(100);
    let config = replication(s3.target("prod/dropd"), sync);
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    app.create_drop(&live_drop("s3", 1_000, 1_000)).await;
    hold_many(&app, "s3", "a", 10).await;
    let first = wait_replicated(&app, sync).await;
    let first_txid = first["txid"].as_str().expect("txid").to_owned();
    // Litestream compares -timestamp with S3's LastModified, which has 1 s resolution.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    hold_many(&app, "s3", "b", 15).await;
    wait_replicated(&app, sync).await;
    app.stop().await;

    let url = s3.url("prod/dropd");
    let out = dir.path();
    let latest = litestream_restore(&url, &out.join("latest.db"), &[]);
    assert_eq!(holds_in(&latest, out, "c-latest.db"), 25);
    let at_txid = litestream_restore(&url, &out.join("txid.db"), &["-txid", &first_txid]);
    assert_eq!(holds_in(&at_txid, out, "c-txid.db"), 10);
    let at_time = litestream_restore(&url, &out.join("time.db"), &["-timestamp", &between]);
    assert_eq!(holds_in(&at_time, out, "c-time.db"), 10);

    // dropd restore reads the same S3 replica to the same bytes.
    let ours = dropd_restore(&url, &out.join("ours.db"), &[]).expect("dropd restore");
    assert!(ours == latest, "latest: same bytes as litestream");
    let ours = dropd_restore(&url, &out.join("ours-time.db"), &["-timestamp", &between])
        .expect("dropd restore -timestamp");
    assert!(ours == at_time, "-timestamp: same bytes as litestream");

    // A damaged object is refused by name, and nothing is written.
    let objects = dir
        .path()
        .join("s3")
        .join(s3::BUCKET)
        .join("prod/dropd/0000");
    let newest = std::fs::read_dir(&objects)
        .expect("level 0 objects")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ltx"))
        .max()
        .expect("a level-0 object");
    let mut bytes = std::fs::read(&newest).expect("object");
    let cut = bytes.len() - 20;
    bytes.truncate(cut);
    std::fs::write(&newest, bytes).expect("truncated");
    let err = dropd_restore(&url, &out.join("never.db"), &[]).expect_err("refused");
    let name = newest.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(err.contains(name), "the error names the object: {err}");
    assert!(!out.join("never.db").exists());
}

use crate::s3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_of_30_seconds_loses_nothing_and_serving_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s3 = S3Server::start(&dir.path().join("s3"));
    let sync = Duration::from_millis(200);
    let config = replication(s3.target("outage"), sync);
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    app.create_drop(&live_drop("outage", 10_000, 1_000)).await;
    hold_many(&app, "outage", "before", 5).await;
    wait_replicated(&app, sync).await;

    s3.pause();
    let token = app.token("bob");
    let started = Instant::now();
    let mut during = 0;
    let mut seen_failing = false;
    while started.elapsed() < Duration::from_secs(30) && during < 1_000 {
        let res = app
            .hold(&token, "outage", "S1", 1, &format!("during{during}"))
            .await;
        assert_eq!(res.status(), 201, "buyers are served while S3 is down");
        during += 1;
        if !seen_failing && started.elapsed() > Duration::from_secs(3) {
            let replica = readyz_replica(&app).await;
            if replica["state"] == "failing" {
                assert!(replica["error"].as_str().is_some_and(|e| !e.is_empty()));
                let metrics = app
                    .client
                    .get(app.url("/metrics"))
                    .send()
                    .await
                    .expect("metrics")
                    .text()
                    .await
                    .expect("text");
                assert!(metrics.contains("dropd_replica_up 0"), "{metrics}");
                seen_failing = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen_failing,
        "readyz shows the replica failing during the outage"
    );
    s3.resume();
    let replica = wait_replicated(&app, sync).await;
    assert_eq!(replica["error"], Value::Null);
    app.stop().await;

    let url = s3.url("outage");
    let theirs = litestream_restore(&url, &dir.path().join("after.db"), &[]);
    assert_eq!(
        holds_in(&theirs, dir.path(), "c-after.db"),
        5 + during,
        "every hold made during the outage is in the replica"
    );
    let ours = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restore");
    assert!(ours == theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = dir.path().join("replica");
    let config = ReplicationConfig {
        checkpoint_wal_size: 256 << 10,
        ..replication(
            ReplicaTarget::File(replica.clone()),
            Duration::from_millis(200),
        )
    };
    let data = dir.path().join("data");
    let app = spawn_app_with(|s| {
        s.data_dir = data.clone();
        s.replica = Some(config);
    })
    .await;
    app.create_drop(&live_drop("busy", 1_000_000, 1_000)).await;
    let app = Arc::new(app);
    let wal = data.join("dropd.db-wal");
    let deadline = Instant::now() + Duration::from_secs(5);
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut acked = 0u64;
                for i in 0..5_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    // A fresh buyer every 1,000 holds, the per-buyer limit.
                    let token = app.token(&format!("buyer{w}-{}", i / 1_000));
                    let res = app.hold(&token, "busy", "S1", 1, &format!("{w}-{i}")).await;
                    assert_eq!(res.status(), 201);
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    let mut largest = 0;
    while Instant::now() < deadline {
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut acked = 0;
    for w in workers {
        acked += w.await.expect("worker");
    }
    let app = Arc::into_inner(app).expect("workers are done");
    app.stop().await;
    assert!(acked > 500, "the load ran: {acked} holds");
    // Checkpoint size plus one sync interval of growth (200 ms of this stampede is a few MB
    // since test builds optimize SQLite), far below the tens of MB an unbounded WAL reaches.
    assert!(
        largest < 8 << 20,
        "the WAL stayed near its 256 KiB checkpoint size (largest {largest} bytes)"
    );
    let theirs = litestream_restore(
        &format!("file://{}", replica.display()),
        &dir.path().join("restored.db"),
        &[],
    );
    assert_eq!(holds_in(&theirs, dir.path(), "c.db"), acked as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_snapshots_and_retention_keep_the_replica_restorable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = dir.path().join("replica");
    let sync = Duration::from_millis(100);
    let config = ReplicationConfig {
        levels: vec![Duration::from_secs(1), Duration::from_secs(2)],
        snapshot_interval: Duration::from_secs(2),
        snapshot_retention: Duration::from_secs(3),
        l0_retention: Duration::from_secs(1),
        ..replication(ReplicaTarget::File(replica.clone()), sync)
    };
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    app.create_drop(&live_drop("levels", 10_000, 1_000)).await;
    let token = app.token("carol");
    let started = Instant::now();
    let mut made = 0;
    // Every file the replica ever held, watched while it is written.
    let mut seen = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(7) {
        let res = app
            .hold(&token, "levels", "S1", 1, &format!("k{made}"))
            .await;
        assert_eq!(res.status(), 201);
        made += 1;
        seen.extend(
            list_replica(&replica)
                .iter()
                .map(|f| (f.level, f.min_txid, f.max_txid)),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_replicated(&app, sync).await;
    app.stop().await;

    let files = list_replica(&replica);
    let ever = |level: u32| seen.iter().filter(|f| f.0 == level).count();
    assert!(
        ever(1) > 0 && ever(2) > 0,
        "levels 1 and 2 were compacted: {seen:?}"
    );
    assert!(
        ever(9) > 1,
        "snapshots were taken on the interval: {seen:?}"
    );
    assert!(
        seen.contains(&(9, 1, 1)),
        "the first start wrote a snapshot"
    );
    assert!(
        files
            .iter()
            .all(|f| (f.level, f.min_txid, f.max_txid) != (9, 1, 1)),
        "the first snapshot aged out once newer ones existed: {files:?}"
    );
    assert!(
        files.len() < seen.len(),
        "retention deleted files ({} left of {} written)",
        files.len(),
        seen.len()
    );
    let url = format!("file://{}", replica.display());
    let theirs = litestream_restore(&url, &dir.path().join("latest.db"), &[]);
    assert_eq!(holds_in(&theirs, dir.path(), "c.db"), made);
    let ours = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restore");
    assert!(ours == theirs);
    // An older point that is still retained (a file boundary of the latest chain) restores the
    // same through both tools.
    let chain = dropd::replicate::restore::plan(
        &files,
        dropd::replicate::restore::Target::Latest,
        "replica",
    )
    .expect("plan");
    assert!(chain.len() >= 2, "{chain:?}");
    let txid = format!("{:016x}", chain[0].max_txid);
    let theirs = litestream_restore(&url, &dir.path().join("mid.db"), &["-txid", &txid]);
    let ours =
        dropd_restore(&url, &dir.path().join("ours-mid.db"), &["-txid", &txid]).expect("mid");
    assert!(ours == theirs, "-txid {txid}");
}

/// A database changed by a plain SQLite connection, shipped step by step: what litestream
/// restores is the checkpointed file, byte for byte, as it grows, shrinks and grows again.
#[test]
fn page_sizes_shrink_and_growth_restore_byte_for_byte() {
    for page_size in [1024u32, 65536] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("t.db");
        let replica = dir.path().join("replica");
        let conn = Connection::open(&db).expect("db");
        conn.execute_batch(&format!(
            "PRAGMA page_size = {page_size}; PRAGMA journal_mode = WAL; \
             PRAGMA wal_autocheckpoint = 0; \
             CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
        ))
        .expect("schema");
        let Handshake {
            writer: gate,
            shipper: shipper_gate,
            ..
        } = Handshake::with_default_sizes();
        let config = ReplicationConfig::for_target(ReplicaTarget::File(replica.clone()));
        let mut shipper = Shipper::new(
            dropd::store::DbFiles::keep(&db).expect("kept"),
            Arc::new(FileReplica::new(replica.clone())),
            config,
            shipper_gate,
            Arc::new(ReplicaStatus::new("test".into())),
        );
        let url = format!("file://{}", replica.display());
        let mut check = |step: &str| {
            shipper.step().expect("shipped");
            gate.truncating();
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .expect("checkpoint");
            gate.truncated(false);
            let expected = std::fs::read(&db).expect("db bytes");
            let out = dir.path().join(format!("{step}.db"));
            let restored = litestream_restore(&url, &out, &[]);
            assert!(
                restored == expected,
                "page size {page_size}, {step}: restored {} bytes, database {} bytes",
                restored.len(),
                expected.len()
            );
        };
        let insert = |n: usize| {
            for i in 0..n {
                conn.execute(
                    "INSERT INTO t (body) VALUES (?1)",
                    [format!("{i} {}", "z".repeat(700))],
                )
                .expect("insert");
            }
        };
        insert(400);
        check("grown");
        conn.execute_batch("DELETE FROM t WHERE id > 20; VACUUM;")
            .expect("shrink");
        check("shrunk");
        insert(600);
        check("regrown");
    }
}

/// SIGKILL between two uploads, restart, more writes: the replica continues with no gap and
/// holds every acknowledged hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_uploads_leaves_no_gap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let data = dir.path().join("data");
    let admin = create_admin_key(&data);
    let url = s3.url("killed");
    let args = ["--replica", url.as_str(), "--sync-interval", "300ms"];
    let envs = S3Server::credentials();
    let http = client();
    let tokens = dropd::auth::TokenKeys::new(SECRET.as_bytes()).expect("keys");
    let mut acked = 0;
    for round in 0..2 {
        let token = token_for(&tokens, &format!("dave{round}"));
        let server = ServerProcess::start_with(&data, &args, &envs);
        if round == 0 {
            let res = http
                .post(format!("{}/v1/admin/drops", server.base))
                .bearer_auth(&admin)
                .json(&live_spec("killed"))
                .send()
                .await
                .expect("create");
            assert_eq!(res.status(), 201);
        }
        // Stagger the kill so it lands at a different point of the sync cycle each round.
        let until = Instant::now() + Duration::from_millis(1_000 + 170 * round);
        let mut made = 0;
        while Instant::now() < until && made < 1_000 {
            made += 1;
            let res = http
                .post(format!("{}/v1/drops/killed/holds", server.base))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("r{round}-{acked}"))
                .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
                .send()
                .await
                .expect("hold");
            let status = res.status();
            assert_eq!(status, 201, "{}", res.text().await.unwrap_or_default());
            acked += 1;
        }
        server.kill();
    }
    let server = ServerProcess::start_with(&data, &args, &envs);
    let token = token_for(&tokens, "erin");
    let res = http
        .post(format!("{}/v1/drops/killed/holds", server.base))
        .bearer_auth(&token)
        .header("Idempotency-Key", "last")
        .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
        .send()
        .await
        .expect("hold");
    assert_eq!(res.status(), 201);
    acked += 1;
    server.terminate();

    let restored = litestream_restore(&url, &dir.path().join("restored.db"), &[]);
    assert_eq!(holds_in(&restored, dir.path(), "c.db"), acked);
    let ours = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restore");
    assert!(ours == restored);
}

/// `serve --config` reads a Litestream-format file: unknown keys warn, invalid values stop the
/// start naming the key.
#[test]
fn serve_config_names_the_invalid_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        "dbs:\n  - path: ./data/dropd.db\n    replica:\n      url: file:///tmp/r\n      sync-interval: often\n",
    )
    .expect("config");
    let run = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("dropd runs");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("dbs[0].replica.sync-interval"), "{stderr}");
}

/// The top-level litestream.yml is an example both tools read: dropd without a warning, the real
/// litestream without an error.
#[test]
fn the_example_litestream_yml_is_read_by_dropd_and_by_litestream() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("litestream.yml");
    let (config, warnings) = ReplicationConfig::load(&example, None).expect("dropd reads it");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.levels.len(), 3);
    let run = Command::new(litestream())
        .env_remove("AWS_CA_BUNDLE")
        .args(["databases", "-config"])
        .arg(&example)
        .output()
        .expect("litestream runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// A lost machine: a new, empty data directory next to a replica that holds the drop. `serve`
/// refuses to start (an empty database would become the replica's latest state); after
/// `dropd restore` it starts and the replica continues with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_hide_a_replica_and_continues_it_after_a_restore() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let sync = Duration::from_millis(100);
    let config = replication(ReplicaTarget::File(replica.clone()), sync);
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    // Live for the test clock of the app in process and for the real clock of the binary.
    let mut spec = live_drop("lost", 1_000, 1_000);
    let now = chrono::Utc::now().min(crate::helpers::start_time());
    spec["starts_at"] = serde_json::json!((now - chrono::Duration::hours(1)).to_rfc3339());
    spec["ends_at"] = serde_json::json!((now + chrono::Duration::days(30)).to_rfc3339());
    app.create_drop(&spec).await;
    hold_many(&app, "lost", "first", 12).await;
    wait_replicated(&app, sync).await;
    app.stop().await;

    let data = dir.path().join("new-machine");
    let args = ["--replica", url.as_str(), "--sync-interval", "100ms"];
    let refused = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-secret",
            SECRET,
            "--data-dir",
        ])
        .arg(&data)
        .args(args)
        .output()
        .expect("dropd runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("restore it first"), "{stderr}");
    assert!(!data.join("dropd.db").exists(), "nothing was created");

    let restored = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args(["restore", "--if-db-not-exists", "-o"])
        .arg(data.join("dropd.db"))
        .arg(&url)
        .output()
        .expect("dropd restore runs");
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let server = ServerProcess::start_with(&data, &args, &[]);
    let tokens = dropd::auth::TokenKeys::new(SECRET.as_bytes()).expect("keys");
    let token = token_for(&tokens, "frank");
    let http = client();
    for i in 0..5 {
        let res = http
            .post(format!("{}/v1/drops/lost/holds", server.base))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("after{i}"))
            .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
            .send()
            .await
            .expect("hold");
        assert_eq!(res.status(), 201);
    }
    server.terminate();
    let theirs = litestream_restore(&url, &dir.path().join("after.db"), &[]);
    assert_eq!(holds_in(&theirs, dir.path(), "c.db"), 17);
}

/// `ack_after_replicated`: a hold is answered only once the replica holds it, so a restore taken
/// the moment the answer arrives has it; with the replica down the answer is 503
/// `replica-unavailable`, and the same request retried once it is back gets its 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_after_replicated_answers_only_what_the_replica_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s3 = S3Server::start(&dir.path().join("s3"));
    let sync = Duration::from_millis(200);
    let config = replication(s3.target("acked"), sync);
    let app = spawn_app_with(|s| {
        s.replica = Some(config);
        s.ack_after_replicated = true;
    })
    .await;
    app.create_drop(&live_drop("acked", 1_000, 1_000)).await;
    let url = s3.url("acked");
    let token = app.token("grace");
    for i in 0..3 {
        let res = app.hold(&token, "acked", "S1", 1, &format!("a{i}")).await;
        assert_eq!(res.status(), 201);
        // No waiting: the answer itself says the replica has it.
        let restored =
            dropd_restore(&url, &dir.path().join(format!("r{i}.db")), &[]).expect("dropd restore");
        assert_eq!(
            holds_in(&restored, dir.path(), &format!("c{i}.db")),
            i + 1,
            "hold {i} is in the replica when its answer arrives"
        );
    }

    s3.pause();
    let res = app.hold(&token, "acked", "S1", 1, "during").await;
    let problem = crate::helpers::expect_problem(res, 503, "replica-unavailable").await;
    assert!(problem["detail"]
        .as_str()
        .is_some_and(|d| d.contains("Idempotency-Key")));
    s3.resume();
    // A client retries on 503 with the same key until the replica has caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = app.hold(&token, "acked", "S1", 1, "during").await;
        if res.status() == 201 {
            break;
        }
        assert_eq!(res.status(), 503);
        assert!(Instant::now() < deadline, "the replica never confirmed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restored = dropd_restore(&url, &dir.path().join("after.db"), &[]).expect("dropd restore");
    assert_eq!(holds_in(&restored, dir.path(), "c-after.db"), 4);
    // Once everything is shipped and the WAL truncated, a replay (which writes nothing) is
    // answered at once, not left waiting for a report that never comes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let res = app.hold(&token, "acked", "S1", 1, "a0").await;
    assert_eq!(res.status(), 201, "an idempotent replay is answered");
    app.stop().await;
}

#[test]
fn ack_after_replicated_needs_a_replica() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ack-after-replicated",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("dropd runs");
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("needs a replica"));
}

/// A file larger than the multipart threshold goes up in parts and comes back whole, with its
/// timestamp metadata.
#[test]
fn a_large_file_is_uploaded_in_parts_with_its_timestamp() {
    use dropd::replicate::ltx::{self, Header};
    use dropd::replicate::replica::{Replica, S3Replica};
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let ReplicaTarget::S3(target) = s3.target("big") else {
        unreachable!("an s3 target")
    };
    let replica = S3Replica::connect(target)
        .expect("client")
        .with_multipart(6 << 20, 5 << 20);
    // 3,000 pages that do not compress: a 12 MB file, three parts of at most 5 MiB.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let pages: Vec<Vec<u8>> = (0..3_000)
        .map(|_| {
            (0..4096)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        })
        .collect();
    let header = Header {
        page_size: 4096,
        commit: 3_000,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 1_795_000_000_123,
        ..Header::default()
    };
    let bytes = ltx::encode(
        &header,
        pages
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32 + 1, p.as_slice())),
    )
    .expect("encodes");
    assert!(bytes.len() > 11 << 20, "more than two 5 MiB parts");
    replica
        .write(9, &header, bytes.clone())
        .expect("uploaded in parts");
    let mut files = replica.list().expect("listed");
    assert_eq!(files.len(), 1);
    assert!(replica.read(&files[0]).expect("read") == bytes);
    replica.refine_times(&mut files).expect("metadata");
    assert_eq!(
        files[0].written,
        std::time::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)
    );
}

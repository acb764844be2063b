//! The replica through what goes wrong: an S3 outage while buyers are served, the real binary
//! killed between uploads, a lost machine restored from its replica, and `ack_after_replicated`
//! answering only what the replica holds.

use std::process::Command;
use std::time::{Duration, Instant};

use dropd::replicate::replica::ReplicaTarget;
use serde_json::Value;

use crate::support::api::{client, expect_problem, SECRET};
use crate::support::app::{spawn_app_with, start_time};
use crate::support::db::restored_holds;
use crate::support::litestream::{dropd_restore, file_url, litestream_restore, run_dropd_restore};
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::replica::{replication, wait_replicated};
use crate::support::s3::S3Server;
use crate::support::spec::{live_drop, live_spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_of_30_seconds_loses_nothing_and_serving_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s3 = S3Server::start(&dir.path().join("s3"));
    let sync = Duration::from_millis(200);
    let config = replication(s3.target("outage"), sync);
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    app.create_drop(&live_drop("outage", 10_000, 1_000)).await;
    app.buyer("alice").hold_many("outage", "before", 5).await;
    wait_replicated(&app.api(), sync).await;

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
            let replica = app.api().readyz_replica().await;
            if replica["state"] == "failing" {
                assert!(replica["error"].as_str().is_some_and(|e| !e.is_empty()));
                let metrics = app.api().metrics().await.text().await.expect("text");
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
    let replica = wait_replicated(&app.api(), sync).await;
    assert_eq!(replica["error"], Value::Null);
    app.stop().await;

    let url = s3.url("outage");
    let theirs = litestream_restore(&url, &dir.path().join("after.db"), &[]);
    assert_eq!(
        restored_holds(&theirs, dir.path(), "c-after.db"),
        5 + during,
        "every hold made during the outage is in the replica"
    );
    let ours = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restore");
    assert!(ours == theirs);
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
    let mut acked = 0;
    for round in 0..2 {
        let server = ServerProcess::start_with(&data, &args, &envs);
        let api = server.api(&http);
        if round == 0 {
            api.with_admin_key(&admin)
                .create_drop(&live_spec("killed"))
                .await;
        }
        let buyer = api.buyer(&format!("dave{round}"));
        // Stagger the kill so it lands at a different point of the sync cycle each round.
        let until = Instant::now() + Duration::from_millis(1_000 + 170 * round);
        let mut made = 0;
        while Instant::now() < until && made < 1_000 {
            made += 1;
            let res = buyer
                .hold("killed", "S1", 1, &format!("r{round}-{acked}"))
                .await;
            let status = res.status();
            assert_eq!(status, 201, "{}", res.text().await.unwrap_or_default());
            acked += 1;
        }
        server.kill();
    }
    let server = ServerProcess::start_with(&data, &args, &envs);
    let res = server
        .api(&http)
        .buyer("erin")
        .hold("killed", "S1", 1, "last")
        .await;
    assert_eq!(res.status(), 201);
    acked += 1;
    server.terminate();

    let restored = litestream_restore(&url, &dir.path().join("restored.db"), &[]);
    assert_eq!(restored_holds(&restored, dir.path(), "c.db"), acked);
    let ours = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restore");
    assert!(ours == restored);
}

/// A lost machine: a new, empty data directory next to a replica that holds the drop. `serve`
/// refuses to start (an empty database would become the replica's latest state); after
/// `dropd restore` it starts and the replica continues with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_hide_a_replica_and_continues_it_after_a_restore() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let sync = Duration::from_millis(100);
    let config = replication(ReplicaTarget::File(replica.clone()), sync);
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    // Live for the test clock of the app in process and for the real clock of the binary.
    let mut spec = live_drop("lost", 1_000, 1_000);
    let now = chrono::Utc::now().min(start_time());
    spec["starts_at"] = serde_json::json!((now - chrono::Duration::hours(1)).to_rfc3339());
    spec["ends_at"] = serde_json::json!((now + chrono::Duration::days(30)).to_rfc3339());
    app.create_drop(&spec).await;
    app.buyer("alice").hold_many("lost", "first", 12).await;
    wait_replicated(&app.api(), sync).await;
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

    run_dropd_restore(&url, &data.join("dropd.db"), &["--if-db-not-exists"])
        .expect("dropd restore");
    let server = ServerProcess::start_with(&data, &args, &[]);
    let frank = server.api(&client()).buyer("frank");
    for i in 0..5 {
        let res = frank.hold("lost", "S1", 1, &format!("after{i}")).await;
        assert_eq!(res.status(), 201);
    }
    server.terminate();
    let theirs = litestream_restore(&url, &dir.path().join("after.db"), &[]);
    assert_eq!(restored_holds(&theirs, dir.path(), "c.db"), 17);
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
            restored_holds(&restored, dir.path(), &format!("c{i}.db")),
            i + 1,
            "hold {i} is in the replica when its answer arrives"
        );
    }

    s3.pause();
    let res = app.hold(&token, "acked", "S1", 1, "during").await;
    let problem = expect_problem(res, 503, "replica-unavailable").await;
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
    assert_eq!(restored_holds(&restored, dir.path(), "c-after.db"), 4);
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

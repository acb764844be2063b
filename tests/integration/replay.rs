//! `dropd replay` from the real replicas: a drop's history made through the API (a stampede,
//! refusals for the limit, a release, an order, a restock, an edit, holds expiring by the clock
//! both swept and not), replicated to a file and to an S3 replica, then re-decided from the
//! restored ledger by the writer's rule: every outcome is reproduced, and "why did I lose?"
//! lists exactly the attempts that were held before the loser's.

use std::time::Duration;

use chrono::Duration as Span;
use dropd::replicate::replica::ReplicaTarget;
use serde_json::{json, Value};

use crate::support::app::{spawn_app_with, TestApp};
use crate::support::litestream::{dropd_restore, file_url};
use crate::support::replica::{replication, wait_replicated};
use crate::support::s3::S3Server;
use crate::support::spec::live_drop;

/// What the API answered while the history was made.
struct Answered {
    /// Attempts answered with a receipt (the writer numbered them).
    receipts: Vec<Value>,
    /// `(attempt_seq, sku)` of every 201.
    held: Vec<(i64, String)>,
    /// A buyer refused `sold-out` by the writer, and that receipt.
    loser: (String, Value),
}

/// One attempt of one unit; returns the hold's id if it was held.
async fn attempt(
    app: &TestApp,
    answered: &mut Answered,
    buyer: &str,
    sku: &str,
    key: &str,
) -> Option<String> {
    let res = app.buyer(buyer).hold("fair", sku, 1, key).await;
    let status = res.status().as_u16();
    let body: Value = res.json().await.expect("json");
    if status == 201 {
        answered
            .held
            .push((body["attempt_seq"].as_i64().expect("seq"), sku.to_owned()));
    }
    if let Some(receipt) = body.get("receipt") {
        if receipt["outcome"] == "sold-out" && answered.loser.0.is_empty() {
            answered.loser = (buyer.to_owned(), receipt.clone());
        }
        answered.receipts.push(receipt.clone());
    }
    body["hold_id"].as_str().map(str::to_owned)
}

async fn make_history(app: &TestApp, sync: Duration) -> Answered {
    let mut spec = live_drop("fair", 6, 2);
    spec["hold_seconds"] = json!(60);
    spec["skus"]
        .as_array_mut()
        .expect("skus")
        .push(json!({"sku": "S2", "name": "Size 2", "price": {"amount": 100, "currency": "EUR"}, "stock": 2}));
    app.create_drop(&spec).await;
    let mut answered = Answered {
        receipts: Vec::new(),
        held: Vec::new(),
        loser: (String::new(), Value::Null),
    };
    // A stampede on S1: 40 buyers at once; the writer numbers those that reach it. It is held
    // in one batch for a moment first, so on a loaded machine too the stampede reaches it
    // rather than trickling in after the page already shows the drop sold out.
    let writer = app.writer.clone();
    let stall = tokio::spawn(async move {
        writer
            .stall_for_tests(std::time::Duration::from_millis(500))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let answers = futures::future::join_all((0..40).map(|i| async move {
        let buyer = format!("b{i}");
        let res = app.buyer(&buyer).hold("fair", "S1", 1, "k1").await;
        let status = res.status().as_u16();
        (buyer, status, res.json::<Value>().await.expect("json"))
    }))
    .await;
    stall.await.expect("joined").expect("the writer stalled");
    for (buyer, status, body) in answers {
        if status == 201 {
            answered
                .held
                .push((body["attempt_seq"].as_i64().expect("seq"), "S1".into()));
        }
        if let Some(receipt) = body.get("receipt") {
            if receipt["outcome"] == "sold-out" && answered.loser.0.is_empty() {
                answered.loser = (buyer, receipt.clone());
            }
            answered.receipts.push(receipt.clone());
        }
    }
    // The limit: two of S2, then a third unit is refused by the writer.
    let mut ids = Vec::new();
    for key in ["g1", "g2"] {
        let held = attempt(app, &mut answered, "greedy", "S2", key).await;
        ids.push(held.expect("held"));
    }
    let refused = attempt(app, &mut answered, "greedy", "S1", "g3").await;
    assert!(refused.is_none(), "over the limit");
    // A release, an order, a restock and an edit.
    let greedy = app.buyer("greedy");
    assert_eq!(greedy.release(&ids[0]).await.status(), 204);
    assert_eq!(greedy.confirm(&ids[1], "pay").await.status(), 201);
    assert_eq!(app.api().adjust_stock("fair", "S1", 2).await.status(), 200);
    let edit = app.patch_drop("fair", json!({"per_buyer_limit": 3})).await;
    assert_eq!(edit.status(), 200);
    // Two more on S1 take the restocked units; the next is sold out by the writer.
    let _ = attempt(app, &mut answered, "late1", "S1", "l1").await;
    let _ = attempt(app, &mut answered, "late2", "S1", "l2").await;
    // The clock passes every hold's expiry: the sweep may end them, or an attempt counts them
    // for nothing before it is swept; either way these take the freed units.
    app.clock.advance(Span::seconds(61));
    for i in 0..4 {
        let _ = attempt(app, &mut answered, &format!("after{i}"), "S1", "a").await;
    }
    wait_replicated(&app.api(), sync).await;
    answered
}

fn replay(args: &[&str]) -> (bool, Value, String) {
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--drop", "fair", "--json"]);
    // The S3 replica's credentials come from the environment, as an operator's would.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropd"))
        .envs(S3Server::credentials())
        .args(&all)
        .output()
        .expect("dropd runs");
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_replay(source: &[&str], answered: &Answered) {
    let (ok, report, err) = replay(source);
    assert!(ok, "replay succeeds: {err}\n{report}");
    assert_eq!(report["mismatches"], json!([]), "{report}");
    assert_eq!(
        report["attempts"],
        answered.receipts.len() as i64,
        "every numbered attempt is replayed"
    );
    assert_eq!(report["reproduced"], report["attempts"]);
    assert_eq!(report["held"], answered.held.len() as i64);
    let refused = answered
        .receipts
        .iter()
        .filter(|r| r["outcome"] != "held")
        .count() as i64;
    assert_eq!(report["refused"], refused);
    assert!(refused >= 2, "the stampede and the limit refused some");

    // Why did the loser lose?
    let (loser, receipt) = &answered.loser;
    assert!(
        !loser.is_empty(),
        "some buyer was refused sold-out by the writer"
    );
    let mut args = source.to_vec();
    args.extend_from_slice(&["--buyer", loser]);
    let (ok, report, err) = replay(&args);
    assert!(ok, "{err}");
    let attempts = report["buyer"].as_array().expect("the buyer's attempts");
    assert_eq!(attempts.len(), 1, "{report}");
    let mine = &attempts[0];
    assert_eq!(mine["attempt_seq"], receipt["attempt_seq"]);
    assert_eq!(mine["outcome"], "sold-out");
    assert_eq!(mine["available"], 0);
    let seq = receipt["attempt_seq"].as_i64().expect("seq");
    let mut expected: Vec<i64> = answered
        .held
        .iter()
        .filter(|(s, sku)| *s < seq && sku == "S1")
        .map(|(s, _)| *s)
        .collect();
    expected.sort_unstable();
    let listed: Vec<i64> = mine["won_before"]
        .as_array()
        .expect("won_before")
        .iter()
        .map(|w| w["attempt_seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(listed, expected, "exactly the holds taken before theirs");
    assert!(
        mine["won_before"]
            .as_array()
            .expect("list")
            .iter()
            .all(|w| w["buyer"] != receipt["buyer"]
                && w["buyer"].as_str().is_some_and(|b| b.len() == 32)),
        "winners are named by their salted hash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_a_file_replica_reproduces_every_outcome() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = dir.path().join("replica");
    let sync = Duration::from_millis(100);
    let config = replication(ReplicaTarget::File(replica.clone()), sync);
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    let answered = make_history(&app, sync).await;
    app.stop().await;
    check_replay(&["--replica", &file_url(&replica)], &answered);

    // The report for a person says the same in words.
    let (ok, text, err) = crate::support::process::dropd(&[
        "replay",
        "--replica",
        &file_url(&replica),
        "--drop",
        "fair",
        "--buyer",
        &answered.loser.0,
    ]);
    assert!(ok, "{err}");
    assert!(
        text.contains("every outcome is what was answered"),
        "{text}"
    );
    let seq = &answered.loser.1["attempt_seq"];
    assert!(
        text.contains(&format!("attempt #{seq} at "))
            && text.contains(": sold-out (available then: 0"),
        "{text}"
    );

    // A local copy replays the same; a copy with one ledger byte changed is refused.
    let copy = dir.path().join("copy.db");
    dropd_restore(&file_url(&replica), &copy, &[]).expect("a local copy");
    check_replay(&["--db", copy.to_str().expect("utf-8")], &answered);
    let tampered = rusqlite::Connection::open(&copy).expect("open copy");
    tampered
        .execute(
            "UPDATE ledger SET entry = replace(entry, '\"sold-out\"', '\"held\"')
             WHERE drop_id = 'fair' AND position = (SELECT MIN(position) FROM ledger
                 WHERE drop_id = 'fair' AND entry LIKE '%sold-out%')",
            [],
        )
        .expect("tampered");
    drop(tampered);
    let (ok, _, err) = replay(&["--db", copy.to_str().expect("utf-8")]);
    assert!(
        !ok,
        "a changed ledger is not replayed as if nothing happened"
    );
    assert!(err.contains("does not follow"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_an_s3_replica_reproduces_every_outcome() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let sync = Duration::from_millis(100);
    let config = replication(s3.target("prod/dropd"), sync);
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    let answered = make_history(&app, sync).await;
    app.stop().await;
    check_replay(&["--replica", &s3.url("prod/dropd")], &answered);
}

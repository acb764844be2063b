use std::collections::HashSet;

use futures::future::join_all;

use crate::support::app::{spawn_app, spawn_app_with};
use crate::support::db::check_invariants;
use crate::support::spec::live_drop;

/// 1,000 concurrent attempts from 500 buyers on 100 units with a limit of 2: exactly the stock
/// is held, everyone else is told sold-out or limit-exceeded, and arrival order is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_holds_exactly_the_stock_and_no_more() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("stampede", 100, 2)).await;

    // One buyer in five asks for 2 then 1 (the second can pass the limit); the rest ask 1 and 1.
    let mut attempts = Vec::new();
    for b in 0..500 {
        let token = app.token(&format!("buyer-{b}"));
        let quantities = if b % 5 == 0 { [2, 1] } else { [1, 1] };
        for (i, q) in quantities.into_iter().enumerate() {
            attempts.push((token.clone(), q, format!("b{b}-a{i}")));
        }
    }
    let responses = join_all(attempts.iter().map(|(token, q, key)| async {
        let res = app.hold(token, "stampede", "S1", *q, key).await;
        let status = res.status().as_u16();
        let body: serde_json::Value = res.json().await.expect("json body");
        (status, body)
    }))
    .await;

    let mut held_units = 0;
    let mut seqs = Vec::new();
    for (status, body) in &responses {
        match status {
            201 => {
                held_units += body["quantity"].as_i64().expect("quantity");
                seqs.push(body["attempt_seq"].as_i64().expect("attempt_seq"));
            }
            409 => {
                let code = body["code"].as_str().expect("code");
                assert!(code == "sold-out" || code == "limit-exceeded", "{body}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(held_units, 100);
    assert_eq!(app.available("stampede", "S1").await, 0);
    let unique: HashSet<_> = seqs.iter().collect();
    assert_eq!(unique.len(), seqs.len(), "attempt_seq values are unique");

    let db = app.db();
    check_invariants(&db).expect("invariants hold");
    // Commit order is insertion order: the sequence must grow along it.
    let in_commit_order: Vec<i64> = db
        .prepare("SELECT attempt_seq FROM holds WHERE drop_id = 'stampede' ORDER BY rowid")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("holds read");
    assert_eq!(in_commit_order.len(), seqs.len());
    assert!(
        in_commit_order.windows(2).all(|w| w[0] < w[1]),
        "{in_commit_order:?}"
    );
    let max_seq: i64 = db
        .query_row(
            "SELECT attempt_seq FROM drops WHERE id = 'stampede'",
            [],
            |r| r.get(0),
        )
        .expect("drop row");
    // Attempts refused from memory once the SKU showed zero never reach the writer and take no
    // number; every attempt that reached the writer took exactly one.
    assert!(
        max_seq >= seqs.len() as i64 && max_seq <= 1000,
        "max attempt_seq {max_seq}"
    );
    // The idempotency log is also the record of every numbered attempt: each number 1..=max has
    // exactly one record, with its outcome (a hold, or the refusal).
    let numbered: Vec<(i64, bool)> = db
        .prepare(
            "SELECT attempt_seq, hold_id IS NOT NULL FROM idempotency_keys
             WHERE drop_id = 'stampede' ORDER BY attempt_seq",
        )
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("records read");
    assert_eq!(
        numbered.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        (1..=max_seq).collect::<Vec<_>>()
    );
    assert_eq!(
        numbered.iter().filter(|(_, held)| *held).count(),
        seqs.len()
    );
    drop(db);
    app.stop().await;
}

/// A writer queue that is full answers at once with 503 overloaded and Retry-After, and an
/// overloaded request leaves no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_overloaded_at_once_and_writes_nothing() {
    let app = spawn_app_with(|s| {
        s.queue_size = 1;
        s.batch_limit = 1;
    })
    .await;
    app.create_drop(&live_drop("busy", 100_000, 1_000)).await;
    let responses = join_all((0..400).map(|i| {
        let app = &app;
        async move {
            let token = app.token(&format!("buyer-{}", i % 50));
            let res = app.hold(&token, "busy", "S1", 1, &format!("k{i}")).await;
            let status = res.status().as_u16();
            let retry_after = res.headers().get("retry-after").is_some();
            let body: serde_json::Value = res.json().await.expect("json body");
            (status, retry_after, body)
        }
    }))
    .await;
    let held = responses.iter().filter(|(s, _, _)| *s == 201).count();
    let overloaded: Vec<_> = responses.iter().filter(|(s, _, _)| *s == 503).collect();
    assert_eq!(held + overloaded.len(), responses.len(), "only 201 or 503");
    assert!(
        !overloaded.is_empty(),
        "a queue of one overflowed under 400 concurrent writes"
    );
    for (_, retry_after, body) in &overloaded {
        assert!(*retry_after);
        assert_eq!(body["code"], "overloaded");
    }
    let stored: i64 = app
        .db()
        .query_row("SELECT COUNT(*) FROM holds", [], |r| r.get(0))
        .expect("count");
    assert_eq!(stored as usize, held);
    let keys: i64 = app
        .db()
        .query_row("SELECT COUNT(*) FROM idempotency_keys", [], |r| r.get(0))
        .expect("count");
    assert_eq!(
        keys as usize, held,
        "overloaded requests record no outcome: they can be retried"
    );
    app.stop().await;
}

use std::collections::HashSet;

use futures::future::join_all;

use crate::helpers::{check_invariants, live_drop, spawn_app};

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
    assert_eq!(max_seq, 1000, "every attempt was stamped once");
    drop(db);
    app.stop().await;
}

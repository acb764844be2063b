//! The live stock stream and the hot reads, against the real server.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use crate::support::api::expect_problem;
use crate::support::app::{spawn_app, spawn_app_with};
use crate::support::spec::live_drop;
use crate::support::sse::Events;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_starts_with_a_snapshot_then_pushes_committed_stock_in_version_order() {
    let app = spawn_app().await;
    let created = app.create_drop(&live_drop("live", 10, 2)).await;
    let mut events = Events::open(&app, "live", None).await;
    let snapshot = events.next().await.expect("snapshot");
    assert_eq!(snapshot.name, "snapshot");
    assert_eq!(snapshot.id, created["version"].as_i64());
    assert_eq!(snapshot.data["skus"][0]["available"], 10);

    let alice = app.token("alice");
    assert_eq!(app.hold(&alice, "live", "S1", 2, "k1").await.status(), 201);
    let (_, id) = events.until_available("S1", 8).await;
    assert!(id > snapshot.id.expect("id"));
    // The stream and the hot read agree on the version.
    assert_eq!(app.get_json("/v1/drops/live").await["version"], id);

    let paused = app
        .patch_drop("live", serde_json::json!({"state": "paused"}))
        .await;
    assert_eq!(paused.status(), 200);
    loop {
        let event = events.next().await.expect("stream open");
        if event.name == "drop" {
            assert_eq!(event.data["state"], "paused");
            assert!(event.id.expect("id") > id);
            break;
        }
    }

    // A new price reaches the pages before anyone confirms at it.
    let repriced = app
        .patch_drop(
            "live",
            serde_json::json!({"prices": [{"sku": "S1", "price": {"amount": 19900, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(repriced.status(), 200);
    loop {
        let event = events.next().await.expect("stream open");
        if event.name == "drop" && event.data.get("skus").is_some() {
            assert_eq!(event.data["skus"][0]["price"]["amount"], 19900);
            break;
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resuming_with_last_event_id_gets_what_it_missed_or_a_snapshot() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("resume", 10, 5)).await;
    let alice = app.token("alice");
    let mut first = Events::open(&app, "resume", None).await;
    let seen = first.next().await.expect("snapshot").id.expect("id");
    drop(first);

    // Nothing changed: resuming at the current version sends no snapshot, only the drop's state
    // (the clock may have moved it without a new version), then what comes next.
    let mut current = Events::open(&app, "resume", Some(seen)).await;
    let restated = current.next().await.expect("event");
    assert_eq!(restated.name, "drop", "{restated:?}");
    assert_eq!(restated.data["state"], "live");
    assert_eq!(restated.id, Some(seen));
    assert_eq!(
        app.hold(&alice, "resume", "S1", 1, "k1").await.status(),
        201
    );
    let next = current.next().await.expect("event");
    assert_eq!(next.name, "stock", "{next:?}");
    assert_eq!(next.data["skus"][0]["available"], 9);

    // A client that fell behind gets a fresh snapshot with the current state.
    let mut behind = Events::open(&app, "resume", Some(seen)).await;
    let snapshot = behind.next().await.expect("snapshot");
    assert_eq!(snapshot.name, "snapshot");
    assert_eq!(snapshot.data["skus"][0]["available"], 9);
    assert!(snapshot.id.expect("id") > seen);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_commits_is_coalesced_into_few_messages() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("burst", 1_000, 1)).await;
    let mut events = Events::open(&app, "burst", None).await;
    let first = events.next().await.expect("snapshot").id.expect("id");
    // One after the other: each hold is answered only after its own commit, so these are 30
    // separate commits (30 versions), not one group-committed batch.
    for i in 0..30 {
        let token = app.token(&format!("buyer-{i}"));
        assert_eq!(app.hold(&token, "burst", "S1", 1, "k").await.status(), 201);
    }
    let (messages, last) = events.until_available("S1", 970).await;
    assert_eq!(last - first, 30, "30 commits, 30 versions");
    assert!(
        messages <= 15,
        "30 commits became {messages} stock messages"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_is_pushed_and_then_refused_from_memory_without_the_writer() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("last", 1, 1)).await;
    let mut events = Events::open(&app, "last", None).await;
    events.next().await.expect("snapshot");
    let (alice, bob) = (app.buyer("alice"), app.buyer("bob"));
    let hold: Value = alice
        .hold("last", "S1", 1, "a")
        .await
        .json()
        .await
        .expect("json");
    events.until_available("S1", 0).await;

    let refused = bob.hold("last", "S1", 1, "b").await;
    expect_problem(refused, 409, "sold-out").await;
    let stamped: i64 = app
        .db()
        .query_row("SELECT attempt_seq FROM drops WHERE id = 'last'", [], |r| {
            r.get(0)
        })
        .expect("drop row");
    assert_eq!(stamped, 1, "the refused attempt never reached the writer");

    // Nothing was written, but memory remembers bob's key: once the unit is back, the same
    // key still answers sold-out (one key, one answer) and a new key can hold it.
    let hold_id = hold["hold_id"].as_str().expect("id");
    let del = alice.release(hold_id).await;
    assert_eq!(del.status(), 204);
    events.until_available("S1", 1).await;
    let retry = bob.hold("last", "S1", 1, "b").await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    expect_problem(retry, 409, "sold-out").await;
    assert_eq!(bob.hold("last", "S1", 1, "b2").await.status(), 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_during_a_write_storm_are_served_from_memory() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("storm", 100_000, 1_000)).await;
    app.get_json("/v1/drops/storm").await;
    app.get_json("/v1/drops").await;
    let loads_before = app
        .hub
        .stats
        .loads
        .load(std::sync::atomic::Ordering::Relaxed);
    let writes = join_all((0..300).map(|i| {
        let app = &app;
        async move {
            let token = app.token(&format!("buyer-{}", i % 30));
            app.hold(&token, "storm", "S1", 1, &format!("k{i}"))
                .await
                .status()
                .as_u16()
        }
    }));
    let reads = join_all((0..300).map(|i| {
        let app = &app;
        async move {
            let path = if i % 10 == 0 {
                "/v1/drops"
            } else {
                "/v1/drops/storm"
            };
            let res = app.client.get(app.url(path)).send().await.expect("sent");
            res.status().as_u16()
        }
    }));
    let (writes, reads) = tokio::join!(writes, reads);
    assert!(writes.iter().all(|s| *s == 201));
    assert!(reads.iter().all(|s| *s == 200));
    let loads_after = app
        .hub
        .stats
        .loads
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        loads_after, loads_before,
        "no read went to SQLite during the storm"
    );
    assert_eq!(app.available("storm", "S1").await, 100_000 - 300);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_for_one_drop_run_one_query() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("cold", 5, 1)).await;
    // A fresh process knows nothing: the create above put the drop in memory, so ask for a
    // drop that memory has not seen through another instance of the same database.
    let loads_before = app
        .hub
        .stats
        .loads
        .load(std::sync::atomic::Ordering::Relaxed);
    let statuses = join_all((0..50).map(|_| {
        let app = &app;
        async move {
            app.client
                .get(app.url("/v1/drops/not-there"))
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 404));
    let loads = app
        .hub
        .stats
        .loads
        .load(std::sync::atomic::Ordering::Relaxed)
        - loads_before;
    assert!(loads < 50, "50 concurrent misses ran {loads} queries");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_cap_answers_503_and_shutdown_ends_streams_at_once() {
    let app = spawn_app_with(|s| s.max_subscribers = 1).await;
    app.create_drop(&live_drop("cap", 5, 1)).await;
    let mut events = Events::open(&app, "cap", None).await;
    events.next().await.expect("snapshot");
    let second = app
        .client
        .get(app.url("/v1/drops/cap/events"))
        .send()
        .await
        .expect("sent");
    assert_eq!(second.headers()["retry-after"], "5");
    expect_problem(second, 503, "too-many-subscribers").await;
    let unknown = app
        .client
        .get(app.url("/v1/drops/nope/events"))
        .send()
        .await
        .expect("sent");
    expect_problem(unknown, 404, "not-found").await;

    // The graceful stop would wait 10 s for open requests; streams must end before that.
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        app.stop().await;
        events.next().await
    })
    .await;
    assert!(
        matches!(stopped, Ok(None)),
        "the stream ended when the server stopped"
    );
}

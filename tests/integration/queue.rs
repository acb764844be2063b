//! Queue drops: a pre-queue ordered by a seeded draw anyone can recompute, admission metered
//! at the operator's rate, holds only with an admission token. The clock is the test's.

use std::collections::{HashMap, HashSet};

use chrono::Duration;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::api::expect_problem;
use crate::support::app::{spawn_app, start_time, TestApp};
use crate::support::spec::live_drop;
use crate::support::sse::Events;

const BUYERS: usize = 5_000;
const RATE: i64 = 100;

fn queue_spec(id: &str) -> Value {
    let mut spec = live_drop(id, 100_000, 1);
    spec["starts_at"] = json!((start_time() + Duration::minutes(10)).to_rfc3339());
    spec["mode"] = json!("queue");
    spec["admission_rate"] = json!(RATE);
    spec["admission_seconds"] = json!(120);
    spec
}

/// A fixed shuffle of 0..n (a multiplicative permutation), so arrival order is not the ids'.
fn shuffled(n: usize) -> Vec<usize> {
    let step = 7_919; // prime, coprime with BUYERS
    (0..n).map(|i| (i * step + 13) % n).collect()
}

/// The draw recomputed from what anyone can fetch: HMAC-SHA256 keyed by the seed over each
/// joiner's ledger name, ascending.
fn recomputed_order(seed: &[u8], refs: &[String]) -> Vec<String> {
    let mut keyed: Vec<(Vec<u8>, String)> = refs
        .iter()
        .map(|r| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed).expect("any key length");
            mac.update(r.as_bytes());
            (mac.finalize().into_bytes().to_vec(), r.clone())
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, r)| r).collect()
}

async fn places(app: &TestApp, drop: &str, buyers: &[String]) -> Vec<Value> {
    futures::stream::iter(buyers.iter())
        .map(|b| {
            let api = app.buyer(b);
            async move { api.queue_place(drop).await }
        })
        .buffered(64)
        .collect()
        .await
}

async fn step(app: &TestApp, by: Duration) {
    app.clock.advance(by);
    app.writer.sync().await.expect("a batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seeded_draw_orders_early_joiners_and_admission_follows_the_rate() {
    let app = spawn_app().await;
    let drop = "queued";
    let created = app.create_drop(&queue_spec(drop)).await;
    assert_eq!(created["mode"], "queue");
    let commitment = created["queue"]["commitment"]
        .as_str()
        .expect("a commitment is published")
        .to_owned();
    assert!(
        created["queue"].get("seed").is_none(),
        "the seed stays secret"
    );
    let opened = app.ledger(drop).await;
    assert!(
        opened
            .iter()
            .any(|e| e["kind"] == "queue" && e["commitment"] == commitment.as_str()),
        "the commitment is in the ledger when the queue opens"
    );

    // Everyone joins before the start, in an order unrelated to their ids.
    let buyers: Vec<String> = (0..BUYERS).map(|i| format!("buyer-{i}")).collect();
    let arrivals: Vec<String> = shuffled(BUYERS)
        .into_iter()
        .map(|i| buyers[i].clone())
        .collect();
    let joined: Vec<(u16, Value)> = futures::stream::iter(arrivals.iter())
        .map(|b| {
            let api = app.buyer(b);
            async move {
                let res = api.join_queue(drop).await;
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.expect("json"))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for (status, body) in &joined {
        assert_eq!(*status, 201, "{body}");
        assert_eq!(body["standing"], "pending");
        assert!(body["place"].is_null(), "no place before the draw");
    }
    let again = app.buyer(&arrivals[0]).join_queue(drop).await;
    assert_eq!(again.status(), 200, "joining twice keeps the one place");
    let first: Value = again.json().await.expect("json");
    assert_eq!(
        app.get_json(&format!("/v1/drops/{drop}")).await["queue"]["joined"],
        BUYERS
    );

    // The start: the writer draws with the seed and reveals it.
    app.clock.set(start_time() + Duration::minutes(10));
    app.writer.sync().await.expect("a batch");
    let entries = app.ledger(drop).await;
    let seeded = entries
        .iter()
        .find(|e| e["kind"] == "seeded")
        .expect("the draw is in the ledger");
    let seed = hex::decode(seeded["seed"].as_str().expect("seed")).expect("hex");
    assert_eq!(
        hex::encode(Sha256::digest(&seed)),
        commitment,
        "the seed keeps the commitment"
    );
    assert_eq!(seeded["joined"], BUYERS);
    let refs: Vec<String> = entries
        .iter()
        .filter(|e| e["kind"] == "join")
        .map(|e| e["buyer"].as_str().expect("a ledger name").to_owned())
        .collect();
    assert_eq!(refs.len(), BUYERS);
    let expected: HashMap<String, i64> = recomputed_order(&seed, &refs)
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, i as i64 + 1))
        .collect();
    let now = places(&app, drop, &buyers).await;
    let mut by_place: HashMap<i64, String> = HashMap::new();
    for (buyer, place) in buyers.iter().zip(&now) {
        let p = place["place"].as_i64().expect("a place after the draw");
        let name = place["buyer_ref"].as_str().expect("buyer_ref");
        assert_eq!(
            expected.get(name),
            Some(&p),
            "{buyer}'s place is the recomputed one"
        );
        assert!(
            by_place.insert(p, buyer.clone()).is_none(),
            "place {p} twice"
        );
    }
    assert_eq!(
        first["joined_at"],
        now[buyers
            .iter()
            .position(|b| *b == arrivals[0])
            .expect("joined")]["joined_at"]
    );
    let arrival_rank: HashMap<&String, usize> =
        arrivals.iter().enumerate().map(|(i, b)| (b, i)).collect();
    assert!(
        (1..=50).any(|p| arrival_rank[&by_place[&p]] >= 50),
        "arriving first did not decide the order"
    );
    let buyer_at = |p: i64| app.buyer(&by_place[&p]);

    // Each second admits exactly the rate's share, in place order.
    assert_eq!(buyer_at(1).queue_place(drop).await["standing"], "waiting");
    for second in 1..=2i64 {
        step(&app, Duration::seconds(1)).await;
        let all = places(&app, drop, &buyers).await;
        let admitted: Vec<i64> = all
            .iter()
            .filter(|p| p["standing"] == "admitted")
            .map(|p| p["place"].as_i64().expect("place"))
            .collect();
        assert_eq!(admitted.len() as i64, RATE * second, "after {second} s");
        assert!(admitted.iter().all(|&p| p <= RATE * second));
        assert!(all.iter().all(|p| p["serving"] == RATE * second));
    }

    // Paused, nobody more is admitted however long it waits.
    let res = app
        .api()
        .patch_drop(drop, &json!({"admission_paused": true}))
        .await;
    assert_eq!(res.status(), 200);
    step(&app, Duration::seconds(5)).await;
    let next = buyer_at(2 * RATE + 1).queue_place(drop).await;
    assert_eq!(next["standing"], "waiting");
    assert_eq!(next["serving"], 2 * RATE);
    assert!(
        next["estimated_wait_seconds"].is_null(),
        "no estimate while paused"
    );
    let res = app
        .api()
        .patch_drop(
            drop,
            &json!({"admission_paused": false, "admission_rate": 50}),
        )
        .await;
    assert_eq!(res.status(), 200);
    step(&app, Duration::seconds(1)).await;
    assert_eq!(
        buyer_at(2 * RATE + 50).queue_place(drop).await["standing"],
        "admitted"
    );
    let behind = buyer_at(2 * RATE + 51).queue_place(drop).await;
    assert_eq!(behind["standing"], "waiting");
    assert_eq!(behind["ahead"], 0);

    // The live stream's queue message lets a page work out its own position.
    let mut events = Events::open(&app, drop, None).await;
    let message = loop {
        let event = events.next().await.expect("the stream goes on");
        if event.name == "queue" {
            break event.data;
        }
    };
    let far = buyer_at(4_000).queue_place(drop).await;
    let serving = message["serving"].as_i64().expect("serving");
    assert_eq!(serving, far["serving"].as_i64().expect("serving"));
    assert_eq!(4_000 - serving - 1, far["ahead"].as_i64().expect("ahead"));
    assert_eq!(message["admission_rate"], 50);
    let wait = far["estimated_wait_seconds"].as_i64().expect("an estimate");
    assert_eq!(wait, (4_000 - serving - 1 + 49) / 50);

    // Holds: only with one's own admission, and only until it expires.
    let admitted = buyer_at(1).queue_place(drop).await;
    let token = admitted["admission"]["token"]
        .as_str()
        .expect("an admitted buyer has a token")
        .to_owned();
    let without = buyer_at(1).hold(drop, "S1", 1, "no-token").await;
    expect_problem(without, 403, "not-admitted").await;
    let borrowed = buyer_at(4_000)
        .hold_admitted(drop, "S1", "borrowed", &token)
        .await;
    expect_problem(borrowed, 403, "not-admitted").await;
    let held = buyer_at(1)
        .hold_admitted(drop, "S1", "with-token", &token)
        .await;
    assert_eq!(held.status(), 201);
    let late_token = buyer_at(2).queue_place(drop).await["admission"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    step(&app, Duration::seconds(130)).await;
    assert_eq!(buyer_at(2).queue_place(drop).await["standing"], "expired");
    let expired = buyer_at(2)
        .hold_admitted(drop, "S1", "too-late", &late_token)
        .await;
    expect_problem(expired, 410, "admission-expired").await;

    // A late arrival queues behind everyone who was there.
    let late = app.buyer("late-comer").join_queue(drop).await;
    assert_eq!(late.status(), 201);
    let late: Value = late.json().await.expect("json");
    assert_eq!(late["place"], BUYERS as i64 + 1);
    let distinct: HashSet<i64> = by_place.keys().copied().collect();
    assert_eq!(distinct.len(), BUYERS);

    // `dropd replay` recomputes the draw from the ledger alone, for one buyer too.
    let someone = &now[17];
    let report = app.replay(
        drop,
        &[
            "--buyer-ref",
            someone["buyer_ref"].as_str().expect("buyer_ref"),
        ],
    );
    assert_eq!(report["mismatches"], json!([]), "{report}");
    assert_eq!(report["queue"]["drawn"], BUYERS);
    assert_eq!(report["queue"]["commitment_kept"], true);
    assert_eq!(report["queue"]["place"], someone["place"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_refusals_have_their_codes() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("plain", 10, 1)).await;
    let res = app.buyer("alice").join_queue("plain").await;
    expect_problem(res, 409, "no-queue").await;
    let res = app
        .api()
        .patch_drop("plain", &json!({"admission_rate": 5}))
        .await;
    expect_problem(res, 422, "validation-failed").await;
    let mut spec = queue_spec("needs-rate");
    spec.as_object_mut()
        .expect("object")
        .remove("admission_rate");
    let res = app
        .api()
        .admin(reqwest::Method::POST, "/v1/admin/drops", Some(&spec))
        .await;
    expect_problem(res, 422, "validation-failed").await;

    app.create_drop(&queue_spec("closing")).await;
    let res = app
        .api()
        .patch_drop("closing", &json!({"state": "closed"}))
        .await;
    assert_eq!(res.status(), 200);
    let res = app.buyer("alice").join_queue("closing").await;
    expect_problem(res, 409, "queue-closed").await;
    let res = app.buyer("alice").join_queue("no-such-drop").await;
    expect_problem(res, 404, "not-found").await;
    app.stop().await;
}

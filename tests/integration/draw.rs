//! Raffles (`mode: draw`): entries before the start, then a seeded draw at it that anyone can
//! recompute from the ledger; winners get holds, everyone else a place on the waiting list in
//! drawn order. The clock is the test's.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Duration;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::api::expect_problem;
use crate::support::app::{spawn_app, start_time, TestApp};
use crate::support::db::check_invariants;
use crate::support::spec::live_drop;
use crate::support::sse::Events;

const ENTRANTS: usize = 300;
const LIMIT: i64 = 2;
const STOCK: [(&str, i64); 2] = [("S1", 20), ("S2", 5)];

fn draw_spec(id: &str) -> Value {
    let mut spec = live_drop(id, STOCK[0].1, LIMIT);
    spec["starts_at"] = json!((start_time() + Duration::minutes(10)).to_rfc3339());
    spec["mode"] = json!("draw");
    spec["skus"]
        .as_array_mut()
        .expect("skus")
        .push(json!({"sku": "S2", "name": "Size 2", "price": {"amount": 100, "currency": "EUR"}, "stock": STOCK[1].1}));
    spec
}

/// The draw recomputed from what anyone can fetch, by the rule as documented: each SKU in the
/// drop's order, its entries by HMAC-SHA256 keyed by the seed over `<buyer_ref>/<sku>`, each
/// winning what it asked as far as the units and the buyer's limit go.
/// A ledger `enter` entry: the entrant's name, the SKU, the units asked for.
type Entered = (String, String, i64);

fn recomputed(seed: &[u8], entries: &[Entered]) -> BTreeMap<(String, String), i64> {
    let mut used: HashMap<String, i64> = HashMap::new();
    let mut won = BTreeMap::new();
    for (sku, stock) in STOCK {
        let mut keyed: Vec<(Vec<u8>, &Entered)> = entries
            .iter()
            .filter(|e| e.1 == sku)
            .map(|e| {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed).expect("any key");
                mac.update(format!("{}/{sku}", e.0).as_bytes());
                (mac.finalize().into_bytes().to_vec(), e)
            })
            .collect();
        keyed.sort();
        let mut left = stock;
        for (_, (buyer, sku, quantity)) in keyed {
            let taken = used.entry(buyer.clone()).or_default();
            let units = (*quantity).min(left).min(LIMIT - *taken);
            if units > 0 {
                left -= units;
                *taken += units;
                won.insert((buyer.clone(), sku.clone()), units);
            }
        }
    }
    won
}

fn of_kind<'a>(entries: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    entries.iter().filter(move |e| e["kind"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_winners_recomputed_from_the_revealed_seed_are_the_servers() {
    let app = spawn_app().await;
    let drop = "raffle";
    let spec = draw_spec(drop);
    app.create_drop(&spec).await;
    let view = app.get_json(&format!("/v1/drops/{drop}")).await;
    assert_eq!(view["mode"], "draw");
    let commitment = view["draw"]["commitment"]
        .as_str()
        .expect("a commitment")
        .to_owned();
    assert!(
        view["draw"].get("seed").is_none(),
        "the seed is secret before the draw"
    );
    let opened = app.ledger(drop).await;
    assert_eq!(
        of_kind(&opened, "draw")
            .next()
            .map(|e| e["commitment"].clone()),
        Some(json!(commitment)),
        "the commitment is in the ledger from the open"
    );

    // Entries arrive in a shuffled order; some ask for two, some enter both SKUs.
    let order: Vec<usize> = (0..ENTRANTS).map(|i| (i * 7_919 + 13) % ENTRANTS).collect();
    let mut stream = Events::mine(&app, "b0").await;
    let answers: Vec<(usize, u16, u16)> = futures::stream::iter(order.iter().copied())
        .map(|i| {
            let api = app.buyer(&format!("b{i}"));
            async move {
                let first = api
                    .enter_draw(drop, "S1", 1 + (i % 3 == 0) as i64)
                    .await
                    .status();
                let second = if i % 5 == 0 {
                    api.enter_draw(drop, "S2", 1).await.status().as_u16()
                } else {
                    201
                };
                (i, first.as_u16(), second)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(
        answers.iter().all(|(_, a, b)| (*a, *b) == (201, 201)),
        "{answers:?}"
    );
    let again = app.buyer("b1").enter_draw(drop, "S1", 1).await;
    assert_eq!(again.status(), 200, "one entry per buyer and SKU");
    expect_problem(
        app.buyer("x").enter_draw(drop, "S1", LIMIT + 1).await,
        422,
        "validation-failed",
    )
    .await;
    expect_problem(
        app.buyer("x").enter_draw(drop, "S9", 1).await,
        422,
        "unknown-sku",
    )
    .await;
    expect_problem(
        app.buyer("x").hold(drop, "S1", 1, "early").await,
        409,
        "drop-not-live",
    )
    .await;
    let entered = app.get_json(&format!("/v1/drops/{drop}")).await["draw"]["entered"].clone();
    let s2_entries = ENTRANTS.div_ceil(5);
    assert_eq!(entered, json!(ENTRANTS + s2_entries));

    // The start: the writer draws in a batch of its own.
    app.clock.set(start_time() + Duration::minutes(10));
    app.writer.sync().await.expect("a batch");
    expect_problem(
        app.buyer("late").enter_draw(drop, "S1", 1).await,
        409,
        "entries-closed",
    )
    .await;

    let view = app.get_json(&format!("/v1/drops/{drop}")).await;
    let seed =
        hex::decode(view["draw"]["seed"].as_str().expect("the seed, revealed")).expect("hex");
    assert_eq!(
        hex::encode(Sha256::digest(&seed)),
        commitment,
        "the seed keeps its commitment"
    );
    let entries = app.ledger(drop).await;
    let entered: Vec<Entered> = of_kind(&entries, "enter")
        .map(|e| {
            (
                e["buyer"].as_str().expect("name").to_owned(),
                e["sku"].as_str().expect("sku").to_owned(),
                e["quantity"].as_i64().expect("quantity"),
            )
        })
        .collect();
    assert_eq!(entered.len(), ENTRANTS + s2_entries);
    let drawn = of_kind(&entries, "drawn")
        .next()
        .expect("the draw is in the ledger");
    assert_eq!(drawn["seed"], view["draw"]["seed"]);
    let expected = recomputed(&seed, &entered);
    let wins: Vec<&Value> = of_kind(&entries, "win").collect();
    let server: BTreeMap<(String, String), i64> = wins
        .iter()
        .map(|w| {
            let key = (
                w["buyer"].as_str().expect("name").to_owned(),
                w["sku"].as_str().expect("sku").to_owned(),
            );
            (key, w["quantity"].as_i64().expect("quantity"))
        })
        .collect();
    assert_eq!(wins.len(), server.len(), "no buyer wins a SKU twice");
    assert_eq!(server, expected, "the recomputed winners are the server's");
    for (sku, stock) in STOCK {
        let won: i64 = server
            .iter()
            .filter(|((_, s), _)| s == sku)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(won, stock, "all of {sku} is drawn");
    }
    assert_eq!(view["draw"]["winners"], json!(wins.len()));

    // Every buyer sees their result; a winner holds what they won, a loser waits in drawn order.
    let mut first_loser: Option<(i64, String)> = None;
    let mut a_winner: Option<(String, String)> = None;
    for i in 0..ENTRANTS {
        let buyer = format!("b{i}");
        for entry in app.buyer(&buyer).draw_entries(drop).await {
            let sku = entry["sku"].as_str().expect("sku");
            match entry["outcome"].as_str() {
                Some("won") => {
                    let hold = entry["hold_id"].as_str().expect("the winner's hold");
                    let held: Value = app
                        .buyer(&buyer)
                        .get_hold(hold)
                        .await
                        .json()
                        .await
                        .expect("json");
                    assert_eq!(
                        (held["state"].as_str(), &held["quantity"]),
                        (Some("active"), &entry["won"])
                    );
                    if sku == "S1" && a_winner.is_none() {
                        a_winner = Some((buyer.clone(), hold.to_owned()));
                    }
                }
                Some("lost") => {
                    let rank = entry["rank"].as_i64().expect("a drawn place");
                    let wait = app.buyer(&buyer).waitlist_entry(drop, sku).await;
                    assert_eq!(wait["state"], "waiting", "{buyer} waits for {sku}");
                    if sku == "S1" && first_loser.as_ref().is_none_or(|(r, _)| rank < *r) {
                        first_loser = Some((rank, buyer.clone()));
                    }
                }
                other => panic!("{buyer}'s entry for {sku} is {other:?} after the draw"),
            }
        }
    }
    let (_, loser) = first_loser.expect("more entrants than units");
    assert_eq!(
        app.buyer(&loser).waitlist_entry(drop, "S1").await["position"],
        1
    );

    // b0 heard its result on its own stream, one message per entry.
    let mine = app.buyer("b0").draw_entries(drop).await;
    let mut heard = Vec::new();
    while heard.len() < mine.len() {
        let event = stream.next().await.expect("b0's stream goes on");
        if event.name.starts_with("draw.") {
            heard.push((
                event.data["sku"].as_str().expect("sku").to_owned(),
                event.name,
            ));
        }
    }
    let told: HashSet<(String, String)> = heard.into_iter().collect();
    let shown: HashSet<(String, String)> = mine
        .iter()
        .map(|e| {
            (
                e["sku"].as_str().expect("sku").to_owned(),
                format!("draw.{}", e["outcome"].as_str().expect("outcome")),
            )
        })
        .collect();
    assert_eq!(told, shown);

    // A winner who lets go frees the unit for the first one not drawn.
    let (winner, hold) = a_winner.expect("a winner of S1");
    assert_eq!(app.buyer(&winner).release(&hold).await.status(), 204);
    assert_eq!(
        app.buyer(&loser).waitlist_entry(drop, "S1").await["state"],
        "offered"
    );

    // Anyone recomputes it from the public ledger alone; the replay agrees.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args(["verify", "--draw", "--ledger"])
        .arg(app.url(&format!("/v1/drops/{drop}/ledger")))
        .output()
        .expect("dropd runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("give the ledger's {} winners", wins.len())),
        "{said}"
    );
    let report = app.replay(drop, &[]);
    assert_eq!(report["mismatches"], json!([]), "{report}");
    assert_eq!(report["draw"]["winners"], json!(wins.len()));
    assert_eq!(report["draw"]["commitment_kept"], true);

    let outbox = app
        .api()
        .admin(reqwest::Method::GET, "/v1/admin/outbox", None)
        .await
        .text()
        .await
        .expect("body");
    let kinds: Vec<Value> = outbox
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["type"].clone())
        .collect();
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(count("draw.won"), wins.len());
    assert_eq!(count("draw.lost"), ENTRANTS + s2_entries - wins.len());
    check_invariants(&app.db()).expect("invariants hold");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entering_is_for_raffles_before_their_start() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("plain", 5, 2)).await;
    expect_problem(
        app.buyer("a").enter_draw("plain", "S1", 1).await,
        409,
        "no-draw",
    )
    .await;
    expect_problem(
        app.buyer("a").enter_draw("nope", "S1", 1).await,
        404,
        "not-found",
    )
    .await;
    app.create_drop(&draw_spec("paused-raffle")).await;
    let paused = app
        .api()
        .admin(
            reqwest::Method::PATCH,
            "/v1/admin/drops/paused-raffle",
            Some(&json!({"state": "paused"})),
        )
        .await;
    assert_eq!(paused.status(), 200);
    expect_problem(
        app.buyer("a").enter_draw("paused-raffle", "S1", 1).await,
        409,
        "drop-not-live",
    )
    .await;
    let mut spec = draw_spec("bad");
    spec["admission_rate"] = json!(10);
    let res = app
        .api()
        .admin(reqwest::Method::POST, "/v1/admin/drops", Some(&spec))
        .await;
    expect_problem(res, 422, "validation-failed").await;
    // Nobody entered: the draw at the start gives nothing, and the drop sells first come.
    app.create_drop(&draw_spec("empty-raffle")).await;
    app.clock.set(start_time() + Duration::minutes(10));
    app.writer.sync().await.expect("a batch");
    let view = app.get_json("/v1/drops/empty-raffle").await;
    assert_eq!(view["draw"]["winners"], 0);
    assert_eq!(
        app.buyer("a")
            .hold("empty-raffle", "S1", 1, "k")
            .await
            .status(),
        201
    );
    app.stop().await;
}

async fn patch(app: &TestApp, drop: &str, body: Value) -> reqwest::Response {
    app.api()
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/admin/drops/{drop}"),
            Some(&body),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_changes_by_patch_before_the_start_and_before_anyone_is_in() {
    let app = spawn_app().await;
    let later = |id: &str| {
        let mut spec = live_drop(id, 5, 1);
        spec["starts_at"] = json!((start_time() + Duration::minutes(10)).to_rfc3339());
        spec
    };
    app.create_drop(&later("switch")).await;
    let res = patch(&app, "switch", json!({"mode": "draw"})).await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.expect("json");
    assert_eq!(view["mode"], "draw");
    let commitment = view["draw"]["commitment"].clone();
    assert!(commitment.is_string());
    let kinds: Vec<Value> = app
        .ledger("switch")
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("created"), json!("draw"), json!("edit")]);
    assert_eq!(
        app.buyer("a").enter_draw("switch", "S1", 1).await.status(),
        201
    );
    expect_problem(
        patch(&app, "switch", json!({"mode": "fcfs"})).await,
        422,
        "validation-failed",
    )
    .await;

    app.create_drop(&later("to-queue")).await;
    expect_problem(
        patch(&app, "to-queue", json!({"mode": "queue"})).await,
        422,
        "validation-failed",
    )
    .await;
    let res = patch(
        &app,
        "to-queue",
        json!({"mode": "queue", "admission_rate": 5}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.expect("json");
    assert_eq!(
        (view["mode"].as_str(), &view["queue"]["admission_rate"]),
        (Some("queue"), &json!(5))
    );
    assert_eq!(app.buyer("a").join_queue("to-queue").await.status(), 201);

    app.create_drop(&draw_spec("back")).await;
    let res = patch(&app, "back", json!({"mode": "fcfs"})).await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.expect("json");
    assert!(view.get("draw").is_none(), "{view}");
    app.create_drop(&live_drop("started", 5, 1)).await;
    expect_problem(
        patch(&app, "started", json!({"mode": "draw"})).await,
        422,
        "validation-failed",
    )
    .await;

    // At the start the switched drop draws its one entry, and its history replays.
    app.clock.set(start_time() + Duration::minutes(10));
    app.writer.sync().await.expect("a batch");
    assert_eq!(
        app.buyer("a").draw_entries("switch").await[0]["outcome"],
        "won"
    );
    assert_eq!(
        app.buyer("b").hold("back", "S1", 1, "b1").await.status(),
        201
    );
    for drop in ["switch", "to-queue", "back"] {
        app.replay(drop, &[]);
    }
    check_invariants(&app.db()).expect("invariants hold");
    app.stop().await;
}

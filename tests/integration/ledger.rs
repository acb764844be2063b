//! The fairness ledger, checked from outside: after a stampede, every change of the drop is an
//! entry in one hash chain that the test recomputes on its own (SHA-256, canonical JSON), the
//! chain's end is the head the server signed, the signature verifies with a key from
//! `/v1/keys` (also after a rotation), and no buyer's id is in it.

use std::collections::HashSet;

use ed25519_dalek::Verifier;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::api::{buyer_token, client};
use crate::support::process::{create_admin_key, dropd, ServerProcess};
use crate::support::spec::live_spec;

/// The ledger's lines, with each one's hash recomputed from the one before (32 zero bytes
/// first): panics at the first line whose hash does not follow.
fn recompute(text: &str) -> Vec<(Value, [u8; 32])> {
    let mut previous = [0u8; 32];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut entry: serde_json::Map<String, Value> =
            serde_json::from_str(line).expect("a JSON line");
        let claimed = entry
            .remove("hash")
            .and_then(|h| h.as_str().map(str::to_owned))
            .expect("a hash");
        // serde_json's maps are sorted: this is the canonical form.
        let canonical = serde_json::to_vec(&Value::Object(entry.clone())).expect("json");
        let mut digest = Sha256::new();
        digest.update(previous);
        digest.update(&canonical);
        let hash: [u8; 32] = digest.finalize().into();
        assert_eq!(
            hex::encode(hash),
            claimed,
            "line {} breaks the chain",
            i + 1
        );
        assert_eq!(
            entry["position"],
            (i + 1) as i64,
            "positions follow each other"
        );
        previous = hash;
        out.push((Value::Object(entry), hash));
    }
    out
}

async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let res = http.get(url).send().await.expect("sent");
    assert_eq!(res.status(), 200, "{url}");
    res.text().await.expect("body")
}

/// Every event in the outbox export, oldest first.
async fn outbox_events(admin: &crate::support::api::Api) -> Vec<Value> {
    admin
        .admin(reqwest::Method::GET, "/v1/admin/outbox", None)
        .await
        .text()
        .await
        .expect("body")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Checks a signed head with the key `/v1/keys` lists under its id.
fn verify_head(head: &Value, keys: &Value) {
    let key_id = head["key_id"].as_str().expect("key id");
    let key = keys["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["id"] == key_id))
        .unwrap_or_else(|| panic!("key {key_id} is listed: {keys}"));
    assert_eq!(key["algorithm"], "Ed25519");
    let public: [u8; 32] = hex::decode(key["public_key"].as_str().expect("hex"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let mut signed = head.as_object().expect("object").clone();
    let signature: [u8; 64] = hex::decode(
        signed
            .remove("signature")
            .and_then(|s| s.as_str().map(str::to_owned))
            .expect("signature"),
    )
    .expect("hex")
    .try_into()
    .expect("64 bytes");
    let message = serde_json::to_vec(&Value::Object(signed)).expect("json");
    ed25519_dalek::VerifyingKey::from_bytes(&public)
        .expect("a public key")
        .verify(&message, &ed25519_dalek::Signature::from_bytes(&signature))
        .expect("the head's signature verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_leaves_a_chain_anyone_can_recompute_up_to_the_signed_head() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let http = client();
    let server = ServerProcess::start(dir.path());
    let admin = server.api(&http).with_admin_key(&admin_key);
    let mut spec = live_spec("fair");
    spec["skus"][0]["stock"] = json!(20);
    spec["per_buyer_limit"] = json!(1);
    admin.create_drop(&spec).await;

    // 60 buyers for 20 units, all at once.
    let attempts = (0..60).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/drops/fair/holds", server.base);
        async move {
            let res = http
                .post(url)
                .bearer_auth(buyer_token(&format!("stampeder-{i}")))
                .header("Idempotency-Key", format!("k{i}"))
                .json(&json!({"sku": "S1", "quantity": 1}))
                .send()
                .await
                .expect("sent");
            let status = res.status().as_u16();
            let text = res.text().await.expect("body");
            let body: Value = serde_json::from_str(&text).expect("json");
            (i, status, body, text)
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let held: Vec<(usize, String)> = answers
        .iter()
        .filter(|(_, status, _, _)| *status == 201)
        .map(|(i, _, body, _)| (*i, body["hold_id"].as_str().expect("id").to_owned()))
        .collect();
    assert_eq!(held.len(), 20, "exactly the stock is held");
    // A holder trying again is refused by the limit; a release, a confirmation, a restock and
    // an edit follow.
    let first = held[0].0;
    let owner = server.api(&http).buyer(&format!("stampeder-{}", held[1].0));
    assert_eq!(owner.release(&held[1].1).await.status(), 204);
    // With a unit free again, the holder's second try reaches the writer and its limit.
    let again = server.api(&http).buyer(&format!("stampeder-{first}"));
    let res = again.hold("fair", "S1", 1, "again").await;
    assert_eq!(res.status(), 409);
    let res = server
        .api(&http)
        .buyer(&format!("stampeder-{first}"))
        .confirm(&held[0].1, "pay")
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(admin.adjust_stock("fair", "S1", 5).await.status(), 200);
    assert_eq!(
        admin
            .patch_drop("fair", &json!({"name": "Fair drop"}))
            .await
            .status(),
        200
    );

    let ledger_url = format!("{}/v1/drops/fair/ledger", server.base);
    let text = get_text(&http, &ledger_url).await;
    let entries = recompute(&text);
    assert_eq!(entries[0].0["kind"], "created");
    let kinds = |kind: &str| entries.iter().filter(|(e, _)| e["kind"] == kind).count();
    let numbered: Vec<i64> = entries
        .iter()
        .filter(|(e, _)| e["kind"] == "attempt")
        .map(|(e, _)| e["attempt_seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        numbered,
        (1..=numbered.len() as i64).collect::<Vec<_>>(),
        "every numbered attempt, in the order the writer took them"
    );
    let ledger_holds: HashSet<String> = entries
        .iter()
        .filter(|(e, _)| e["kind"] == "attempt" && e["outcome"] == "held")
        .map(|(e, _)| e["hold_id"].as_str().expect("hold").to_owned())
        .collect();
    let answered: HashSet<String> = held.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        ledger_holds, answered,
        "each 201 is a held attempt in the ledger"
    );
    assert!(entries
        .iter()
        .any(|(e, _)| e["kind"] == "attempt" && e["outcome"] == "limit-exceeded"));
    assert_eq!(kinds("release"), 1);
    assert_eq!(kinds("confirmation"), 1);
    assert_eq!(kinds("restock"), 1);
    assert_eq!(kinds("edit"), 1);
    assert!(
        !text.contains("stampeder-"),
        "buyers are salted hashes in the ledger"
    );

    // The chain's end is the head the server signed.
    let head: Value =
        serde_json::from_str(&get_text(&http, &format!("{ledger_url}/head")).await).expect("json");
    let (last, last_hash) = entries.last().expect("entries");
    assert_eq!(head["position"], last["position"]);
    assert_eq!(head["hash"], hex::encode(last_hash));
    assert_eq!(head["drop_id"], "fair");
    let keys: Value =
        serde_json::from_str(&get_text(&http, &format!("{}/v1/keys", server.base)).await)
            .expect("json");
    verify_head(&head, &keys);

    // Every attempt the writer decided has a receipt: signed, in its place, and the chain
    // runs from it to the head it names. Those refused from memory have none.
    let mut receipts = 0;
    for (_, status, body, _) in &answers {
        let Some(receipt) = body.get("receipt") else {
            assert_eq!(
                *status, 409,
                "only refusals from memory lack a receipt: {body}"
            );
            continue;
        };
        receipts += 1;
        verify_head(&receipt["head"], &keys);
        let position = receipt["position"].as_i64().expect("position") as usize;
        let (entry, hash) = &entries[position - 1];
        assert_eq!(receipt["entry_hash"], hex::encode(hash));
        assert_eq!(entry["attempt_seq"], receipt["attempt_seq"]);
        assert_eq!(entry["outcome"], receipt["outcome"]);
        assert_eq!(entry["buyer"], receipt["buyer"]);
        assert_eq!(entry["at"], receipt["received_at"]);
        let outcome = if *status == 201 {
            "held"
        } else {
            body["code"].as_str().expect("code")
        };
        assert_eq!(receipt["outcome"], outcome);
        let head_at = receipt["head"]["position"].as_i64().expect("position") as usize;
        assert!(head_at >= position);
        assert_eq!(receipt["head"]["hash"], hex::encode(entries[head_at - 1].1));
    }
    assert_eq!(
        receipts,
        numbered.len() - 1,
        "one receipt per numbered stampede attempt"
    );
    // A retry under the same key is the first answer, receipt and all, byte for byte.
    let (i, _, _, first_text) = answers
        .iter()
        .find(|(_, status, _, _)| *status == 201)
        .expect("a hold");
    let replay = http
        .post(format!("{}/v1/drops/fair/holds", server.base))
        .bearer_auth(buyer_token(&format!("stampeder-{i}")))
        .header("Idempotency-Key", format!("k{i}"))
        .json(&json!({"sku": "S1", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(&replay.text().await.expect("body"), first_text);

    // `dropd verify` checks a receipt against the live ledger; a changed receipt or a changed
    // ledger line fails it.
    let receipt_file = dir.path().join("receipt.json");
    std::fs::write(&receipt_file, first_text).expect("receipt saved");
    let receipt_arg = receipt_file.to_str().expect("utf-8");
    let (ok, out, err) = dropd(&["verify", "--receipt", receipt_arg, "--ledger", &ledger_url]);
    assert!(ok, "{err}");
    assert!(out.starts_with("receipt verified"), "{out}");
    let mut forged: Value = serde_json::from_str(first_text).expect("json");
    forged["receipt"]["attempt_seq"] = json!(1_000);
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).expect("saved");
    let (ok, _, err) = dropd(&[
        "verify",
        "--receipt",
        forged_file.to_str().expect("utf-8"),
        "--ledger",
        &ledger_url,
    ]);
    assert!(!ok, "a changed receipt is refused");
    assert!(
        err.contains("signature") || err.contains("attempt"),
        "{err}"
    );
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys.to_string()).expect("saved");
    let ledger_file = dir.path().join("ledger.ndjson");
    std::fs::write(
        &ledger_file,
        text.replacen("\"quantity\":1", "\"quantity\":2", 1),
    )
    .expect("saved");
    let (ok, _, err) = dropd(&[
        "verify",
        "--receipt",
        receipt_arg,
        "--ledger",
        ledger_file.to_str().expect("utf-8"),
        "--keys",
        keys_file.to_str().expect("utf-8"),
    ]);
    assert!(!ok, "a changed ledger line is found");
    assert!(err.contains("hash"), "{err}");

    let tail = get_text(&http, &format!("{ledger_url}?from={}", entries.len())).await;
    assert_eq!(tail.lines().count(), 1, "?from starts at a position");
    server.terminate();

    // After a rotation the new key signs, and the old head still verifies against /v1/keys.
    let (ok, _, err) = dropd(&[
        "ledger-key",
        "rotate",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    let server = ServerProcess::start(dir.path());
    let res = server
        .api(&http)
        .buyer("late")
        .hold("fair", "S1", 1, "late")
        .await;
    assert_eq!(res.status(), 201);
    let keys: Value =
        serde_json::from_str(&get_text(&http, &format!("{}/v1/keys", server.base)).await)
            .expect("json");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(2));
    verify_head(&head, &keys);
    let text = get_text(&http, &format!("{}/v1/drops/fair/ledger", server.base)).await;
    let after = recompute(&text);
    assert_eq!(
        after.len(),
        entries.len() + 1,
        "the chain goes on after a restart"
    );
    let newer: Value = serde_json::from_str(
        &get_text(&http, &format!("{}/v1/drops/fair/ledger/head", server.base)).await,
    )
    .expect("json");
    assert_ne!(newer["key_id"], head["key_id"], "the new key signs");
    verify_head(&newer, &keys);
    server.terminate();
}

/// The drop's live stream carries its signed chain head while the chain moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_publishes_the_signed_head() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let http = client();
    let server = ServerProcess::start(dir.path());
    let admin = server.api(&http).with_admin_key(&admin_key);
    admin.create_drop(&live_spec("streamed")).await;
    let mut stream = http
        .get(format!("{}/v1/drops/streamed/events", server.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(stream.status(), 200);
    let buyer = server.api(&http).buyer("watcher");
    assert_eq!(buyer.hold("streamed", "S1", 1, "w1").await.status(), 201);
    let mut buffer = String::new();
    let head = loop {
        if let Some(start) = buffer.find("\nevent: ledger\ndata: ") {
            let rest = &buffer[start + "\nevent: ledger\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                break serde_json::from_str::<Value>(&rest[..end]).expect("json");
            }
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), stream.chunk())
            .await
            .expect("a ledger message within 5 s")
            .expect("readable")
            .expect("open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    };
    assert_eq!(head["drop_id"], "streamed");
    assert!(
        head["position"].as_i64().expect("position") >= 2,
        "created, then the attempt"
    );
    let keys: Value =
        serde_json::from_str(&get_text(&http, &format!("{}/v1/keys", server.base)).await)
            .expect("json");
    verify_head(&head, &keys);
    drop(stream);
    server.terminate();
}

/// A drop reaching its `ends_at` is closed by the writer with nobody writing: the close is the
/// ledger's last entry, the head is signed at it and pushed on the live stream at once, and the
/// outbox says the drop went from live to closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_commits_a_drops_close_and_signs_the_head_at_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let http = client();
    let server = ServerProcess::start(dir.path());
    let admin = server.api(&http).with_admin_key(&admin_key);
    let mut spec = live_spec("closing");
    let ends_at = chrono::Utc::now() + chrono::Duration::seconds(3);
    spec["ends_at"] = json!(ends_at.to_rfc3339());
    admin.create_drop(&spec).await;
    let mut stream = http
        .get(format!("{}/v1/drops/closing/events", server.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(stream.status(), 200);
    let buyer = server.api(&http).buyer("late");
    assert_eq!(buyer.hold("closing", "S1", 1, "c1").await.status(), 201);

    // Heads arrive while the chain moves; the one at the close comes after the attempt's.
    let mut buffer = String::new();
    let mut heads = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let closed_head = loop {
        while let Some(start) = buffer.find("\nevent: ledger\ndata: ") {
            let rest = buffer[start + "\nevent: ledger\ndata: ".len()..].to_owned();
            let Some(end) = rest.find('\n') else { break };
            heads.push(serde_json::from_str::<Value>(&rest[..end]).expect("json"));
            buffer = rest[end..].to_owned();
        }
        if let Some(head) = heads.iter().find(|h| h["position"] == 3) {
            break head.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no head at the close within 15 s: {heads:?}"
        );
        if let Ok(chunk) =
            tokio::time::timeout(std::time::Duration::from_secs(1), stream.chunk()).await
        {
            let chunk = chunk.expect("readable").expect("open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let at_close = chrono::Utc::now();
    assert!(at_close >= ends_at, "the close waited for ends_at");

    let ledger = get_text(&http, &format!("{}/v1/drops/closing/ledger", server.base)).await;
    let entries = recompute(&ledger);
    let kinds: Vec<&str> = entries
        .iter()
        .map(|(e, _)| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["created", "attempt", "closed"]);
    let (closed, hash) = &entries[2];
    let ends: chrono::DateTime<chrono::Utc> = closed["ends_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("ends_at");
    assert_eq!(ends.timestamp_millis(), ends_at.timestamp_millis());
    let committed: chrono::DateTime<chrono::Utc> = closed["at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("at");
    assert!(committed >= ends, "committed at or after ends_at");
    assert_eq!(closed_head["hash"], hex::encode(hash));
    let keys: Value =
        serde_json::from_str(&get_text(&http, &format!("{}/v1/keys", server.base)).await)
            .expect("json");
    verify_head(&closed_head, &keys);
    let head: Value = serde_json::from_str(
        &get_text(
            &http,
            &format!("{}/v1/drops/closing/ledger/head", server.base),
        )
        .await,
    )
    .expect("json");
    assert_eq!(head, closed_head, "the close's head is the latest");

    let outbox = outbox_events(&admin).await;
    let changes: Vec<&Value> = outbox
        .iter()
        .filter(|e| e["type"] == "drop.state_changed")
        .collect();
    assert_eq!(changes.len(), 1, "{outbox:?}");
    assert_eq!(changes[0]["data"]["from"], "live");
    assert_eq!(changes[0]["data"]["to"], "closed");

    // An edit that ends a drop now announces the close once; the writer adds none of its own.
    let cut = live_spec("cut");
    admin.create_drop(&cut).await;
    let now = chrono::Utc::now();
    let res = admin
        .patch_drop("cut", &json!({"ends_at": now.to_rfc3339()}))
        .await;
    assert_eq!(res.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let outbox = outbox_events(&admin).await;
    let closes = outbox
        .iter()
        .filter(|e| e["type"] == "drop.state_changed" && e["drop_id"] == "cut")
        .count();
    assert_eq!(closes, 1, "{outbox:?}");
    let cut_ledger = get_text(&http, &format!("{}/v1/drops/cut/ledger", server.base)).await;
    let kinds: Vec<String> = recompute(&cut_ledger)
        .iter()
        .map(|(e, _)| e["kind"].as_str().expect("kind").to_owned())
        .collect();
    assert_eq!(kinds, ["created", "edit"]);

    // A restart closes nothing twice.
    server.terminate();
    let server = ServerProcess::start(dir.path());
    let ledger = get_text(&http, &format!("{}/v1/drops/closing/ledger", server.base)).await;
    assert_eq!(ledger.lines().count(), 3);
    server.terminate();
}

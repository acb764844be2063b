//! An order means paid: by default only a payment service (a `payments` service key) turns a
//! hold into an order; a buyer may only with `--buyer-confirms`.

use serde_json::Value;

use crate::support::api::{client, expect_problem};
use crate::support::process::{create_admin_key, create_service_key, dropd, ServerProcess};
use crate::support::spec::live_spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_payment_service_confirms_a_hold_unless_buyers_may() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let service_key = create_service_key(dir.path());
    assert!(service_key.starts_with("dsk_"), "{service_key}");
    let server = ServerProcess::start_with(dir.path(), &[], &[("DROPD_BUYER_CONFIRMS", "false")]);
    let http = client();
    let admin = server.api(&http).with_admin_key(&admin_key);
    admin.create_drop(&live_spec("paid")).await;
    let buyer = server.api(&http).buyer("payer");
    let hold_id = buyer.hold_many("paid", "h", 1).await.remove(0);

    let res = buyer.confirm(&hold_id, "mine").await;
    expect_problem(res, 403, "confirmation-not-allowed").await;
    let hold: Value = buyer.get_hold(&hold_id).await.json().await.expect("json");
    assert_eq!(hold["state"], "active", "the refusal wrote nothing");

    // Neither an admin key nor an unknown service key is a payment service.
    let as_admin = server.api(&http).with_token(&admin_key);
    assert_eq!(as_admin.confirm(&hold_id, "a").await.status(), 401);
    let forged = format!("dsk_{}", "0".repeat(64));
    let res = server
        .api(&http)
        .with_token(&forged)
        .confirm(&hold_id, "f")
        .await;
    expect_problem(res, 401, "unauthorized").await;

    let service = server.api(&http).with_token(&service_key);
    let res = service.confirm(&hold_id, "pay-1").await;
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.expect("json");
    assert_eq!(order["buyer"], "payer", "the order is the hold owner's");
    assert_eq!(order["hold_id"], hold_id.as_str());
    // A retry after a timeout replays the same order.
    let again = service.confirm(&hold_id, "pay-1").await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("json"), order);
    let mine = buyer.orders().await;
    assert_eq!(mine["orders"][0]["order_id"], order["order_id"]);

    // A revoked service key is refused within a second.
    let (ok, listed, err) = dropd(&[
        "service-key",
        "list",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    let id = listed
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("sk_")))
        .expect("the key is listed")
        .to_owned();
    let (ok, _, err) = dropd(&[
        "service-key",
        "revoke",
        &id,
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    let second = buyer.hold_many("paid", "s", 1).await.remove(0);
    let mut status = 0;
    for _ in 0..40 {
        status = service.confirm(&second, "pay-2").await.status().as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
    server.terminate();
}

fn signed(secret: &str, t: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("a key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_payment_callback_confirms_once_and_bad_old_or_replayed_ones_write_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let secret = "callback-secret-0123456789";
    let secret_file = dir.path().join("payment-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("written");
    let server = ServerProcess::start_with(
        dir.path(),
        &[
            "--payment-callback-secret-file",
            secret_file.to_str().expect("utf-8"),
        ],
        &[("DROPD_BUYER_CONFIRMS", "false")],
    );
    let http = client();
    server
        .api(&http)
        .with_admin_key(&admin_key)
        .create_drop(&live_spec("called"))
        .await;
    let buyer = server.api(&http).buyer("caller");
    let hold_id = buyer.hold_many("called", "h", 1).await.remove(0);
    let body = serde_json::json!({"hold_id": hold_id, "payment_ref": "pi_42"}).to_string();
    let now = chrono::Utc::now().timestamp();
    let post = |signature: String, body: String| {
        http.post(format!("{}/v1/payments/callback", server.base))
            .header("Dropd-Payment-Signature", signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let still_active = || async {
        let hold: Value = buyer.get_hold(&hold_id).await.json().await.expect("json");
        hold["state"] == "active"
    };

    let res = post(signed("another-secret-entirely", now, &body), body.clone())
        .await
        .expect("sent");
    expect_problem(res, 401, "signature-invalid").await;
    let tampered = body.replace("pi_42", "pi_43");
    let res = post(signed(secret, now, &body), tampered)
        .await
        .expect("sent");
    expect_problem(res, 401, "signature-invalid").await;
    let res = post(signed(secret, now - 3600, &body), body.clone())
        .await
        .expect("sent");
    expect_problem(res, 401, "signature-expired").await;
    assert!(still_active().await, "refused callbacks wrote nothing");

    let res = post(signed(secret, now, &body), body.clone())
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.expect("json");
    assert_eq!(order["payment_ref"], "pi_42");
    assert_eq!(order["buyer"], "caller");
    let res = post(signed(secret, now, &body), body.clone())
        .await
        .expect("sent");
    expect_problem(res, 409, "callback-replayed").await;
    let orders = buyer.orders().await;
    assert_eq!(orders["orders"].as_array().expect("orders").len(), 1);
    server.terminate();
}

/// The next `event:` message of an event stream, skipping `retry:` and comments.
async fn next_event(res: &mut reqwest::Response, buffer: &mut String) -> (String, Value) {
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let name = block.lines().find_map(|l| l.strip_prefix("event: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(name), Some(data)) = (name, data) {
                return (name.to_owned(), serde_json::from_str(data).expect("json"));
            }
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), res.chunk())
            .await
            .expect("a message within 10 s")
            .expect("readable")
            .expect("the stream is open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_sees_their_hold_become_an_order_on_their_own_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let service_key = create_service_key(dir.path());
    let server = ServerProcess::start_with(dir.path(), &[], &[("DROPD_BUYER_CONFIRMS", "false")]);
    let http = client();
    server
        .api(&http)
        .with_admin_key(&admin_key)
        .create_drop(&live_spec("watched"))
        .await;
    let token = crate::support::api::buyer_token("watcher");
    let url = format!("{}/v1/me/events", server.base);
    let res = http.get(&url).send().await.expect("sent");
    expect_problem(res, 401, "unauthorized").await;
    let mut stream = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();

    // Another buyer's news is not ours.
    server
        .api(&http)
        .buyer("someone-else")
        .hold_many("watched", "o", 1)
        .await;
    let buyer = server.api(&http).with_token(&token);
    let hold_id = buyer.hold_many("watched", "h", 1).await.remove(0);
    let (name, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(name, "hold.created");
    assert_eq!(data["hold_id"], hold_id.as_str());
    assert_eq!(data["buyer"], "watcher");

    // Asking to pay tells the payment service (the outbox) and the buyer, and changes nothing
    // of the drop.
    let version = server.api(&http).drop_view("watched").await["version"].clone();
    let checkout = |who: String| {
        http.post(format!("{}/v1/holds/{hold_id}/checkout", server.base))
            .bearer_auth(who)
            .send()
    };
    let res = checkout(token.clone()).await.expect("sent");
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.expect("json")["state"], "active");
    let (name, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(name, "checkout.requested");
    assert_eq!(data["hold_id"], hold_id.as_str());
    assert_eq!(data["total"]["amount"], 18000);
    assert_eq!(
        server.api(&http).drop_view("watched").await["version"],
        version
    );
    let outbox = server
        .api(&http)
        .with_admin_key(&admin_key)
        .admin(reqwest::Method::GET, "/v1/admin/outbox", None)
        .await
        .text()
        .await
        .expect("body");
    let announced: Value = outbox
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["type"] == "checkout.requested")
        .expect("the payment service hears of it");
    assert_eq!(announced["version"], version);
    let stranger = crate::support::api::buyer_token("someone-else");
    expect_problem(checkout(stranger).await.expect("sent"), 404, "not-found").await;

    let service = server.api(&http).with_token(&service_key);
    assert_eq!(service.confirm(&hold_id, "paid-1").await.status(), 201);
    let (name, data) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(name, "order.created");
    assert_eq!(data["hold_id"], hold_id.as_str());
    assert_eq!(data["payment_ref"], "pi_test");
    let hold: Value = buyer.get_hold(&hold_id).await.json().await.expect("json");
    assert_eq!(hold["state"], "confirmed");
    let res = checkout(token.clone()).await.expect("sent");
    expect_problem(res, 409, "hold-confirmed").await;
    drop(stream);
    server.terminate();
}

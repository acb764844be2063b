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

//! The drop page in a real headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `make test` installs), driven over the W3C WebDriver protocol.

use serde_json::json;

use crate::support::api::{buyer_token, client};
use crate::support::app::{spawn_app, spawn_app_with};
use crate::support::browser::Driver;
use crate::support::process::{create_admin_key, create_service_key, ServerProcess};
use crate::support::spec::{live_drop, live_spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_one_page_moves_the_stock_on_another_without_a_reload() {
    let app = spawn_app_with(|s| s.demo = true).await;
    let mut spec = live_drop("web", 5, 2);
    spec["name"] = json!("AJ1 Chicago");
    app.create_drop(&spec).await;
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let first = driver.session(&profiles.path().join("a")).await;
    let second = driver.session(&profiles.path().join("b")).await;
    let url = format!("{}/#/drops/web", app.base);
    first.goto(&url).await;
    second.goto(&url).await;
    let available = r#".sku[data-sku="S1"] .available"#;
    first.wait_text(available, |t| t == "5").await;
    second.wait_text(available, |t| t == "5").await;
    // Rendered text: the badge is upper-cased by its style.
    let state = first.text("#drop-state").await.unwrap_or_default();
    assert_eq!(state.to_lowercase(), "live");

    first.click(r#".sku[data-sku="S1"] button.hold"#).await;
    first.wait_text("#message", |t| t.starts_with("Held")).await;
    // The second page learns it from the live stream.
    second.wait_text(available, |t| t == "4").await;

    let png = first.save_screenshot("drop-page.png").await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");

    // The hold is real: pay from the page (a demo lets the buyer confirm) and the order exists.
    first.click("#pay").await;
    first.wait_text("#message", |t| t == "Bought!").await;
    let sold: i64 = app
        .db()
        .query_row("SELECT sold FROM skus WHERE drop_id = 'web'", [], |r| {
            r.get(0)
        })
        .expect("sku row");
    assert_eq!(sold, 1);
    first.close().await;
    second.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_page_shows_live_figures_and_pauses_a_drop() {
    let app = spawn_app_with(|_| {}).await;
    app.create_drop(&live_drop("ops-page", 5, 2)).await;
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let page = driver.session(&profiles.path().join("admin")).await;
    page.goto(&format!("{}/admin", app.base)).await;
    page.type_into("#key-input", &app.admin_key).await;
    page.click("#key-form button").await;
    page.wait_text("#conn", |t| t == "live").await;
    page.wait_text(r#".drop[data-drop="ops-page"] .state"#, |t| {
        t.eq_ignore_ascii_case("live")
    })
    .await;

    page.click(r#".drop[data-drop="ops-page"] button[data-state="paused"]"#)
        .await;
    page.wait_text(r#".drop[data-drop="ops-page"] .state"#, |t| {
        t.eq_ignore_ascii_case("paused")
    })
    .await;
    let view = app.get_json("/v1/drops/ops-page").await;
    assert_eq!(view["state"], "paused");

    page.save_screenshot("operator-page.png").await;
    page.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_page_address_is_moved_out_of_it_at_once() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("web", 5, 2)).await;
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let page = driver.session(&profiles.path().join("a")).await;
    let token = app.token("alice");
    page.goto(&format!("{}/?token={token}&ref=mail#/drops/web", app.base))
        .await;
    page.wait_text("#who", |t| t == "buyer: alice").await;
    let url = page.current_url().await;
    assert!(!url.contains("token"), "the token left the address: {url}");
    assert!(
        url.ends_with("/?ref=mail#/drops/web"),
        "the rest is kept: {url}"
    );
    // The page still works with the token it kept.
    page.wait_text(r#".sku[data-sku="S1"] .available"#, |t| t == "5")
        .await;
    page.click(r#".sku[data-sku="S1"] button.hold"#).await;
    page.wait_text("#message", |t| t.starts_with("Held")).await;
    page.close().await;
    app.stop().await;
}

/// Paying asks the payment service; the page waits on the buyer's own stream (read with
/// fetch, the token in a header) and shows the order the service confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_waits_for_the_payment_service_and_the_order_arrives_on_the_buyers_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let service_key = create_service_key(dir.path());
    let server = ServerProcess::start_with(dir.path(), &[], &[("DROPD_BUYER_CONFIRMS", "false")]);
    let http = client();
    server
        .api(&http)
        .with_admin_key(&admin_key)
        .create_drop(&live_spec("pay-web"))
        .await;
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let page = driver.session(&profiles.path().join("payer")).await;
    let token = buyer_token("payer");
    page.goto(&format!("{}/?token={token}#/drops/pay-web", server.base))
        .await;
    // The drop is drawn once its read comes back: click what is there.
    page.wait_text(r#".sku[data-sku="S1"] .available"#, |t| !t.is_empty())
        .await;
    page.click(r#".sku[data-sku="S1"] button.hold"#).await;
    page.wait_text("#message", |t| t.starts_with("Held")).await;
    page.click("#pay").await;
    page.wait_text("#message", |t| {
        t.starts_with("Waiting for the payment service")
    })
    .await;

    // The payment service learns of the checkout from the outbox and confirms the hold.
    let admin = server.api(&http).with_admin_key(&admin_key);
    let mut hold_id = None;
    for _ in 0..100 {
        let res = admin
            .admin(reqwest::Method::GET, "/v1/admin/outbox", None)
            .await;
        let text = res.text().await.expect("body");
        hold_id = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["type"] == "checkout.requested")
            .and_then(|e| e["data"]["hold_id"].as_str().map(str::to_owned));
        if hold_id.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let hold_id = hold_id.expect("the checkout reached the outbox");
    let hold: serde_json::Value = server
        .api(&http)
        .buyer("payer")
        .get_hold(&hold_id)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        hold["state"], "active",
        "the buyer's own confirm was refused"
    );
    let res = server
        .api(&http)
        .with_token(&service_key)
        .confirm(&hold_id, "psp-123")
        .await;
    assert_eq!(res.status(), 201);
    let order: serde_json::Value = res.json().await.expect("json");
    page.wait_text("#message", |t| t == "Bought!").await;
    let shown = page.text("#hold code").await.unwrap_or_default();
    assert_eq!(shown, order["order_id"].as_str().unwrap_or("?"));
    page.close().await;
    server.terminate();
}

/// The /verify page checks a receipt in the browser (WebCrypto: SHA-256 over the ledger,
/// Ed25519 over the head) and refuses one that was changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verify_page_accepts_a_good_receipt_and_refuses_a_tampered_one() {
    let app = spawn_app().await;
    app.create_drop(&live_drop("checked", 5, 2)).await;
    let token = app.token("alice");
    for key in ["a", "b"] {
        assert_eq!(
            app.hold(&token, "checked", "S1", 1, key).await.status(),
            201
        );
    }
    let res = app.hold(&token, "checked", "S1", 1, "c").await;
    assert_eq!(res.status(), 409, "over the limit of 2");
    let refused: serde_json::Value = res.json().await.expect("json");
    assert_eq!(refused["receipt"]["outcome"], "limit-exceeded");
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let page = driver.session(&profiles.path().join("v")).await;
    page.goto(&format!("{}/verify", app.base)).await;
    page.type_into("#receipt", &refused.to_string()).await;
    page.click("#check").await;
    let said = page
        .wait_text("#result", |t| {
            t.starts_with("Verified") || t.starts_with("Refused")
        })
        .await;
    assert!(
        said.starts_with("Verified: attempt #3 (limit-exceeded)"),
        "{said}"
    );
    assert!(said.contains("2 attempts before it were held"), "{said}");

    let mut forged = refused.clone();
    forged["receipt"]["outcome"] = serde_json::json!("held");
    page.goto(&format!("{}/verify", app.base)).await;
    page.type_into("#receipt", &forged.to_string()).await;
    page.click("#check").await;
    let said = page
        .wait_text("#result", |t| {
            t.starts_with("Verified") || t.starts_with("Refused")
        })
        .await;
    assert!(
        said.starts_with("Refused"),
        "a changed receipt is refused: {said}"
    );
    page.close().await;
    app.stop().await;
}

/// A queue drop's page: join, see the draw and one's place move, hold once served; the
/// operator page pauses its admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_page_shows_the_place_admits_when_served_and_the_operator_pauses_it() {
    let app = spawn_app().await;
    let start = crate::support::app::start_time() + chrono::Duration::minutes(10);
    let mut spec = live_drop("queued-page", 5, 1);
    spec["starts_at"] = json!(start.to_rfc3339());
    spec["mode"] = json!("queue");
    spec["admission_rate"] = json!(1);
    app.create_drop(&spec).await;
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let page = driver.session(&profiles.path().join("buyer")).await;
    let token = app.token("alice");
    page.goto(&format!("{}/?token={token}#/drops/queued-page", app.base))
        .await;
    page.wait_text("#queue-status", |t| t.contains("drawn at random"))
        .await;
    page.click("#join").await;
    page.wait_text("#queue-status", |t| {
        t.contains("Places are drawn at the start")
    })
    .await;

    // The start draws the places; the page hears it on the live stream and shows its place.
    app.clock.set(start);
    app.writer.sync().await.expect("a batch");
    page.wait_text("#queue-status", |t| t.starts_with("Place 1: 0 ahead"))
        .await;
    let hold = r#".sku[data-sku="S1"] button.hold"#;
    // A second on, the serving number reaches the place: the page fetches its admission.
    app.clock.advance(chrono::Duration::seconds(1));
    page.wait_text("#queue-status", |t| t.starts_with("It's your turn"))
        .await;
    page.click(hold).await;
    page.wait_text("#message", |t| t.starts_with("Held")).await;
    page.save_screenshot("queue-page.png").await;

    let ops = driver.session(&profiles.path().join("ops")).await;
    ops.goto(&format!("{}/admin", app.base)).await;
    ops.type_into("#key-input", &app.admin_key).await;
    ops.click("#key-form button").await;
    let row = r#".drop[data-drop="queued-page"]"#;
    ops.wait_text(&format!("{row} .joined"), |t| t == "1").await;
    ops.wait_text(&format!("{row} .admission-state"), |t| t == "admitting")
        .await;
    ops.click(&format!("{row} button.admission")).await;
    ops.wait_text(&format!("{row} .admission-state"), |t| {
        t == "admission paused"
    })
    .await;
    let view = app.get_json("/v1/drops/queued-page").await;
    assert_eq!(view["queue"]["admission_paused"], true);
    ops.save_screenshot("queue-operator-page.png").await;
    page.close().await;
    ops.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_page_joins_the_waiting_list_and_shows_the_offer_when_a_unit_comes_free() {
    let app = spawn_app().await;
    let drop = "waiting-page";
    app.create_drop(&live_drop(drop, 1, 1)).await;
    let held: serde_json::Value = app
        .buyer("alice")
        .hold(drop, "S1", 1, "alice-1")
        .await
        .json()
        .await
        .expect("hold json");
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let page = driver.session(&profiles.path().join("bob")).await;
    let token = app.token("bob");
    page.goto(&format!("{}/?token={token}#/drops/{drop}", app.base))
        .await;
    let sku = r#".sku[data-sku="S1"]"#;
    page.wait_text(&format!("{sku} .available"), |t| t == "0")
        .await;
    // Sold out: the page offers the waiting list instead of a hold.
    let wait = format!("{sku} button.wait");
    page.wait_text(&wait, |t| t == "Join the waiting list")
        .await;
    page.click(&wait).await;
    page.wait_text("#waitlist .wait-status", |t| {
        t.contains("you are number 1 in line")
    })
    .await;
    assert_eq!(
        page.text(&wait).await.unwrap_or_default(),
        "",
        "joined once"
    );

    let ops = driver.session(&profiles.path().join("ops")).await;
    ops.goto(&format!("{}/admin", app.base)).await;
    ops.type_into("#key-input", &app.admin_key).await;
    ops.click("#key-form button").await;
    let row = format!(r#".drop[data-drop="{drop}"] tr[data-sku="S1"]"#);
    ops.wait_text(&format!("{row} td.waiting"), |t| t == "1")
        .await;

    // Alice lets go: the unit is Bob's offer, and his page shows it as his hold, unreloaded.
    let held_id = held["hold_id"].as_str().expect("hold id");
    assert_eq!(app.buyer("alice").release(held_id).await.status(), 204);
    page.wait_text("#message", |t| {
        t.starts_with("Offered from the waiting list: 1 x S1")
    })
    .await;
    page.wait_text("#hold-remaining", |t| t.ends_with('s'))
        .await;
    assert_eq!(
        page.text(&wait).await.unwrap_or_default(),
        "",
        "holding the offer, Bob is not asked to wait again"
    );
    page.save_screenshot("waitlist-page.png").await;
    ops.wait_text(&format!("{row} td.waiting"), |t| t == "0")
        .await;
    ops.wait_text(&format!("{row} td.held"), |t| t == "1").await;
    let entry = app.buyer("bob").waitlist_entry(drop, "S1").await;
    assert_eq!(entry["state"], "offered");
    page.close().await;
    ops.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raffle_page_enters_the_draw_and_shows_its_result_when_drawn() {
    let app = spawn_app().await;
    let drop = "raffle-page";
    let start = crate::support::app::start_time() + chrono::Duration::minutes(10);
    let mut spec = live_drop(drop, 1, 1);
    spec["starts_at"] = json!(start.to_rfc3339());
    spec["mode"] = json!("draw");
    app.create_drop(&spec).await;
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let page = driver.session(&profiles.path().join("alice")).await;
    let token = app.token("alice");
    page.goto(&format!("{}/?token={token}#/drops/{drop}", app.base))
        .await;
    page.wait_text("#draw-about", |t| t.starts_with("A raffle"))
        .await;
    let enter = r#".sku[data-sku="S1"] button.enter"#;
    page.wait_text(enter, |t| t == "Enter the draw").await;
    page.click(enter).await;
    page.wait_text("#draw-status .entry", |t| t.starts_with("Entered for S1"))
        .await;
    assert_eq!(
        page.text(enter).await.unwrap_or_default(),
        "",
        "entered once"
    );
    assert_eq!(
        app.buyer("bob").enter_draw(drop, "S1", 1).await.status(),
        201
    );

    let ops = driver.session(&profiles.path().join("ops")).await;
    ops.goto(&format!("{}/admin", app.base)).await;
    ops.type_into("#key-input", &app.admin_key).await;
    ops.click("#key-form button").await;
    let row = format!(r#".drop[data-drop="{drop}"] .draw"#);
    ops.wait_text(&row, |t| t.starts_with("Raffle: 2 entries so far"))
        .await;

    // The start draws one of the two; Alice's page shows what the server says she got.
    app.clock.set(start);
    app.writer.sync().await.expect("a batch");
    let alice = app.buyer("alice").draw_entries(drop).await;
    let shown = match alice[0]["outcome"].as_str() {
        Some("won") => {
            page.wait_text("#message", |t| t.starts_with("You won 1 x S1 in the draw"))
                .await;
            page.wait_text("#hold-remaining", |t| t.ends_with('s'))
                .await;
            "won"
        }
        Some("lost") => {
            page.wait_text("#waitlist .wait-status", |t| {
                t.contains("you are number 1 in line")
            })
            .await;
            "lost"
        }
        other => panic!("alice's entry is {other:?} after the draw"),
    };
    let status = page.text("#draw-status .entry").await.unwrap_or_default();
    assert_eq!(status.starts_with("You won"), shown == "won", "{status}");
    page.save_screenshot("raffle-page.png").await;
    ops.wait_text(&row, |t| t.contains("1 winners")).await;
    page.close().await;
    ops.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_code_typed_on_the_page_holds_before_the_start() {
    let app = spawn_app().await;
    let drop = "presale-page";
    let start = crate::support::app::start_time() + chrono::Duration::minutes(10);
    let mut spec = live_drop(drop, 5, 1);
    spec["starts_at"] = json!(start.to_rfc3339());
    app.create_drop(&spec).await;
    let made: serde_json::Value = app
        .api()
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/drops/{drop}/codes"),
            Some(&json!({"tier": "members", "count": 1, "max_uses": 1})),
        )
        .await
        .json()
        .await
        .expect("json");
    let code = made["codes"][0]["code"].as_str().expect("a code");
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let page = driver.session(&profiles.path().join("member")).await;
    let token = app.token("member");
    page.goto(&format!("{}/?token={token}#/drops/{drop}", app.base))
        .await;
    let hold = r#".sku[data-sku="S1"] button.hold"#;
    page.wait_text(r#".sku[data-sku="S1"] .available"#, |t| t == "5")
        .await;
    // A wrong code is refused with its reason; the right one holds before the start.
    page.type_into("#code", "WRONG-CODE").await;
    page.click(hold).await;
    page.wait_text("#message", |t| {
        t.starts_with("That access code does not work here")
    })
    .await;
    page.clear("#code").await;
    page.type_into("#code", &code.to_lowercase()).await;
    page.click(hold).await;
    page.wait_text("#message", |t| t.starts_with("Held")).await;
    let uses: i64 = app
        .db()
        .query_row(
            "SELECT uses FROM access_codes WHERE drop_id = 'presale-page'",
            [],
            |r| r.get(0),
        )
        .expect("the code");
    assert_eq!(uses, 1);
    page.close().await;
    app.stop().await;
}

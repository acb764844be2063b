//! Access codes (presale tiers): kept as hashes, checked and counted in the hold's own
//! transaction, opening a drop before its start within their window. The clock is the test's.

use chrono::Duration;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::support::api::expect_problem;
use crate::support::app::{spawn_app, start_time, TestApp};
use crate::support::db::check_invariants;
use crate::support::spec::live_drop;

const ATTEMPTS: usize = 500;
const MAX_USES: i64 = 7;

async fn make_codes(app: &TestApp, drop: &str, body: Value) -> Vec<String> {
    let res = app
        .api()
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/drops/{drop}/codes"),
            Some(&body),
        )
        .await;
    assert_eq!(res.status(), 201, "codes made");
    let body: Value = res.json().await.expect("json");
    body["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c["code"].as_str().expect("the code, shown once").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_used_up_under_concurrent_attempts_is_used_exactly_max_uses_times() {
    let app = spawn_app().await;
    let drop = "presale";
    let start = start_time() + Duration::minutes(10);
    let mut spec = live_drop(drop, 1_000, 2);
    spec["starts_at"] = json!(start.to_rfc3339());
    app.create_drop(&spec).await;
    let window = json!({
        "tier": "members", "count": 2, "max_uses": MAX_USES,
        "valid_from": (start_time() - Duration::minutes(1)).to_rfc3339(),
        "valid_until": (start + Duration::hours(1)).to_rfc3339(),
    });
    let codes = make_codes(&app, drop, window).await;
    let (code, other) = (&codes[0], &codes[1]);
    assert_ne!(code, other);

    // Before the start only a code opens the drop; a wrong one is refused and writes nothing.
    expect_problem(
        app.buyer("x").hold(drop, "S1", 1, "x1").await,
        409,
        "drop-not-live",
    )
    .await;
    expect_problem(
        app.buyer("x")
            .hold_with_code(drop, "S1", "x2", "NOPE-NOPE-NOPE-NOPE")
            .await,
        403,
        "code-invalid",
    )
    .await;

    // 500 buyers try one code at once: it is used exactly max_uses times.
    let statuses: Vec<(u16, Option<String>)> = futures::stream::iter(0..ATTEMPTS)
        .map(|i| {
            let api = app.buyer(&format!("b{i}"));
            let code = code.clone();
            async move {
                let res = api
                    .hold_with_code(drop, "S1", &format!("k{i}"), &code)
                    .await;
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                (status, body["code"].as_str().map(str::to_owned))
            }
        })
        .buffer_unordered(ATTEMPTS)
        .collect()
        .await;
    let held = statuses.iter().filter(|(s, _)| *s == 201).count();
    let used_up = statuses
        .iter()
        .filter(|(s, c)| *s == 409 && c.as_deref() == Some("code-used-up"))
        .count();
    assert_eq!(
        (held, used_up),
        (MAX_USES as usize, ATTEMPTS - MAX_USES as usize),
        "{statuses:?}"
    );
    let (uses, coded): (i64, i64) = app
        .db()
        .query_row(
            "SELECT (SELECT SUM(uses) FROM access_codes WHERE drop_id = 'presale'),
                    (SELECT COUNT(*) FROM holds WHERE drop_id = 'presale' AND code_seq IS NOT NULL)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("counts");
    assert_eq!((uses, coded), (MAX_USES, MAX_USES));
    // The codes are not in the database, only their hashes.
    let stored: i64 = app
        .db()
        .query_row(
            "SELECT COUNT(*) FROM access_codes WHERE CAST(code_hash AS TEXT) = ?1",
            [code],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(stored, 0);

    // The other code of the tier still works, typed in lower case.
    let res = app
        .buyer("y")
        .hold_with_code(drop, "S1", "y1", &other.to_lowercase())
        .await;
    assert_eq!(res.status(), 201);

    // A code whose window has not opened yet, and one past it.
    let later = json!({"tier": "late", "count": 1, "max_uses": 1,
        "valid_from": (start + Duration::minutes(30)).to_rfc3339()});
    let late = make_codes(&app, drop, later).await;
    expect_problem(
        app.buyer("z")
            .hold_with_code(drop, "S1", "z1", &late[0])
            .await,
        403,
        "code-invalid",
    )
    .await;
    let invalid = app
        .api()
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/drops/{drop}/codes"),
            Some(&json!({"tier": "bad tier", "count": 1, "max_uses": 1})),
        )
        .await;
    expect_problem(invalid, 422, "validation-failed").await;

    // The export lists every code with its uses, never the code.
    let text = app
        .api()
        .admin(
            reqwest::Method::GET,
            &format!("/v1/admin/drops/{drop}/codes"),
            None,
        )
        .await
        .text()
        .await
        .expect("body");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.get("code").is_none()));
    let uses: Vec<i64> = lines
        .iter()
        .map(|l| l["uses"].as_i64().expect("uses"))
        .collect();
    assert_eq!(uses.iter().sum::<i64>(), MAX_USES + 1);
    assert_eq!(lines[0]["tier"], "members");

    // The presale holds replay: each came with a code, so the drop was open to it.
    let report = app.replay(drop, &[]);
    assert_eq!(report["mismatches"], json!([]), "{report}");
    assert_eq!(report["held"], MAX_USES + 1);
    check_invariants(&app.db()).expect("invariants hold");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiers_reserved_share_is_for_its_codes_only() {
    let app = spawn_app().await;
    let drop = "reserved";
    app.create_drop(&live_drop(drop, 10, 1)).await;
    let too_many = app
        .api()
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/drops/{drop}/codes"),
            Some(&json!({"tier": "vip", "count": 1, "max_uses": 1, "sku": "S1", "reserved": 11})),
        )
        .await;
    expect_problem(too_many, 422, "validation-failed").await;
    let vip = make_codes(
        &app,
        drop,
        json!({"tier": "vip", "count": 4, "max_uses": 1, "sku": "S1", "reserved": 3}),
    )
    .await;
    let view = app.get_json(&format!("/v1/drops/{drop}")).await;
    assert_eq!(
        (&view["skus"][0]["available"], &view["skus"][0]["reserved"]),
        (&json!(7), &json!(3))
    );
    let shrink = app
        .api()
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/drops/{drop}/skus/S1/stock"),
            Some(&json!({"delta": -8})),
        )
        .await;
    expect_problem(shrink, 409, "stock-below-committed").await;

    // The public takes what is not reserved, and no more.
    for i in 0..7 {
        assert_eq!(
            app.buyer(&format!("p{i}"))
                .hold(drop, "S1", 1, "k")
                .await
                .status(),
            201
        );
    }
    expect_problem(
        app.buyer("p7").hold(drop, "S1", 1, "k").await,
        409,
        "sold-out",
    )
    .await;
    // The tier's codes take the reserved units; once those are gone, so is the SKU.
    for (i, code) in vip.iter().take(3).enumerate() {
        let res = app
            .buyer(&format!("v{i}"))
            .hold_with_code(drop, "S1", "k", code)
            .await;
        assert_eq!(res.status(), 201, "vip {i}");
    }
    expect_problem(
        app.buyer("v3")
            .hold_with_code(drop, "S1", "k", &vip[3])
            .await,
        409,
        "sold-out",
    )
    .await;
    let view = app.get_json(&format!("/v1/drops/{drop}")).await;
    assert_eq!(view["skus"][0]["available"], 0);
    assert!(view["skus"][0].get("reserved").is_none(), "{view}");

    let report = app.replay(drop, &[]);
    assert_eq!(report["mismatches"], json!([]), "{report}");
    // The public's eighth was refused from memory (the view showed none available), unnumbered;
    // the fourth code went to the writer.
    assert_eq!(
        (report["held"].as_i64(), report["refused"].as_i64()),
        (Some(10), Some(1))
    );
    check_invariants(&app.db()).expect("invariants hold");
    app.stop().await;
}

use std::net::IpAddr;

use dropd::http::admission::{AdmissionConfig, Bucket};
use futures::future::join_all;

use crate::support::app::{spawn_app_with, TestApp};
use crate::support::spec::live_drop;

fn limits(per_ip: Bucket, per_buyer: Bucket, trusted: &[&str]) -> AdmissionConfig {
    AdmissionConfig {
        enabled: true,
        per_ip,
        per_buyer,
        trusted_proxies: trusted.iter().map(|n| n.parse().expect("cidr")).collect(),
    }
}

async fn hold_from(
    app: &TestApp,
    client: &reqwest::Client,
    buyer: &str,
    key: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(app.url("/v1/drops/d/holds"))
        .bearer_auth(app.token(buyer))
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({"sku": "S1", "quantity": 1}));
    if let Some(addr) = forwarded_for {
        req = req.header("X-Forwarded-For", addr);
    }
    req.send().await.expect("sent")
}

fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<IpAddr>().expect("address"))
        .build()
        .expect("client")
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scalper_with_one_token_gets_one_unit_and_429s_that_never_reach_the_writer() {
    let app = spawn_app_with(|s| {
        s.admission = limits(Bucket::new(100_000, 100_000), Bucket::new(1, 1), &[])
    })
    .await;
    app.create_drop(&live_drop("d", 100, 1)).await;
    let scalper = app.token("scalper");
    let attempt = |buyer: Option<usize>, i: usize| {
        let (client, url) = (app.client.clone(), app.url("/v1/drops/d/holds"));
        let token = buyer.map_or(scalper.clone(), |b| app.token(&format!("honest-{b}")));
        async move {
            let res = client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("k{i}"))
                .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
                .send()
                .await
                .expect("sent");
            let status = res.status().as_u16();
            let after = (status == 429).then(|| retry_after(&res));
            (buyer.is_none(), status, after)
        }
    };
    // Interleaved: the honest buyers arrive while the scalper fires.
    let mut attempts = Vec::new();
    for i in 0..700 {
        let buyer = (i % 7 == 3)
            .then_some(i / 7 * 2)
            .or((i % 7 == 6).then_some(i / 7 * 2 + 1));
        attempts.push(attempt(buyer, i));
    }
    let answers = join_all(attempts).await;
    let honest: Vec<_> = answers.iter().filter(|a| !a.0).collect();
    let scalping: Vec<_> = answers.iter().filter(|a| a.0).collect();
    assert_eq!((honest.len(), scalping.len()), (200, 500));
    let scalper_held = scalping.iter().filter(|a| a.1 == 201).count();
    let honest_held = honest.iter().filter(|a| a.1 == 201).count();
    assert!(scalper_held <= 1, "the scalper holds {scalper_held}");
    assert!(honest_held >= 99, "honest buyers hold {honest_held}");
    assert!(
        scalping.iter().all(|a| a.1 == 201 || a.1 == 429),
        "every refusal of the scalper is 429: {:?}",
        scalping
            .iter()
            .filter(|a| a.1 != 201 && a.1 != 429)
            .collect::<Vec<_>>()
    );
    assert!(
        answers.iter().all(|a| a.1 != 503),
        "the writer's queue never filled"
    );
    // Refused clients are told different delays, so they do not come back together.
    let delays: std::collections::HashSet<u64> = scalping.iter().filter_map(|a| a.2).collect();
    assert!(
        delays.len() > 1 && delays.iter().all(|d| (1..=4).contains(d)),
        "{delays:?}"
    );
    // What reached the writer left a record: the scalper's 429s left none.
    let scalper_records: i64 = app
        .db()
        .query_row(
            "SELECT COUNT(*) FROM idempotency_keys WHERE buyer = 'scalper'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(
        scalper_records as usize,
        scalping.len() - scalping.iter().filter(|a| a.1 == 429).count()
    );
    assert!(scalper_records <= 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_its_bucket_gets_429_and_another_address_is_unaffected() {
    let app =
        spawn_app_with(|s| s.admission = limits(Bucket::new(1, 3), Bucket::new(100, 100), &[]))
            .await;
    app.create_drop(&live_drop("d", 100, 5)).await;
    let here = client_from("127.0.0.1");
    for i in 0..3 {
        let res = hold_from(&app, &here, &format!("b{i}"), "k", None).await;
        assert_eq!(res.status(), 201, "attempt {i} is within the burst");
    }
    let refused = hold_from(&app, &here, "b9", "k", None).await;
    assert_eq!(refused.status(), 429);
    assert!((1..=4).contains(&retry_after(&refused)));
    let problem: serde_json::Value = refused.json().await.expect("problem");
    assert_eq!(problem["code"], "too-many-requests");
    // A forwarded address from an untrusted peer is not believed: still this address.
    let res = hold_from(&app, &here, "b8", "k", Some("203.0.113.9")).await;
    assert_eq!(
        res.status(),
        429,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    let elsewhere = client_from("127.0.0.2");
    let res = hold_from(&app, &elsewhere, "b7", "k", None).await;
    assert_eq!(res.status(), 201, "another address has its own bucket");
    assert_eq!(
        app.available("d", "S1").await,
        96,
        "nothing refused was written"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_one_limited() {
    let app = spawn_app_with(|s| {
        s.admission = limits(Bucket::new(1, 2), Bucket::new(100, 100), &["127.0.0.0/8"])
    })
    .await;
    app.create_drop(&live_drop("d", 100, 5)).await;
    let proxy = client_from("127.0.0.1");
    for (i, hops) in ["203.0.113.5", "198.51.100.1, 203.0.113.5"]
        .iter()
        .enumerate()
    {
        let res = hold_from(&app, &proxy, &format!("a{i}"), "k", Some(hops)).await;
        assert_eq!(res.status(), 201);
    }
    let res = hold_from(&app, &proxy, "a9", "k", Some("203.0.113.5")).await;
    assert_eq!(res.status(), 429, "203.0.113.5 used its burst of two");
    let res = hold_from(&app, &proxy, "c1", "k", Some("203.0.113.6")).await;
    assert_eq!(
        res.status(),
        201,
        "another client behind the same proxy is not held up"
    );
    // `Forwarded` works too, and a hop that is one of ours is skipped.
    let res = app
        .client
        .post(app.url("/v1/drops/d/holds"))
        .bearer_auth(app.token("c2"))
        .header("Idempotency-Key", "k")
        .header("Forwarded", "for=\"[2001:db8::7]:4711\", for=127.0.0.9")
        .json(&serde_json::json!({"sku": "S1", "quantity": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    app.stop().await;
}

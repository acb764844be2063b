use std::time::Duration;

use dropd::auth::{TokenKeys, TokenPolicy};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::api::{expect_problem, token_for, SECRET};
use crate::support::app::spawn_app_with;
use crate::support::spec::live_drop;

const NEW_SECRET: &str = "the-new-secret-of-this-server-0123456789";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A token made the way another service would, with exactly these claims and no `kid`.
fn hand_made(secret: &str, claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_old_and_the_new_secret_both_work_until_the_old_is_removed() {
    let rotating =
        spawn_app_with(|s| s.token_secrets = vec![NEW_SECRET.into(), SECRET.into()]).await;
    rotating.create_drop(&live_drop("rot", 10, 5)).await;
    let old = TokenKeys::new(SECRET.as_bytes()).expect("keys");
    let new = TokenKeys::new(NEW_SECRET.as_bytes()).expect("keys");
    let old_without_kid = hand_made(SECRET, json!({"sub": "carol", "exp": now() + 600}));
    for (i, token) in [
        token_for(&old, "alice"),
        token_for(&new, "bob"),
        old_without_kid.clone(),
    ]
    .iter()
    .enumerate()
    {
        let res = rotating
            .api()
            .with_token(token)
            .hold("rot", "S1", 1, &format!("k{i}"))
            .await;
        assert_eq!(
            res.status(),
            201,
            "token {i} is accepted while both secrets are"
        );
    }
    // What the rotating server mints is signed with the first secret.
    let minted = rotating.token("dave");
    assert!(new.verify(&minted).is_ok() && old.verify(&minted).is_err());
    rotating.stop().await;

    let rotated = spawn_app_with(|s| s.token_secrets = vec![NEW_SECRET.into()]).await;
    rotated.create_drop(&live_drop("rot", 10, 5)).await;
    for token in [token_for(&old, "alice"), old_without_kid] {
        let res = rotated
            .api()
            .with_token(&token)
            .hold("rot", "S1", 1, "k")
            .await;
        expect_problem(res, 401, "unauthorized").await;
    }
    let res = rotated
        .api()
        .with_token(&token_for(&new, "bob"))
        .hold("rot", "S1", 1, "k")
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(rotated.available("rot", "S1").await, 9);
    rotated.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lifetimes_future_nbf_wrong_audience_and_huge_tokens_are_refused_with_their_codes() {
    let app = spawn_app_with(|s| {
        s.token_policy = TokenPolicy {
            max_lifetime: Duration::from_secs(3600),
            audience: Some("shop".into()),
            issuer: Some("auth.example".into()),
            ..TokenPolicy::default()
        }
    })
    .await;
    app.create_drop(&live_drop("tok", 10, 5)).await;
    let t = now();
    let good = json!({"sub": "alice", "exp": t + 600, "aud": "shop", "iss": "auth.example"});
    let with = |change: Value| {
        let mut claims = good.clone();
        for (k, v) in change.as_object().expect("object") {
            match v {
                Value::Null => claims.as_object_mut().expect("object").remove(k),
                v => claims
                    .as_object_mut()
                    .expect("object")
                    .insert(k.clone(), v.clone()),
            };
        }
        hand_made(SECRET, claims)
    };
    let cases = [
        (
            "lifetime",
            with(json!({"iat": t, "exp": t + 2 * 3600})),
            "token-lifetime-too-long",
        ),
        (
            "far exp, no iat",
            with(json!({"exp": 1u64 << 62})),
            "token-lifetime-too-long",
        ),
        ("nbf", with(json!({"nbf": t + 3600})), "token-not-yet-valid"),
        (
            "aud",
            with(json!({"aud": "another-shop"})),
            "token-wrong-audience",
        ),
        ("no aud", with(json!({"aud": null})), "token-wrong-audience"),
        (
            "iss",
            with(json!({"iss": "evil.example"})),
            "token-wrong-issuer",
        ),
        ("expired", with(json!({"exp": t - 3600})), "unauthorized"),
        (
            "huge",
            format!("{}.{}.x", "a".repeat(3000), "b".repeat(3000)),
            "token-too-long",
        ),
    ];
    for (what, token, code) in cases {
        let res = app
            .api()
            .with_token(&token)
            .hold("tok", "S1", 1, what)
            .await;
        let problem = expect_problem(res, 401, code).await;
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {problem}"
        );
    }
    assert_eq!(
        app.available("tok", "S1").await,
        10,
        "no refused token wrote"
    );

    // `iat` is optional: `sub`, `exp` and the required `aud` and `iss` are enough.
    let res = app
        .api()
        .with_token(&with(json!({})))
        .hold("tok", "S1", 1, "ok")
        .await;
    assert_eq!(res.status(), 201);
    // What the server mints carries the audience and issuer it requires.
    let res = app
        .api()
        .with_token(&app.token("bob"))
        .hold("tok", "S1", 1, "ok")
        .await;
    assert_eq!(res.status(), 201);
    app.stop().await;
}

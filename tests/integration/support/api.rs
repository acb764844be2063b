//! How tests talk to dropd over HTTP: one client, the buyer tokens, and `Api`, the typed calls
//! for the routes tests use most. Requests that are wrong on purpose (bad_input.rs,
//! authorization.rs) are built by hand in their tests, since their shape is what is tested.

use std::time::Duration;

use dropd::auth::TokenKeys;
use dropd::domain::BuyerId;
use serde_json::{json, Value};

/// The token secret of every server a test starts, so tests can mint buyer tokens themselves.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client builds")
}

pub fn token_for(tokens: &TokenKeys, sub: &str) -> String {
    tokens
        .mint(
            &BuyerId::parse(sub).expect("valid sub"),
            Duration::from_secs(3600),
        )
        .expect("token mints")
}

/// A buyer token signed with [`SECRET`], for servers whose keys the test does not hold (a
/// spawned binary).
pub fn buyer_token(sub: &str) -> String {
    token_for(&TokenKeys::new(SECRET.as_bytes()).expect("keys"), sub)
}

/// One server's API, as a buyer (the token) and as the admin (the key), whichever is set.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    admin_key: Option<String>,
}

impl Api {
    pub fn new(http: &reqwest::Client, base: &str) -> Api {
        Api {
            http: http.clone(),
            base: base.to_owned(),
            token: None,
            admin_key: None,
        }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// As the buyer `sub`, with a token signed with [`SECRET`].
    pub fn buyer(&self, sub: &str) -> Api {
        self.with_token(&buyer_token(sub))
    }

    pub fn with_admin_key(&self, key: &str) -> Api {
        Api {
            admin_key: Some(key.to_owned()),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn as_buyer(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    fn as_admin(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Any admin request: `body`, if any, as JSON.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.as_admin(self.http.request(method, self.url(path)));
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request sent")
    }

    /// `POST /v1/admin/drops`, which must answer 201; returns the drop's view.
    pub async fn create_drop(&self, spec: &Value) -> Value {
        let res = self
            .as_admin(self.http.post(self.url("/v1/admin/drops")))
            .json(spec)
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), 201, "creating a drop");
        res.json().await.expect("json body")
    }

    pub async fn patch_drop(&self, drop: &str, patch: &Value) -> reqwest::Response {
        self.as_admin(
            self.http
                .patch(self.url(&format!("/v1/admin/drops/{drop}"))),
        )
        .json(patch)
        .send()
        .await
        .expect("request sent")
    }

    /// `POST /v1/admin/drops/{drop}/skus/{sku}/stock`: adds `delta` (negative: removes).
    pub async fn adjust_stock(&self, drop: &str, sku: &str, delta: i64) -> reqwest::Response {
        let path = format!("/v1/admin/drops/{drop}/skus/{sku}/stock");
        self.as_admin(self.http.post(self.url(&path)))
            .json(&json!({"delta": delta}))
            .send()
            .await
            .expect("request sent")
    }

    /// `GET path`, which must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let res = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.expect("json body")
    }

    pub async fn drop_view(&self, drop: &str) -> Value {
        self.get_json(&format!("/v1/drops/{drop}")).await
    }

    /// What the drop's view shows available for `sku`.
    pub async fn available(&self, drop: &str, sku: &str) -> i64 {
        let view = self.drop_view(drop).await;
        view["skus"]
            .as_array()
            .expect("skus")
            .iter()
            .find(|s| s["sku"] == sku)
            .and_then(|s| s["available"].as_i64())
            .expect("sku listed")
    }

    /// `POST /v1/drops/{drop}/holds`; an error only if no answer came (the server is gone).
    pub async fn try_hold(
        &self,
        drop: &str,
        sku: &str,
        quantity: i64,
        key: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.as_buyer(self.http.post(self.url(&format!("/v1/drops/{drop}/holds"))))
            .header("Idempotency-Key", key)
            .json(&json!({"sku": sku, "quantity": quantity}))
            .send()
            .await
    }

    /// A hold of one unit of `sku` with an access code.
    pub async fn hold_with_code(
        &self,
        drop: &str,
        sku: &str,
        key: &str,
        code: &str,
    ) -> reqwest::Response {
        self.as_buyer(self.http.post(self.url(&format!("/v1/drops/{drop}/holds"))))
            .header("Idempotency-Key", key)
            .json(&json!({"sku": sku, "quantity": 1, "code": code}))
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /v1/drops/{drop}/queue`.
    pub async fn join_queue(&self, drop: &str) -> reqwest::Response {
        self.as_buyer(self.http.post(self.url(&format!("/v1/drops/{drop}/queue"))))
            .send()
            .await
            .expect("request sent")
    }

    /// `GET /v1/drops/{drop}/queue`, which must answer 200.
    pub async fn queue_place(&self, drop: &str) -> Value {
        let res = self
            .as_buyer(self.http.get(self.url(&format!("/v1/drops/{drop}/queue"))))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), 200, "queue place of {drop}");
        res.json().await.expect("json body")
    }

    /// `POST /v1/drops/{drop}/waitlist`.
    pub async fn join_waitlist(&self, drop: &str, sku: &str, quantity: i64) -> reqwest::Response {
        self.as_buyer(
            self.http
                .post(self.url(&format!("/v1/drops/{drop}/waitlist"))),
        )
        .json(&json!({"sku": sku, "quantity": quantity}))
        .send()
        .await
        .expect("request sent")
    }

    /// The buyer's entry for `sku` in `GET /v1/drops/{drop}/waitlist` (the newest), which
    /// must exist.
    pub async fn waitlist_entry(&self, drop: &str, sku: &str) -> Value {
        let res = self.waitlist(drop).await;
        assert_eq!(res.status(), 200, "waiting list of {drop}");
        let body: Value = res.json().await.expect("json body");
        body["entries"]
            .as_array()
            .and_then(|entries| entries.iter().find(|e| e["sku"] == sku))
            .cloned()
            .unwrap_or_else(|| panic!("no entry for {sku} in {body}"))
    }

    /// `DELETE /v1/drops/{drop}/waitlist/{sku}`.
    /// `POST /v1/drops/{drop}/entries`: enter a raffle.
    pub async fn enter_draw(&self, drop: &str, sku: &str, quantity: i64) -> reqwest::Response {
        self.as_buyer(
            self.http
                .post(self.url(&format!("/v1/drops/{drop}/entries"))),
        )
        .json(&json!({"sku": sku, "quantity": quantity}))
        .send()
        .await
        .expect("request sent")
    }

    /// The buyer's raffle entries in `drop`, which must answer 200.
    pub async fn draw_entries(&self, drop: &str) -> Vec<Value> {
        let res = self
            .as_buyer(
                self.http
                    .get(self.url(&format!("/v1/drops/{drop}/entries"))),
            )
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), 200, "entries of {drop}");
        let body: Value = res.json().await.expect("json body");
        body["entries"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /v1/drops/{drop}/waitlist` as this buyer.
    pub async fn waitlist(&self, drop: &str) -> reqwest::Response {
        self.as_buyer(
            self.http
                .get(self.url(&format!("/v1/drops/{drop}/waitlist"))),
        )
        .send()
        .await
        .expect("request sent")
    }

    pub async fn leave_waitlist(&self, drop: &str, sku: &str) -> reqwest::Response {
        self.as_buyer(
            self.http
                .delete(self.url(&format!("/v1/drops/{drop}/waitlist/{sku}"))),
        )
        .send()
        .await
        .expect("request sent")
    }

    /// A hold carrying a queue admission token.
    pub async fn hold_admitted(
        &self,
        drop: &str,
        sku: &str,
        key: &str,
        admission: &str,
    ) -> reqwest::Response {
        self.as_buyer(self.http.post(self.url(&format!("/v1/drops/{drop}/holds"))))
            .header("Idempotency-Key", key)
            .header("Dropd-Admission", admission)
            .json(&json!({"sku": sku, "quantity": 1}))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn hold(&self, drop: &str, sku: &str, quantity: i64, key: &str) -> reqwest::Response {
        self.try_hold(drop, sku, quantity, key)
            .await
            .expect("request sent")
    }

    /// `n` holds of one unit of `S1`, keys `{prefix}0`, `{prefix}1`, ..., each answered 201;
    /// returns their ids.
    pub async fn hold_many(&self, drop: &str, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let res = self.hold(drop, "S1", 1, &format!("{prefix}{i}")).await;
            assert_eq!(res.status(), 201, "hold {prefix}{i}");
            let body: Value = res.json().await.expect("json body");
            ids.push(body["hold_id"].as_str().expect("hold id").to_owned());
        }
        ids
    }

    /// `POST /v1/holds/{hold}/confirm`; an error only if no answer came.
    pub async fn try_confirm(
        &self,
        hold_id: &str,
        key: &str,
        payment_ref: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.as_buyer(
            self.http
                .post(self.url(&format!("/v1/holds/{hold_id}/confirm"))),
        )
        .header("Idempotency-Key", key)
        .json(&json!({"payment_ref": payment_ref}))
        .send()
        .await
    }

    pub async fn confirm(&self, hold_id: &str, key: &str) -> reqwest::Response {
        self.try_confirm(hold_id, key, "pi_test")
            .await
            .expect("request sent")
    }

    /// `DELETE /v1/holds/{hold}`.
    pub async fn release(&self, hold_id: &str) -> reqwest::Response {
        self.as_buyer(self.http.delete(self.url(&format!("/v1/holds/{hold_id}"))))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_hold(&self, hold_id: &str) -> reqwest::Response {
        self.as_buyer(self.http.get(self.url(&format!("/v1/holds/{hold_id}"))))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_order(&self, order_id: &str) -> reqwest::Response {
        self.as_buyer(self.http.get(self.url(&format!("/v1/orders/{order_id}"))))
            .send()
            .await
            .expect("request sent")
    }

    /// `GET /v1/orders`: the buyer's orders.
    pub async fn orders(&self) -> Value {
        self.as_buyer(self.http.get(self.url("/v1/orders")))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("json body")
    }

    pub async fn healthz(&self) -> Value {
        self.get_json("/healthz").await
    }

    /// `/readyz` as an operator: with the admin key, when this client has one, which shows the
    /// replica's detail.
    pub async fn readyz(&self) -> Value {
        let mut req = self.http.get(self.url("/readyz"));
        if let Some(key) = &self.admin_key {
            req = req.bearer_auth(key);
        }
        let res = req.send().await.expect("request sent");
        assert_eq!(res.status(), 200, "GET /readyz");
        res.json().await.expect("json body")
    }

    /// The replica's status as `/readyz` shows it (null without a replica).
    pub async fn readyz_replica(&self) -> Value {
        self.readyz().await["replica"].clone()
    }

    pub async fn metrics(&self) -> reqwest::Response {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request sent")
    }
}

/// Asserts the problem+json shape and returns the body.
pub async fn expect_problem(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status(), status, "status for expected {code}");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("every answer names its request");
    let mut body: Value = res.json().await.expect("problem body is json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    // The request's id is the envelope, not the answer: two requests under one idempotency key
    // get the same answer, each naming its own request (see docs/design.md, "Idempotency").
    assert_eq!(
        body.as_object_mut().and_then(|b| b.remove("request_id")),
        Some(Value::String(request_id)),
        "the problem names the request it answers"
    );
    body
}

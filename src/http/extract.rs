//! Request extractors: who is calling (buyer token, admin key) and the Idempotency-Key.

use std::future::{ready, Ready};

use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};

use crate::auth;
use crate::domain::{BuyerId, IdempotencyKey};
use crate::http::codes::Code;
use crate::http::problem::ApiError;
use crate::http::request_id::Caller;
use crate::http::state::AppState;
use crate::store::audit::Acting;

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(ApiError::internal)
}

fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not readable text"))?;
    match text.split_once(' ') {
        Some((scheme, credential))
            if scheme.eq_ignore_ascii_case("bearer") && !credential.trim().is_empty() =>
        {
            Ok(credential.trim())
        }
        _ => Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

/// The client's address is within its write bucket. A handler's first extractor, so a flood is
/// refused before its token is verified or its body read.
pub struct IpAdmitted;

impl FromRequest for IpAdmitted {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // A payment service is one trusted caller that may confirm a whole drop at once: its
        // key is checked by the handler (a forged one is refused there, as cheaply).
        if bearer(req).is_ok_and(crate::auth::looks_like_service_key) {
            return ready(Ok(IpAdmitted));
        }
        ready(
            state(req)
                .and_then(|state| state.admission.check_ip(req))
                .map(|()| IpAdmitted),
        )
    }
}

/// The buyer a valid token speaks for.
pub struct Buyer(pub BuyerId);

impl FromRequest for Buyer {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let token = bearer(req)?;
            let buyer = state(req)?.tokens.verify(token).map_err(|err| {
                ApiError::new(
                    Code::parse(err.code()).unwrap_or(Code::Unauthorized),
                    err.to_string(),
                )
            })?;
            req.extensions_mut().insert(Caller::Buyer(buyer.clone()));
            Ok(Buyer(buyer))
        })())
    }
}

/// A caller holding an active admin key; its id names the caller in the logs.
pub struct Admin {
    pub key_id: String,
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let key = bearer(req)?;
            if auth::looks_like_buyer_token(key) {
                return Err(ApiError::forbidden(
                    "buyer tokens cannot call the admin API; use an admin key",
                ));
            }
            let key_id = state(req)?
                .admin_keys
                .check(key)
                .ok_or_else(|| ApiError::unauthorized("the admin key is not valid"))?;
            req.extensions_mut().insert(Caller::Admin(key_id.clone()));
            Ok(Admin { key_id })
        })())
    }
}

/// The id of the active admin key the request carries, if it carries one (no refusal).
/// The bearer credential, if the request has a readable one.
pub fn bearer_credential(req: &HttpRequest) -> Option<&str> {
    bearer(req).ok()
}

pub fn admin_key_id(req: &HttpRequest) -> Option<String> {
    let key = bearer(req).ok()?;
    state(req).ok()?.admin_keys.check(key)
}

/// Who acts for the audit log: `actor`, for this request.
pub fn acting_as(req: &HttpRequest, actor: impl Into<String>) -> Acting {
    let mut act = Acting::by(actor);
    act.request_id = req
        .extensions()
        .get::<crate::http::request_id::RequestId>()
        .map(|id| id.0.clone());
    act
}

/// An admin action for the audit log, with its optional `Idempotency-Key` (admin writes are
/// safe to retry under one; without one they act each time). `route`, `target` and `body`
/// make the fingerprint that tells a retry from another request under the same key.
pub fn admin_act(
    req: &HttpRequest,
    admin: &Admin,
    route: &str,
    target: &str,
    body: &impl serde::Serialize,
) -> Result<Acting, ApiError> {
    let mut act = acting_as(req, admin.key_id.clone());
    if req.headers().contains_key("idempotency-key") {
        let IdemKey(key) = IdemKey::from_request(req, &mut Payload::None).into_inner()?;
        act.retry = Some((key, crate::http::fingerprint(route, target, body)));
    }
    Ok(act)
}

/// The `Idempotency-Key` header, required on requests that create something.
pub struct IdemKey(pub IdempotencyKey);

impl FromRequest for IdemKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.headers().get("idempotency-key") {
            None => Err(ApiError::new(Code::IdempotencyKeyMissing, "send an Idempotency-Key header (for example a UUID) so the request can be retried safely",
            )),
            Some(value) => value
                .to_str()
                .map_err(|_| "Idempotency-Key must be visible ASCII".to_owned())
                .and_then(IdempotencyKey::parse)
                .map(IdemKey)
                .map_err(|detail| {
                    ApiError::new(Code::IdempotencyKeyInvalid, detail)
                }),
        };
        ready(result)
    }
}

//! Request extractors: who is calling (buyer token, admin key) and the Idempotency-Key.

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::http::{header, StatusCode};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use crate::auth;
use crate::domain::{BuyerId, IdempotencyKey};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::admin_keys;

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
                ApiError::new(StatusCode::UNAUTHORIZED, err.code(), err.to_string())
            })?;
            Ok(Buyer(buyer))
        })())
    }
}

/// A caller holding a valid admin key.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = (|| {
            let key = bearer(req)?.to_owned();
            if auth::looks_like_buyer_token(&key) {
                return Err(ApiError::forbidden(
                    "buyer tokens cannot call the admin API; use an admin key",
                ));
            }
            Ok((key, state(req)?.clone()))
        })();
        Box::pin(async move {
            let (key, state) = checked?;
            let stored = state
                .read(|conn, _| admin_keys::active_hashes(conn))
                .await?;
            if auth::admin_key_matches(&key, &stored) {
                Ok(Admin)
            } else {
                Err(ApiError::unauthorized("the admin key is not valid"))
            }
        })
    }
}

/// The `Idempotency-Key` header, required on requests that create something.
pub struct IdemKey(pub IdempotencyKey);

impl FromRequest for IdemKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.headers().get("idempotency-key") {
            None => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency-key-missing",
                "send an Idempotency-Key header (for example a UUID) so the request can be retried safely",
            )),
            Some(value) => value
                .to_str()
                .map_err(|_| "Idempotency-Key must be visible ASCII".to_owned())
                .and_then(IdempotencyKey::parse)
                .map(IdemKey)
                .map_err(|detail| {
                    ApiError::new(StatusCode::BAD_REQUEST, "idempotency-key-invalid", detail)
                }),
        };
        ready(result)
    }
}

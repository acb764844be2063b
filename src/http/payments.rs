//! `POST /v1/payments/callback`: a payment provider says a hold is paid. The body is signed
//! like dropd's own webhooks (`Dropd-Payment-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">`) with a secret from a file or a systemd credential; a signature outside the
//! tolerance window, or a body already taken within it, is refused and writes nothing.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::{BuyerId, HoldId, IdempotencyKey};
use crate::http::codes::Code;
use crate::http::openapi::problems::{problems, BODY, EVERY, SPLIT, WRITE};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::{ConfirmHold, IdempotentRequest};

pub use crate::http::payment_signature::{PaymentCallback, SIGNATURE_HEADER};

#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct PaymentNotice {
    /// The hold the payment was for.
    hold_id: String,
    /// The provider's reference of the payment; becomes the order's `payment_ref`.
    #[schema(min_length = 1, max_length = 255)]
    payment_ref: String,
}

problems!(PaymentCallbackProblems: EVERY, SPLIT, BODY, WRITE, &[
    Code::SignatureInvalid,
    Code::SignatureExpired,
    Code::CallbackReplayed,
    Code::NotFound,
    Code::HoldExpired,
    Code::HoldReleased,
    Code::HoldConfirmed,
]);

/// A payment provider confirms a paid hold into an order (when the server has a callback
/// secret; else not found).
#[utoipa::path(post, path = "/v1/payments/callback", tag = "buyers",
    params(("Dropd-Payment-Signature" = String, Header,
        description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of `<t>.<body>`>")),
    request_body = PaymentNotice,
    responses((status = 201, description = "the order", body = crate::domain::views::OrderView),
        PaymentCallbackProblems))]
pub async fn payment_callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    if header.is_none() {
        return Err(ApiError::new(
            Code::SignatureInvalid,
            "send Dropd-Payment-Signature: t=..,v1=..",
        ));
    }
    let Some(callback) = &state.payment_callback else {
        return Err(ApiError::not_found(
            "this server has no payment callback (--payment-callback-secret-file)",
        ));
    };
    let now = state.clock.now().timestamp();
    callback.verify(header, &body, now)?;
    let notice: PaymentNotice = serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError::validation(e.to_string())
        } else {
            ApiError::new(
                Code::MalformedJson,
                format!("the body is not valid JSON: {e}"),
            )
        }
    })?;
    let digest: [u8; 32] = Sha256::digest(&body).into();
    if !callback.first_time(digest, now) {
        return Err(ApiError::new(
            Code::CallbackReplayed,
            "this exact notice was already taken; nothing was written",
        ));
    }
    // After a restart the in-memory window is gone: the same body is then the same
    // idempotent request, which replays its first answer and writes nothing.
    let key = IdempotencyKey::parse(&format!("callback-{}", hex::encode(&digest[..16])))
        .map_err(|_| ApiError::internal())?;
    let request = IdempotentRequest {
        fingerprint: crate::http::fingerprint("payment_callback", &notice.hold_id, &notice),
        buyer: BuyerId::from_trusted("service:payment-callback".into()),
        key,
    };
    let cmd = ConfirmHold {
        hold_id: HoldId::from_trusted(notice.hold_id),
        payment_ref: notice.payment_ref,
        service: Some(crate::http::extract::acting_as(&req, "payment-callback")),
    };
    let answer = state.writer.confirm_hold(request, cmd).await?;
    Ok(match answer.result {
        Ok(order) => HttpResponse::build(StatusCode::CREATED).json(order),
        Err(refusal) => ApiError::from(refusal).error_response(),
    })
}

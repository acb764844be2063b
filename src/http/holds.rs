use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::domain::views::{HoldView, OrderView};
use crate::domain::{BuyerId, DropId, DropState, HoldId, Refusal};
use crate::http::codes::Code;
use crate::http::drops::parse_drop_id;
use crate::http::extract::{Buyer, IdemKey, IpAdmitted};
use crate::http::fingerprint;
use crate::http::openapi::problems::{
    problems, ADMITTED, BODY, BUYER, EVERY, IDEMPOTENT, READ, SPLIT, WRITE,
};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::keys::{Remembered, Seen};
use crate::store::ReceiptPart;
use crate::store::{holds, Answer, ConfirmHold, IdempotentRequest, PlaceHold, StoreError};

const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    sku: String,
    #[schema(minimum = 1)]
    quantity: i64,
    /// An access code of the drop (`POST /v1/admin/drops/{drop}/codes`): checked and counted
    /// with the hold; within its window it opens the drop before its start (a presale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    code: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The payment that pays for the hold.
    #[schema(min_length = 1, max_length = 255)]
    payment_ref: String,
}

/// The header that makes a buyer's write safe to retry.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read by the `IdemKey` extractor; this names it for the document
struct RetryKey {
    /// 1-255 visible ASCII characters; a retry with the same key and body gets the first
    /// answer again.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    idempotency_key: String,
}

/// A queue drop's admission.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read by `queue::admitted_until`; this names it for the document
pub(crate) struct AdmissionParam {
    /// On a queue drop: the token `GET /v1/drops/{drop}/queue` gives once the buyer's place
    /// is served. Ignored on other drops.
    #[param(rename = "Dropd-Admission")]
    dropd_admission: Option<String>,
}

/// A hold as its attempt is answered: the hold, and the attempt's receipt (a refusal from the
/// writer carries the same `receipt` member in its problem body).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct HeldAttempt {
    #[schema(inline)]
    #[serde(flatten)]
    hold: HoldView,
    /// The proof of the attempt's place in the drop's ledger (see `dropd verify`).
    receipt: crate::domain::ledger::Receipt,
}

problems!(CreateHoldProblems: EVERY, SPLIT, ADMITTED, BUYER, IDEMPOTENT, BODY, WRITE, &[
    Code::NotFound,
    Code::SoldOut,
    Code::LimitExceeded,
    Code::DropNotLive,
    Code::UnknownSku,
    Code::ReplicaUnavailable,
    Code::NotAdmitted,
    Code::AdmissionExpired,
    Code::CodeInvalid,
    Code::CodeUsedUp,
]);

/// Hold units for the buyer: the first to reach the writer wins. On a queue drop, only with
/// the admission token (`Dropd-Admission`) the buyer's queue place earned. With an access
/// `code`, checked and counted in the same transaction; within its window a code opens the
/// drop before its start (a presale).
#[utoipa::path(post, path = "/v1/drops/{drop}/holds", tag = "buyers", security(("buyer" = [])),
    params(
        ("drop" = String, Path, description = "the drop's id"),
        RetryKey,
        AdmissionParam,
    ),
    request_body = HoldRequest,
    responses(
        (status = 201, description = "the hold and its receipt", body = HeldAttempt,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the first answer, replayed for a retry"))),
        CreateHoldProblems,
    ))]
pub async fn create_hold(
    state: web::Data<AppState>,
    http: HttpRequest,
    _: IpAdmitted,
    Buyer(buyer): Buyer,
    IdemKey(key): IdemKey,
    path: web::Path<String>,
    body: web::Json<HoldRequest>,
) -> Result<HttpResponse, ApiError> {
    let _turn = state.admission.enter(&buyer)?;
    let drop_id = parse_drop_id(&path)?;
    if body.quantity < 1 {
        return Err(ApiError::validation("quantity must be at least 1"));
    }
    let fingerprint = fingerprint("create_hold", drop_id.as_str(), &*body);
    // Counted in flight until this request is answered, so a retry under the same key never
    // gets a different answer from memory meanwhile.
    let (in_flight, seen) = state.keys.begin(state.keys.hash(&buyer, &key));
    match seen {
        Seen::Remembered(first) => {
            if first.fingerprint[..] != fingerprint[..16] {
                return Err(Refusal::IdempotencyKeyReused.into());
            }
            let mut res = ApiError::cached_refusal(&first.refusal);
            res.headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            return Ok(res);
        }
        Seen::Fresh => {
            if let Some(refusal) = sold_out_in_memory(&state, &drop_id, &body) {
                let mut prefix = [0u8; 16];
                prefix.copy_from_slice(&fingerprint[..16]);
                let first = Remembered {
                    fingerprint: prefix,
                    refusal: refusal.clone(),
                };
                let now_ms = state.clock.now().timestamp_millis();
                if state.keys.remember(&in_flight, first, now_ms) {
                    crate::stats::count_attempt("sold-out-from-memory");
                    return Ok(ApiError::cached_refusal(&refusal));
                }
            }
        }
        Seen::Busy => {}
    }
    let req = IdempotentRequest {
        fingerprint,
        buyer,
        key,
    };
    let admitted_until = super::queue::admitted_until(&state, &http, &drop_id, &req.buyer)?;
    let body = body.into_inner();
    if body
        .code
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.len() > 64)
    {
        return Err(ApiError::validation("code must be 1-64 characters"));
    }
    let cmd = PlaceHold {
        drop_id,
        sku: body.sku,
        quantity: body.quantity,
        admitted_until,
        code: body.code,
    };
    let answer = match state.writer.place_hold(req, cmd).await {
        Err(StoreError::Overloaded) => {
            crate::stats::count_attempt("overloaded");
            return Err(StoreError::Overloaded.into());
        }
        other => other?,
    };
    if let Some(ack) = &state.ack_after_replicated {
        ack.wait().await?;
    }
    Ok(respond(answer, StatusCode::CREATED))
}

problems!(ConfirmHoldProblems: EVERY, SPLIT, ADMITTED, BUYER, IDEMPOTENT, BODY, WRITE, &[
    Code::ConfirmationNotAllowed,
    Code::NotFound,
    Code::HoldExpired,
    Code::HoldReleased,
    Code::HoldConfirmed,
    Code::ReplicaUnavailable,
]);

/// Turn a hold into an order: a payment service (a `payments` service key) once the hold is
/// paid, for any buyer; a buyer their own only on servers started with `--buyer-confirms`.
#[utoipa::path(post, path = "/v1/holds/{hold}/confirm", tag = "buyers",
    security(("service" = []), ("buyer" = [])),
    params(
        ("hold" = String, Path, description = "the hold's id"),
        RetryKey,
    ),
    request_body = ConfirmRequest,
    responses(
        (status = 201, description = "the order", body = OrderView,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the first answer, replayed for a retry"))),
        ConfirmHoldProblems,
    ))]
pub async fn confirm_hold(
    state: web::Data<AppState>,
    _: IpAdmitted,
    http: HttpRequest,
    IdemKey(key): IdemKey,
    path: web::Path<String>,
    body: web::Json<ConfirmRequest>,
) -> Result<HttpResponse, ApiError> {
    // A payment service confirms for everyone (no per-buyer turn); a buyer only their own
    // hold, and only where allowed.
    let (buyer, service, _turn) = match service_key(&state, &http)? {
        Some(key_id) => (
            BuyerId::from_trusted(format!("service:{key_id}")),
            Some(crate::http::extract::acting_as(&http, key_id)),
            None,
        ),
        None => {
            let Buyer(buyer) = Buyer::extract(&http).await?;
            if !state.buyer_confirms {
                return Err(ApiError::new(
                    Code::ConfirmationNotAllowed,
                    "on this server a payment service confirms holds once they are paid; \
                     pay through checkout (a buyer may confirm only with --buyer-confirms)",
                ));
            }
            let turn = state.admission.enter(&buyer)?;
            (buyer, None, Some(turn))
        }
    };
    let req = IdempotentRequest {
        fingerprint: fingerprint("confirm_hold", &path, &*body),
        buyer,
        key,
    };
    let cmd = ConfirmHold {
        hold_id: HoldId::from_trusted(path.into_inner()),
        payment_ref: body.into_inner().payment_ref,
        service,
    };
    let answer = state.writer.confirm_hold(req, cmd).await?;
    if let Some(ack) = &state.ack_after_replicated {
        ack.wait().await?;
    }
    Ok(respond(answer, StatusCode::CREATED))
}

/// A live drop whose SKU the latest commit left at zero is refused without a trip to the writer
/// (the caller makes sure the key is new: a used key is the writer's to answer). The refusal is
/// shared by every request refused the same way on this worker.
/// The id of the `payments` service key the request carries, if it carries one; a service
/// key that is not active is refused here rather than read as a buyer token.
fn service_key(state: &AppState, http: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(credential) = crate::http::extract::bearer_credential(http) else {
        return Ok(None);
    };
    if !crate::auth::looks_like_service_key(credential) {
        return Ok(None);
    }
    let id = state
        .admin_keys
        .check_service(credential, "payments")
        .ok_or_else(|| ApiError::unauthorized("the service key is not valid"))?;
    http.extensions_mut()
        .insert(crate::http::request_id::Caller::Admin(id.clone()));
    Ok(Some(id))
}

fn sold_out_in_memory(
    state: &AppState,
    drop_id: &DropId,
    body: &HoldRequest,
) -> Option<Arc<Refusal>> {
    let now = state.clock.now();
    // A due hold the sweep has not ended yet counts for nothing: only the writer can tell.
    if state.writer.hold_may_be_due(now.timestamp_millis()) {
        return None;
    }
    let cached = state.hub.cached(drop_id)?;
    // A malformed request gets its own answer from the writer, not sold-out; a code may open
    // units reserved for its tier, which the view does not count as available.
    if body.quantity > cached.view.per_buyer_limit || body.code.is_some() {
        return None;
    }
    let sold_out = cached
        .view
        .skus
        .iter()
        .any(|s| s.sku == body.sku && s.available == 0);
    if !sold_out || cached.view.state_at(now) != DropState::Live {
        return None;
    }
    // By SKU, then quantity: a lookup borrows the request's SKU instead of copying it.
    type Shared = HashMap<String, HashMap<i64, Arc<Refusal>>>;
    thread_local! {
        static SHARED: std::cell::RefCell<Shared> = std::cell::RefCell::new(HashMap::new());
    }
    Some(SHARED.with(|shared| {
        let mut shared = shared.borrow_mut();
        if let Some(refusal) = shared
            .get(body.sku.as_str())
            .and_then(|q| q.get(&body.quantity))
        {
            return refusal.clone();
        }
        if shared.len() >= 512 {
            shared.clear();
        }
        let refusal = Arc::new(Refusal::SoldOut {
            sku: body.sku.clone(),
            available: 0,
            requested: body.quantity,
        });
        shared
            .entry(body.sku.clone())
            .or_default()
            .insert(body.quantity, refusal.clone());
        refusal
    }))
}

/// The first answer for an Idempotency-Key, or its replay, marked as such.
fn respond<T: Serialize>(answer: Answer<T>, success: StatusCode) -> HttpResponse {
    let receipt = answer
        .receipt
        .filter(|r| !matches!(r, ReceiptPart::Pending { .. }));
    let mut res = match (answer.result, receipt) {
        (Ok(value), None) => HttpResponse::build(success).json(value),
        (Ok(value), Some(receipt)) => {
            // The answer's own members, then its receipt, written into one buffer.
            let mut body = Vec::with_capacity(1024);
            let _ = serde_json::to_writer(&mut body, &value);
            if body.last() == Some(&b'}') {
                body.pop();
            }
            body.extend_from_slice(b",\"receipt\":");
            let _ = serde_json::to_writer(&mut body, &receipt);
            body.push(b'}');
            HttpResponse::build(success)
                .content_type("application/json")
                .body(body)
        }
        (Err(refusal), receipt) => {
            let mut err = ApiError::from(refusal);
            if let Some(receipt) = receipt {
                err = err.with_member("receipt", serde_json::to_value(receipt).unwrap_or_default());
            }
            err.error_response()
        }
    };
    if answer.replayed {
        res.headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    res
}

problems!(GetHoldProblems: EVERY, SPLIT, BUYER, READ);

/// One of your holds, with its state as of now; another buyer's is not found.
#[utoipa::path(get, path = "/v1/holds/{hold}", tag = "buyers", security(("buyer" = [])),
    params(("hold" = String, Path, description = "the hold's id")),
    responses((status = 200, description = "the hold", body = HoldView), GetHoldProblems))]
pub async fn get_hold(
    state: web::Data<AppState>,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hold_id = path.into_inner();
    let shown = hold_id.clone();
    let hold = state
        .read(move |conn, now| holds::get_for_buyer(conn, &buyer, &hold_id, now))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("hold {shown} not found")))?;
    Ok(HttpResponse::Ok().json(hold))
}

problems!(ReleaseHoldProblems: EVERY, SPLIT, ADMITTED, BUYER, WRITE, &[
    Code::NotFound,
    Code::HoldConfirmed,
]);

/// Give a hold back: its units are on sale again at once. Releasing twice is no error.
#[utoipa::path(delete, path = "/v1/holds/{hold}", tag = "buyers", security(("buyer" = [])),
    params(("hold" = String, Path, description = "the hold's id")),
    responses((status = 204, description = "released"), ReleaseHoldProblems))]
pub async fn release_hold(
    state: web::Data<AppState>,
    _: IpAdmitted,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let _turn = state.admission.enter(&buyer)?;
    let hold_id = HoldId::from_trusted(path.into_inner());
    match state.writer.release_hold(buyer, hold_id).await? {
        Ok(_) => Ok(HttpResponse::NoContent().finish()),
        Err(refusal) => Err(refusal.into()),
    }
}

problems!(CheckoutProblems: EVERY, SPLIT, ADMITTED, BUYER, WRITE, &[
    Code::NotFound,
    Code::HoldExpired,
    Code::HoldReleased,
    Code::HoldConfirmed,
]);

/// Ask to pay for your hold: the payment service hears of it (`checkout.requested`, by webhook),
/// charges you and confirms the hold; the order then arrives on `GET /v1/me/events` and shows on
/// `GET /v1/holds/{hold}`. Asking again only asks again.
#[utoipa::path(post, path = "/v1/holds/{hold}/checkout", tag = "buyers",
    security(("buyer" = [])),
    params(("hold" = String, Path, description = "the hold's id")),
    responses(
        (status = 202, description = "the payment service is asked; the hold as it is",
            body = HoldView),
        CheckoutProblems,
    ))]
pub async fn request_checkout(
    state: web::Data<AppState>,
    _: IpAdmitted,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let _turn = state.admission.enter(&buyer)?;
    let hold_id = HoldId::from_trusted(path.into_inner());
    let hold = state.writer.request_checkout(buyer, hold_id).await??;
    Ok(HttpResponse::Accepted().json(hold))
}

//! Waiting lists: a buyer waits for a sold-out SKU and is offered freed units in turn.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::domain::waitlist::WaitlistEntry;
use crate::http::codes::Code;
use crate::http::drops::{known_drop, parse_drop_id};
use crate::http::extract::{Buyer, IpAdmitted};
use crate::http::holds::AdmissionParam;
use crate::http::openapi::problems::{problems, ADMITTED, BODY, BUYER, EVERY, READ, SPLIT, WRITE};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::waitlist::{self, JoinWaitlist};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitlistRequest {
    sku: String,
    /// Units wanted; within the drop's per-buyer limit.
    #[schema(minimum = 1)]
    quantity: i64,
}

/// The buyer's entries in a drop's waiting lists, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WaitlistEntries {
    pub entries: Vec<WaitlistEntry>,
}

problems!(JoinWaitlistProblems: EVERY, SPLIT, ADMITTED, BUYER, BODY, WRITE, &[
    Code::NotFound,
    Code::UnknownSku,
    Code::DropNotLive,
    Code::NotSoldOut,
    Code::LimitExceeded,
    Code::NotAdmitted,
    Code::AdmissionExpired,
]);

/// Wait for a sold-out SKU. Units freed later (an expired or released hold, a restock) become
/// an offer hold for the first waiter, in the same transaction: `waitlist.offered` on the
/// buyer's stream and in the outbox, then confirm it like any hold. One entry per buyer and SKU:
/// asking again answers the entry they have (200). On a queue drop, with the admission token.
#[utoipa::path(post, path = "/v1/drops/{drop}/waitlist", tag = "buyers", security(("buyer" = [])),
    params(("drop" = String, Path, description = "the drop's id"), AdmissionParam),
    request_body = WaitlistRequest,
    responses(
        (status = 201, description = "waiting", body = WaitlistEntry),
        (status = 200, description = "already waiting: the entry they have", body = WaitlistEntry),
        JoinWaitlistProblems,
    ))]
pub async fn join_waitlist(
    state: web::Data<AppState>,
    http: HttpRequest,
    _: IpAdmitted,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
    body: web::Json<WaitlistRequest>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    if body.quantity < 1 {
        return Err(ApiError::validation("quantity must be at least 1"));
    }
    let admitted_until = super::queue::admitted_until(&state, &http, &drop_id, &buyer)?;
    let body = body.into_inner();
    let cmd = JoinWaitlist {
        drop_id,
        sku: body.sku,
        quantity: body.quantity,
        admitted_until,
    };
    let entry = state.writer.join_waitlist(buyer, cmd).await??;
    let status = if entry.fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(entry))
}

problems!(GetWaitlistProblems: EVERY, SPLIT, BUYER, READ, &[]);

/// The buyer's waiting-list entries in a drop: their position while waiting, the offer hold
/// once offered.
#[utoipa::path(get, path = "/v1/drops/{drop}/waitlist", tag = "buyers", security(("buyer" = [])),
    params(("drop" = String, Path, description = "the drop's id")),
    responses((status = 200, description = "the buyer's entries", body = WaitlistEntries),
        GetWaitlistProblems))]
pub async fn get_waitlist(
    state: web::Data<AppState>,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = known_drop(&state, &path).await?;
    let id = drop_id.to_string();
    let entries = state
        .read(move |conn, _| waitlist::of_buyer(conn, &id, &buyer))
        .await?;
    Ok(HttpResponse::Ok().json(WaitlistEntries { entries }))
}

problems!(LeaveWaitlistProblems: EVERY, SPLIT, BUYER, WRITE, &[Code::NotFound]);

/// Leave a SKU's waiting list. Again, or once the offer came, answers the entry as it is.
#[utoipa::path(delete, path = "/v1/drops/{drop}/waitlist/{sku}", tag = "buyers",
    security(("buyer" = [])),
    params(
        ("drop" = String, Path, description = "the drop's id"),
        ("sku" = String, Path, description = "the SKU waited for"),
    ),
    responses((status = 200, description = "the entry as it ends", body = WaitlistEntry),
        LeaveWaitlistProblems))]
pub async fn leave_waitlist(
    state: web::Data<AppState>,
    Buyer(buyer): Buyer,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (drop, sku) = path.into_inner();
    let drop_id = parse_drop_id(&drop)?;
    let entry = state.writer.leave_waitlist(buyer, drop_id, sku).await??;
    Ok(HttpResponse::Ok().json(entry))
}

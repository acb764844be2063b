//! Raffles: a buyer enters a `mode: draw` drop before its start, once per SKU, and the start
//! draws the winners.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::domain::draw::DrawEntry;
use crate::http::codes::Code;
use crate::http::drops::{known_drop, parse_drop_id};
use crate::http::extract::{Buyer, IpAdmitted};
use crate::http::openapi::problems::{problems, BODY, BUYER, EVERY, READ, SPLIT, WRITE};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::draw::{self, EnterDraw};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    sku: String,
    /// Units wanted; within the drop's per-buyer limit.
    #[schema(minimum = 1)]
    quantity: i64,
}

/// The buyer's entries in a raffle.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DrawEntries {
    pub entries: Vec<DrawEntry>,
}

problems!(EnterDrawProblems: EVERY, SPLIT, BUYER, BODY, WRITE, &[
    Code::NotFound,
    Code::UnknownSku,
    Code::NoDraw,
    Code::EntriesClosed,
    Code::DropNotLive,
]);

/// Enter a raffle (`mode: draw`) for a SKU before the drop's start. At the start the writer
/// reveals the seed the drop's ledger committed to and draws every SKU's entries in the order
/// of HMAC-SHA256(seed, `<buyer_ref>/<sku>`): winners get a hold (`draw.won` on their stream and
/// in the outbox), the rest `draw.lost` and a place on the SKU's waiting list in drawn order.
/// One entry per buyer and SKU: entering again answers the entry they have (200).
#[utoipa::path(post, path = "/v1/drops/{drop}/entries", tag = "buyers", security(("buyer" = [])),
    params(("drop" = String, Path, description = "the drop's id")),
    request_body = EntryRequest,
    responses(
        (status = 201, description = "entered", body = DrawEntry),
        (status = 200, description = "already entered for that SKU: the entry they have", body = DrawEntry),
        EnterDrawProblems,
    ))]
pub async fn enter_draw(
    state: web::Data<AppState>,
    _: IpAdmitted,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
    body: web::Json<EntryRequest>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    if body.quantity < 1 {
        return Err(ApiError::validation("quantity must be at least 1"));
    }
    let body = body.into_inner();
    let cmd = EnterDraw {
        drop_id,
        sku: body.sku,
        quantity: body.quantity,
    };
    let entry = state.writer.enter_draw(buyer, cmd).await??;
    let status = if entry.fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(entry))
}

problems!(GetEntriesProblems: EVERY, SPLIT, BUYER, READ, &[]);

/// The buyer's entries in a raffle: pending until the draw, then won (with the hold) or lost
/// (with the drawn place they wait at).
#[utoipa::path(get, path = "/v1/drops/{drop}/entries", tag = "buyers", security(("buyer" = [])),
    params(("drop" = String, Path, description = "the drop's id")),
    responses((status = 200, description = "the buyer's entries", body = DrawEntries),
        GetEntriesProblems))]
pub async fn get_entries(
    state: web::Data<AppState>,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = known_drop(&state, &path).await?;
    let id = drop_id.to_string();
    let entries = state
        .read(move |conn, _| draw::entries_of(conn, &id, &buyer))
        .await?;
    Ok(HttpResponse::Ok().json(DrawEntries { entries }))
}

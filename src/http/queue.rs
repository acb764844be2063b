//! A queue drop's buyers: joining the queue, reading one's place and, once served, the
//! admission token that `POST .../holds` asks for.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::clock::{from_millis, serde_rfc3339};
use crate::domain::queue::{standing, Standing};
use crate::domain::views::QueueView;
use crate::domain::{BuyerId, DropId};
use crate::http::codes::Code;
use crate::http::drops::{load_failed, parse_drop_id};
use crate::http::extract::Buyer;
use crate::http::extract::IpAdmitted;
use crate::http::openapi::problems::{problems, ADMITTED, BUYER, EVERY, READ, SPLIT, WRITE};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::queue::{self, QueueEntry};

/// The header a queue drop's hold carries its admission in.
pub const ADMISSION_HEADER: &str = "dropd-admission";

/// What an admitted buyer shows when they place a hold.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdmissionToken {
    /// Send it as the `Dropd-Admission` header of `POST /v1/drops/{drop}/holds`.
    pub token: String,
    #[serde(with = "serde_rfc3339")]
    pub expires_at: DateTime<Utc>,
}

/// A buyer's place in a drop's queue, as of now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueuePlace {
    pub drop_id: String,
    /// The buyer's name in the drop's ledger: the draw orders pre-start joiners by
    /// HMAC-SHA256(seed, buyer_ref).
    pub buyer_ref: String,
    #[serde(with = "serde_rfc3339")]
    pub joined_at: DateTime<Utc>,
    /// 1-based; absent until the start draws the places of everyone who joined before it.
    pub place: Option<i64>,
    /// Places `1..=serving` are admitted.
    pub serving: i64,
    /// Buyers ahead of this one (0 once admitted).
    pub ahead: Option<i64>,
    pub admission_rate: i64,
    pub admission_paused: bool,
    /// `ahead / admission_rate`, rounded up; absent while paused or before the draw.
    pub estimated_wait_seconds: Option<i64>,
    pub standing: Standing,
    /// Present while admitted.
    pub admission: Option<AdmissionToken>,
}

fn place_of(
    state: &AppState,
    entry: &QueueEntry,
    queue: &QueueView,
    buyer: &BuyerId,
) -> QueuePlace {
    let now = state.clock.now().timestamp_millis();
    let serving = queue.admission.serving_at(now);
    let (standing, until) = standing(
        &queue.admission,
        entry.place,
        now,
        queue.admission_seconds * 1000,
    );
    let ahead = entry.place.map(|p| (p - 1 - serving).max(0));
    let rate = queue.admission_rate;
    let estimated_wait_seconds = match ahead {
        Some(n) if !queue.admission_paused && rate > 0 => Some((n + rate - 1) / rate),
        _ => None,
    };
    let admission = match (standing, entry.place, until) {
        (Standing::Admitted, Some(place), Some(until)) => Some(AdmissionToken {
            token: state
                .tokens
                .admissions
                .sign(&entry.drop_id, buyer.as_str(), place, until),
            expires_at: from_millis(until),
        }),
        _ => None,
    };
    QueuePlace {
        drop_id: entry.drop_id.clone(),
        buyer_ref: entry.buyer_ref.clone(),
        joined_at: entry.joined_at,
        place: entry.place,
        serving,
        ahead,
        admission_rate: rate,
        admission_paused: queue.admission_paused,
        estimated_wait_seconds,
        standing,
        admission,
    }
}

async fn queue_of(state: &AppState, drop_id: &DropId) -> Result<QueueView, ApiError> {
    let cached = state
        .hub
        .get_or_load(drop_id)
        .await
        .map_err(load_failed)?
        .ok_or_else(|| ApiError::not_found(format!("drop {drop_id} not found")))?;
    cached.view.queue.clone().ok_or_else(|| {
        crate::domain::Refusal::NoQueue {
            drop_id: drop_id.to_string(),
        }
        .into()
    })
}

problems!(JoinQueueProblems: EVERY, SPLIT, ADMITTED, BUYER, WRITE, &[
    Code::NotFound,
    Code::NoQueue,
    Code::QueueClosed,
]);

/// Join a queue drop's queue. Everyone who joins before the start is put in an order drawn at
/// the start (arriving early buys nothing); later arrivals queue behind in arrival order. Once:
/// joining again answers the place the buyer has (200).
#[utoipa::path(post, path = "/v1/drops/{drop}/queue", tag = "buyers", security(("buyer" = [])),
    params(("drop" = String, Path, description = "the drop's id")),
    responses(
        (status = 201, description = "joined", body = QueuePlace),
        (status = 200, description = "already in the queue: the place they have", body = QueuePlace),
        JoinQueueProblems,
    ))]
pub async fn join_queue(
    state: web::Data<AppState>,
    _: IpAdmitted,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let entry = state
        .writer
        .join_queue(buyer.clone(), drop_id.clone())
        .await??;
    let queue = queue_of(&state, &drop_id).await?;
    let status = if entry.fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(place_of(&state, &entry, &queue, &buyer)))
}

problems!(GetQueueProblems: EVERY, SPLIT, BUYER, READ, &[Code::NotFound, Code::NoQueue]);

/// The buyer's place in the queue, the serving number, and their admission once served.
#[utoipa::path(get, path = "/v1/drops/{drop}/queue", tag = "buyers", security(("buyer" = [])),
    params(("drop" = String, Path, description = "the drop's id")),
    responses((status = 200, description = "the buyer's place", body = QueuePlace), GetQueueProblems))]
pub async fn get_queue(
    state: web::Data<AppState>,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let queue = queue_of(&state, &drop_id).await?;
    let (id, who) = (drop_id.to_string(), buyer.clone());
    let entry = state
        .read(move |conn, _| queue::entry(conn, &id, &who))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "you have not joined the queue of drop {drop_id}: POST /v1/drops/{drop_id}/queue"
            ))
        })?;
    Ok(HttpResponse::Ok().json(place_of(&state, &entry, &queue, &buyer)))
}

/// The admission a hold request carries, checked for this drop and buyer (its time is the
/// writer's to judge). None without the header; fcfs drops ignore it.
pub fn admitted_until(
    state: &AppState,
    http: &HttpRequest,
    drop_id: &DropId,
    buyer: &BuyerId,
) -> Result<Option<i64>, ApiError> {
    let Some(value) = http.headers().get(ADMISSION_HEADER) else {
        return Ok(None);
    };
    let token = value.to_str().unwrap_or_default();
    state
        .tokens
        .admissions
        .verify(token, drop_id.as_str(), buyer.as_str())
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                Code::NotAdmitted,
                format!(
                    "the Dropd-Admission token does not admit you to drop {drop_id}: use the \
                     token GET /v1/drops/{drop_id}/queue gave you once your place was served"
                ),
            )
        })
}

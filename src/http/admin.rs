use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::domain::views::DropView;
use crate::domain::views::{DropPatch, NewDrop};
use crate::http::codes::Code;
use crate::http::drops::parse_drop_id;
use crate::http::extract::{admin_act, Admin};
use crate::http::openapi::problems::{problems, ADMIN, BODY, EVERY, READ, SPLIT, WRITE};
use crate::http::openapi::streams::OperatorEvent;
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::audit::Acted;
use crate::store::waitlist;

problems!(CreateDropProblems: EVERY, SPLIT, ADMIN, BODY, WRITE, &[Code::DropExists]);

/// Create a drop with its SKUs and stock.
#[utoipa::path(post, path = "/v1/admin/drops", tag = "admin", security(("admin" = [])),
    request_body = NewDrop,
    responses(
        (status = 201, description = "the drop", body = DropView,
            headers(("Location" = String, description = "the drop's address"))),
        CreateDropProblems,
    ))]
pub async fn create_drop(
    state: web::Data<AppState>,
    req: HttpRequest,
    admin: Admin,
    body: web::Json<NewDrop>,
) -> Result<HttpResponse, ApiError> {
    let act = admin_act(&req, &admin, "create_drop", "", &*body)?;
    let location = format!("/v1/drops/{}", body.id);
    let acted = state.writer.create_drop(act, body.into_inner()).await??;
    let mut res = answer(acted, StatusCode::CREATED, |view| Some(view.revision))?;
    res.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_str(&location).map_err(|_| ApiError::internal())?,
    );
    Ok(res)
}

/// An audited admin action's answer: the value now, or the first answer replayed under its
/// `Idempotency-Key` (marked `Idempotent-Replayed: true`). `revision` gives the `ETag`.
pub(crate) fn answer<T: serde::Serialize>(
    acted: Acted<T>,
    status: StatusCode,
    revision: fn(&T) -> Option<i64>,
) -> Result<HttpResponse, ApiError> {
    let mut res = HttpResponse::build(status);
    let body = match acted {
        Acted::Done(value) => {
            if let Some(rev) = revision(&value) {
                res.insert_header((header::ETAG, format!("\"{rev}\"")));
            }
            serde_json::to_string(&value).map_err(|_| ApiError::internal())?
        }
        Acted::Replayed(body) => {
            res.insert_header(("Idempotent-Replayed", "true"));
            body
        }
    };
    if body.is_empty() {
        return Ok(res.finish());
    }
    Ok(res.content_type("application/json").body(body))
}

/// `If-Match` on a drop's settings: its `revision`, quoted or bare; `*` (or none) matches any.
fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                Code::BadRequest,
                "If-Match takes the drop's settings revision, for example \"3\"",
            )
        })
}

problems!(UpdateDropProblems: EVERY, SPLIT, ADMIN, BODY, WRITE, &[
    Code::UnknownSku,
    Code::InvalidStateTransition,
]);

/// Change a drop's settings, prices or state (pause, resume, close).
#[utoipa::path(patch, path = "/v1/admin/drops/{drop}", tag = "admin", security(("admin" = [])),
    params(("drop" = String, Path, description = "the drop's id")),
    request_body = DropPatch,
    responses((status = 200, description = "the drop", body = DropView), UpdateDropProblems))]
pub async fn update_drop(
    state: web::Data<AppState>,
    req: HttpRequest,
    admin: Admin,
    path: web::Path<String>,
    body: web::Json<DropPatch>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let expected = if_match(&req)?;
    let act = admin_act(&req, &admin, "update_drop", drop_id.as_str(), &*body)?;
    let acted = state
        .writer
        .update_drop(act, drop_id, body.into_inner(), expected)
        .await??;
    answer(acted, StatusCode::OK, |view| Some(view.revision))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockChange {
    /// Units to add (positive) or take away (negative).
    delta: i64,
}

problems!(AdjustStockProblems: EVERY, SPLIT, ADMIN, BODY, WRITE, &[
    Code::UnknownSku,
    Code::StockBelowCommitted,
]);

/// Add stock, or take back unsold units.
#[utoipa::path(post, path = "/v1/admin/drops/{drop}/skus/{sku}/stock", tag = "admin",
    security(("admin" = [])),
    params(
        ("drop" = String, Path, description = "the drop's id"),
        ("sku" = String, Path, description = "the SKU's code"),
    ),
    request_body = StockChange,
    responses((status = 200, description = "the drop", body = DropView), AdjustStockProblems))]
pub async fn adjust_stock(
    state: web::Data<AppState>,
    req: HttpRequest,
    admin: Admin,
    path: web::Path<(String, String)>,
    body: web::Json<StockChange>,
) -> Result<HttpResponse, ApiError> {
    let (drop, sku) = path.into_inner();
    let drop_id = parse_drop_id(&drop)?;
    let act = admin_act(
        &req,
        &admin,
        "adjust_stock",
        &format!("{drop}/{sku}"),
        &*body,
    )?;
    let acted = state
        .writer
        .adjust_stock(act, drop_id, sku, body.delta)
        .await??;
    answer(acted, StatusCode::OK, |view| Some(view.revision))
}

problems!(AdminEventsProblems: EVERY, SPLIT, ADMIN, READ);

/// `GET /v1/admin/events`: the operator page's feed, one `stats` event a second.
#[utoipa::path(get, path = "/v1/admin/events", tag = "admin", security(("admin" = [])),
    responses(
        (status = 200, description = "an endless event stream", body = OperatorEvent,
            content_type = "text/event-stream"),
        AdminEventsProblems,
    ))]
pub async fn stream_admin_events(
    state: web::Data<AppState>,
    _: Admin,
) -> Result<HttpResponse, ApiError> {
    let first = admin_stats(&state).await?;
    let stream = futures_util::stream::unfold((state, Some(first)), |(state, ready)| async move {
        let event = match ready {
            Some(event) => event,
            None => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if state.hub.is_closed() {
                    return None;
                }
                admin_stats(&state).await.ok()?
            }
        };
        Some((Ok::<_, std::convert::Infallible>(event), (state, None)))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(stream))
}

async fn admin_stats(state: &AppState) -> Result<web::Bytes, ApiError> {
    let drops = state.hub.list_or_load().await.map_err(|err| {
        tracing::error!(error = %err, "loading drops for the operator page failed");
        ApiError::internal()
    })?;
    let waiting = state.read(|conn, _| waitlist::counts(conn)).await?;
    let now = state.clock.now();
    let drops: Vec<serde_json::Value> = drops
        .iter()
        .map(|cached| {
            let view = &cached.view;
            let mut drop = serde_json::json!({
                "id": view.id, "name": view.name, "version": view.version,
                "state": view.state_at(now),
                "skus": view.skus.iter().map(|s| serde_json::json!({
                    "sku": s.sku, "stock": s.stock, "available": s.available, "held": s.held, "sold": s.sold,
                    "waiting": waiting.get(&(view.id.to_string(), s.sku.clone())).copied().unwrap_or(0),
                })).collect::<Vec<_>>(),
            });
            if let Some(draw) = &view.draw {
                drop["draw"] = serde_json::json!(draw);
            }
            if let Some(queue) = &view.queue {
                drop["queue"] = serde_json::json!({
                    "joined": queue.joined,
                    "serving": queue.admission.serving_at(now.timestamp_millis()),
                    "admission_rate": queue.admission_rate,
                    "admission_paused": queue.admission_paused,
                    "seeded": queue.seeded_at.is_some(),
                });
            }
            drop
        })
        .collect();
    let attempts: serde_json::Map<String, serde_json::Value> = crate::stats::attempts()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let (batches, batched) = crate::stats::batches();
    let stats = serde_json::json!({
        "at": crate::domain::clock::rfc3339(now),
        "attempts": attempts,
        "batches": batches,
        "batched_commands": batched,
        "wal_bytes_written": crate::stats::wal_bytes(),
        "queue_depth": state.writer.stats().queue_depth,
        "sse_subscribers": state.hub.subscribers(),
        "sse_tick_ms": state.hub.stats.interval_millis.load(std::sync::atomic::Ordering::Relaxed),
        // How long ago the replica last confirmed a sync (null without a replica, or before
        // the first sync).
        "replica_lag_ms": state.replica.as_ref().and_then(|r| r.snapshot().last_sync_at).map(|at| {
            std::time::SystemTime::now()
                .duration_since(at)
                .unwrap_or_default()
                .as_millis() as u64
        }),
        "drops": drops,
    });
    Ok(web::Bytes::from(format!("event: stats\ndata: {stats}\n\n")))
}

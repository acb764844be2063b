use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::domain::views::DropView;
use crate::domain::views::OrderView;
use crate::domain::views::{DropPatch, NewDrop};
use crate::http::codes::Code;
use crate::http::drops::parse_drop_id;
use crate::http::extract::Admin;
use crate::http::openapi::problems::{problems, ADMIN, BODY, EVERY, READ, SPLIT, WRITE};
use crate::http::openapi::streams::OperatorEvent;
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::{drops, orders, outbox};

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
    _: Admin,
    body: web::Json<NewDrop>,
) -> Result<HttpResponse, ApiError> {
    let view = state.writer.create_drop(body.into_inner()).await??;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/drops/{}", view.id)))
        .json(view))
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
    _: Admin,
    path: web::Path<String>,
    body: web::Json<DropPatch>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let view = state
        .writer
        .update_drop(drop_id, body.into_inner())
        .await??;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    _: Admin,
    path: web::Path<(String, String)>,
    body: web::Json<StockChange>,
) -> Result<HttpResponse, ApiError> {
    let (drop, sku) = path.into_inner();
    let drop_id = parse_drop_id(&drop)?;
    let view = state
        .writer
        .adjust_stock(drop_id, sku, body.delta)
        .await??;
    Ok(HttpResponse::Ok().json(view))
}

const ORDERS_PAGE: i64 = 500;

problems!(DropOrdersProblems: EVERY, SPLIT, ADMIN, READ);

/// Every order of a drop as newline-delimited JSON, read page by page so a large drop never
/// holds a pooled connection (or memory) for the whole export.
#[utoipa::path(get, path = "/v1/admin/drops/{drop}/orders", tag = "admin",
    security(("admin" = [])),
    params(("drop" = String, Path, description = "the drop's id")),
    responses(
        (status = 200, description = "one `Order` per line", body = OrderView,
            content_type = "application/x-ndjson"),
        DropOrdersProblems,
    ))]
pub async fn list_drop_orders(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let id = drop_id.clone();
    let exists = state
        .read(move |conn, now| drops::get_view(conn, id.as_str(), now))
        .await?
        .is_some();
    if !exists {
        return Err(ApiError::not_found(format!("drop {drop_id} not found")));
    }
    Ok(ndjson_pages(
        state,
        String::new(),
        move |conn, after: &String| {
            orders::page_for_drop(conn, drop_id.as_str(), after, ORDERS_PAGE)
        },
        ORDERS_PAGE,
        |order, out| {
            let _ = serde_json::to_writer(&mut *out, order);
        },
        |order| order.order_id.clone(),
    ))
}

/// An export as NDJSON, read page by page (`read` from a cursor, up to `page_size` rows) off
/// the read pool, so neither memory nor a pooled connection is held for the whole of it.
fn ndjson_pages<C, T>(
    state: web::Data<AppState>,
    start: C,
    read: impl Fn(&rusqlite::Connection, &C) -> Result<Vec<T>, crate::store::StoreError>
        + Clone
        + Send
        + 'static,
    page_size: i64,
    line: fn(&T, &mut Vec<u8>),
    cursor: fn(&T) -> C,
) -> HttpResponse
where
    C: Clone + Send + 'static,
    T: Send + 'static,
{
    let pages = futures_util::stream::try_unfold(Some(start), move |after| {
        let (state, read) = (state.clone(), read.clone());
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let page = state.read(move |conn, _| read(conn, &after)).await?;
            let next = (page.len() as i64 == page_size)
                .then(|| page.last().map(cursor))
                .flatten();
            let mut chunk = Vec::new();
            for row in &page {
                line(row, &mut chunk);
                chunk.push(b'\n');
            }
            Ok::<_, ApiError>(Some((web::Bytes::from(chunk), next)))
        }
    });
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(pages)
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
    let now = state.clock.now();
    let drops: Vec<serde_json::Value> = drops
        .iter()
        .map(|cached| {
            let view = &cached.view;
            serde_json::json!({
                "id": view.id, "name": view.name, "version": view.version,
                "state": view.state_at(now),
                "skus": view.skus.iter().map(|s| serde_json::json!({
                    "sku": s.sku, "stock": s.stock, "available": s.available, "held": s.held, "sold": s.sold,
                })).collect::<Vec<_>>(),
            })
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    /// Only events after this `seq` (each line carries its own: resume from the last seen).
    #[param(minimum = 0)]
    after: Option<i64>,
}

const OUTBOX_PAGE: i64 = 500;

problems!(ExportOutboxProblems: EVERY, SPLIT, ADMIN, READ, &[Code::BadRequest]);

/// The outbox as NDJSON, oldest first, read page by page in constant memory: what webhooks
/// carry, for systems that would rather pull. Events are kept for `--outbox-retention` once
/// every active endpoint has them.
#[utoipa::path(get, path = "/v1/admin/outbox", tag = "admin", security(("admin" = [])),
    params(OutboxQuery),
    responses(
        (status = 200, description = "one event per line", body = crate::http::openapi::streams::OutboxLine,
            content_type = "application/x-ndjson"),
        ExportOutboxProblems,
    ))]
pub async fn export_outbox(
    state: web::Data<AppState>,
    _: Admin,
    query: web::Query<OutboxQuery>,
) -> Result<HttpResponse, ApiError> {
    let start = query.after.unwrap_or(0);
    if start < 0 {
        return Err(ApiError::new(
            Code::BadRequest,
            "after is an event's seq: 0 or more",
        ));
    }
    Ok(ndjson_pages(
        state,
        start,
        |conn, after: &i64| Ok(outbox::after(conn, *after, OUTBOX_PAGE)?),
        OUTBOX_PAGE,
        |event, out| out.extend_from_slice(event.line().as_bytes()),
        |event| event.seq,
    ))
}

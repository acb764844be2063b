//! Exports: orders, hold attempts, outbox events and the audit log as newline-delimited JSON,
//! read page by page off the read pool, so a large export holds neither memory nor a pooled
//! connection for its whole length.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::domain::views::OrderView;
use crate::http::codes::Code;
use crate::http::drops::known_drop;
use crate::http::extract::Admin;
use crate::http::openapi::problems::{problems, ADMIN, EVERY, READ, SPLIT};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::attempts::{self, Attempt};
use crate::store::audit::{self, AuditEntry};
use crate::store::{orders, outbox};

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
    let drop_id = known_drop(&state, &path).await?;
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
pub(crate) fn ndjson_pages<C, T>(
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CursorQuery {
    /// Only lines after this cursor (each line carries its own, `seq` or `cursor`: resume from
    /// the last one seen).
    #[param(minimum = 0)]
    after: Option<i64>,
}

impl CursorQuery {
    fn start(&self) -> Result<i64, ApiError> {
        match self.after {
            Some(after) if after < 0 => Err(ApiError::new(
                Code::BadRequest,
                "after is a line's cursor: 0 or more",
            )),
            after => Ok(after.unwrap_or(0)),
        }
    }
}

const OUTBOX_PAGE: i64 = 500;

problems!(ExportOutboxProblems: EVERY, SPLIT, ADMIN, READ, &[Code::BadRequest]);

/// The outbox as NDJSON, oldest first, read page by page in constant memory: what webhooks
/// carry, for systems that would rather pull. Events are kept for `--outbox-retention` once
/// every active endpoint has them.
#[utoipa::path(get, path = "/v1/admin/outbox", tag = "admin", security(("admin" = [])),
    params(CursorQuery),
    responses(
        (status = 200, description = "one event per line", body = crate::http::openapi::streams::OutboxLine,
            content_type = "application/x-ndjson"),
        ExportOutboxProblems,
    ))]
pub async fn export_outbox(
    state: web::Data<AppState>,
    _: Admin,
    query: web::Query<CursorQuery>,
) -> Result<HttpResponse, ApiError> {
    let start = query.start()?;
    Ok(ndjson_pages(
        state,
        start,
        |conn, after: &i64| Ok(outbox::after(conn, *after, OUTBOX_PAGE)?),
        OUTBOX_PAGE,
        |event, out| out.extend_from_slice(event.line().as_bytes()),
        |event| event.seq,
    ))
}

const ATTEMPTS_PAGE: i64 = 1000;

problems!(ExportAttemptsProblems: EVERY, SPLIT, ADMIN, READ, &[Code::BadRequest]);

/// Every numbered hold attempt on a drop, in the order the writer took them, with its outcome
/// and time: what a disputed "why did I lose?" is answered from. Attempts are kept for
/// `--idempotency-retention` (they live in the idempotency log); attempts refused from memory
/// before reaching the writer took no number and are not here.
#[utoipa::path(get, path = "/v1/admin/drops/{drop}/attempts", tag = "admin",
    security(("admin" = [])),
    params(("drop" = String, Path, description = "the drop's id"), CursorQuery),
    responses(
        (status = 200, description = "one attempt per line", body = Attempt,
            content_type = "application/x-ndjson"),
        ExportAttemptsProblems,
    ))]
pub async fn export_attempts(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
    query: web::Query<CursorQuery>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = known_drop(&state, &path).await?;
    let start = query.start()?;
    Ok(ndjson_pages(
        state,
        start,
        move |conn, after: &i64| attempts::page(conn, drop_id.as_str(), *after, ATTEMPTS_PAGE),
        ATTEMPTS_PAGE,
        |attempt, out| {
            let _ = serde_json::to_writer(&mut *out, attempt);
        },
        |attempt| attempt.cursor,
    ))
}

const AUDIT_PAGE: i64 = 500;

problems!(ExportAuditProblems: EVERY, SPLIT, ADMIN, READ, &[Code::BadRequest]);

/// The audit log, oldest first: every admin and service-key action with the acting key, what
/// it did, and the thing before and after, each written in the transaction of its change.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("admin" = [])),
    params(CursorQuery),
    responses(
        (status = 200, description = "one entry per line", body = AuditEntry,
            content_type = "application/x-ndjson"),
        ExportAuditProblems,
    ))]
pub async fn export_audit(
    state: web::Data<AppState>,
    _: Admin,
    query: web::Query<CursorQuery>,
) -> Result<HttpResponse, ApiError> {
    let start = query.start()?;
    Ok(ndjson_pages(
        state,
        start,
        |conn, after: &i64| audit::page(conn, *after, AUDIT_PAGE),
        AUDIT_PAGE,
        |entry, out| {
            let _ = serde_json::to_writer(&mut *out, entry);
        },
        |entry| entry.seq,
    ))
}

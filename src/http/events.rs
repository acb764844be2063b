//! `GET /v1/drops/{drop}/events`: the live stock stream (SSE).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::events::SubscribeError;
use crate::http::codes::Code;
use crate::http::drops::parse_drop_id;
use crate::http::openapi::problems::{problems, EVERY, READ, SPLIT};
use crate::http::openapi::streams::LiveEvent;
use crate::http::problem::ApiError;
use crate::http::state::AppState;

problems!(DropEventsProblems: EVERY, SPLIT, READ, &[
    Code::TooManyStreams,
    Code::TooManySubscribers,
    Code::Unavailable,
]);

/// Live stock as server-sent events; `Last-Event-ID` resumes from a version.
#[utoipa::path(get, path = "/v1/drops/{drop}/events", tag = "buyers",
    params(
        ("drop" = String, Path, description = "the drop's id"),
        ("Last-Event-ID" = Option<String>, Header, description = "the last version seen"),
    ),
    responses(
        (status = 200, description = "an endless event stream", body = LiveEvent,
            content_type = "text/event-stream"),
        DropEventsProblems,
    ))]
pub async fn stream_drop_events(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    state
        .hub
        .get_or_load(&drop_id)
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "loading a drop for its event stream failed");
            ApiError::internal()
        })?
        .ok_or_else(|| ApiError::not_found(format!("drop {drop_id} not found")))?;
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let rx = state
        .hub
        .subscribe(&drop_id, last_event_id, state.admission.client_ip(&req))
        .map_err(|err| match err {
            SubscribeError::Full => ApiError::new(
                Code::TooManySubscribers,
                "this server has as many live-stock streams open as it allows; retry shortly",
            )
            .retry_after(5),
            SubscribeError::Closed => ApiError::new(
                Code::Unavailable,
                "the server is shutting down; retry shortly",
            )
            .retry_after(2),
            SubscribeError::TooManyFromAddress => ApiError::new(
                Code::TooManyStreams,
                "this address has as many live-stock streams open as it may; close one first",
            )
            .retry_after(5),
            SubscribeError::Unknown => ApiError::not_found(format!("drop {drop_id} not found")),
        })?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

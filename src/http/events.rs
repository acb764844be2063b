//! `GET /v1/drops/{drop}/events`: the live stock stream (SSE).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::events::buyers::BuyerStreamError;
use crate::events::SubscribeError;
use crate::http::codes::Code;
use crate::http::drops::parse_drop_id;
use crate::http::extract::Buyer;
use crate::http::openapi::problems::{problems, BUYER, EVERY, READ, SPLIT};
use crate::http::openapi::streams::{BuyerEvent, LiveEvent};
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

problems!(MyEventsProblems: EVERY, SPLIT, BUYER, &[Code::TooManyStreams, Code::Unavailable]);

/// Your own news as server-sent events: each `hold.created`, `hold.expired`, `hold.released`,
/// `waitlist.offered`, `draw.won`, `draw.lost`, `checkout.requested` and `order.created` about
/// you (the outbox event's `data`), so a page sees a raffle's result or a waiting-list offer
/// arrive and its hold become an order when the payment service confirms it. Authenticated with the bearer header
/// (read it with `fetch` streaming: EventSource cannot send headers, and tokens stay out of
/// URLs). Not resumable: after a reconnect, read the hold.
#[utoipa::path(get, path = "/v1/me/events", tag = "buyers", security(("buyer" = [])),
    responses(
        (status = 200, description = "an endless event stream", body = BuyerEvent,
            content_type = "text/event-stream"),
        MyEventsProblems,
    ))]
pub async fn stream_my_events(
    state: web::Data<AppState>,
    Buyer(buyer): Buyer,
) -> Result<HttpResponse, ApiError> {
    let rx = state
        .hub
        .buyers
        .subscribe(buyer.as_str())
        .map_err(|err| match err {
            BuyerStreamError::TooMany => ApiError::new(
                Code::TooManyStreams,
                "you have as many streams of your own open as you may; close one first",
            )
            .retry_after(5),
            BuyerStreamError::Closed => ApiError::new(
                Code::Unavailable,
                "the server is shutting down; retry shortly",
            )
            .retry_after(2),
        })?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let next = tokio::select! {
            message = rx.recv() => message?,
            () = tokio::time::sleep(crate::defaults::SSE_KEEP_ALIVE) => {
                actix_web::web::Bytes::from_static(b": keep-alive\n\n")
            }
        };
        Some((Ok::<_, std::convert::Infallible>(next), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

//! Request ids and the access log. Every request gets an id: the client's `X-Request-Id` when
//! it is a sane one, else a new one. It comes back in `X-Request-Id` and in every problem body
//! (`request_id`), and every log line of the request carries it (a span), so an operator can go
//! from a buyer's error message to the server's lines about it. One access line per request
//! (target `dropd::access`): method, route template, status, duration, who asked (buyer id or
//! admin key id, never a credential).

use std::time::Instant;

use actix_web::body::{self, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

use crate::domain::BuyerId;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
const MAX_LEN: usize = 128;

/// Who asked, as the extractors found out, for the access line.
/// The request's id, for handlers that record it (the audit log).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

#[derive(Debug, Clone)]
pub enum Caller {
    Buyer(BuyerId),
    Admin(String),
}

/// Printable, no spaces, at most 128 bytes: anything else is replaced, not echoed.
fn accepted(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let fine = !text.is_empty()
        && text.len() <= MAX_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    fine.then_some(text)
}

/// 128 random bits as 32 hex digits, from the thread's generator (no system call).
fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `{"request_id":"<id>",` spliced in front of the problem's own members (the id is plain
/// ASCII without quotes or backslashes, so it needs no escaping).
fn with_request_id(problem: &[u8], id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(problem.len() + id.len() + 16);
    match problem.strip_prefix(b"{") {
        Some(rest) => {
            out.extend_from_slice(b"{\"request_id\":\"");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\"");
            if rest.first() != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        }
        None => out.extend_from_slice(problem),
    }
    out
}

/// Runs around every request (see `app.rs`).
pub async fn trace(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(accepted)
        .map_or_else(new_id, str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %id);
    let (res, cost) = crate::store::cost::scoped(next.call(req).instrument(span.clone())).await;
    let mut res = res?;
    let status = res.status().as_u16();
    {
        let request = res.request();
        let route = request.match_name().unwrap_or("(unmatched)");
        let seconds = started.elapsed().as_secs_f64();
        let over = request
            .app_data::<actix_web::web::Data<crate::http::state::AppState>>()
            .and_then(|state| state.budgets.exceeded(route, cost));
        if let Some(budget) = over {
            tracing::warn!(
                route,
                request_id = %id,
                statements = cost.statements,
                sql_ms = cost.time.as_secs_f64() * 1000.0,
                budget_statements = budget.statements,
                budget_ms = budget.time.as_secs_f64() * 1000.0,
                "request over its database budget"
            );
        }
        crate::http::metrics::observe(route, &method, status, seconds, cost, over.is_some());
        // Borrowed, not copied: with the access log off this costs a level check.
        let extensions = request.extensions();
        let (buyer, admin_key) = match extensions.get::<Caller>() {
            Some(Caller::Buyer(b)) => (Some(b.as_str()), None),
            Some(Caller::Admin(k)) => (None, Some(k.as_str())),
            None => (None, None),
        };
        span.in_scope(|| {
            tracing::info!(
                target: "dropd::access",
                method = %method,
                route,
                status,
                ms = seconds * 1000.0,
                buyer,
                admin_key,
                "request"
            )
        });
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, value);
    }
    let problem = res
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if !problem {
        return Ok(res.map_into_left_body());
    }
    let (request, response) = res.into_parts();
    let (response, body) = response.into_parts();
    let bytes = body::to_bytes(body).await.unwrap_or_default();
    let response = response.set_body(BoxBody::new(with_request_id(&bytes, &id)));
    Ok(ServiceResponse::new(request, response).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_goes_first_in_a_problem_body() {
        assert_eq!(
            with_request_id(br#"{"code":"sold-out"}"#, "r1"),
            br#"{"request_id":"r1","code":"sold-out"}"#.to_vec()
        );
        assert_eq!(
            with_request_id(b"{}", "r1"),
            br#"{"request_id":"r1"}"#.to_vec()
        );
    }

    #[test]
    fn only_sane_ids_are_kept() {
        let ok = HeaderValue::from_static("4bf92f35-77b3.4e2a:x");
        assert_eq!(accepted(&ok), Some("4bf92f35-77b3.4e2a:x"));
        for bad in ["", "has space", "quote\"s", &"x".repeat(129)] {
            let value = HeaderValue::from_str(bad).expect("header value");
            assert_eq!(accepted(&value), None, "{bad:?}");
        }
    }
}

//! Slow and greedy clients: a request whose headers are too large is refused before anything
//! reads them (`431 header-too-large`), and a body that has not arrived in full within the
//! request timeout gets `408 request-timeout` and the connection is closed, so a client feeding
//! a byte every few seconds holds nothing for long. The head's own timeout is actix's
//! (`client_request_timeout`, the same setting).

use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};

use crate::http::codes::Code;
use crate::http::problem::ApiError;
use crate::http::JSON_LIMIT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Name and value bytes of all headers together.
    pub max_header_bytes: usize,
    /// How long the head, and then the body, may take to arrive.
    pub timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: crate::defaults::MAX_HEADER_BYTES,
            timeout: crate::defaults::REQUEST_TIMEOUT,
        }
    }
}

fn refuse<B>(req: ServiceRequest, err: ApiError, close: bool) -> ServiceResponse<EitherBody<B>> {
    let mut res = err.error_response();
    if close {
        res.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    req.into_response(res).map_into_right_body()
}

fn unreadable(err: actix_web::error::PayloadError) -> ApiError {
    ApiError::new(
        Code::BadRequest,
        format!("the request body could not be read: {err}"),
    )
}

/// Runs first for every request (see `app.rs`).
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let limits = req
        .app_data::<web::Data<RequestLimits>>()
        .map(|l| *l.get_ref())
        .unwrap_or_default();
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > limits.max_header_bytes {
        let err = ApiError::new(
            Code::HeaderTooLarge,
            format!(
                "the request's headers are {header_bytes} bytes; at most {} are accepted",
                limits.max_header_bytes
            ),
        );
        return Ok(refuse(req, err, true));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    // A body declared too large is the JSON extractor's to refuse (413) without reading it.
    let read_here = match declared {
        Some(len) => len > 0 && len <= JSON_LIMIT,
        None => chunked,
    };
    if read_here {
        let mut payload = req.take_payload();
        // Most bodies arrive with their head: taken at once, with no timer and no copy.
        let first = match payload.next().now_or_never() {
            Some(Some(Ok(chunk))) => Some(chunk),
            Some(Some(Err(err))) => return Ok(refuse(req, unreadable(err), true)),
            Some(None) => Some(Bytes::new()),
            None => None,
        };
        let complete = match (&first, declared) {
            (Some(chunk), Some(len)) => chunk.len() >= len,
            (Some(chunk), None) => chunk.is_empty(),
            (None, _) => false,
        };
        let body = if complete {
            first.unwrap_or_default()
        } else {
            let read = async {
                let mut body = BytesMut::new();
                if let Some(chunk) = first {
                    body.extend_from_slice(&chunk);
                }
                while let Some(chunk) = payload.next().await {
                    body.extend_from_slice(&chunk?);
                    if body.len() > JSON_LIMIT {
                        break;
                    }
                }
                Ok::<_, actix_web::error::PayloadError>(body.freeze())
            };
            match tokio::time::timeout(limits.timeout, read).await {
                Err(_) => {
                    let err = ApiError::new(
                        Code::RequestTimeout,
                        format!(
                            "the request body did not arrive in full within {}",
                            humantime::format_duration(limits.timeout)
                        ),
                    );
                    return Ok(refuse(req, err, true));
                }
                Ok(Err(err)) => return Ok(refuse(req, unreadable(err), true)),
                Ok(Ok(body)) => body,
            }
        };
        if body.len() > JSON_LIMIT {
            let err = ApiError::new(
                Code::PayloadTooLarge,
                format!("the request body is larger than the {JSON_LIMIT} bytes allowed"),
            );
            return Ok(refuse(req, err, true));
        }
        req.set_payload(Payload::from(body));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

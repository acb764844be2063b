//! With `--lease`, a write is acknowledged only while this server holds the replica's lease:
//! refused before it starts when the lease is not held, and its answer withheld (503, the same
//! code) when the lease lapsed while it ran, so a client never takes an answer from a server
//! that may have been replaced. A retry with the same Idempotency-Key gets the real answer once
//! the lease is renewed; after a takeover, the new leader answers it from the replica's state.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};

use crate::http::codes::Code;
use crate::http::problem::ApiError;
use crate::http::state::AppState;

fn refused() -> ApiError {
    ApiError::new(
        Code::LeaseExpired,
        "this server cannot renew its lease on the replica, so it acknowledges no write; retry \
         with the same Idempotency-Key",
    )
    .retry_after(1)
}

pub async fn route(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let lease = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.lease.clone());
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let Some(lease) = lease.filter(|_| write) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    if !lease.is_valid() {
        let res = refused().error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    let res = next.call(req).await?;
    if !lease.is_valid() {
        tracing::warn!(
            path = res.request().path(),
            "the lease lapsed while a write ran: its answer is withheld"
        );
        let (req, _) = res.into_parts();
        return Ok(ServiceResponse::new(req, refused().error_response()).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

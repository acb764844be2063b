//! With `--admin-listen`, the server listens on two sockets and a request's socket decides what
//! it may reach: the admin API, the operator page and `/metrics` only on the admin one (behind
//! a firewall, or loopback), everything a buyer uses only on the public one. `/healthz` and
//! `/readyz` answer on both. Without it, everything shares the one listener.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpRequest, ResponseError};

use crate::http::problem::ApiError;
use crate::http::state::AppState;

fn admin_only(path: &str) -> bool {
    path.starts_with("/v1/admin/")
        || path == "/v1/admin"
        || path == "/admin"
        || path == "/assets/admin.js"
        || path == "/metrics"
}

fn both(path: &str) -> bool {
    path == "/healthz" || path == "/readyz"
}

/// True if the request came in on the `--admin-listen` socket.
pub fn on_admin_listener(req: &HttpRequest) -> bool {
    req.app_data::<web::Data<AppState>>()
        .and_then(|state| state.admin_port)
        .is_some_and(|port| req.app_config().local_addr().port() == port)
}

pub async fn route(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let split = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.admin_port.is_some());
    if split && !both(req.path()) {
        let on_admin = on_admin_listener(req.request());
        if admin_only(req.path()) != on_admin {
            let res = ApiError::not_found("no such resource on this listener").error_response();
            return Ok(req.into_response(res).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

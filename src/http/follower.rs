//! A follower (`serve --follow`) serves what any buyer may read about a drop from its copy of
//! the replica: the pages, the drops, their live stock and their ledgers. Everything else (every
//! write; what belongs to one buyer, who must read their own writes; the admin API; the ledger's
//! keys, kept on the leader) goes to the leader: `307` to the same path on `--leader-url`, or
//! `421 not-leader` naming it with `--no-redirect`.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse, ResponseError};

use crate::http::codes::Code;
use crate::http::problem::ApiError;
use crate::http::state::{AppState, FollowerRole};

/// Paths a follower answers itself (with GET or HEAD).
fn served_here(path: &str) -> bool {
    const EXACT: &[&str] = &[
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "/verify",
        "/openapi.json",
        "/assets/app.js",
        "/assets/app.css",
        "/assets/verify.js",
        "/v1/drops",
    ];
    if EXACT.contains(&path) {
        return true;
    }
    let Some(rest) = path.strip_prefix("/v1/drops/") else {
        return false;
    };
    let mut parts = rest.split('/');
    let drop = parts.next().unwrap_or_default();
    let tail: Vec<&str> = parts.collect();
    !drop.is_empty()
        && matches!(
            tail.as_slice(),
            [] | ["events"] | ["ledger"] | ["ledger", "head"]
        )
}

impl FollowerRole {
    fn elsewhere(&self, req: &ServiceRequest) -> HttpResponse {
        let Some(leader) = &self.leader_url else {
            return ApiError::new(
                Code::NotLeader,
                "this server is a read-only follower and knows no leader (--leader-url): send \
                 writes to the server that owns the drop",
            )
            .error_response();
        };
        let target = match req.query_string() {
            "" => format!("{}{}", leader.trim_end_matches('/'), req.path()),
            query => format!("{}{}?{query}", leader.trim_end_matches('/'), req.path()),
        };
        if self.redirect {
            // 307, not 302: the method and the body are sent again as they were.
            return HttpResponse::build(StatusCode::TEMPORARY_REDIRECT)
                .insert_header((header::LOCATION, target))
                .finish();
        }
        ApiError::new(
            Code::NotLeader,
            format!("this server is a read-only follower: send this request to {target}"),
        )
        .with_member("leader", serde_json::Value::String(target))
        .error_response()
    }
}

pub async fn route(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let role = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.follower.clone());
    if let Some(role) = role {
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        if !(read && served_here(req.path())) {
            let res = role.elsewhere(&req);
            return Ok(req.into_response(res).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::served_here;

    #[test]
    fn a_follower_serves_drop_reads_and_sends_the_rest_to_the_leader() {
        for path in [
            "/v1/drops",
            "/v1/drops/d1",
            "/v1/drops/d1/events",
            "/v1/drops/d1/ledger",
            "/v1/drops/d1/ledger/head",
            "/",
            "/readyz",
        ] {
            assert!(served_here(path), "{path}");
        }
        for path in [
            "/v1/drops/d1/holds",
            "/v1/holds/h1",
            "/v1/orders",
            "/v1/me/events",
            "/v1/admin/drops",
            "/v1/keys",
            "/v1/demo/token",
            "/admin",
            "/v1/drops/",
        ] {
            assert!(!served_here(path), "{path}");
        }
    }
}

//! The actix edge: routes, extractors, and the mapping of every error to problem+json.

mod admin;
pub mod admission;
mod drops;
mod events;
pub mod extract;
mod health;
mod holds;
pub mod limits;
mod orders;
mod pages;
pub mod problem;
pub mod request_id;
pub mod state;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};

use problem::ApiError;

/// Largest JSON body accepted; a drop with 200 SKUs fits comfortably.
pub const JSON_LIMIT: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(|err, _| problem::from_json_error(&err).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::not_found(err.to_string()).into()),
    )
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "bad-request",
            err.to_string(),
        )
        .into()
    }))
    .service(get("/", pages::index))
    .service(get("/assets/app.js", pages::app_js))
    .service(get("/assets/app.css", pages::app_css))
    .service(get("/admin", pages::admin))
    .service(get("/assets/admin.js", pages::admin_js))
    .service(get("/healthz", health::healthz))
    .service(get("/readyz", health::readyz))
    .service(get("/metrics", health::metrics))
    .service(get("/openapi.json", pages::openapi))
    .service(
        // Resources are tried in order, each dynamic one a regex match: the stampede's first.
        web::scope("/v1")
            .service(only(
                web::resource("/drops/{drop}/holds").route(web::post().to(holds::create_hold)),
                "POST",
            ))
            .service(get("/demo/token", pages::demo_token))
            .service(get("/drops", drops::list_drops))
            .service(get("/drops/{drop}", drops::get_drop))
            .service(get("/drops/{drop}/events", events::stream_drop_events))
            .service(only(
                web::resource("/holds/{hold}")
                    .route(web::get().to(holds::get_hold))
                    .route(web::head().to(holds::get_hold))
                    .route(web::delete().to(holds::release_hold)),
                "GET, HEAD, DELETE",
            ))
            .service(only(
                web::resource("/holds/{hold}/confirm").route(web::post().to(holds::confirm_hold)),
                "POST",
            ))
            .service(get("/orders", orders::list_orders))
            .service(get("/orders/{order}", orders::get_order))
            .service(get("/admin/events", admin::stream_admin_events))
            .service(only(
                web::resource("/admin/drops").route(web::post().to(admin::create_drop)),
                "POST",
            ))
            .service(only(
                web::resource("/admin/drops/{drop}").route(web::patch().to(admin::update_drop)),
                "PATCH",
            ))
            .service(only(
                web::resource("/admin/drops/{drop}/skus/{sku}/stock")
                    .route(web::post().to(admin::adjust_stock)),
                "POST",
            ))
            .service(get("/admin/drops/{drop}/orders", admin::list_drop_orders)),
    )
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::not_found("no such resource"))
    }));
}

/// A resource read with GET, and with HEAD (the same answer without its body).
fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    only(
        web::resource(path)
            .route(web::get().to(handler.clone()))
            .route(web::head().to(handler)),
        "GET, HEAD",
    )
}

/// Any other method on a known path: `405` naming the ones it takes.
fn only(resource: actix_web::Resource, allow: &'static str) -> actix_web::Resource {
    resource.default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::method_not_allowed(allow))
    }))
}

/// What makes two requests "the same" for an Idempotency-Key: the route, the target and the
/// body as parsed (so whitespace and key order do not matter).
fn fingerprint(route: &str, target: &str, body: &impl Serialize) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(route.as_bytes());
    digest.update([0]);
    digest.update(target.as_bytes());
    digest.update([0]);
    digest.update(serde_json::to_vec(body).unwrap_or_default());
    digest.finalize().into()
}

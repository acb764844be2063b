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
    .route("/", web::get().to(pages::index))
    .route("/assets/app.js", web::get().to(pages::app_js))
    .route("/assets/app.css", web::get().to(pages::app_css))
    .route("/admin", web::get().to(pages::admin))
    .route("/assets/admin.js", web::get().to(pages::admin_js))
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .route("/openapi.json", web::get().to(pages::openapi))
    .service(
        // Routes are tried in order, each dynamic one a regex match: the stampede's first.
        web::scope("/v1")
            .route("/drops/{drop}/holds", web::post().to(holds::create_hold))
            .route("/demo/token", web::get().to(pages::demo_token))
            .route("/drops", web::get().to(drops::list_drops))
            .route("/drops/{drop}", web::get().to(drops::get_drop))
            .route(
                "/drops/{drop}/events",
                web::get().to(events::stream_drop_events),
            )
            .route("/holds/{hold}", web::get().to(holds::get_hold))
            .route("/holds/{hold}", web::delete().to(holds::release_hold))
            .route("/holds/{hold}/confirm", web::post().to(holds::confirm_hold))
            .route("/orders", web::get().to(orders::list_orders))
            .route("/orders/{order}", web::get().to(orders::get_order))
            .route("/admin/events", web::get().to(admin::stream_admin_events))
            .route("/admin/drops", web::post().to(admin::create_drop))
            .route("/admin/drops/{drop}", web::patch().to(admin::update_drop))
            .route(
                "/admin/drops/{drop}/skus/{sku}/stock",
                web::post().to(admin::adjust_stock),
            )
            .route(
                "/admin/drops/{drop}/orders",
                web::get().to(admin::list_drop_orders),
            ),
    )
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::not_found("no such resource"))
    }));
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

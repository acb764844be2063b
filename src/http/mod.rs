//! The actix edge: routes, extractors, and the mapping of every error to problem+json.

mod access_codes;
mod admin;
pub mod admission;
pub mod budget;
pub mod codes;
mod draw;
mod drops;
mod events;
mod exports;
pub mod extract;
pub mod follower;
mod health;
mod holds;
pub mod lease;
mod ledger;
pub mod limits;
pub mod metrics;
pub mod openapi;
mod orders;
mod pages;
pub mod payment_signature;
pub mod payments;
pub mod problem;
mod queue;
pub mod request_id;
pub mod sides;
pub mod state;
mod waitlist;
mod webhooks;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};

use codes::Code;
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
    .app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::new(Code::BadRequest, err.to_string()).into()),
    )
    .service(get("/healthz", health::healthz))
    .service(get("/readyz", health::readyz))
    .service(get("/", pages::index))
    .service(get("/assets/app.js", pages::app_js))
    .service(get("/assets/app.css", pages::app_css))
    .service(get("/admin", pages::admin))
    .service(get("/assets/admin.js", pages::admin_js))
    .service(get("/verify", pages::verify))
    .service(get("/assets/verify.js", pages::verify_js))
    .service(get("/metrics", metrics::metrics))
    .service(get("/openapi.json", openapi::serve))
    .service(
        // Resources are tried in order, each dynamic one a regex match: the stampede's first.
        web::scope("/v1")
            .service(only(
                at("/v1/drops/{drop}/holds").route(web::post().to(holds::create_hold)),
                "POST",
            ))
            .service(get("/v1/demo/token", pages::demo_token))
            .service(get("/v1/drops", drops::list_drops))
            .service(get("/v1/drops/{drop}", drops::get_drop))
            .service(get("/v1/drops/{drop}/events", events::stream_drop_events))
            .service(get("/v1/drops/{drop}/ledger", ledger::export_ledger))
            .service(get("/v1/drops/{drop}/ledger/head", ledger::ledger_head))
            .service(only(
                at("/v1/drops/{drop}/queue")
                    .route(web::post().to(queue::join_queue))
                    .route(web::get().to(queue::get_queue))
                    .route(web::head().to(queue::get_queue)),
                "GET, HEAD, POST",
            ))
            .service(only(
                at("/v1/drops/{drop}/entries")
                    .route(web::post().to(draw::enter_draw))
                    .route(web::get().to(draw::get_entries))
                    .route(web::head().to(draw::get_entries)),
                "GET, HEAD, POST",
            ))
            .service(only(
                at("/v1/drops/{drop}/waitlist")
                    .route(web::post().to(waitlist::join_waitlist))
                    .route(web::get().to(waitlist::get_waitlist))
                    .route(web::head().to(waitlist::get_waitlist)),
                "GET, HEAD, POST",
            ))
            .service(only(
                at("/v1/drops/{drop}/waitlist/{sku}")
                    .route(web::delete().to(waitlist::leave_waitlist)),
                "DELETE",
            ))
            .service(get("/v1/keys", ledger::list_keys))
            .service(only(
                at("/v1/holds/{hold}")
                    .route(web::get().to(holds::get_hold))
                    .route(web::head().to(holds::get_hold))
                    .route(web::delete().to(holds::release_hold)),
                "GET, HEAD, DELETE",
            ))
            .service(only(
                at("/v1/holds/{hold}/confirm").route(web::post().to(holds::confirm_hold)),
                "POST",
            ))
            .service(only(
                at("/v1/holds/{hold}/checkout").route(web::post().to(holds::request_checkout)),
                "POST",
            ))
            .service(only(
                at("/v1/payments/callback").route(web::post().to(payments::payment_callback)),
                "POST",
            ))
            .service(get("/v1/me/events", events::stream_my_events))
            .service(get("/v1/orders", orders::list_orders))
            .service(get("/v1/orders/{order}", orders::get_order))
            .service(get("/v1/admin/events", admin::stream_admin_events))
            .service(only(
                at("/v1/admin/drops").route(web::post().to(admin::create_drop)),
                "POST",
            ))
            .service(only(
                at("/v1/admin/drops/{drop}").route(web::patch().to(admin::update_drop)),
                "PATCH",
            ))
            .service(only(
                at("/v1/admin/drops/{drop}/codes")
                    .route(web::post().to(access_codes::create_codes))
                    .route(web::get().to(access_codes::export_codes))
                    .route(web::head().to(access_codes::export_codes)),
                "GET, HEAD, POST",
            ))
            .service(only(
                at("/v1/admin/drops/{drop}/skus/{sku}/stock")
                    .route(web::post().to(admin::adjust_stock)),
                "POST",
            ))
            .service(get(
                "/v1/admin/drops/{drop}/orders",
                exports::list_drop_orders,
            ))
            .service(only(
                at("/v1/admin/webhooks")
                    .route(web::get().to(webhooks::list_webhooks))
                    .route(web::head().to(webhooks::list_webhooks))
                    .route(web::post().to(webhooks::create_webhook)),
                "GET, HEAD, POST",
            ))
            .service(only(
                at("/v1/admin/webhooks/{webhook}")
                    .route(web::get().to(webhooks::get_webhook))
                    .route(web::head().to(webhooks::get_webhook))
                    .route(web::patch().to(webhooks::update_webhook))
                    .route(web::delete().to(webhooks::delete_webhook)),
                "GET, HEAD, PATCH, DELETE",
            ))
            .service(get(
                "/v1/admin/webhooks/{webhook}/dead-letters",
                webhooks::list_dead_letters,
            ))
            .service(only(
                at("/v1/admin/webhooks/{webhook}/dead-letters/{event}/retry")
                    .route(web::post().to(webhooks::retry_dead_letter)),
                "POST",
            ))
            .service(get(
                "/v1/admin/drops/{drop}/attempts",
                exports::export_attempts,
            ))
            .service(get("/v1/admin/outbox", exports::export_outbox))
            .service(get("/v1/admin/audit", exports::export_audit)),
    )
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::not_found("no such resource"))
    }));
}

/// A resource read with GET, and with HEAD (the same answer without its body).
fn get<F, Args>(template: &'static str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    only(
        at(template)
            .route(web::get().to(handler.clone()))
            .route(web::head().to(handler)),
        "GET, HEAD",
    )
}

/// A resource by its full template; the name is the template too, which the access log and
/// the route metrics read without rebuilding it per request. Inside `/v1` the path is the
/// template's rest.
fn at(template: &'static str) -> actix_web::Resource {
    let path = template.strip_prefix("/v1").unwrap_or(template);
    web::resource(path).name(template)
}

/// Any other method on a known path: `405` naming the ones it takes.
fn only(resource: actix_web::Resource, allow: &'static str) -> actix_web::Resource {
    resource.default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::method_not_allowed(allow))
    }))
}

/// What makes two requests "the same" for an Idempotency-Key: the route, the target and the
/// body as parsed (so whitespace and key order do not matter).
pub(crate) fn fingerprint(route: &str, target: &str, body: &impl Serialize) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(route.as_bytes());
    digest.update([0]);
    digest.update(target.as_bytes());
    digest.update([0]);
    digest.update(serde_json::to_vec(body).unwrap_or_default());
    digest.finalize().into()
}

//! The served `/openapi.json`, generated from the handlers' own declarations (`utoipa`): their
//! paths, parameters, bodies, success answers and the problems they can send (`problems!`
//! beside each handler). Built once, at first request.

pub mod problems;
pub mod streams;

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;

use crate::http::codes::Code;
use crate::http::{
    access_codes, admin, draw, drops, events, exports, health, holds, ledger, metrics, orders,
    pages, payments, queue, waitlist, webhooks,
};
use problems::{problems, EVERY, SPLIT};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dropd",
        description = "Limited-stock drops: holds, orders, live stock. Every error is \
                       `application/problem+json` with a stable `code` (the table in \
                       docs/design.md) and the `request_id` of the request it answers; send \
                       `X-Request-Id` to choose it, every answer carries it back.",
    ),
    paths(
        drops::list_drops,
        drops::get_drop,
        events::stream_drop_events,
        events::stream_my_events,
        holds::create_hold,
        queue::join_queue,
        queue::get_queue,
        draw::enter_draw,
        draw::get_entries,
        waitlist::join_waitlist,
        waitlist::get_waitlist,
        waitlist::leave_waitlist,
        holds::get_hold,
        holds::release_hold,
        holds::confirm_hold,
        holds::request_checkout,
        ledger::list_keys,
        ledger::export_ledger,
        ledger::ledger_head,
        payments::payment_callback,
        orders::list_orders,
        orders::get_order,
        pages::demo_token,
        admin::create_drop,
        admin::update_drop,
        admin::adjust_stock,
        access_codes::create_codes,
        access_codes::export_codes,
        exports::list_drop_orders,
        exports::export_attempts,
        admin::stream_admin_events,
        exports::export_outbox,
        exports::export_audit,
        webhooks::create_webhook,
        webhooks::list_webhooks,
        webhooks::get_webhook,
        webhooks::update_webhook,
        webhooks::delete_webhook,
        webhooks::list_dead_letters,
        webhooks::retry_dead_letter,
        health::healthz,
        health::readyz,
        metrics::metrics,
        serve,
        pages::index,
        pages::admin,
        pages::verify,
    ),
    components(schemas(streams::LiveEvent, streams::OperatorEvent, streams::BuyerEvent)),
    modifiers(&Contract),
    tags(
        (name = "buyers", description = "What the drop page uses"),
        (name = "fairness", description = "The signed ledger anyone can check the order against"),
        (name = "admin", description = "Operators: drops, stock, exports (an admin key)"),
        (name = "operations", description = "Probes, metrics and this document"),
        (name = "pages", description = "The web pages compiled into the binary"),
    )
)]
struct ApiDoc;

/// What the derive cannot say: the security schemes and the problem body with every code.
struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "buyer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A buyer token: HS256 with `sub` (the buyer), `exp`, optional `nbf`, \
                         `iss`, `aud` and `kid` (see docs/design.md, Auth)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin key from `dropd admin-key create`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "service",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A service key from `dropd service-key create --scope payments`",
                    ))
                    .build(),
            ),
        );
        components
            .schemas
            .insert("Problem".into(), problem_schema().into());
    }
}

fn problem_schema() -> utoipa::openapi::Object {
    let text = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    };
    let count = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .description(Some(description))
    };
    ObjectBuilder::new()
        .description(Some(
            "RFC 9457 problem details; the refusal's own members beside the standard ones",
        ))
        .property("type", text("`urn:dropd:problem:<code>`"))
        .property("title", text("the same for every problem of this code"))
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(400))
                .maximum(Some(599)),
        )
        .property("detail", text("what happened to this request"))
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(Code::ALL.iter().map(|c| c.as_str()))),
        )
        .property(
            "request_id",
            text("the request this answers (its X-Request-Id)"),
        )
        .property("sku", text("sold-out, unknown-sku, stock-below-committed"))
        .property("available", count("sold-out: units left"))
        .property(
            "requested",
            count("sold-out, limit-exceeded, stock-below-committed"),
        )
        .property("limit", count("limit-exceeded: per buyer"))
        .property("used", count("limit-exceeded: already held or bought"))
        .property("state", text("drop-not-live: the drop's state"))
        .property("expired_at", text("hold-expired"))
        .property("order_id", text("hold-confirmed: the order it became"))
        .property("drop_id", text("unknown-sku, drop-exists"))
        .property("committed", count("stock-below-committed: held plus sold"))
        .property("from", text("invalid-state-transition"))
        .property("to", text("invalid-state-transition"))
        .property("what", text("not-found: what was looked for"))
        .required("type")
        .required("title")
        .required("status")
        .required("detail")
        .required("code")
        .required("request_id")
        .build()
}

problems!(DocumentProblems: EVERY, SPLIT);

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses(
        (status = 200, description = "OpenAPI 3.1", body = Object),
        DocumentProblems,
    ))]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(document())
}

/// The document as served, serialized once.
pub fn document() -> Bytes {
    static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        streams::data_as_text(&mut doc);
        Bytes::from(serde_json::to_vec_pretty(&doc).unwrap_or_default())
    });
    DOCUMENT.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_answers_the_header_cap_and_names_a_success() {
        let doc: serde_json::Value =
            serde_json::from_slice(&document()).expect("the document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 17, "{}", paths.len());
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item") {
                let responses = op["responses"].as_object().expect("responses");
                assert!(responses.contains_key("431"), "{method} {path}");
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path} names no success"
                );
            }
        }
        for (path, method) in [
            ("/v1/drops/{drop}/holds", "post"),
            ("/v1/holds/{hold}/confirm", "post"),
        ] {
            let params = doc["paths"][path][method]["parameters"]
                .as_array()
                .expect("parameters");
            let key = params
                .iter()
                .find(|p| p["name"] == "Idempotency-Key")
                .unwrap_or_else(|| panic!("{method} {path} names its Idempotency-Key"));
            assert_eq!(key["in"], "header");
            assert_eq!(key["required"], true);
            assert_eq!(key["schema"]["maxLength"], 255);
        }
    }
}

//! The web pages, compiled into the binary: nothing is fetched at build or run time.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use rand::Rng;

use crate::domain::BuyerId;
use crate::http::openapi::problems::{problems, EVERY, READ, SPLIT};
use crate::http::problem::ApiError;
use crate::http::state::AppState;

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const ADMIN: &str = include_str!("../../web/admin.html");
const ADMIN_JS: &str = include_str!("../../web/admin.js");
const VERIFY: &str = include_str!("../../web/verify.html");
const VERIFY_JS: &str = include_str!("../../web/verify.js");

/// Everything the pages load comes from this server, and no other site may frame them (a
/// framed buy button is a clickjacking target).
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'";

fn page(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // For browsers that predate `frame-ancestors`.
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // A page address may have held a token a moment ago: never send it elsewhere.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

problems!(PageProblems: EVERY, SPLIT);

/// The drop page.
#[utoipa::path(get, path = "/", tag = "pages",
    responses(
        (status = 200, description = "the page", body = String, content_type = "text/html"),
        PageProblems,
    ))]
pub async fn index() -> HttpResponse {
    page("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> HttpResponse {
    page("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> HttpResponse {
    page("text/css; charset=utf-8", APP_CSS)
}

/// The operator page (its feed and actions need an admin key, which the page asks for).
#[utoipa::path(get, path = "/admin", tag = "pages",
    responses(
        (status = 200, description = "the page", body = String, content_type = "text/html"),
        PageProblems,
    ))]
pub async fn admin() -> HttpResponse {
    page("text/html; charset=utf-8", ADMIN)
}

pub async fn admin_js() -> HttpResponse {
    page("text/javascript; charset=utf-8", ADMIN_JS)
}

/// Checks a hold receipt in the browser against the drop's ledger and the server's keys.
#[utoipa::path(get, path = "/verify", tag = "pages",
    responses(
        (status = 200, description = "the page", body = String, content_type = "text/html"),
        PageProblems,
    ))]
pub async fn verify() -> HttpResponse {
    page("text/html; charset=utf-8", VERIFY)
}

pub async fn verify_js() -> HttpResponse {
    page("text/javascript; charset=utf-8", VERIFY_JS)
}

/// `--demo` only: a token for a fresh demo buyer, so the page works with no setup.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DemoToken {
    #[schema(value_type = String)]
    buyer: BuyerId,
    /// Valid for a day.
    token: String,
}

problems!(DemoTokenProblems: EVERY, SPLIT, READ);

/// A token for a fresh demo buyer, on a server started with `--demo` only (else not found).
#[utoipa::path(get, path = "/v1/demo/token", tag = "buyers",
    responses((status = 200, description = "a token", body = DemoToken), DemoTokenProblems))]
pub async fn demo_token(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.demo {
        return Err(ApiError::not_found(
            "demo tokens exist only on a server started with --demo",
        ));
    }
    let n: u32 = rand::rng().random_range(0..1_000_000);
    let buyer = BuyerId::parse(&format!("demo-{n:06}")).map_err(|_| ApiError::internal())?;
    let token = state
        .tokens
        .mint(&buyer, Duration::from_secs(24 * 3600))
        .map_err(|_| ApiError::internal())?;
    Ok(HttpResponse::Ok().json(DemoToken { buyer, token }))
}

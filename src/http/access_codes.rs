//! Access codes (presale tiers) for operators: make them (each shown once) and export them.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::domain::access_codes::{CodeView, CreatedCodes, NewCodes};
use crate::http::admin::answer;
use crate::http::drops::{known_drop, parse_drop_id};
use crate::http::exports::ndjson_pages;
use crate::http::extract::{admin_act, Admin};
use crate::http::openapi::problems::{problems, ADMIN, BODY, EVERY, READ, SPLIT, WRITE};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::access_codes;

const CODES_PAGE: i64 = 1000;

problems!(CreateCodesProblems: EVERY, SPLIT, ADMIN, BODY, WRITE, &[crate::http::codes::Code::NotFound]);

/// Make `count` access codes of a tier for a drop. Each code is in this answer only: the server
/// keeps its SHA-256. A hold sends one as `code`: checked and counted in the hold's transaction,
/// at most `max_uses` times; within its window it opens the drop before its start (a presale).
#[utoipa::path(post, path = "/v1/admin/drops/{drop}/codes", tag = "admin",
    security(("admin" = [])),
    params(("drop" = String, Path, description = "the drop's id")),
    request_body = NewCodes,
    responses(
        (status = 201, description = "the codes, shown once", body = CreatedCodes),
        CreateCodesProblems,
    ))]
pub async fn create_codes(
    state: web::Data<AppState>,
    req: HttpRequest,
    admin: Admin,
    path: web::Path<String>,
    body: web::Json<NewCodes>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let act = admin_act(&req, &admin, "create_codes", drop_id.as_str(), &*body)?;
    let acted = state
        .writer
        .create_codes(act, drop_id, body.into_inner())
        .await??;
    answer(acted, StatusCode::CREATED, |_| None)
}

problems!(ExportCodesProblems: EVERY, SPLIT, ADMIN, READ);

/// A drop's access codes as newline-delimited JSON (ids, tiers, limits and uses; never the codes
/// themselves), read page by page.
#[utoipa::path(get, path = "/v1/admin/drops/{drop}/codes", tag = "admin",
    security(("admin" = [])),
    params(("drop" = String, Path, description = "the drop's id")),
    responses(
        (status = 200, description = "one `CodeView` per line", body = CodeView,
            content_type = "application/x-ndjson"),
        ExportCodesProblems,
    ))]
pub async fn export_codes(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = known_drop(&state, &path).await?;
    Ok(ndjson_pages(
        state,
        0i64,
        move |conn, after: &i64| access_codes::page(conn, drop_id.as_str(), *after, CODES_PAGE),
        CODES_PAGE,
        |(_, code), out| {
            let _ = serde_json::to_writer(&mut *out, code);
        },
        |(seq, _)| *seq,
    ))
}

//! Drop reads, answered from the in-memory snapshot the writer refreshes after every commit.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::domain::views::DropView;
use crate::domain::DropId;
use crate::http::openapi::problems::{problems, EVERY, READ, SPLIT};
use crate::http::problem::ApiError;
use crate::http::state::AppState;

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DropList {
    pub drops: Vec<DropView>,
}

problems!(ListDropsProblems: EVERY, SPLIT, READ);

/// Every drop, with its state as of now.
#[utoipa::path(get, path = "/v1/drops", tag = "buyers",
    responses((status = 200, description = "the drops", body = DropList), ListDropsProblems))]
pub async fn list_drops(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let all = state.hub.list_or_load().await.map_err(load_failed)?;
    let now = state.clock.now();
    let views: Vec<_> = all
        .iter()
        .map(|cached| {
            let mut view = cached.view.clone();
            view.state = view.state_at(now);
            view
        })
        .collect();
    Ok(HttpResponse::Ok().json(DropList { drops: views }))
}

problems!(GetDropProblems: EVERY, SPLIT, READ);

/// One drop: its SKUs with live availability. The `ETag` is its version.
#[utoipa::path(get, path = "/v1/drops/{drop}", tag = "buyers",
    params(("drop" = String, Path, description = "the drop's id")),
    responses(
        (status = 200, description = "the drop", body = DropView,
            headers(("ETag" = String, description = "the drop's version, quoted"))),
        GetDropProblems,
    ))]
pub async fn get_drop(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let cached = state
        .hub
        .get_or_load(&drop_id)
        .await
        .map_err(load_failed)?
        .ok_or_else(|| ApiError::not_found(format!("drop {path} not found")))?;
    let now = state.clock.now();
    let current = cached.view.state_at(now);
    let mut res = HttpResponse::Ok();
    res.insert_header((header::ETAG, format!("\"{}\"", cached.view.version)))
        .content_type("application/json");
    if current == cached.view.state {
        // Serialized once per commit, shared by every reader.
        Ok(res.body(cached.body.clone()))
    } else {
        let mut view = cached.view.clone();
        view.state = current;
        Ok(res.json(view))
    }
}

/// The drop `path` names, if it exists (asked of memory, which holds every drop).
pub async fn known_drop(state: &AppState, path: &str) -> Result<DropId, ApiError> {
    let drop_id = parse_drop_id(path)?;
    let known = state.hub.get_or_load(&drop_id).await.map_err(load_failed)?;
    known
        .map(|_| drop_id)
        .ok_or_else(|| ApiError::not_found(format!("drop {path} not found")))
}

pub(crate) fn load_failed(err: crate::events::LoadError) -> ApiError {
    tracing::error!(error = %err, "loading drops into memory failed");
    ApiError::internal()
}

/// A path segment that is not a valid drop id names no drop.
pub fn parse_drop_id(text: &str) -> Result<DropId, ApiError> {
    DropId::parse(text).map_err(|_| ApiError::not_found(format!("drop {text} not found")))
}

use actix_web::{web, HttpResponse};

use crate::domain::DropId;
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::drops;

pub async fn list_drops(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let views = state.read(drops::list_views).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "drops": views })))
}

pub async fn get_drop(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let view = state
        .read(move |conn, now| drops::get_view(conn, drop_id.as_str(), now))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("drop {path} not found")))?;
    Ok(HttpResponse::Ok().json(view))
}

/// A path segment that is not a valid drop id names no drop.
pub fn parse_drop_id(text: &str) -> Result<DropId, ApiError> {
    DropId::parse(text).map_err(|_| ApiError::not_found(format!("drop {text} not found")))
}

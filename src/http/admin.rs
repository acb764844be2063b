use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::domain::views::{DropPatch, NewDrop};
use crate::http::drops::parse_drop_id;
use crate::http::extract::Admin;
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::{drops, orders};

pub async fn create_drop(
    state: web::Data<AppState>,
    _: Admin,
    body: web::Json<NewDrop>,
) -> Result<HttpResponse, ApiError> {
    let view = state.writer.create_drop(body.into_inner()).await??;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/drops/{}", view.id)))
        .json(view))
}

pub async fn update_drop(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
    body: web::Json<DropPatch>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let view = state
        .writer
        .update_drop(drop_id, body.into_inner())
        .await??;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockChange {
    delta: i64,
}

pub async fn adjust_stock(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<(String, String)>,
    body: web::Json<StockChange>,
) -> Result<HttpResponse, ApiError> {
    let (drop, sku) = path.into_inner();
    let drop_id = parse_drop_id(&drop)?;
    let view = state
        .writer
        .adjust_stock(drop_id, sku, body.delta)
        .await??;
    Ok(HttpResponse::Ok().json(view))
}

const ORDERS_PAGE: i64 = 500;

/// Every order of a drop as newline-delimited JSON, read page by page so a large drop never
/// holds a pooled connection (or memory) for the whole export.
pub async fn list_drop_orders(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = parse_drop_id(&path)?;
    let id = drop_id.clone();
    let exists = state
        .read(move |conn, now| drops::get_view(conn, id.as_str(), now))
        .await?
        .is_some();
    if !exists {
        return Err(ApiError::not_found(format!("drop {drop_id} not found")));
    }
    let pages = futures_util::stream::try_unfold(Some(String::new()), move |after| {
        let state = state.clone();
        let drop_id = drop_id.clone();
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let page = state
                .read(move |conn, _| {
                    orders::page_for_drop(conn, drop_id.as_str(), &after, ORDERS_PAGE)
                })
                .await?;
            let next = (page.len() as i64 == ORDERS_PAGE)
                .then(|| page.last().map(|o| o.order_id.clone()))
                .flatten();
            let mut chunk = Vec::new();
            for order in &page {
                serde_json::to_writer(&mut chunk, order).map_err(|_| ApiError::internal())?;
                chunk.push(b'\n');
            }
            Ok::<_, ApiError>(Some((web::Bytes::from(chunk), next)))
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(pages))
}

use actix_web::{web, HttpResponse};

use crate::http::extract::Buyer;
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::orders;

pub async fn list_orders(
    state: web::Data<AppState>,
    Buyer(buyer): Buyer,
) -> Result<HttpResponse, ApiError> {
    let list = state
        .read(move |conn, _| orders::list_for_buyer(conn, &buyer))
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "orders": list })))
}

pub async fn get_order(
    state: web::Data<AppState>,
    Buyer(buyer): Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order_id = path.into_inner();
    let shown = order_id.clone();
    let order = state
        .read(move |conn, _| orders::get_for_buyer(conn, &buyer, &order_id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("order {shown} not found")))?;
    Ok(HttpResponse::Ok().json(order))
}

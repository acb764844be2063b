use actix_web::{web, HttpResponse};

use crate::domain::views::OrderView;
use crate::http::extract::Buyer;
use crate::http::openapi::problems::{problems, BUYER, EVERY, READ, SPLIT};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::orders;

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OrderList {
    pub orders: Vec<OrderView>,
}

problems!(ListOrdersProblems: EVERY, SPLIT, BUYER, READ);

/// Your orders, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "buyers", security(("buyer" = [])),
    responses((status = 200, description = "your orders", body = OrderList), ListOrdersProblems))]
pub async fn list_orders(
    state: web::Data<AppState>,
    Buyer(buyer): Buyer,
) -> Result<HttpResponse, ApiError> {
    let list = state
        .read(move |conn, _| orders::list_for_buyer(conn, &buyer))
        .await?;
    Ok(HttpResponse::Ok().json(OrderList { orders: list }))
}

problems!(GetOrderProblems: EVERY, SPLIT, BUYER, READ);

/// One of your orders; another buyer's is not found.
#[utoipa::path(get, path = "/v1/orders/{order}", tag = "buyers", security(("buyer" = [])),
    params(("order" = String, Path, description = "the order's id")),
    responses((status = 200, description = "the order", body = OrderView), GetOrderProblems))]
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

//! Reading orders: a buyer's own, and a drop's full list for admins (in pages, for streaming).

use rusqlite::{named_params, Connection, OptionalExtension, Row};

use crate::domain::clock::from_millis;
use crate::domain::views::OrderView;
use crate::domain::{BuyerId, Currency, Money};

use super::StoreError;

const COLUMNS: &str = "id, hold_id, drop_id, sku, buyer, quantity, unit_amount, currency,
                       total_amount, payment_ref, created_at";

fn order_from_row(r: &Row<'_>) -> rusqlite::Result<OrderView> {
    let currency = Currency::from_trusted(r.get(7)?);
    Ok(OrderView {
        order_id: r.get(0)?,
        hold_id: r.get(1)?,
        drop_id: r.get(2)?,
        sku: r.get(3)?,
        buyer: r.get(4)?,
        quantity: r.get(5)?,
        unit_price: Money {
            amount: r.get(6)?,
            currency: currency.clone(),
        },
        total: Money {
            amount: r.get(8)?,
            currency,
        },
        payment_ref: r.get(9)?,
        created_at: from_millis(r.get(10)?),
    })
}

pub fn get_for_buyer(
    conn: &Connection,
    buyer: &BuyerId,
    order_id: &str,
) -> Result<Option<OrderView>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = :id AND buyer = :buyer");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(
            named_params! {":id": order_id, ":buyer": buyer.as_str()},
            order_from_row,
        )
        .optional()?)
}

/// The order a hold became, if it did.
pub(crate) fn for_hold(conn: &Connection, hold_id: &str) -> Result<Option<OrderView>, StoreError> {
    let Some(seq) = super::holds::number(conn, hold_id)? else {
        return Ok(None);
    };
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE hold_seq = :seq");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(named_params! {":seq": seq}, order_from_row)
        .optional()?)
}

pub fn list_for_buyer(conn: &Connection, buyer: &BuyerId) -> Result<Vec<OrderView>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM orders WHERE buyer = :buyer ORDER BY created_at DESC, id DESC LIMIT 1000"
    );
    let orders = conn
        .prepare_cached(&sql)?
        .query_map(named_params! {":buyer": buyer.as_str()}, order_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(orders)
}

/// One page of a drop's orders after `after` (an order id; ids grow with time).
pub fn page_for_drop(
    conn: &Connection,
    drop_id: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<OrderView>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM orders WHERE drop_id = :drop AND id > :after ORDER BY id LIMIT :limit"
    );
    let orders = conn
        .prepare_cached(&sql)?
        .query_map(
            named_params! {":drop": drop_id, ":after": after, ":limit": limit},
            order_from_row,
        )?
        .collect::<Result<_, _>>()?;
    Ok(orders)
}

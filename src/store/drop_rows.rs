//! The rows the writer's memory is loaded from and written back to: a drop's rules and a SKU's
//! stock. A leaf: the writer's memory and the admin commands both build on it.

use rusqlite::{named_params, Connection, OptionalExtension};

use crate::domain::clock::from_millis;
use crate::domain::queue::Mode;
use crate::domain::{Currency, DropId, DropSchedule, Money, OverrideState, SkuStock};

/// What the writer needs to judge an attempt on a drop.
#[derive(Debug, Clone)]
pub(crate) struct DropRules {
    pub schedule: DropSchedule,
    pub per_buyer_limit: i64,
    pub hold_seconds: i64,
    pub mode: Mode,
}

const RULES: &str = "SELECT starts_at, ends_at, override_state, per_buyer_limit, hold_seconds,
                            mode
                     FROM drops WHERE id = :id";

pub(crate) fn load_rules(
    conn: &Connection,
    drop_id: &DropId,
) -> rusqlite::Result<Option<DropRules>> {
    conn.prepare_cached(RULES)?
        .query_row(named_params! {":id": drop_id.as_str()}, |r| {
            Ok(DropRules {
                schedule: DropSchedule {
                    starts_at: from_millis(r.get(0)?),
                    ends_at: from_millis(r.get(1)?),
                    override_state: r
                        .get::<_, Option<String>>(2)?
                        .as_deref()
                        .and_then(OverrideState::parse),
                },
                per_buyer_limit: r.get(3)?,
                hold_seconds: r.get(4)?,
                mode: Mode::parse(&r.get::<_, String>(5)?).unwrap_or_default(),
            })
        })
        .optional()
}

/// A SKU's stock and current price.
pub(crate) struct SkuRow {
    pub stock: SkuStock,
    pub price: Money,
}

const SKU: &str = "SELECT stock_total, held, sold, price_amount, currency
                   FROM skus WHERE drop_id = :drop AND sku = :sku";

pub(crate) fn load_sku(
    conn: &Connection,
    drop_id: &str,
    sku: &str,
) -> rusqlite::Result<Option<SkuRow>> {
    conn.prepare_cached(SKU)?
        .query_row(named_params! {":drop": drop_id, ":sku": sku}, |r| {
            Ok(SkuRow {
                stock: SkuStock {
                    total: r.get(0)?,
                    held: r.get(1)?,
                    sold: r.get(2)?,
                },
                price: Money {
                    amount: r.get(3)?,
                    currency: Currency::from_trusted(r.get(4)?),
                },
            })
        })
        .optional()
}

const SAVE_STOCK: &str = "UPDATE skus SET stock_total = :total, held = :held, sold = :sold
                          WHERE drop_id = :drop AND sku = :sku";

pub(crate) fn save_stock(
    conn: &Connection,
    drop_id: &str,
    sku: &str,
    stock: SkuStock,
) -> rusqlite::Result<()> {
    conn.prepare_cached(SAVE_STOCK)?.execute(named_params! {
        ":total": stock.total, ":held": stock.held, ":sold": stock.sold,
        ":drop": drop_id, ":sku": sku,
    })?;
    Ok(())
}

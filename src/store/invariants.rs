//! The invariants of docs/design.md, checked from the database itself. Used by tests, the
//! benchmark and the kill loop after every phase.

use rusqlite::Connection;

use super::StoreError;

/// drop, sku, total, held, sold, active hold units, confirmed hold units, ordered units.
type SkuAudit = (String, String, i64, i64, i64, i64, i64, i64);

const SKUS: &str = "SELECT s.drop_id, s.sku, s.stock_total, s.held, s.sold,
        (SELECT COALESCE(SUM(quantity), 0) FROM holds h
          WHERE h.drop_id = s.drop_id AND h.sku = s.sku AND h.state = 'active'),
        (SELECT COALESCE(SUM(quantity), 0) FROM holds h
          WHERE h.drop_id = s.drop_id AND h.sku = s.sku AND h.state = 'confirmed'),
        (SELECT COALESCE(SUM(quantity), 0) FROM orders o
          WHERE o.drop_id = s.drop_id AND o.sku = s.sku)
     FROM skus s";

const OVER_LIMIT: &str = "SELECT h.drop_id, h.buyer, SUM(h.quantity), d.per_buyer_limit
     FROM holds h JOIN drops d ON d.id = h.drop_id
     WHERE h.state IN ('active', 'confirmed')
     GROUP BY h.drop_id, h.buyer HAVING SUM(h.quantity) > d.per_buyer_limit
     LIMIT 1";

/// An offer is a hold of the waiter's, for the SKU they waited for.
const STRAY_OFFER: &str = "SELECT w.seq FROM waitlist w LEFT JOIN holds h ON h.seq = w.hold_seq
     WHERE w.state = 'offered' AND (h.seq IS NULL OR h.buyer != w.buyer OR h.sku != w.sku
                                    OR h.drop_id != w.drop_id OR h.quantity > w.quantity)
     LIMIT 1";

/// A raffle's win is a hold of the winner's, for the SKU and units they won; an entry the draw
/// did not reach has none; a SKU never gives more in wins than it had.
const STRAY_WIN: &str = "SELECT e.buyer, e.sku FROM draw_entries e
     LEFT JOIN holds h ON h.seq = e.hold_seq
     WHERE (e.won > 0 AND (h.seq IS NULL OR h.buyer != e.buyer OR h.sku != e.sku
                           OR h.drop_id != e.drop_id OR h.quantity != e.won
                           OR e.won > e.quantity))
        OR (e.won = 0 AND e.hold_seq IS NOT NULL)
     LIMIT 1";

/// Units reserved for access-code tiers are units nobody holds or bought.
const OVER_RESERVED: &str = "SELECT s.drop_id, s.sku FROM skus s
     JOIN code_reserves r ON r.drop_id = s.drop_id AND r.sku = s.sku
     GROUP BY s.drop_id, s.sku
     HAVING SUM(r.reserved - r.taken) > MAX(s.stock_total - s.held - s.sold, 0)
     LIMIT 1";

/// What is wrong, if anything: `Ok(Err(description))` for a broken invariant.
pub fn check_invariants(conn: &Connection) -> Result<Result<(), String>, StoreError> {
    let rows: Vec<SkuAudit> = conn
        .prepare(SKUS)?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (drop, sku, total, held, sold, active, confirmed, ordered) in rows {
        if total - held - sold < 0 || held != active || sold != confirmed || sold != ordered {
            return Ok(Err(format!(
                "{drop}/{sku}: total {total} held {held} (active holds {active}) sold {sold} \
                 (confirmed holds {confirmed}, ordered {ordered})"
            )));
        }
    }
    let over: Option<(String, String, i64, i64)> = conn
        .prepare(OVER_LIMIT)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .next()
        .transpose()?;
    if let Some((drop, buyer, units, limit)) = over {
        return Ok(Err(format!(
            "{buyer} has {units} units of {drop}, over the limit of {limit}"
        )));
    }
    let stray: Option<i64> = conn
        .prepare(STRAY_OFFER)?
        .query_map([], |r| r.get(0))?
        .next()
        .transpose()?;
    if let Some(seq) = stray {
        return Ok(Err(format!(
            "waiting-list entry {seq} was offered a hold that is not its buyer's units of its SKU"
        )));
    }
    let over: Option<(String, String)> = conn
        .prepare(OVER_RESERVED)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .next()
        .transpose()?;
    if let Some((drop, sku)) = over {
        return Ok(Err(format!(
            "{drop}/{sku}: more units reserved for access codes than are free"
        )));
    }
    let stray: Option<(String, String)> = conn
        .prepare(STRAY_WIN)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .next()
        .transpose()?;
    if let Some((buyer, sku)) = stray {
        return Ok(Err(format!(
            "{buyer}'s raffle entry for {sku} does not match the hold it won"
        )));
    }
    Ok(Ok(()))
}

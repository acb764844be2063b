//! Access codes in the database: made by an admin (only their hashes kept), checked and counted
//! by a hold in its own transaction, listed for export.

use chrono::{DateTime, Utc};
use rusqlite::{named_params, Connection, OptionalExtension};

use crate::domain::access_codes::{
    check_use, code_hash, generate, CodeLimits, CodeView, CreatedCode, NewCodes,
};
use crate::domain::clock::from_millis;
use crate::domain::ledger::Event;
use crate::domain::{DropId, Refusal};

use super::batch::Batch;
use super::drop_rows::load_rules;
use super::tx::Outcome;
use super::StoreError;

const INSERT: &str = "INSERT INTO access_codes (drop_id, code_hash, tier, max_uses, valid_from,
                          valid_until, created_at)
                      VALUES (:drop, :hash, :tier, :max_uses, :from, :until, :now)";

/// Makes `spec.count` codes for `drop_id`; answers each with its plain text, shown once.
pub(crate) fn create(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    spec: &NewCodes,
) -> Result<Vec<CreatedCode>, Outcome> {
    spec.check()?;
    if load_rules(conn, drop_id)?.is_none() {
        return Err(Refusal::not_found(format!("drop {drop_id}")).into());
    }
    if let (Some(sku), Some(units)) = (&spec.sku, spec.reserved) {
        reserve(conn, batch, drop_id, sku, &spec.tier, units)?;
    }
    let now = from_millis(batch.now.timestamp_millis());
    let mut stmt = conn.prepare_cached(INSERT)?;
    let mut made = Vec::with_capacity(spec.count as usize);
    while made.len() < spec.count as usize {
        let code = generate();
        let inserted = stmt.execute(named_params! {
            ":drop": drop_id.as_str(), ":hash": code_hash(drop_id.as_str(), &code).as_slice(),
            ":tier": spec.tier, ":max_uses": spec.max_uses,
            ":from": spec.valid_from.map(|t| t.timestamp_millis()),
            ":until": spec.valid_until.map(|t| t.timestamp_millis()),
            ":now": now.timestamp_millis(),
        });
        match inserted {
            Ok(_) => {}
            // 80 random bits collide never in practice; a collision just draws again.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                continue
            }
            Err(e) => return Err(StoreError::from(e).into()),
        }
        made.push(CreatedCode {
            code,
            view: CodeView {
                id: format!("code_{}", conn.last_insert_rowid()),
                drop_id: drop_id.to_string(),
                tier: spec.tier.clone(),
                max_uses: spec.max_uses,
                uses: 0,
                valid_from: spec.valid_from.map(|t| from_millis(t.timestamp_millis())),
                valid_until: spec.valid_until.map(|t| from_millis(t.timestamp_millis())),
                created_at: now,
            },
        });
    }
    Ok(made)
}

const FREE: &str = "SELECT s.stock_total - s.held - s.sold
                        - (SELECT COALESCE(SUM(r.reserved - r.taken), 0) FROM code_reserves r
                           WHERE r.drop_id = s.drop_id AND r.sku = s.sku)
                    FROM skus s WHERE s.drop_id = :drop AND s.sku = :sku";
const RESERVE: &str = "INSERT INTO code_reserves (drop_id, sku, tier, reserved)
                       VALUES (:drop, :sku, :tier, :units)
                       ON CONFLICT (drop_id, sku, tier) DO UPDATE
                       SET reserved = reserved + excluded.reserved";

/// Sets `units` of `sku` aside for `tier`, out of what nobody holds, bought or reserved.
fn reserve(
    conn: &Connection,
    batch: &mut Batch<'_>,
    drop_id: &DropId,
    sku: &str,
    tier: &str,
    units: i64,
) -> Result<(), Outcome> {
    let free: Option<i64> = conn
        .prepare_cached(FREE)?
        .query_row(
            named_params! {":drop": drop_id.as_str(), ":sku": sku},
            |r| r.get(0),
        )
        .optional()?;
    let Some(free) = free else {
        return Err(Refusal::UnknownSku {
            drop_id: drop_id.to_string(),
            sku: sku.to_owned(),
        }
        .into());
    };
    if units > free {
        return Err(
            Refusal::invalid(format!("only {free} units of {sku} are free to reserve")).into(),
        );
    }
    conn.prepare_cached(RESERVE)?.execute(named_params! {
        ":drop": drop_id.as_str(), ":sku": sku, ":tier": tier, ":units": units,
    })?;
    batch.record(
        drop_id,
        Event::Reserve {
            sku: sku.to_owned(),
            tier: tier.to_owned(),
            units,
        },
    );
    batch.touch(drop_id);
    Ok(())
}

const LEFT: &str = "SELECT reserved - taken FROM code_reserves
                    WHERE drop_id = :drop AND sku = :sku AND tier = :tier";
const TAKE: &str = "UPDATE code_reserves SET taken = taken + :units
                    WHERE drop_id = :drop AND sku = :sku AND tier = :tier";

const RESERVED: &str = "SELECT COALESCE(SUM(reserved - taken), 0) FROM code_reserves
                        WHERE drop_id = :drop AND sku = :sku";

/// Units of `sku` still reserved for any tier.
pub(crate) fn reserved_of(conn: &Connection, drop_id: &DropId, sku: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(RESERVED)?.query_row(
        named_params! {":drop": drop_id.as_str(), ":sku": sku},
        |r| r.get(0),
    )
}

/// Units of `sku` still reserved for `tier`.
pub(crate) fn reserve_left(
    conn: &Connection,
    drop_id: &DropId,
    sku: &str,
    tier: &str,
) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached(LEFT)?
        .query_row(
            named_params! {":drop": drop_id.as_str(), ":sku": sku, ":tier": tier},
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// A code hold took `units` of its tier's reservation.
pub(crate) fn take_reserved(
    conn: &Connection,
    drop_id: &DropId,
    sku: &str,
    tier: &str,
    units: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(TAKE)?.execute(named_params! {
        ":drop": drop_id.as_str(), ":sku": sku, ":tier": tier, ":units": units,
    })?;
    Ok(())
}

const FIND: &str = "SELECT seq, tier, max_uses, uses, valid_from, valid_until FROM access_codes
                    WHERE drop_id = :drop AND code_hash = :hash";
const COUNT_USE: &str = "UPDATE access_codes SET uses = uses + 1 WHERE seq = :seq";

/// A code a hold may use now: its number and tier. Refused: unknown, outside its window, used
/// up.
pub(crate) fn check(
    conn: &Connection,
    drop_id: &DropId,
    code: &str,
    now: DateTime<Utc>,
) -> Result<(i64, String), Outcome> {
    let hash = code_hash(drop_id.as_str(), code);
    let found: Option<(i64, String, CodeLimits)> = conn
        .prepare_cached(FIND)?
        .query_row(
            named_params! {":drop": drop_id.as_str(), ":hash": hash.as_slice()},
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    CodeLimits {
                        max_uses: r.get(2)?,
                        uses: r.get(3)?,
                        valid_from: r.get(4)?,
                        valid_until: r.get(5)?,
                    },
                ))
            },
        )
        .optional()?;
    let Some((seq, tier, limits)) = found else {
        return Err(Refusal::CodeInvalid {
            drop_id: drop_id.to_string(),
            reason: "no such code".into(),
        }
        .into());
    };
    check_use(limits, now.timestamp_millis(), drop_id.as_str(), &tier)?;
    Ok((seq, tier))
}

/// Counts one use of code `seq` for the hold just written.
pub(crate) fn count_use(conn: &Connection, seq: i64, hold_seq: i64) -> rusqlite::Result<()> {
    const MARK: &str = "UPDATE holds SET code_seq = :code WHERE seq = :hold";
    conn.prepare_cached(COUNT_USE)?
        .execute(named_params! {":seq": seq})?;
    conn.prepare_cached(MARK)?
        .execute(named_params! {":code": seq, ":hold": hold_seq})?;
    Ok(())
}

const PAGE: &str = "SELECT seq, tier, max_uses, uses, valid_from, valid_until, created_at
                    FROM access_codes WHERE drop_id = :drop AND seq > :after
                    ORDER BY seq LIMIT :limit";

/// Up to `limit` of a drop's codes after number `after`, in order (for the NDJSON export).
pub fn page(
    conn: &Connection,
    drop_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, CodeView)>, StoreError> {
    Ok(conn
        .prepare_cached(PAGE)?
        .query_map(
            named_params! {":drop": drop_id, ":after": after, ":limit": limit},
            |r| {
                let seq: i64 = r.get(0)?;
                Ok((
                    seq,
                    CodeView {
                        id: format!("code_{seq}"),
                        drop_id: drop_id.to_owned(),
                        tier: r.get(1)?,
                        max_uses: r.get(2)?,
                        uses: r.get(3)?,
                        valid_from: r.get::<_, Option<i64>>(4)?.map(from_millis),
                        valid_until: r.get::<_, Option<i64>>(5)?.map(from_millis),
                        created_at: from_millis(r.get(6)?),
                    },
                ))
            },
        )?
        .collect::<Result<_, _>>()?)
}

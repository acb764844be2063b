//! The writer's memory of the drops it works on: each drop's rules and attempt counter, its SKUs'
//! stock, and every buyer's units, loaded on first touch and changed by every command. SKU rows
//! and counters are written once per batch (`flush`), so a hold costs one SKU-row write per
//! batch, not one per hold, and refusals (`drop-not-live`, `limit-exceeded`, `sold-out`) need no
//! statement. Only the writer changes these rows, so memory stays right as long as it is
//! forgotten whenever a batch rolls back and whenever an admin command changes a drop through
//! SQL (`forget_drop`, after `flush`). Debug builds compare memory with a SQL recount after
//! batches (`verify`).

use std::collections::HashMap;

use rusqlite::{named_params, Connection, OptionalExtension};

use crate::domain::{BuyerId, DropId, Money, SkuStock};

use super::drop_rows::{self as drops, DropRules};

/// How a buyer's units are first read. The writer reads a whole drop's at once (a scan, once);
/// the benchmark's naive baseline, which forgets after every command, reads one buyer's through
/// an index it creates for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuyerLoad {
    WholeDrop,
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    OneBuyer,
}

pub(crate) struct Memory {
    drops: HashMap<DropId, DropMemory>,
    buyer_load: BuyerLoad,
}

pub(crate) struct DropMemory {
    pub rules: DropRules,
    attempt_seq: i64,
    seq_dirty: bool,
    skus: HashMap<String, SkuMemory>,
    /// Units per buyer: active holds (a due one until the sweep ends it) and confirmed ones.
    /// `None` until the first attempt on the drop needs them.
    buyers: Option<HashMap<String, i64>>,
}

pub(crate) struct SkuMemory {
    pub stock: SkuStock,
    pub price: Money,
    /// Buyers on the SKU's waiting list: freed units go to them first (see `waitlist`).
    pub waiters: i64,
    /// Units still reserved for access-code tiers (see `access_codes`): not for anyone else.
    pub reserved: i64,
    dirty: bool,
}

const WAITERS: &str = "SELECT COUNT(*) FROM waitlist
                       WHERE drop_id = :drop AND sku = :sku AND state = 'waiting'";
const RESERVED: &str = "SELECT COALESCE(SUM(reserved - taken), 0) FROM code_reserves
                        WHERE drop_id = :drop AND sku = :sku";
const SEQ: &str = "SELECT attempt_seq FROM drops WHERE id = :id";
const UNITS_BY_BUYER: &str = "SELECT buyer, SUM(quantity) FROM holds
                              WHERE drop_id = :drop AND state IN ('active', 'confirmed')
                              GROUP BY buyer";
const UNITS_OF_BUYER: &str = "SELECT COALESCE(SUM(quantity), 0) FROM holds
                              WHERE drop_id = :drop AND buyer = :buyer
                                AND state IN ('active', 'confirmed')";

impl Memory {
    pub fn new(buyer_load: BuyerLoad) -> Self {
        Self {
            drops: HashMap::new(),
            buyer_load,
        }
    }

    /// The drop's memory, read on first touch; `None` if there is no such drop.
    pub fn drop_mut(
        &mut self,
        conn: &Connection,
        drop_id: &DropId,
    ) -> rusqlite::Result<Option<&mut DropMemory>> {
        if !self.drops.contains_key(drop_id) {
            let Some(rules) = drops::load_rules(conn, drop_id)? else {
                return Ok(None);
            };
            let attempt_seq = conn
                .prepare_cached(SEQ)?
                .query_row(named_params! {":id": drop_id.as_str()}, |r| r.get(0))?;
            self.drops.insert(
                drop_id.clone(),
                DropMemory {
                    rules,
                    attempt_seq,
                    seq_dirty: false,
                    skus: HashMap::new(),
                    buyers: None,
                },
            );
        }
        Ok(self.drops.get_mut(drop_id))
    }

    pub fn buyer_load(&self) -> BuyerLoad {
        self.buyer_load
    }

    /// Writes every changed SKU row and attempt counter into the open transaction.
    pub fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        const SAVE_SEQ: &str = "UPDATE drops SET attempt_seq = :seq WHERE id = :id";
        for (drop_id, drop) in &mut self.drops {
            if drop.seq_dirty {
                conn.prepare_cached(SAVE_SEQ)?
                    .execute(named_params! {":seq": drop.attempt_seq, ":id": drop_id.as_str()})?;
                drop.seq_dirty = false;
            }
            for (sku, mem) in &mut drop.skus {
                if mem.dirty {
                    drops::save_stock(conn, drop_id.as_str(), sku, mem.stock)?;
                    mem.dirty = false;
                }
            }
        }
        Ok(())
    }

    /// After a rollback memory is ahead of the database: start again from the database.
    pub fn forget(&mut self) {
        self.drops.clear();
    }

    /// After a change made through SQL (admin commands), once memory was flushed.
    pub fn forget_drop(&mut self, drop_id: &DropId) {
        self.drops.remove(drop_id);
    }

    /// Compares memory with a recount from the database (inside the batch's transaction, after
    /// `flush`): the differential check of debug builds and of the kill loop.
    pub fn verify(&self, conn: &Connection) -> Result<(), String> {
        const RECOUNT: &str = "SELECT
              (SELECT COALESCE(SUM(quantity), 0) FROM holds
                WHERE drop_id = :drop AND sku = :sku AND state = 'active'),
              (SELECT COALESCE(SUM(quantity), 0) FROM holds
                WHERE drop_id = :drop AND sku = :sku AND state = 'confirmed'),
              (SELECT stock_total FROM skus WHERE drop_id = :drop AND sku = :sku)";
        let failed = |e: rusqlite::Error| format!("recount failed: {e}");
        for (drop_id, drop) in &self.drops {
            for (sku, mem) in &drop.skus {
                let (held, sold, total): (i64, i64, i64) = conn
                    .prepare_cached(RECOUNT)
                    .and_then(|mut s| {
                        s.query_row(
                            named_params! {":drop": drop_id.as_str(), ":sku": sku},
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                    })
                    .map_err(failed)?;
                let counted = SkuStock { total, held, sold };
                if counted != mem.stock {
                    return Err(format!(
                        "{drop_id}/{sku}: memory has {:?}, the database {counted:?}",
                        mem.stock
                    ));
                }
                let kept = reserved(conn, drop_id.as_str(), sku).map_err(failed)?;
                if kept != mem.reserved {
                    return Err(format!(
                        "{drop_id}/{sku}: memory has {} reserved, the database {kept}",
                        mem.reserved
                    ));
                }
                let waiting = waiters(conn, drop_id.as_str(), sku).map_err(failed)?;
                if waiting != mem.waiters {
                    return Err(format!(
                        "{drop_id}/{sku}: memory has {} waiters, the database {waiting}",
                        mem.waiters
                    ));
                }
            }
            if let Some(buyers) = &drop.buyers {
                let counted = units_by_buyer(conn, drop_id).map_err(failed)?;
                let remembered: HashMap<&String, &i64> =
                    buyers.iter().filter(|(_, units)| **units != 0).collect();
                let counted: HashMap<&String, &i64> = counted.iter().collect();
                if remembered != counted {
                    return Err(format!(
                        "{drop_id}: memory's units per buyer differ from the database's"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn reserved(conn: &Connection, drop_id: &str, sku: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(RESERVED)?
        .query_row(named_params! {":drop": drop_id, ":sku": sku}, |r| r.get(0))
}

fn waiters(conn: &Connection, drop_id: &str, sku: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(WAITERS)?
        .query_row(named_params! {":drop": drop_id, ":sku": sku}, |r| r.get(0))
}

fn units_by_buyer(conn: &Connection, drop_id: &DropId) -> rusqlite::Result<HashMap<String, i64>> {
    conn.prepare_cached(UNITS_BY_BUYER)?
        .query_map(named_params! {":drop": drop_id.as_str()}, |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect()
}

impl DropMemory {
    /// The next number in the drop's arrival order.
    pub fn next_seq(&mut self) -> i64 {
        self.attempt_seq += 1;
        self.seq_dirty = true;
        self.attempt_seq
    }

    /// The SKU's stock and price, read on first touch; `None` if the drop has no such SKU.
    pub fn sku(
        &mut self,
        conn: &Connection,
        drop_id: &str,
        sku: &str,
    ) -> rusqlite::Result<Option<&mut SkuMemory>> {
        if !self.skus.contains_key(sku) {
            let Some(row) = drops::load_sku(conn, drop_id, sku)? else {
                return Ok(None);
            };
            let waiters = waiters(conn, drop_id, sku)?;
            let reserved = reserved(conn, drop_id, sku)?;
            self.skus.insert(
                sku.to_owned(),
                SkuMemory {
                    stock: row.stock,
                    price: row.price,
                    waiters,
                    reserved,
                    dirty: false,
                },
            );
        }
        Ok(self.skus.get_mut(sku))
    }

    /// A buyer's units in this drop (see `buyers`).
    pub fn used(
        &mut self,
        conn: &Connection,
        drop_id: &DropId,
        buyer: &BuyerId,
        load: BuyerLoad,
    ) -> rusqlite::Result<i64> {
        if self.buyers.is_none() {
            self.buyers = Some(match load {
                BuyerLoad::WholeDrop => units_by_buyer(conn, drop_id)?,
                BuyerLoad::OneBuyer => HashMap::new(),
            });
        }
        let buyers = self.buyers.get_or_insert_with(HashMap::new);
        if let Some(units) = buyers.get(buyer.as_str()) {
            return Ok(*units);
        }
        let units = match load {
            BuyerLoad::WholeDrop => 0,
            BuyerLoad::OneBuyer => conn
                .prepare_cached(UNITS_OF_BUYER)?
                .query_row(
                    named_params! {":drop": drop_id.as_str(), ":buyer": buyer.as_str()},
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0),
        };
        buyers.insert(buyer.as_str().to_owned(), units);
        Ok(units)
    }

    /// Changes a buyer's units, if memory has them (otherwise the next read counts the rows).
    pub fn add_units(&mut self, buyer: &str, delta: i64) {
        if let Some(units) = self
            .buyers
            .as_mut()
            .and_then(|buyers| buyers.get_mut(buyer))
        {
            *units += delta;
        }
    }
}

impl SkuMemory {
    pub fn set(&mut self, stock: SkuStock) {
        self.stock = stock;
        self.dirty = true;
    }

    /// The stock as a buyer with `own` units of a reservation left may take it: the other
    /// reservations count as held.
    pub fn for_sale(&self, own: i64) -> SkuStock {
        SkuStock {
            held: self.stock.held + (self.reserved - own).max(0),
            ..self.stock
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        super::super::migrations::migrate(&mut conn).expect("schema");
        conn.execute_batch(
            "INSERT INTO drops (id, name, starts_at, ends_at, per_buyer_limit, hold_seconds,
                                created_at)
                 VALUES ('d', 'D', 0, 10, 5, 60, 0);
             INSERT INTO skus (drop_id, sku, name, price_amount, currency, position, stock_total,
                               held, sold)
                 VALUES ('d', 'S1', 'S1', 100, 'EUR', 0, 10, 2, 1);
             INSERT INTO holds (secret, drop_id, sku, buyer, quantity, attempt_seq, state,
                                created_at, expires_at)
                 VALUES (1, 'd', 'S1', 'alice', 2, 1, 'active', 0, 60),
                        (2, 'd', 'S1', 'bob', 1, 2, 'confirmed', 0, 60);",
        )
        .expect("rows");
        conn
    }

    #[test]
    fn memory_loaded_from_the_rows_agrees_with_the_recount() {
        let conn = db();
        let mut memory = Memory::new(BuyerLoad::WholeDrop);
        let drop_id = DropId::from_trusted("d".into());
        let drop = memory
            .drop_mut(&conn, &drop_id)
            .expect("read")
            .expect("drop");
        assert_eq!(
            drop.sku(&conn, "d", "S1")
                .expect("read")
                .expect("sku")
                .stock
                .available(),
            7
        );
        let alice = BuyerId::parse("alice").expect("buyer");
        assert_eq!(
            drop.used(&conn, &drop_id, &alice, BuyerLoad::WholeDrop)
                .expect("read"),
            2
        );
        assert_eq!(memory.verify(&conn), Ok(()));
    }

    #[test]
    fn the_differential_check_catches_memory_that_drifted() {
        let conn = db();
        let drop_id = DropId::from_trusted("d".into());
        let alice = BuyerId::parse("alice").expect("buyer");

        // Stock changed in memory but not in the rows.
        let mut memory = Memory::new(BuyerLoad::WholeDrop);
        let drop = memory
            .drop_mut(&conn, &drop_id)
            .expect("read")
            .expect("drop");
        let sku = drop.sku(&conn, "d", "S1").expect("read").expect("sku");
        sku.set(SkuStock {
            held: 3,
            ..sku.stock
        });
        memory.flush(&conn).expect("flush");
        assert!(
            memory.verify(&conn).is_err(),
            "held 3 against one active hold of 2"
        );

        // A buyer's units wrong in memory.
        let mut memory = Memory::new(BuyerLoad::WholeDrop);
        let drop = memory
            .drop_mut(&conn, &drop_id)
            .expect("read")
            .expect("drop");
        drop.used(&conn, &drop_id, &alice, BuyerLoad::WholeDrop)
            .expect("read");
        drop.add_units("alice", 1);
        assert!(memory.verify(&conn).is_err(), "alice has 2 units, not 3");
    }
}

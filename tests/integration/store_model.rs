//! The domain's property test against the real store: random sequences of hold, confirm,
//! release, expire and restock, sent through the writer, keep every invariant.

use dropd::store::audit::Acting;
use std::sync::Arc;

use chrono::Duration;
use dropd::domain::views::{NewDrop, NewSku};
use dropd::domain::{BuyerId, Currency, HoldId, IdempotencyKey, ManualClock, Money};
use dropd::store::{ConfirmHold, IdempotentRequest, PlaceHold, Store, StoreConfig, Synchronous};
use proptest::prelude::*;

use crate::support::app::start_time;
use crate::support::db::{check_invariants, open_db};

#[derive(Debug, Clone)]
enum Op {
    Hold { buyer: u8, quantity: i64 },
    Confirm(usize),
    Release(usize),
    Expire,
    Restock(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 1i64..4).prop_map(|(buyer, quantity)| Op::Hold { buyer, quantity }),
        2 => any::<usize>().prop_map(Op::Confirm),
        1 => any::<usize>().prop_map(Op::Release),
        1 => Just(Op::Expire),
        1 => (-5i64..6).prop_map(Op::Restock),
    ]
}

fn open_store(path: &std::path::Path, synchronous: Synchronous, clock: ManualClock) -> Store {
    Store::open(
        &StoreConfig {
            path: path.to_owned(),
            synchronous,
            batch_limit: 64,
            queue_size: 64,
            read_pool_size: 1,
            naive_writers: false,
            checkpoint_gate: None,
            idempotency_retention: dropd::defaults::IDEMPOTENCY_RETENTION,
            outbox_retention: dropd::defaults::OUTBOX_RETENTION,
            sweep_limit: 2_000,
            box_id: None,
            ledger_key: None,
            ledger: true,
        },
        Arc::new(clock),
        None,
    )
    .expect("store opens")
}

/// A live drop with one SKU `S`, a limit of 3 and 60-second holds.
fn drop_spec(id: &str, stock: i64) -> NewDrop {
    NewDrop {
        id: id.into(),
        name: id.into(),
        description: String::new(),
        starts_at: start_time() - Duration::minutes(1),
        ends_at: start_time() + Duration::days(1),
        per_buyer_limit: 3,
        hold_seconds: 60,
        skus: vec![NewSku {
            sku: "S".into(),
            name: "S".into(),
            price: Money {
                amount: 100,
                currency: Currency::parse("EUR").expect("currency"),
            },
            stock,
        }],
        mode: Default::default(),
        admission_rate: None,
        admission_seconds: None,
    }
}

fn run(stock: i64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dropd.db");
    let clock = ManualClock::new(start_time());
    let store = open_store(&path, Synchronous::Normal, clock.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let writer = store.writer.clone();
    rt.block_on(writer.create_drop(Acting::by("test"), drop_spec("p", stock)))
        .expect("writer answers")
        .expect("drop created");

    let mut holds: Vec<(BuyerId, HoldId)> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let req = |buyer: &BuyerId| IdempotentRequest {
            buyer: buyer.clone(),
            key: IdempotencyKey::parse(&format!("op-{i}")).expect("key"),
            fingerprint: [i as u8; 32],
        };
        match op {
            Op::Hold { buyer, quantity } => {
                let buyer = BuyerId::parse(&format!("b{buyer}")).expect("buyer");
                let cmd = PlaceHold {
                    drop_id: dropd::domain::DropId::parse("p").expect("id"),
                    sku: "S".into(),
                    quantity,
                    admitted_until: None,
                    code: None,
                };
                let answer = rt
                    .block_on(writer.place_hold(req(&buyer), cmd))
                    .expect("writer answers");
                if let Ok(hold) = answer.result {
                    holds.push((buyer, HoldId::from_trusted(hold.hold_id)));
                }
            }
            Op::Confirm(n) | Op::Release(n) if !holds.is_empty() => {
                let (buyer, hold_id) = holds[n % holds.len()].clone();
                if matches!(op, Op::Confirm(_)) {
                    let cmd = ConfirmHold {
                        hold_id,
                        payment_ref: "pi".into(),
                        service: None,
                    };
                    rt.block_on(writer.confirm_hold(req(&buyer), cmd))
                        .expect("writer answers");
                } else {
                    let _ = rt
                        .block_on(writer.release_hold(buyer, hold_id))
                        .expect("writer answers");
                }
            }
            Op::Expire => {
                clock.advance(Duration::seconds(61));
                rt.block_on(writer.sync()).expect("writer answers");
            }
            Op::Restock(delta) => {
                let drop_id = dropd::domain::DropId::parse("p").expect("id");
                let _ = rt
                    .block_on(writer.adjust_stock(Acting::by("test"), drop_id, "S".into(), delta))
                    .expect("writer answers");
            }
            _ => {}
        }
        let conn = open_db(&path);
        if let Err(broken) = check_invariants(&conn) {
            return Err(TestCaseError::fail(format!("after op {i}: {broken}")));
        }
    }
    writer.shutdown();
    store.thread.join();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Invariant: whatever the sequence, units are conserved, never negative, and no buyer
    /// passes the limit, as the database itself records them.
    #[test]
    fn any_sequence_of_commands_keeps_the_store_consistent(
        stock in 0i64..12, ops in proptest::collection::vec(op(), 1..40)
    ) {
        run(stock, ops)?;
    }
}

/// A command that breaks a constraint fails alone: its batch is rolled back and run again
/// without it, and the other commands commit as if it had never been there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_dropped_from_its_batch_and_the_rest_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dropd.db");
    let store = open_store(&path, Synchronous::Full, ManualClock::new(start_time()));
    let writer = store.writer.clone();
    // The same admin key hash twice: the second insert breaks `key_hash UNIQUE`.
    let (a, dup, b, c) = tokio::join!(
        writer.create_admin_key("one".into(), [7; 32], "admin".into()),
        writer.create_admin_key("two".into(), [7; 32], "admin".into()),
        writer.create_drop(Acting::by("test"), drop_spec("first", 5)),
        writer.create_drop(Acting::by("test"), drop_spec("second", 5)),
    );
    assert!(a.is_ok());
    assert!(dup.is_err(), "the duplicate key fails");
    assert!(b.expect("writer answers").is_ok());
    assert!(c.expect("writer answers").is_ok());
    let conn = open_db(&path);
    let keys: i64 = conn
        .query_row("SELECT COUNT(*) FROM admin_keys", [], |r| r.get(0))
        .expect("count");
    let drops: i64 = conn
        .query_row("SELECT COUNT(*) FROM drops", [], |r| r.get(0))
        .expect("count");
    assert_eq!((keys, drops), (1, 2));

    // The writer goes on after it.
    let hold = writer
        .place_hold(
            IdempotentRequest {
                buyer: BuyerId::parse("b").expect("buyer"),
                key: IdempotencyKey::parse("k").expect("key"),
                fingerprint: [1; 32],
            },
            PlaceHold {
                drop_id: dropd::domain::DropId::parse("first").expect("id"),
                sku: "S".into(),
                quantity: 1,
                admitted_until: None,
                code: None,
            },
        )
        .await
        .expect("writer answers");
    assert_eq!(hold.result.map(|h| h.attempt_seq), Ok(1));
    writer.shutdown();
    store.thread.join();
}

//! Replays of hand-made ledgers: faithful ones, and ones the rule contradicts.

use super::*;
use crate::domain::ledger::SkuStock as Stock;

const T0: &str = "2026-12-01T18:00:00.000Z";

fn at(seconds: i64) -> String {
    let t0 = time(T0).expect("time");
    crate::domain::clock::rfc3339(t0 + Duration::seconds(seconds))
}

fn entry(position: i64, seconds: i64, event: Event) -> Entry {
    Entry {
        position,
        at: at(seconds),
        event,
    }
}

fn attempt(seq: i64, buyer: &str, outcome: &str, hold: Option<&str>) -> Event {
    Event::Attempt {
        attempt_seq: seq,
        buyer: buyer.into(),
        sku: "S1".into(),
        quantity: 1,
        outcome: outcome.into(),
        hold_id: hold.map(str::to_owned),
    }
}

fn created() -> Entry {
    entry(
        1,
        0,
        Event::Created {
            skus: vec![Stock {
                sku: "S1".into(),
                stock: 1,
            }],
            per_buyer_limit: 1,
            starts_at: at(-60),
            ends_at: at(3600),
            hold_seconds: Some(60),
        },
    )
}

fn run(entries: &[Entry], watch: Option<&str>) -> Report {
    let mut replay = Replay::start(&created(), None, watch.map(str::to_owned)).expect("starts");
    for e in entries {
        replay.apply(e).expect("applies");
    }
    replay.finish()
}

#[test]
fn a_faithful_history_replays_without_mismatch() {
    let report = run(
        &[
            entry(2, 1, attempt(1, "a", "held", Some("h1"))),
            entry(3, 2, attempt(2, "b", "sold-out", None)),
            entry(4, 3, attempt(3, "a", "limit-exceeded", None)),
            // Past h1's expiry, not swept: it counts for nothing.
            entry(5, 61, attempt(4, "b", "held", Some("h2"))),
            entry(6, 62, attempt(5, "c", "sold-out", None)),
        ],
        Some("b"),
    );
    assert_eq!(report.mismatches, vec![]);
    assert_eq!((report.attempts, report.reproduced), (5, 5));
    let mine = report.buyer.expect("b's attempts");
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].won_before.len(), 1, "a won before b's first");
    assert_eq!(mine[0].available, 0);
    assert_eq!(mine[1].available, 1, "a's hold had run out");
}

#[test]
fn an_outcome_the_rule_does_not_give_is_reported() {
    let report = run(
        &[
            entry(2, 1, attempt(1, "a", "held", Some("h1"))),
            entry(3, 2, attempt(2, "b", "held", Some("h2"))),
            entry(
                4,
                10,
                Event::Expiry {
                    hold_id: "h1".into(),
                    sku: "S1".into(),
                    quantity: 1,
                },
            ),
        ],
        None,
    );
    let what: Vec<&str> = report.mismatches.iter().map(|m| m.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "attempt 2 was answered held; the rule gives sold-out",
            "h1 expired before its time"
        ]
    );
    assert_eq!(report.reproduced, 1);
}

#[test]
fn an_attempt_after_the_close_or_a_ledger_without_creation_is_caught() {
    let report = run(&[entry(2, 4000, attempt(1, "a", "held", Some("h1")))], None);
    assert_eq!(report.mismatches.len(), 1);
    assert!(report.mismatches[0].what.contains("drop-not-live (closed)"));
    let not_created = entry(1, 0, attempt(1, "a", "held", Some("h1")));
    assert!(matches!(
        Replay::start(&not_created, Some(60), None),
        Err(Unreplayable::NoCreation(_))
    ));
}

#[test]
fn a_schedule_finer_than_a_millisecond_is_judged_as_stored() {
    // The writer stores times in whole milliseconds: a start half a millisecond after the
    // batch's time is, for it, the batch's time.
    let mut first = created();
    if let Event::Created { starts_at, .. } = &mut first.event {
        *starts_at = "2026-12-01T18:00:00.000500Z".into();
    }
    let mut replay = Replay::start(&first, None, None).expect("starts");
    replay
        .apply(&entry(2, 0, attempt(1, "a", "held", Some("h1"))))
        .expect("applies");
    let report = replay.finish();
    assert_eq!(report.mismatches, vec![]);
}

/// A one-unit raffle of two entrants, `a` and `b`, drawn with `seed` (revealed as `revealed`),
/// whose ledger says `winner` won `quantity`.
fn raffle(seed: [u8; 32], revealed: [u8; 32], winner: &str, quantity: i64) -> Report {
    let created = entry(
        1,
        0,
        Event::Created {
            skus: vec![Stock {
                sku: "S1".into(),
                stock: 1,
            }],
            per_buyer_limit: 1,
            starts_at: at(100),
            ends_at: at(3600),
            hold_seconds: Some(60),
        },
    );
    let enter = |position, buyer: &str| {
        entry(
            position,
            position,
            Event::Enter {
                buyer: buyer.into(),
                sku: "S1".into(),
                quantity: 1,
            },
        )
    };
    let entries = [
        entry(
            2,
            0,
            Event::Draw {
                commitment: crate::domain::queue::commitment(&seed),
            },
        ),
        enter(3, "a"),
        enter(4, "b"),
        entry(
            5,
            100,
            Event::Drawn {
                seed: hex::encode(revealed),
                entries: 2,
            },
        ),
        entry(
            6,
            100,
            Event::Win {
                attempt_seq: 1,
                buyer: winner.into(),
                sku: "S1".into(),
                quantity,
                hold_id: "h1".into(),
            },
        ),
    ];
    let mut replay = Replay::start(&created, None, None).expect("starts");
    for e in &entries {
        replay.apply(e).expect("applies");
    }
    replay.finish()
}

#[test]
fn a_raffle_replays_only_with_the_winner_its_revealed_seed_draws() {
    let seed = [3u8; 32];
    let entrants = [
        crate::domain::draw::Entrant {
            buyer_ref: "a",
            sku: "S1",
            quantity: 1,
        },
        crate::domain::draw::Entrant {
            buyer_ref: "b",
            sku: "S1",
            quantity: 1,
        },
    ];
    let drawn = crate::domain::draw::draw(&seed, 1, &[("S1".into(), 1)], &entrants);
    let winner = drawn
        .iter()
        .find(|d| d.won == 1)
        .map(|d| d.buyer_ref.clone())
        .expect("one winner");
    let loser = if winner == "a" { "b" } else { "a" };

    let faithful = raffle(seed, seed, &winner, 1);
    assert!(faithful.mismatches.is_empty(), "{:?}", faithful.mismatches);
    let draw = faithful.draw.expect("a raffle");
    assert_eq!((draw.entries, draw.winners, draw.missing), (2, 1, 0));
    assert!(draw.commitment_kept);

    let swapped = raffle(seed, seed, loser, 1);
    assert_eq!(
        swapped.mismatches.len(),
        2,
        "a wrong win, and the right one missing"
    );
    assert!(
        !raffle(seed, seed, &winner, 2).mismatches.is_empty(),
        "more than won"
    );
    let other_seed = raffle(seed, [4u8; 32], &winner, 1);
    assert!(other_seed
        .mismatches
        .iter()
        .any(|m| m.what.contains("does not match the commitment")));
}

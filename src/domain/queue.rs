//! A queue drop's rules, free of I/O: who is served in which order and when.
//!
//! Everyone who joins before the start is ordered by a keyed hash of the drop's seed and their
//! ledger name, so arriving early buys nothing and anyone holding the revealed seed and the
//! ledger's `join` entries can recompute the order. Later arrivals queue behind in arrival order.
//! The serving number then grows at the operator's rate: it is a function of the clock and the
//! rate changes (segments), never a counter someone must write every second.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How a drop hands out its stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// First come, first served (the default).
    #[default]
    Fcfs,
    /// A randomized pre-queue, then admission at `admission_rate` buyers per second.
    Queue,
    /// A raffle: entries before the start, a seeded draw of the winners at it.
    Draw,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fcfs => "fcfs",
            Mode::Queue => "queue",
            Mode::Draw => "draw",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fcfs" => Some(Mode::Fcfs),
            "queue" => Some(Mode::Queue),
            "draw" => Some(Mode::Draw),
            _ => None,
        }
    }
}

pub const MAX_ADMISSION_RATE: i64 = 100_000;

/// Whether a request on a drop in `mode` carries an admission that still runs at `now_ms` (the
/// handler checked the token's signature; its time is judged by the writer's clock).
pub fn check_admission(
    mode: Mode,
    admitted_until: Option<i64>,
    now_ms: i64,
    drop_id: &str,
) -> Result<(), crate::domain::Refusal> {
    use crate::domain::Refusal;
    if mode != Mode::Queue {
        return Ok(());
    }
    match admitted_until {
        None => Err(Refusal::NotAdmitted {
            drop_id: drop_id.to_owned(),
        }),
        Some(until) if until <= now_ms => Err(Refusal::AdmissionExpired {
            drop_id: drop_id.to_owned(),
            expired_at: crate::domain::clock::rfc3339(crate::domain::clock::from_millis(until)),
        }),
        Some(_) => Ok(()),
    }
}

/// The published commitment to a seed: SHA-256 of its bytes, hex.
pub fn commitment(seed: &[u8]) -> String {
    hex::encode(Sha256::digest(seed))
}

/// Where a buyer who joined before the start sorts: HMAC-SHA256 keyed by the seed over their
/// ledger name (the hex text, as the ledger writes it).
pub fn rank_key(seed: &[u8], buyer_ref: &str) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed).unwrap_or_else(|_| unreachable!());
    mac.update(buyer_ref.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The pre-start joiners in serving order (place 1 first): by rank key, then by name (a tie of
/// 256-bit keys never happens, but the order stays total).
pub fn seeded_order<'a>(seed: &[u8], refs: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut keyed: Vec<([u8; 32], &str)> =
        refs.into_iter().map(|r| (rank_key(seed, r), r)).collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, r)| r).collect()
}

/// From `at` (Unix ms) on, the serving number grows from `base` at `rate` per second, unless
/// `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub at: i64,
    pub base: i64,
    pub rate: i64,
    pub paused: bool,
}

impl Segment {
    fn serving_at(&self, t: i64) -> i64 {
        if self.paused || t <= self.at {
            return self.base;
        }
        self.base + self.rate.saturating_mul(t - self.at) / 1000
    }

    /// When this segment's serving number reaches `place`, if it ever does.
    fn reaches(&self, place: i64) -> Option<i64> {
        if place <= self.base {
            return Some(self.at);
        }
        if self.paused || self.rate <= 0 {
            return None;
        }
        // The first whole millisecond t with base + rate * (t - at) / 1000 >= place.
        let need = (place - self.base).saturating_mul(1000);
        Some(self.at + (need + self.rate - 1) / self.rate)
    }
}

/// The serving number's history, oldest segment first. Before the first segment nobody is
/// served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    pub segments: Vec<Segment>,
}

impl Admission {
    /// How many places are served at `t` (Unix ms): places `1..=serving` are admitted.
    pub fn serving_at(&self, t: i64) -> i64 {
        match self.segments.iter().rev().find(|s| s.at <= t) {
            Some(segment) => segment.serving_at(t),
            None => 0,
        }
    }

    /// When `place` was (or will be, at the current rate) admitted.
    pub fn admitted_at(&self, place: i64) -> Option<i64> {
        for (i, segment) in self.segments.iter().enumerate() {
            let until = self.segments.get(i + 1).map(|next| next.at);
            match segment.reaches(place) {
                Some(t) if until.is_none_or(|end| t < end) => return Some(t),
                _ => {}
            }
        }
        None
    }

    /// The latest rate and pause.
    pub fn current(&self) -> Option<&Segment> {
        self.segments.last()
    }

    /// The segment a change at `now` adds: serving goes on from where it is.
    pub fn change(&self, now: i64, rate: i64, paused: bool) -> Segment {
        Segment {
            at: now,
            base: self.serving_at(now),
            rate,
            paused,
        }
    }
}

/// Where a buyer stands, as their page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Joined before the start: the place is drawn at the start.
    Pending,
    /// In line behind the serving number.
    Waiting,
    /// Served: holds are open to them until the admission expires.
    Admitted,
    /// Served, and the admission ran out.
    Expired,
}

/// A buyer's standing at `now` given their place and the admission window.
pub fn standing(
    admission: &Admission,
    place: Option<i64>,
    now: i64,
    admission_ms: i64,
) -> (Standing, Option<i64>) {
    let Some(place) = place else {
        return (Standing::Pending, None);
    };
    if admission.serving_at(now) < place {
        return (Standing::Waiting, None);
    }
    let from = admission.admitted_at(place).unwrap_or(now);
    let until = from + admission_ms;
    if now < until {
        (Standing::Admitted, Some(until))
    } else {
        (Standing::Expired, Some(until))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueDraw {
    /// Buyers the draw ordered (those who joined before the start).
    pub drawn: i64,
    /// The revealed seed's SHA-256 is the commitment published when the queue opened.
    pub commitment_kept: bool,
    /// The named buyer's place, recomputed (a late arrival's as recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<i64>,
}

impl QueueDraw {
    /// The draw again from what the ledger holds: the seed against its commitment, the count
    /// against the pre-start joins, and `watch`'s place. Returns what does not agree.
    pub fn recompute(
        commitment: &str,
        seed_hex: &str,
        joined: i64,
        early: &[String],
        watch: Option<&str>,
    ) -> (QueueDraw, Vec<String>) {
        let seed = hex::decode(seed_hex).unwrap_or_default();
        let kept = commitment == self::commitment(&seed);
        let mut faults = Vec::new();
        if !kept {
            faults.push("the revealed seed does not match the commitment".to_owned());
        }
        if joined != early.len() as i64 {
            faults.push(format!(
                "the draw ordered {joined} buyers, {} joined before it",
                early.len()
            ));
        }
        let order = seeded_order(&seed, early.iter().map(String::as_str));
        let place = watch.and_then(|w| order.iter().position(|r| *r == w).map(|i| i as i64 + 1));
        let draw = QueueDraw {
            drawn: order.len() as i64,
            commitment_kept: kept,
            place,
        };
        (draw, faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at: i64, base: i64, rate: i64, paused: bool) -> Segment {
        Segment {
            at,
            base,
            rate,
            paused,
        }
    }

    #[test]
    fn serving_grows_at_the_rate_and_stops_while_paused() {
        let admission = Admission {
            segments: vec![
                at(1_000, 0, 10, false),
                at(3_000, 20, 0, true),
                at(5_000, 20, 100, false),
            ],
        };
        assert_eq!(admission.serving_at(0), 0);
        assert_eq!(admission.serving_at(1_000), 0);
        assert_eq!(admission.serving_at(1_100), 1);
        assert_eq!(admission.serving_at(2_000), 10);
        assert_eq!(admission.serving_at(4_999), 20);
        assert_eq!(admission.serving_at(6_000), 120);
    }

    #[test]
    fn a_place_is_admitted_when_serving_first_reaches_it() {
        let admission = Admission {
            segments: vec![
                at(1_000, 0, 10, false),
                at(3_000, 20, 0, true),
                at(5_000, 20, 100, false),
            ],
        };
        assert_eq!(admission.admitted_at(1), Some(1_100));
        assert_eq!(admission.admitted_at(20), Some(3_000));
        assert_eq!(admission.admitted_at(21), Some(5_010));
        for place in 1..200 {
            let t = admission.admitted_at(place).expect("admitted at some time");
            assert!(admission.serving_at(t) >= place, "place {place} at {t}");
            assert!(
                admission.serving_at(t - 1) < place,
                "place {place} before {t}"
            );
        }
        let paused = Admission {
            segments: vec![at(0, 5, 10, true)],
        };
        assert_eq!(paused.admitted_at(6), None);
    }

    #[test]
    fn the_order_depends_on_the_seed_not_on_arrival() {
        let refs: Vec<String> = (0..50).map(|i| format!("{i:032x}")).collect();
        let forward = seeded_order(b"seed-one", refs.iter().map(String::as_str));
        let backward = seeded_order(b"seed-one", refs.iter().rev().map(String::as_str));
        assert_eq!(forward, backward);
        let other = seeded_order(b"seed-two", refs.iter().map(String::as_str));
        assert_ne!(forward, other);
        assert_eq!(forward.len(), refs.len());
    }

    #[test]
    fn standing_follows_the_place_and_the_window() {
        let admission = Admission {
            segments: vec![at(0, 0, 1, false)],
        };
        assert_eq!(standing(&admission, None, 10, 500).0, Standing::Pending);
        assert_eq!(
            standing(&admission, Some(5), 4_000, 500).0,
            Standing::Waiting
        );
        assert_eq!(
            standing(&admission, Some(5), 5_100, 500),
            (Standing::Admitted, Some(5_500))
        );
        assert_eq!(
            standing(&admission, Some(5), 5_500, 500).0,
            Standing::Expired
        );
    }
}

//! Fair admission on the buyer write path: at most one write in flight per buyer, and token
//! buckets per client address and per buyer, so a scalper with one token or one host cannot
//! crowd honest buyers out of the writer's queue. Refusals are `429 too-many-requests` with a
//! jittered `Retry-After`, so refused clients do not come back in lockstep.
//!
//! The address is checked before anything that costs more than the check (the token, the
//! body); the buyer only once the token is verified, so an unverified `sub` is never trusted.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::HttpRequest;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use rand::Rng;

use crate::defaults;
use crate::domain::BuyerId;
use crate::http::codes::Code;
use crate::http::problem::ApiError;

const SHARDS: usize = 32;

/// A token bucket: `rate` requests per second sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub rate: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Bucket {
    /// Zero counts as one: a bucket that admits nothing is `--rate-limit off`'s opposite, and
    /// nobody means it.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        }
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.rate).allow_burst(self.burst)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// `--rate-limit off` lifts every limit here (benchmarks send from one address).
    pub enabled: bool,
    pub per_ip: Bucket,
    pub per_buyer: Bucket,
    /// Peers whose `X-Forwarded-For` / `Forwarded` are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_ip: Bucket::new(defaults::IP_RATE, defaults::IP_BURST),
            per_buyer: Bucket::new(defaults::BUYER_RATE, defaults::BUYER_BURST),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Refusals by reason, for `/metrics`.
#[derive(Debug, Default)]
pub struct AdmissionStats {
    pub ip_limited: AtomicU64,
    pub buyer_limited: AtomicU64,
    pub busy: AtomicU64,
}

pub struct Admission {
    config: AdmissionConfig,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_buyer: DefaultKeyedRateLimiter<BuyerId>,
    in_flight: Vec<Mutex<HashSet<BuyerId>>>,
    hasher: RandomState,
    /// Address checks so far: every so often the idle buckets are forgotten.
    checks: AtomicU64,
    pub stats: AdmissionStats,
}

/// Address checks between two sweeps of idle buckets.
const FORGET_EVERY: u64 = 1 << 16;

/// A buyer's write in flight; dropping it lets the buyer's next write in.
pub struct Turn {
    admission: Option<Arc<Admission>>,
    buyer: BuyerId,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission
                .shard(&self.buyer)
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.buyer);
        }
    }
}

fn too_many(detail: &str, wait: Duration) -> ApiError {
    // Whole seconds, plus up to two more at random: refused clients spread out.
    let jitter = rand::rng().random_range(0..=2);
    let seconds = wait.as_secs() as u32 + u32::from(wait.subsec_nanos() > 0) + jitter;
    ApiError::new(Code::TooManyRequests, detail).retry_after(seconds.max(1))
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        Arc::new(Self {
            per_ip: RateLimiter::keyed(config.per_ip.quota()),
            per_buyer: RateLimiter::keyed(config.per_buyer.quota()),
            in_flight: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            hasher: RandomState::new(),
            checks: AtomicU64::new(0),
            config,
            stats: AdmissionStats::default(),
        })
    }

    fn shard(&self, buyer: &BuyerId) -> &Mutex<HashSet<BuyerId>> {
        &self.in_flight[self.hasher.hash_one(buyer) as usize % SHARDS]
    }

    /// The client's address: the socket's peer, or, when that peer is a trusted proxy, the
    /// nearest address in its forwarding headers that is not one of ours.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        if !self.trusted(peer) {
            return Some(peer);
        }
        let forwarded = forwarded_for(req);
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !self.trusted(*ip))
                .unwrap_or(peer),
        )
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// The address's bucket; before the request is parsed any further.
    pub fn check_ip(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if !self.config.enabled {
            return Ok(());
        }
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.forget_idle();
        }
        let Some(ip) = self.client_ip(req) else {
            return Ok(());
        };
        self.per_ip.check_key(&ip).map_err(|not_until| {
            self.stats.ip_limited.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dropd_admission_refused_total", "reason" => "ip").increment(1);
            too_many(
                "this address sends writes faster than the server accepts from one address; retry after the given delay",
                // The limiter's own clock: making a new one calibrates the TSC, which cost
                // more than the whole request.
                not_until.wait_time_from(self.per_ip.clock().now()),
            )
        })
    }

    /// The buyer's turn: refused while another write of theirs is in flight, or when their
    /// bucket is empty.
    pub fn enter(self: &Arc<Self>, buyer: &BuyerId) -> Result<Turn, ApiError> {
        if !self.config.enabled {
            return Ok(Turn {
                admission: None,
                buyer: buyer.clone(),
            });
        }
        if !self
            .shard(buyer)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(buyer.clone())
        {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dropd_admission_refused_total", "reason" => "busy").increment(1);
            return Err(too_many(
                "another write of this buyer is in flight; one at a time",
                Duration::from_secs(1),
            ));
        }
        let turn = Turn {
            admission: Some(self.clone()),
            buyer: buyer.clone(),
        };
        if let Err(not_until) = self.per_buyer.check_key(buyer) {
            self.stats.buyer_limited.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dropd_admission_refused_total", "reason" => "buyer").increment(1);
            return Err(too_many(
                "this buyer sends writes faster than the server accepts; retry after the given delay",
                not_until.wait_time_from(self.per_buyer.clock().now()),
            ));
        }
        Ok(turn)
    }

    /// Forgets buckets that are full again, so memory follows the active clients.
    pub fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.per_buyer.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_buyer.shrink_to_fit();
    }
}

/// Addresses in `X-Forwarded-For` (or else `Forwarded: for=`), nearest last.
fn forwarded_for(req: &HttpRequest) -> Vec<IpAddr> {
    let headers = req.headers();
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| parse_node(part.trim()))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all("forwarded")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            name.eq_ignore_ascii_case("for")
                .then(|| parse_node(value.trim().trim_matches('"')))
                .flatten()
        })
        .collect()
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`, `::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    text.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_write_addresses_in_several_ways() {
        for (text, want) in [
            ("203.0.113.7", "203.0.113.7"),
            ("203.0.113.7:4711", "203.0.113.7"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            assert_eq!(parse_node(text), want.parse().ok(), "{text}");
        }
        assert_eq!(parse_node("unknown"), None);
        assert_eq!(parse_node("_hidden"), None);
    }

    #[test]
    fn a_buyer_has_one_write_in_flight_and_a_bucket() {
        let one = NonZeroU32::MIN;
        let admission = Admission::new(AdmissionConfig {
            per_buyer: Bucket {
                rate: one,
                burst: NonZeroU32::new(2).expect("non-zero"),
            },
            ..AdmissionConfig::default()
        });
        let alice = BuyerId::parse("alice").expect("valid");
        let bob = BuyerId::parse("bob").expect("valid");
        let first = admission.enter(&alice).expect("first");
        let busy = admission.enter(&alice).err().expect("busy");
        assert_eq!(busy.code(), "too-many-requests");
        let _bob = admission.enter(&bob).expect("another buyer is not held up");
        drop(first);
        drop(
            admission
                .enter(&alice)
                .expect("the second of a burst of two"),
        );
        let limited = admission.enter(&alice).err().expect("the bucket is empty");
        assert_eq!(limited.code(), "too-many-requests");
        assert_eq!(admission.stats.busy.load(Ordering::Relaxed), 1);
        assert_eq!(admission.stats.buyer_limited.load(Ordering::Relaxed), 1);
    }
}

//! What every handler can reach.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use chrono::{DateTime, Utc};
use rusqlite::Connection;

use crate::auth::TokenKeys;
use crate::domain::Clock;
use crate::http::codes::Code;
use crate::http::problem::ApiError;
use crate::replicate::follow::FollowStatus;
use crate::store::{ReadPool, StoreError, Writer};

pub struct AppState {
    /// Where webhook endpoints may point.
    pub webhook_targets: Arc<crate::outbox::TargetPolicy>,
    pub writer: Writer,
    pub reads: ReadPool,
    pub clock: Arc<dyn Clock>,
    pub tokens: TokenKeys,
    pub lifecycle: Lifecycle,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Committed drop state in memory: hot reads and event streams.
    pub hub: Arc<crate::events::Hub>,
    /// Idempotency keys recorded, in flight, or answered from memory.
    pub keys: Arc<crate::store::KeyBook>,
    /// The active admin keys, kept current by the `admin-keys` thread.
    pub admin_keys: Arc<crate::auth::AdminKeyBook>,
    /// `--admin-listen`'s port: admin routes answer only there (else on the one listener).
    pub admin_port: Option<u16>,
    /// A writer quiet this long is stuck (`/readyz`).
    pub writer_stuck_after: std::time::Duration,
    /// Who may write now: per-address and per-buyer buckets, one write in flight per buyer.
    pub admission: Arc<crate::http::admission::Admission>,
    /// Started with `--demo`: the page may ask for a buyer token.
    pub demo: bool,
    /// `--buyer-confirms`: buyers may turn their own holds into orders.
    pub buyer_confirms: bool,
    /// A signed payment provider's callback, when a secret is configured.
    pub payment_callback: Option<crate::http::payment_signature::PaymentCallback>,
    /// How replication is doing, when a replica is configured.
    pub replica: Option<Arc<crate::replicate::status::ReplicaStatus>>,
    /// `--ack-after-replicated`: holds and orders are answered once the replica has them.
    pub ack_after_replicated: Option<AckAfterReplicated>,
    /// `--request-budget`: what a request may cost the database before it is reported.
    pub budgets: crate::http::budget::Budgets,
    /// The ledger's public keys (`GET /v1/keys`).
    pub ledger_keys: Arc<Vec<crate::auth::ledger_keys::PublicKey>>,
    /// `serve --follow`: a read-only follower of a replica, and where its writes go.
    pub follower: Option<Arc<FollowerRole>>,
    /// `--lease`: writes are acknowledged only while the replica's lease is held.
    pub lease: Option<Arc<crate::replicate::lease::Lease>>,
}

#[derive(Clone)]
pub struct AckAfterReplicated {
    pub acks: crate::handshake::AckView,
    pub timeout: std::time::Duration,
}

impl AckAfterReplicated {
    /// Waits until the replica holds every commit answered so far (this request's included).
    pub async fn wait(&self) -> Result<(), crate::http::problem::ApiError> {
        let seq = self.acks.commit_seq();
        let mut replicated = self.acks.replicated();
        let waited = tokio::time::timeout(self.timeout, replicated.wait_for(|r| *r >= seq))
            .await
            .is_ok_and(|r| r.is_ok());
        if waited {
            return Ok(());
        }
        Err(crate::http::problem::ApiError::new(
            Code::ReplicaUnavailable,
            "the change is committed on this server but the replica has not confirmed it \
                 yet; retry with the same Idempotency-Key to get the answer once it has",
        )
        .retry_after(1))
    }
}

impl AppState {
    /// Runs a read on a pooled connection off the async workers.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, DateTime<Utc>) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.reads.clone();
        let now = self.clock.now();
        let (result, cost) = web::block(move || match pool.get() {
            Ok(conn) => crate::store::cost::measure(|| f(&conn, now)),
            Err(err) => (Err(err), crate::store::cost::Cost::default()),
        })
        .await?;
        crate::store::cost::charge(cost);
        Ok(result?)
    }
}

/// Starting -> ready -> draining; `/readyz` answers 200 only when ready.
#[derive(Clone, Default)]
pub struct Lifecycle(Arc<AtomicU8>);

impl Lifecycle {
    const STARTING: u8 = 0;
    const READY: u8 = 1;
    const DRAINING: u8 = 2;

    pub fn set_ready(&self) {
        self.0.store(Self::READY, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.0.store(Self::DRAINING, Ordering::SeqCst);
    }

    pub fn phase(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            Self::STARTING => "starting",
            Self::READY => "ready",
            _ => "draining",
        }
    }
}

/// What a follower knows of its leader and its own lag.
pub struct FollowerRole {
    pub status: Arc<FollowStatus>,
    /// `--leader-url`: where writes go; none, and they are refused without a place to go.
    pub leader_url: Option<String>,
    /// `--no-redirect`: answer 421 naming the leader instead of 307 to it.
    pub redirect: bool,
    /// `--max-lag`: further behind than this and `/readyz` says 503.
    pub max_lag: Duration,
}

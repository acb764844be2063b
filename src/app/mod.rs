//! Wiring: opens the store, starts the writer and the HTTP server on a listener it binds itself
//! (so tests can ask for port 0), and runs the shutdown order.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::web;
use anyhow::Context;

use crate::auth::{self, TokenKeys, TokenPolicy};
use crate::defaults;
use crate::domain::Clock;
use crate::events::Hub;
use crate::handshake::{Handshake, ShipperGate};
use crate::http::admission::AdmissionConfig;
use crate::http::limits::RequestLimits;
use crate::http::state::{AppState, Lifecycle};
use crate::replicate::config::ReplicationConfig;
use crate::replicate::shipper::Shipper;
use crate::replicate::status::ReplicaStatus;
use crate::store::{ReadPool, Store, StoreConfig, Synchronous, Writer, WriterThread};

mod follower;
mod handle;
mod lease;
mod parts;

pub use handle::AppHandle;
use parts::{common_parts, metrics_handle, Listeners};

pub use follower::FollowSettings;
pub use lease::HOLDER_FILE;

pub const DB_FILE: &str = "dropd.db";

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub data_dir: PathBuf,
    pub synchronous: Synchronous,
    pub batch_limit: usize,
    pub queue_size: usize,
    /// Given buyer-token secrets (the first signs); none: `<data-dir>/token-secret`.
    pub token_secrets: Vec<String>,
    pub token_policy: TokenPolicy,
    pub workers: Option<usize>,
    /// Benchmark baseline only (hidden flag): one transaction per write on a pool of writers.
    pub naive_writes: bool,
    /// Benchmark baseline: no fairness ledger (and so no receipts).
    pub without_ledger: bool,
    /// How long an idempotency key is remembered after its first use.
    pub idempotency_retention: Duration,
    /// Most due holds one writer batch expires (not a flag: tests lower it to see a partial sweep).
    pub sweep_limit: i64,
    /// `--box-id`: this server's name inside the ids of the holds it makes.
    pub box_id: Option<String>,
    /// Open event streams before new ones get 503 too-many-subscribers.
    pub max_subscribers: usize,
    /// Share of one core that SSE fan-out may use (0.25 = a quarter).
    pub sse_cpu_budget: f64,
    /// `--request-budget`: what a request of each route may cost the database before it is
    /// reported.
    pub request_budgets: crate::http::budget::Budgets,
    /// `--rate-limit`, `--ip-rate`, `--buyer-rate`, `--trusted-proxies`: fair admission.
    pub admission: AdmissionConfig,
    /// `--max-header-bytes`, `--request-timeout`: slow and greedy clients.
    pub request_limits: RequestLimits,
    /// `--max-connections`: open connections across all workers.
    pub max_connections: usize,
    /// A writer quiet this long counts as stuck (not a flag: tests lower it).
    pub writer_stuck_after: Duration,
    /// `--admin-listen`: the admin API, the operator page, `/metrics` and readiness detail on
    /// this address instead of the public one.
    pub admin_listen: Option<String>,
    /// `--drain-grace`: after SIGTERM, how long requests are still served with `/readyz` 503.
    pub drain_grace: Duration,
    /// `--streams-per-ip`: live-stock streams one address may hold (lifted by
    /// `--rate-limit off`).
    pub streams_per_ip: usize,
    /// `--demo`: the drop page may ask for a buyer token (`GET /v1/demo/token`).
    pub demo: bool,
    /// `--buyer-confirms` (on with `--demo`): buyers confirm their own holds; without it only a
    /// payment service does.
    pub buyer_confirms: bool,
    /// `--payment-callback-secret-file` (or the systemd credential `payment-callback-secret`)
    /// and `--payment-callback-tolerance`.
    pub payment_callback: Option<(String, Duration)>,
    /// Where and how to ship the WAL, in Litestream's format.
    pub replica: Option<ReplicationConfig>,
    /// Answer holds and orders only once the replica holds them (needs a replica).
    pub ack_after_replicated: bool,
    /// Webhook delivery and outbox retention.
    pub outbox: crate::outbox::OutboxConfig,
    /// `--follow`: serve a read-only copy of this replica instead of a database of its own.
    pub follow: Option<follower::FollowSettings>,
    /// `--lease` with its `--lease-ttl`: lead the replica only while holding its lease.
    pub lease: Option<Duration>,
}

impl Settings {
    /// Defaults for a data directory, as `dropd serve` has them.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: defaults::LISTEN.into(),
            data_dir: data_dir.into(),
            synchronous: Synchronous::Full,
            batch_limit: defaults::BATCH_LIMIT as usize,
            queue_size: defaults::QUEUE_SIZE as usize,
            token_secrets: Vec::new(),
            token_policy: TokenPolicy::default(),
            workers: None,
            naive_writes: false,
            without_ledger: false,
            idempotency_retention: defaults::IDEMPOTENCY_RETENTION,
            sweep_limit: defaults::SWEEP_LIMIT,
            box_id: None,
            max_subscribers: defaults::MAX_SUBSCRIBERS,
            sse_cpu_budget: defaults::SSE_CPU_BUDGET,
            request_budgets: crate::http::budget::Budgets::default(),
            admission: AdmissionConfig::default(),
            request_limits: RequestLimits::default(),
            max_connections: defaults::MAX_CONNECTIONS,
            streams_per_ip: defaults::STREAMS_PER_IP,
            drain_grace: defaults::DRAIN_GRACE,
            admin_listen: None,
            writer_stuck_after: defaults::WRITER_STUCK_AFTER,
            demo: false,
            buyer_confirms: false,
            payment_callback: None,
            replica: None,
            ack_after_replicated: false,
            outbox: crate::outbox::OutboxConfig::default(),
            follow: None,
            lease: None,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }
}

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    admin_port: Option<u16>,
    server: Server,
    writer: Writer,
    /// None on a follower, which has no writer (nor control socket, nor outbox worker).
    writer_thread: Option<WriterThread>,
    reads: ReadPool,
    tokens: TokenKeys,
    lifecycle: Lifecycle,
    hub: Arc<Hub>,
    shipper: Option<(ShipperGate, std::thread::JoinHandle<()>)>,
    replica_status: Option<Arc<ReplicaStatus>>,
    control: Option<crate::control::Control>,
    admin_keys: Arc<crate::auth::AdminKeyBook>,
    drain_grace: Duration,
    stuck_after: Duration,
    outbox: Option<crate::outbox::OutboxWorker>,
    follow: Option<follower::FollowThread>,
    lease: Option<lease::Renewals>,
    /// Set (with the reason) when another server took the lease: the stop is then an error.
    lease_lost: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

impl Application {
    pub fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        if let Some(follow) = &settings.follow {
            return follower::build(settings, follow, clock);
        }
        let (tokens, workers, hub) = common_parts(settings, &clock)?;
        // A database that does not exist yet next to a replica that holds one means a lost
        // machine not restored: shipping the new empty database would make it the replica's
        // latest state.
        if settings.lease.is_some() && settings.replica.is_none() {
            anyhow::bail!("--lease needs a replica to hold it in: give --replica or --config");
        }
        let mut held = None;
        let replica = match &settings.replica {
            Some(config) => {
                let replica = config
                    .target
                    .open()
                    .with_context(|| format!("opening the replica {}", config.target))?;
                if let Some(ttl) = settings.lease {
                    held = Some(lease::take(
                        &settings.data_dir,
                        &settings.db_path(),
                        &replica,
                        &config.target.to_string(),
                        ttl,
                    )?);
                }
                if !settings.db_path().exists() {
                    refuse_unrestored(&*replica, &config.target, &settings.db_path())?;
                }
                Some(replica)
            }
            None => None,
        };
        if settings.ack_after_replicated && settings.replica.is_none() {
            anyhow::bail!("--ack-after-replicated needs a replica: give --replica or --config");
        }
        if settings.replica.is_some() && settings.naive_writes {
            anyhow::bail!("--naive-writes (a benchmark baseline) cannot replicate");
        }
        let handshake = settings.replica.as_ref().map(|config| {
            Handshake::new(
                config.checkpoint_wal_size,
                config.max_wal_size,
                settings.ack_after_replicated,
            )
        });
        let ack_after_replicated = match (&handshake, &settings.replica) {
            (Some(handshake), Some(config)) if settings.ack_after_replicated => {
                Some(crate::http::state::AckAfterReplicated {
                    acks: handshake.acks.clone(),
                    // A few syncs' worth, so a slow upload is waited for and an outage is not.
                    timeout: (config.sync_interval * 5).max(Duration::from_secs(1)),
                })
            }
            _ => None,
        };
        // Read (and removed) before the database is opened, which may checkpoint it.
        let resume = settings.replica.as_ref().and_then(|config| {
            crate::replicate::position::take(&settings.db_path(), &config.target.to_string())
        });
        let ledger_keys = crate::auth::ledger_keys::load_or_create(&settings.data_dir)
            .map_err(anyhow::Error::msg)
            .context("the ledger's signing keys")?;
        let store = Store::open(
            &StoreConfig {
                path: settings.db_path(),
                synchronous: settings.synchronous,
                batch_limit: settings.batch_limit,
                queue_size: settings.queue_size,
                read_pool_size: (workers as u32 * 2).max(4),
                naive_writers: settings.naive_writes,
                checkpoint_gate: handshake.as_ref().map(|h| h.writer.clone()),
                idempotency_retention: settings.idempotency_retention,
                sweep_limit: settings.sweep_limit,
                box_id: settings.box_id.clone(),
                outbox_retention: settings.outbox.retention,
                ledger_key: Some(ledger_keys.signer.clone()),
                ledger: !settings.without_ledger,
            },
            clock.clone(),
            Some(hub.clone() as Arc<dyn crate::store::CommitListener>),
        )
        .with_context(|| format!("opening the database {}", settings.db_path().display()))?;
        hub.attach_reads(store.reads.clone());
        {
            let conn = store.reads.get().context("reading the drops")?;
            let views =
                crate::store::drops::list_views(&conn, clock.now()).context("reading the drops")?;
            hub.preload(views);
        }
        let mut replica_status = None;
        let shipper = match (&settings.replica, handshake, replica) {
            (Some(config), Some(handshake), Some(replica)) => {
                let gate = handshake.shipper;
                let status = Arc::new(ReplicaStatus::new(config.target.to_string()));
                replica_status = Some(status.clone());
                // With a lease, the shipper uploads nothing once it is not held.
                let replica: Arc<dyn crate::replicate::replica::Replica> = match &held {
                    Some(held) => Arc::new(crate::replicate::lease::Leased {
                        inner: replica.clone(),
                        lease: held.lease.clone(),
                    }),
                    None => replica.clone(),
                };
                let shipper = Shipper::new(
                    store.files.clone(),
                    replica,
                    config.clone(),
                    gate.clone(),
                    status,
                )
                .resuming(resume);
                let thread = std::thread::Builder::new()
                    .name("wal-shipper".into())
                    .spawn(move || {
                        // As with the writer: a panic here could leave the writer holding at a
                        // barrier or the replica silently behind; a restart resumes the replica
                        // from a whole-database image.
                        let run = std::panic::AssertUnwindSafe(|| shipper.run_until_stopped());
                        if std::panic::catch_unwind(run).is_err() {
                            tracing::error!("the wal-shipper panicked; aborting");
                            std::process::abort();
                        }
                    })
                    .context("starting the wal-shipper thread")?;
                Some((gate, thread))
            }
            _ => None,
        };
        hub.start_ticker()
            .context("starting the events-ticker thread")?;
        let outbox = crate::outbox::start(
            settings.outbox.clone(),
            store.reads.clone(),
            store.writer.clone(),
            &store.bell,
        )?;

        let admin_keys = Arc::new(crate::auth::AdminKeyBook::default());
        let control = crate::control::start(
            &settings.data_dir,
            &settings.db_path(),
            store.writer.clone(),
            admin_keys.clone(),
        )?;
        let listeners = Listeners::bind(settings)?;
        let lifecycle = Lifecycle::default();
        let state = web::Data::new(AppState {
            webhook_targets: Arc::new(settings.outbox.targets.clone()),
            writer: store.writer.clone(),
            reads: store.reads.clone(),
            clock,
            tokens: tokens.clone(),
            lifecycle: lifecycle.clone(),
            metrics: metrics_handle(),
            hub: hub.clone(),
            keys: store.keys.clone(),
            admin_keys: admin_keys.clone(),
            writer_stuck_after: settings.writer_stuck_after,
            admin_port: listeners.admin_port,
            admission: crate::http::admission::Admission::new(settings.admission.clone()),
            demo: settings.demo,
            buyer_confirms: settings.buyer_confirms || settings.demo,
            payment_callback: settings
                .payment_callback
                .as_ref()
                .map(|(secret, tolerance)| {
                    crate::http::payment_signature::PaymentCallback::new(secret.clone(), *tolerance)
                }),
            replica: replica_status.clone(),
            ack_after_replicated,
            budgets: settings.request_budgets.clone(),
            ledger_keys: Arc::new(ledger_keys.public.clone()),
            follower: None,
            lease: held.as_ref().map(|h| h.lease.clone()),
        });
        let (port, admin_port) = (listeners.port, listeners.admin_port);
        let server = listeners.serve(settings, state, workers)?;
        let (renewals, lease_lost) = match held {
            Some(lease::Held { renewals, lost, .. }) => {
                let (server_handle, phase, events) =
                    (server.handle(), lifecycle.clone(), hub.clone());
                let mut watching = lost.clone();
                // Deposed: stop answering at once, then stop as on SIGTERM.
                tokio::spawn(async move {
                    if watching.wait_for(Option::is_some).await.is_ok() {
                        phase.set_draining();
                        events.close();
                        server_handle.stop(true).await;
                    }
                });
                (Some(renewals), Some(lost))
            }
            None => (None, None),
        };
        lifecycle.set_ready();
        Ok(Self {
            port,
            admin_port,
            server,
            writer: store.writer,
            writer_thread: Some(store.thread),
            reads: store.reads,
            tokens,
            lifecycle,
            hub,
            shipper,
            replica_status,
            control: Some(control),
            admin_keys,
            drain_grace: settings.drain_grace,
            stuck_after: settings.writer_stuck_after,
            outbox: Some(outbox),
            follow: None,
            lease: renewals,
            lease_lost,
        })
    }

    /// The id of `key` if it is an active admin key.
    pub fn admin_key_id(&self, key: &str) -> Option<String> {
        self.admin_keys.check(key)
    }

    /// A new admin key, through the writer, valid on this server the moment it is returned:
    /// (the key, shown once; its id).
    pub async fn create_admin_key(&self, name: &str) -> anyhow::Result<(String, String)> {
        let (key, hash) = auth::generate_admin_key();
        let id = self
            .writer
            .create_admin_key(name.into(), hash, "admin".into())
            .await
            .context("creating an admin key")?;
        if let Some(control) = &self.control {
            control.refresh();
        }
        Ok((key, id))
    }

    pub fn replica_status(&self) -> Option<Arc<ReplicaStatus>> {
        self.replica_status.clone()
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `--admin-listen` port, if there is one.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    pub fn reads(&self) -> ReadPool {
        self.reads.clone()
    }

    pub fn tokens(&self) -> &TokenKeys {
        &self.tokens
    }

    pub fn handle(&self) -> AppHandle {
        AppHandle {
            server: self.server.handle(),
            lifecycle: self.lifecycle.clone(),
            hub: self.hub.clone(),
            drain_grace: self.drain_grace,
            writer: self.writer.clone(),
            stuck_after: self.stuck_after,
            follow_alive: self.follow.as_ref().map(follower::FollowThread::alive),
        }
    }

    /// Serves until stopped, then lets the writer finish its queue and checkpoint.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.lifecycle.set_draining();
        self.hub.close();
        // Before the writer stops: the control thread and the outbox worker may be waiting on
        // it (the worker reports its endpoints' progress as it stops).
        let control = self.control;
        tokio::task::spawn_blocking(move || control.map(|c| c.stop()))
            .await
            .context("stopping the control socket")?;
        let outbox = self.outbox;
        tokio::task::spawn_blocking(move || outbox.map(|o| o.stop()))
            .await
            .context("stopping the outbox worker")?;
        let writer = self.writer;
        let thread = self.writer_thread;
        let shipper = self.shipper;
        let follow = self.follow;
        let renewals = self.lease;
        let lost = self
            .lease_lost
            .as_ref()
            .and_then(|lost| lost.borrow().clone());
        let release = lost.is_none();
        let shipped = self.replica_status.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(follow) = follow {
                follow.stop();
            }
            writer.shutdown();
            if let Some(thread) = thread {
                thread.join();
            }
            // The shipper's last sync ships what the writer committed last.
            if let Some((gate, thread)) = shipper {
                gate.stop();
                let _ = thread.join();
            }
            // After the shipper's last sync: the next leader finds everything shipped, unless
            // that sync failed, and then the lease runs out instead of being handed on early.
            let last_sync_failed = shipped.is_some_and(|s| s.snapshot().error.is_some());
            if last_sync_failed && release {
                tracing::warn!(
                    "the last sync to the replica failed: the lease is kept until it expires"
                );
            }
            if let Some(renewals) = renewals {
                renewals.stop(release && !last_sync_failed);
            }
        })
        .await
        .context("waiting for the writer to stop")?;
        if let Some(why) = lost {
            anyhow::bail!("stopped: {why}");
        }
        served.context("the HTTP server failed")
    }
}

fn refuse_unrestored(
    replica: &dyn crate::replicate::replica::Replica,
    target: &crate::replicate::replica::ReplicaTarget,
    db: &std::path::Path,
) -> anyhow::Result<()> {
    // On its own thread: the S3 client blocks on its own runtime, never inside actix's.
    let listed = std::thread::scope(|scope| scope.spawn(|| replica.list()).join());
    let files = match listed {
        Ok(Ok(files)) => files,
        Ok(Err(err)) => anyhow::bail!(
            "{} does not exist and the replica {target} cannot be listed ({err}): dropd will not \
             start a new database that could hide the replica's; retry when it is reachable",
            db.display()
        ),
        Err(_) => anyhow::bail!("listing the replica {target} panicked"),
    };
    if !files.is_empty() {
        anyhow::bail!(
            "{} does not exist but the replica {target} holds a database: restore it first \
             (dropd restore -o {} {target}), or point --replica elsewhere",
            db.display(),
            db.display()
        );
    }
    Ok(())
}

/// How long `dropd token` tokens last unless told.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

//! `dropd serve`: its flags, and turning them into `Settings`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::credentials::TokenFlags;
use crate::app::{Application, Settings};
use crate::defaults;
use crate::domain::SystemClock;
use crate::http::admission::{AdmissionConfig, Bucket};
use crate::http::limits::RequestLimits;
use crate::replicate::config::ReplicationConfig;
use crate::replicate::replica::ReplicaTarget;
use crate::store::Synchronous;
use crate::{demo, telemetry};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "DROPD_LISTEN", default_value = defaults::LISTEN)]
    pub listen: String,
    /// Directory holding dropd.db and the token secret.
    #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// Create a live demo drop and print a buyer token, an admin key and example requests.
    #[arg(long, env = "DROPD_DEMO")]
    pub demo: bool,
    /// Let buyers confirm their own holds into orders (on with --demo). Without it only a
    /// payment service (a `payments` service key) confirms, so an order means paid.
    #[arg(long, env = "DROPD_BUYER_CONFIRMS")]
    pub buyer_confirms: bool,
    /// File with the secret payment providers sign `POST /v1/payments/callback` with; default
    /// the systemd credential `payment-callback-secret`, if there is one; else no callback.
    #[arg(long, env = "DROPD_PAYMENT_CALLBACK_SECRET_FILE")]
    pub payment_callback_secret_file: Option<PathBuf>,
    /// How far a callback's signed time may be from the server's clock.
    #[arg(long, env = "DROPD_PAYMENT_CALLBACK_TOLERANCE",
          default_value = defaults::PAYMENT_CALLBACK_TOLERANCE_TEXT, value_parser = humantime::parse_duration)]
    pub payment_callback_tolerance: Duration,
    /// `full`: an acknowledged write survives power loss. `normal`: faster, survives a process
    /// crash but may lose the last commits on power loss.
    #[arg(long, env = "DROPD_SYNCHRONOUS", value_enum, default_value_t = Synchronous::Full)]
    pub synchronous: Synchronous,
    #[command(flatten)]
    pub tokens: TokenFlags,
    #[command(flatten)]
    pub webhooks: super::webhooks::WebhookFlags,
    /// Most write commands committed in one transaction.
    #[arg(long, env = "DROPD_BATCH_LIMIT", default_value_t = defaults::BATCH_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_limit: u32,
    /// Write commands that may wait for the writer before requests get 503 overloaded.
    #[arg(long, env = "DROPD_QUEUE_SIZE", default_value_t = defaults::QUEUE_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue_size: u32,
    /// How long an Idempotency-Key is remembered after its first use (its record is then
    /// deleted, and the key may answer anew).
    #[arg(long, env = "DROPD_IDEMPOTENCY_RETENTION", default_value = defaults::IDEMPOTENCY_RETENTION_TEXT,
          value_parser = parse_retention)]
    pub idempotency_retention: Duration,
    /// This server's name in the ids of the holds it makes (`hld_<box>_...`), so a proxy in
    /// front of several servers can route a hold to the one that owns it. Default: none.
    #[arg(long, env = "DROPD_BOX_ID", value_parser = crate::domain::parse_box_id)]
    pub box_id: Option<String>,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "DROPD_WORKERS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,
    /// Open event streams (SSE) before new ones get 503 too-many-subscribers.
    #[arg(long, env = "DROPD_MAX_SUBSCRIBERS", default_value_t = defaults::MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,
    /// Share of one core that live-stock fan-out may use; the push rate adapts to stay within it
    /// (between 10 and 1 messages per second per drop).
    #[arg(long, env = "DROPD_SSE_CPU_BUDGET", default_value_t = defaults::SSE_CPU_BUDGET)]
    pub sse_cpu_budget: f64,
    /// What a request may cost the database before a warning is logged and counted:
    /// `ROUTE=STATEMENTS/TIME` entries (time spent in SQLite), `*` for every other route, as
    /// `*=50/50ms,/v1/drops/{drop}/holds=6/5ms`.
    #[arg(long, env = "DROPD_REQUEST_BUDGET", default_value = defaults::REQUEST_BUDGET,
          value_parser = crate::http::budget::Budgets::parse)]
    pub request_budget: crate::http::budget::Budgets,
    /// Replicate as this Litestream-format litestream.yml says (its replica, sync-interval,
    /// levels, snapshot and retention keys; see the commented example litestream.yml).
    #[arg(long, env = "DROPD_CONFIG", conflicts_with = "replica")]
    pub config: Option<PathBuf>,
    /// Ship the WAL to this replica in Litestream's format, with Litestream's default levels and
    /// retention: `file:///dir` or `s3://bucket/path?endpoint=...&region=...` (credentials from
    /// LITESTREAM_ACCESS_KEY_ID/LITESTREAM_SECRET_ACCESS_KEY or AWS_*).
    #[arg(long, env = "DROPD_REPLICA")]
    pub replica: Option<String>,
    /// Serve as a read-only follower of this replica (`file:///dir` or `s3://...`, as
    /// --replica): restore its latest state into <data-dir>/follower.db, apply each new file as
    /// it appears, serve drop reads and live stock from it, and send everything else to
    /// --leader-url.
    #[arg(long, env = "DROPD_FOLLOW", value_name = "URL",
          conflicts_with_all = ["replica", "config", "demo", "ack_after_replicated"])]
    pub follow: Option<String>,
    /// A follower's leader (its public URL): writes and buyers' own reads get 307 to the same
    /// path there.
    #[arg(long, env = "DROPD_LEADER_URL", requires = "follow", value_parser = parse_leader_url)]
    pub leader_url: Option<String>,
    /// A follower answers what it does not serve with 421 not-leader naming the leader's URL,
    /// instead of a 307 redirect to it.
    #[arg(long, env = "DROPD_NO_REDIRECT", requires = "follow")]
    pub no_redirect: bool,
    /// How often a follower lists its replica for new files.
    #[arg(long, env = "DROPD_FOLLOW_INTERVAL", default_value = defaults::FOLLOW_INTERVAL_TEXT,
          value_parser = parse_positive)]
    pub follow_interval: Duration,
    /// A follower further behind its replica than this says 503 at /readyz (the time since it
    /// last found nothing more to apply).
    #[arg(long, env = "DROPD_MAX_LAG", default_value = defaults::MAX_LAG_TEXT,
          value_parser = parse_positive)]
    pub max_lag: Duration,
    /// Lead the replica only while holding its lease (`lease.json` beside the LTX files, taken
    /// and renewed with conditional writes): a second server on the same replica refuses to
    /// start, naming the holder; after the holder stops (or its lease expires) another may take
    /// over, restoring from the replica first. Without renewals for most of --lease-ttl, writes
    /// get 503 lease-expired until one succeeds.
    #[arg(long, env = "DROPD_LEASE", conflicts_with = "follow")]
    pub lease: bool,
    /// How long a lease lasts without renewal (renewed every quarter of it).
    #[arg(long, env = "DROPD_LEASE_TTL", default_value = defaults::LEASE_TTL_TEXT,
          value_parser = parse_lease_ttl)]
    pub lease_ttl: Duration,
    /// `off` lifts the write limits below (benchmarks, or a proxy in front that limits).
    #[arg(long, env = "DROPD_RATE_LIMIT", value_enum, default_value_t = Switch::On)]
    pub rate_limit: Switch,
    /// Writes (holds, confirms, releases) per second one client address may send...
    #[arg(long, env = "DROPD_IP_RATE", default_value_t = defaults::IP_RATE)]
    pub ip_rate: u32,
    /// ...and at once.
    #[arg(long, env = "DROPD_IP_BURST", default_value_t = defaults::IP_BURST)]
    pub ip_burst: u32,
    /// Writes per second one buyer may send...
    #[arg(long, env = "DROPD_BUYER_RATE", default_value_t = defaults::BUYER_RATE)]
    pub buyer_rate: u32,
    /// ...and at once.
    #[arg(long, env = "DROPD_BUYER_BURST", default_value_t = defaults::BUYER_BURST)]
    pub buyer_burst: u32,
    /// Proxies (CIDRs, comma-separated) whose X-Forwarded-For / Forwarded name the client.
    #[arg(long, env = "DROPD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest request head accepted (all header names and values); larger gets 431.
    #[arg(long, env = "DROPD_MAX_HEADER_BYTES", default_value_t = defaults::MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// How long a request's head, and then its body, may take to arrive; then 408 and the
    /// connection closes.
    #[arg(long, env = "DROPD_REQUEST_TIMEOUT", default_value = defaults::REQUEST_TIMEOUT_TEXT,
          value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Open connections kept at once; more wait in the listen backlog.
    #[arg(long, env = "DROPD_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Serve the admin API, the /admin page, /metrics and readiness detail on this address
    /// (loopback, say) and no longer on --listen. Without it everything shares one listener and
    /// readiness detail needs an admin key.
    #[arg(long, env = "DROPD_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// After SIGTERM, how long /readyz says 503 while requests are still served (a load
    /// balancer moves traffic away), before the listener closes.
    #[arg(long, env = "DROPD_DRAIN_GRACE", default_value = defaults::DRAIN_GRACE_TEXT,
          value_parser = humantime::parse_duration)]
    pub drain_grace: Duration,
    /// Live-stock streams one client address may hold open (lifted by --rate-limit off).
    #[arg(long, env = "DROPD_STREAMS_PER_IP", default_value_t = defaults::STREAMS_PER_IP)]
    pub streams_per_ip: usize,
    /// Answer holds and orders only once the replica holds them (no acknowledged sale is lost
    /// with the machine; each answer waits about one sync interval). Needs a replica.
    #[arg(long, env = "DROPD_ACK_AFTER_REPLICATED")]
    pub ack_after_replicated: bool,
    /// How often committed WAL frames are shipped (default 1s, or the config's sync-interval).
    #[arg(long, env = "DROPD_SYNC_INTERVAL", value_parser = humantime::parse_duration)]
    pub sync_interval: Option<Duration>,
    /// Benchmark baseline: one transaction per write on a pool of writer connections.
    #[cfg(feature = "bench")]
    #[arg(long, hide = true)]
    pub naive_writes: bool,
    /// Benchmark baseline: the writer chains nothing (no ledger, no receipts), to measure what
    /// the ledger costs.
    #[cfg(feature = "bench")]
    #[arg(long, hide = true)]
    pub without_ledger: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_lease_ttl(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err("the lease must last at least 1s: it is renewed every quarter of it".into());
    }
    Ok(d)
}

fn parse_leader_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{text:?}: an http:// or https:// URL with a host"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

fn parse_retention(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err("the retention must be at least 1s: a client's retry must find its key".into());
    }
    Ok(d)
}

/// What the flags, the environment and the config file make of `serve`.
pub(super) fn settings(args: &ServeArgs) -> anyhow::Result<Settings> {
    let replica = replication_from_args(args, &args.data_dir.join(crate::app::DB_FILE))?;
    Ok(Settings {
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
        synchronous: args.synchronous,
        batch_limit: args.batch_limit as usize,
        queue_size: args.queue_size as usize,
        token_secrets: args.tokens.token_secrets.clone(),
        token_policy: args.tokens.policy(),
        workers: args.workers.map(|w| w as usize),
        #[cfg(feature = "bench")]
        naive_writes: args.naive_writes,
        #[cfg(not(feature = "bench"))]
        naive_writes: false,
        #[cfg(feature = "bench")]
        without_ledger: args.without_ledger,
        #[cfg(not(feature = "bench"))]
        without_ledger: false,
        idempotency_retention: args.idempotency_retention,
        sweep_limit: defaults::SWEEP_LIMIT,
        admission: AdmissionConfig {
            enabled: args.rate_limit == Switch::On,
            per_ip: Bucket::new(args.ip_rate, args.ip_burst),
            per_buyer: Bucket::new(args.buyer_rate, args.buyer_burst),
            trusted_proxies: args.trusted_proxies.clone(),
        },
        request_limits: RequestLimits {
            max_header_bytes: args.max_header_bytes,
            timeout: args.request_timeout,
        },
        max_connections: args.max_connections,
        streams_per_ip: args.streams_per_ip,
        drain_grace: args.drain_grace,
        admin_listen: args.admin_listen.clone(),
        writer_stuck_after: defaults::WRITER_STUCK_AFTER,
        box_id: args.box_id.clone(),
        max_subscribers: args.max_subscribers,
        sse_cpu_budget: args.sse_cpu_budget,
        request_budgets: args.request_budget.clone(),
        demo: args.demo,
        buyer_confirms: args.buyer_confirms,
        payment_callback: payment_callback_secret(args)?
            .map(|secret| (secret, args.payment_callback_tolerance)),
        replica,
        ack_after_replicated: args.ack_after_replicated,
        outbox: args.webhooks.config(),
        follow: args
            .follow
            .as_ref()
            .map(|url| -> anyhow::Result<_> {
                Ok(crate::app::FollowSettings {
                    target: ReplicaTarget::parse_url(url)
                        .with_context(|| format!("--follow {url}"))?,
                    interval: args.follow_interval,
                    leader_url: args.leader_url.clone(),
                    redirect: !args.no_redirect,
                    max_lag: args.max_lag,
                })
            })
            .transpose()?,
        lease: args.lease.then_some(args.lease_ttl),
    })
}

/// The callback secret from its file, or from systemd's credentials directory.
fn payment_callback_secret(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    let path = match &args.payment_callback_secret_file {
        Some(path) => path.clone(),
        None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => {
                let path = PathBuf::from(dir).join("payment-callback-secret");
                if !path.exists() {
                    return Ok(None);
                }
                path
            }
            None => return Ok(None),
        },
    };
    let secret = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the payment callback secret {}", path.display()))?
        .trim()
        .to_owned();
    if secret.len() < 16 {
        anyhow::bail!(
            "the payment callback secret in {} is shorter than 16 characters",
            path.display()
        );
    }
    Ok(Some(secret))
}

pub(super) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init("info");
    let settings = settings(&args)?;
    actix_web::rt::System::new().block_on(async move {
        let clock = Arc::new(SystemClock);
        let app = Application::build(&settings, clock.clone())?;
        // Before the address is printed: whoever reads it may signal at once.
        app.handle().stop_on_signals()?;
        let host = settings
            .listen
            .rsplit_once(':')
            .map_or("127.0.0.1", |(h, _)| h);
        let base = format!("http://{host}:{}", app.port());
        if args.demo {
            demo::ensure(&app, clock.as_ref(), &base, &settings.data_dir).await?;
        }
        if let (Some(port), Some(addr)) = (app.admin_port(), &settings.admin_listen) {
            let host = addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
            println!("dropd admin listening on http://{host}:{port}");
        }
        println!("dropd listening on {base}");
        tracing::info!(
            %base,
            data_dir = %settings.data_dir.display(),
            synchronous = settings.synchronous.as_str(),
            sqlite = rusqlite::version(),
            "serving"
        );
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        if let Some(timeout) = sd_notify::watchdog_enabled() {
            // Twice per WatchdogSec, as systemd advises.
            let every = (timeout / 2).max(Duration::from_millis(100));
            app.handle().feed_watchdog(every, || {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            });
        }
        app.run_until_stopped().await
    })
}

fn replication_from_args(
    args: &ServeArgs,
    db_path: &Path,
) -> anyhow::Result<Option<ReplicationConfig>> {
    let mut config = match (&args.config, &args.replica) {
        (Some(path), _) => {
            let (config, warnings) = ReplicationConfig::load(path, Some(db_path))?;
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            if let Some(named) = &config.db_path {
                let canonical =
                    |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
                if canonical(named) != canonical(db_path) {
                    tracing::warn!(
                        config_db = %named.display(),
                        served_db = %db_path.display(),
                        "the config names another database than the one dropd serves; replicating the served one"
                    );
                }
            }
            config
        }
        (None, Some(url)) => ReplicationConfig::for_target(
            ReplicaTarget::parse_url(url).with_context(|| format!("--replica {url}"))?,
        ),
        (None, None) => return Ok(None),
    };
    if let Some(interval) = args.sync_interval {
        anyhow::ensure!(
            !interval.is_zero(),
            "--sync-interval must be longer than zero"
        );
        config.sync_interval = interval;
    }
    Ok(Some(config))
}

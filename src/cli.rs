//! The command line: `serve`, `token`, `admin-key create`. Every `serve` flag can also come from
//! `DROPD_<FLAG>`; flags win over the environment, which wins over defaults.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::{Application, Settings, DEFAULT_TOKEN_TTL};
use crate::auth::{self, TokenKeys, TokenPolicy};
use crate::defaults;
use crate::domain::{BuyerId, SystemClock};
use crate::http::admission::{AdmissionConfig, Bucket};
use crate::replicate::config::ReplicationConfig;
use crate::replicate::replica::ReplicaTarget;
use crate::store::{admin_keys, open, Synchronous};
use crate::{demo, telemetry};

#[derive(Debug, Parser)]
#[command(name = "dropd", version, about = "A server for limited-stock drops")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Mint a buyer token (for development, or for a login service to copy).
    Token(TokenArgs),
    /// Manage admin keys.
    #[command(subcommand)]
    AdminKey(AdminKeyCommand),
    /// Rebuild a database from a replica (latest, --txid or --timestamp). Litestream's
    /// single-dash spellings (-txid, -timestamp, -if-db-not-exists...) work too.
    Restore(RestoreArgs),
    /// Measure hold attempts/s against the /healthz ceiling, group commit against a naive
    /// baseline, and reads under fire; prints a markdown table and writes JSON.
    #[cfg(feature = "bench")]
    Bench(crate::bench::BenchArgs),
}

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
    /// `full`: an acknowledged write survives power loss. `normal`: faster, survives a process
    /// crash but may lose the last commits on power loss.
    #[arg(long, env = "DROPD_SYNCHRONOUS", value_enum, default_value_t = Synchronous::Full)]
    pub synchronous: Synchronous,
    #[command(flatten)]
    pub tokens: TokenFlags,
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
    /// Replicate as this Litestream-format litestream.yml says (its replica, sync-interval,
    /// levels, snapshot and retention keys; see the commented example litestream.yml).
    #[arg(long, env = "DROPD_CONFIG", conflicts_with = "replica")]
    pub config: Option<PathBuf>,
    /// Ship the WAL to this replica in Litestream's format, with Litestream's default levels and
    /// retention: `file:///dir` or `s3://bucket/path?endpoint=...&region=...` (credentials from
    /// LITESTREAM_ACCESS_KEY_ID/LITESTREAM_SECRET_ACCESS_KEY or AWS_*).
    #[arg(long, env = "DROPD_REPLICA")]
    pub replica: Option<String>,
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
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The buyer id the token speaks for.
    #[arg(long)]
    pub sub: String,
    /// How long the token is valid, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub tokens: TokenFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// How buyer tokens are signed and what a server accepts; `serve` and `token` share them so a
/// minted token is one the server takes.
#[derive(Debug, Args)]
pub struct TokenFlags {
    /// Secret for buyer tokens (at least 32 bytes). Repeat it to accept several while rotating:
    /// the first signs, all verify. Default: <data-dir>/token-secret, one secret per line.
    #[arg(
        long = "token-secret",
        env = "DROPD_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub token_secrets: Vec<String>,
    /// Longest a token may live (exp minus iat); longer-lived tokens are refused.
    #[arg(long, env = "DROPD_TOKEN_MAX_LIFETIME", default_value = defaults::TOKEN_MAX_LIFETIME_TEXT,
          value_parser = humantime::parse_duration)]
    pub token_max_lifetime: Duration,
    /// Require this `iss` in every token (and put it in minted ones).
    #[arg(long, env = "DROPD_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,
    /// Require this `aud` in every token (and put it in minted ones).
    #[arg(long, env = "DROPD_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
}

impl TokenFlags {
    pub fn policy(&self) -> TokenPolicy {
        TokenPolicy {
            max_lifetime: self.token_max_lifetime,
            issuer: self.token_issuer.clone(),
            audience: self.token_audience.clone(),
            ..TokenPolicy::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Where to write the database.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Restore up to this TXID (hex, as in the replica's file names).
    #[arg(long, value_parser = parse_txid)]
    pub txid: Option<u64>,
    /// Restore the state as of this moment (RFC 3339).
    #[arg(long, value_parser = parse_timestamp, conflicts_with = "txid")]
    pub timestamp: Option<std::time::SystemTime>,
    /// Do nothing (and succeed) if the output database already exists.
    #[arg(long)]
    pub if_db_not_exists: bool,
    /// Do nothing (and succeed) if the replica holds nothing yet.
    #[arg(long)]
    pub if_replica_exists: bool,
    /// Print the files that would be applied, and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallelism: u32,
    /// Read the replica from this litestream.yml; the argument is then the database path.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The replica (`file:///path` or `s3://bucket/path?endpoint=...`), or with --config the
    /// database path named in the config.
    pub replica: Option<String>,
}

fn parse_retention(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err("the retention must be at least 1s: a client's retry must find its key".into());
    }
    Ok(d)
}

fn parse_txid(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{text:?} is not a hexadecimal TXID such as 000000000000002a"))
}

fn parse_timestamp(text: &str) -> Result<std::time::SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(std::time::SystemTime::from)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-11-22T01:48:16Z: {e}"))
}

/// Litestream's flags are single-dash (`-txid`); clap wants `--txid`. Known names are rewritten
/// before parsing so scripts written for `litestream restore` work unchanged.
pub fn litestream_compatible_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    const LONG: &[&str] = &[
        "txid",
        "timestamp",
        "if-db-not-exists",
        "if-replica-exists",
        "parallelism",
        "config",
        "dry-run",
    ];
    args.into_iter()
        .map(|arg| match arg.to_str() {
            Some(text) if text.starts_with('-') && !text.starts_with("--") => {
                let name = text[1..].split('=').next().unwrap_or_default();
                if LONG.contains(&name) {
                    format!("-{text}").into()
                } else {
                    arg
                }
            }
            _ => arg,
        })
        .collect()
}

#[derive(Debug, Subcommand)]
pub enum AdminKeyCommand {
    /// Create an admin key; it is printed once and stored only as a hash.
    Create {
        #[arg(long, default_value = "ops")]
        name: String,
        #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::AdminKey(AdminKeyCommand::Create { name, data_dir }) => {
            create_admin_key(&name, &data_dir)
        }
        Command::Restore(args) => restore(args),
        #[cfg(feature = "bench")]
        Command::Bench(args) => {
            telemetry::init("warn");
            crate::bench::run(args)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init("info");
    let replica = replication_from_args(&args, &args.data_dir.join(crate::app::DB_FILE))?;
    let settings = Settings {
        listen: args.listen,
        data_dir: args.data_dir,
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
        idempotency_retention: args.idempotency_retention,
        sweep_limit: defaults::SWEEP_LIMIT,
        admission: AdmissionConfig {
            enabled: args.rate_limit == Switch::On,
            per_ip: Bucket::new(args.ip_rate, args.ip_burst),
            per_buyer: Bucket::new(args.buyer_rate, args.buyer_burst),
            trusted_proxies: args.trusted_proxies.clone(),
        },
        box_id: args.box_id.clone(),
        max_subscribers: args.max_subscribers,
        sse_cpu_budget: args.sse_cpu_budget,
        demo: args.demo,
        replica,
        ack_after_replicated: args.ack_after_replicated,
    };
    actix_web::rt::System::new().block_on(async move {
        let clock = Arc::new(SystemClock);
        let app = Application::build(&settings, clock.clone())?;
        let host = settings
            .listen
            .rsplit_once(':')
            .map_or("127.0.0.1", |(h, _)| h);
        let base = format!("http://{host}:{}", app.port());
        if args.demo {
            demo::ensure(&app, clock.as_ref(), &base).await?;
        }
        println!("dropd listening on {base}");
        tracing::info!(
            %base,
            data_dir = %settings.data_dir.display(),
            synchronous = settings.synchronous.as_str(),
            sqlite = rusqlite::version(),
            "serving"
        );
        app.handle().stop_on_signals()?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
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

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    use crate::replicate::restore::{self, Target};
    telemetry::init("warn");
    let (target, default_output) = match &args.config {
        Some(path) => {
            let db = args.replica.as_deref().map(Path::new);
            let (config, warnings) = ReplicationConfig::load(path, db)?;
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            (config.target, db.map(Path::to_owned).or(config.db_path))
        }
        None => {
            let url = args
                .replica
                .as_deref()
                .context("give the replica URL (file:///path or s3://bucket/path), or --config litestream.yml")?;
            (ReplicaTarget::parse_url(url)?, None)
        }
    };
    let label = target.to_string();
    let replica = target
        .open()
        .with_context(|| format!("opening the replica {label}"))?;
    let mut files = replica.list()?;
    if files.is_empty() && args.if_replica_exists {
        eprintln!("no replica at {label}: nothing to restore");
        return Ok(());
    }
    let target = match (args.txid, args.timestamp) {
        (Some(txid), _) => Target::Txid(txid),
        (None, Some(at)) => {
            replica.refine_times(&mut files)?;
            Target::Time(at)
        }
        (None, None) => Target::Latest,
    };
    let chain = restore::plan(&files, target, &label)?;
    if args.dry_run {
        for file in &chain {
            println!(
                "level {} txid {:016x}-{:016x} {} bytes {}",
                file.level, file.min_txid, file.max_txid, file.size, file.key
            );
        }
        return Ok(());
    }
    let output = args
        .output
        .or(default_output)
        .context("-o is required: where should the database be written?")?;
    if output.exists() {
        if args.if_db_not_exists {
            eprintln!("{} exists: nothing to restore", output.display());
            return Ok(());
        }
        return Err(restore::RestoreError::OutputExists(output.display().to_string()).into());
    }
    let total: u64 = chain.iter().map(|f| f.size).sum();
    // Draws only on a terminal; scripts see the summary line alone.
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} restoring [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let started = std::time::Instant::now();
    let txid = restore::apply(
        &*replica,
        &chain,
        &output,
        args.parallelism as usize,
        &|n| bar.inc(n),
    )?;
    bar.finish_and_clear();
    eprintln!(
        "restored {} to txid {txid:016x} from {} files ({} bytes) in {:.1?}",
        output.display(),
        chain.len(),
        total,
        started.elapsed()
    );
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let sub = BuyerId::parse(&args.sub).map_err(anyhow::Error::msg)?;
    let secrets = auth::load_secrets(&args.tokens.token_secrets, &args.data_dir, false)?;
    let policy = args.tokens.policy();
    let ttl = if args.ttl.is_zero() {
        DEFAULT_TOKEN_TTL
    } else {
        args.ttl
    };
    if ttl > policy.max_lifetime {
        anyhow::bail!(
            "--ttl {} is longer than the {} the server accepts (--token-max-lifetime)",
            humantime::format_duration(ttl),
            humantime::format_duration(policy.max_lifetime)
        );
    }
    let keys = TokenKeys::with_secrets(&secrets, policy)?;
    println!("{}", keys.mint(&sub, ttl)?);
    Ok(())
}

fn create_admin_key(name: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let path = data_dir.join(crate::app::DB_FILE);
    // A one-row insert from an operator's shell, serialized with a running server by SQLite's
    // write lock; the connection never checkpoints (see `open::open_writer`).
    let conn = open::open_for_cli(&path).with_context(|| format!("opening {}", path.display()))?;
    let (key, hash) = auth::generate_admin_key();
    let id = admin_keys::insert(&conn, name, &hash, chrono::Utc::now())
        .context("storing the admin key")?;
    eprintln!("created admin key {id} ({name}); it is shown only once:");
    println!("{key}");
    Ok(())
}

//! `dropd bench`: measures the speed that matters (hold attempts per second against the same
//! server's `/healthz` ceiling, group commit against a transaction per request, reads under
//! fire) in one run, as ratios that hold on a noisy machine.

mod attack;
mod checks;
mod cpu;
mod load;
mod queue;
mod raw;
mod replication;
mod report;
mod scale;
mod server;
mod sse;
mod workload;
mod wrk;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use hyper::header::HeaderValue;

use crate::auth::TokenKeys;
use crate::domain::BuyerId;
use checks::{verify, verify_counts, Admin};
use load::{Ctx, Group, GroupResult, Workload};
use report::{Phase, Report};
use server::OwnServer;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent connections of the stampede and the ceiling.
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// Length of each phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Interleaved ceiling/stampede rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Most requests one connection sends in a phase (a bound on every loop).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests_per_connection: u64,
    /// Target a running dropd (loopback only) instead of starting one.
    #[arg(long)]
    pub url: Option<String>,
    /// Admin key for --url.
    #[arg(long, env = "DROPD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Buyer-token secret for --url.
    #[arg(long, env = "DROPD_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Durability of the server the benchmark starts.
    #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
    pub synchronous: String,
    /// Distinct buyers the load is spread over.
    #[arg(long, default_value_t = 20_000)]
    pub buyers: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/latest.json")]
    pub out: PathBuf,
    /// Skip the naive one-transaction-per-request baseline.
    #[arg(long)]
    pub skip_naive: bool,
    /// The independent load client (default: `wrk` on PATH; `make bench` installs it).
    #[arg(long)]
    pub wrk: Option<PathBuf>,
    /// Start the server with a file replica (in the temporary directory) beside it.
    #[arg(long)]
    pub with_replica: bool,
    /// Run without wrk even if it is installed.
    #[arg(long)]
    pub skip_wrk: bool,
    /// Length of the "from idle" stampede: the first seconds of a drop, the WAL truncated.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle_duration: Duration,
    /// SSE subscribers attached during the watched stampede (capped by the open-file limit).
    #[arg(long, default_value_t = 2_000)]
    pub watchers: usize,
    /// Run the live-stock benchmark instead: as many subscribers as the open-file limit allows
    /// (at most --sse-subscribers), one change, then a stampede while they watch.
    #[arg(long)]
    pub sse: bool,
    #[arg(long, default_value_t = 10_000)]
    pub sse_subscribers: usize,
    /// Run the replication benchmark instead: dropd's shipper and the real `litestream
    /// replicate` side by side at each --rates, then restore speed for --restore-size.
    #[arg(long)]
    pub replication: bool,
    /// Committed transactions per second for --replication.
    #[arg(long, value_delimiter = ',', default_value = "2000,10000")]
    pub rates: Vec<u32>,
    /// Length of each --replication rate.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub replication_duration: Duration,
    /// Database size for the restore measurement (0 skips it); 1GiB crosses SQLite's lock page.
    #[arg(long, default_value = "1GiB")]
    pub restore_size: bytesize::ByteSize,
    /// The real litestream binary to compare with.
    #[arg(long, default_value = "target/litestream-venv/bin/litestream")]
    pub litestream: PathBuf,
    /// Sharded behind HAProxy instead: two leaders, a follower each, the proxy in front; a
    /// stampede on two drops with --watchers on the followers, and the proxy hop's cost.
    /// Writes target/bench/scale.json.
    #[arg(long)]
    pub scale: bool,
    /// Queue drops instead: joins against hold attempts, admitted reads against /healthz, and
    /// the admission rate held. Writes target/bench/queue.json.
    #[arg(long)]
    pub queue: bool,
    /// Units of each of the two --scale drops.
    #[arg(long, default_value_t = 5_000)]
    pub scale_stock: i64,
    /// The HAProxy configuration --scale runs.
    #[arg(long, default_value = "docs/scale-out/haproxy.cfg")]
    pub haproxy_config: PathBuf,
}

fn sign_tokens(secret: &str, buyers: usize) -> anyhow::Result<Vec<HeaderValue>> {
    let keys = TokenKeys::new(secret.as_bytes())?;
    eprintln!("signing {buyers} buyer tokens...");
    (0..buyers)
        .map(|b| {
            let token = keys.mint(
                &BuyerId::parse(&format!("bench-{b}")).map_err(anyhow::Error::msg)?,
                Duration::from_secs(6 * 3600),
            )?;
            Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
        })
        .collect()
}

fn run_queue(args: &BenchArgs, secret: &str) -> anyhow::Result<()> {
    let report = queue::run(&queue::Options {
        connections: args.connections,
        duration: args.duration,
        tokens: sign_tokens(secret, args.buyers)?,
        secret: secret.to_owned(),
        run_id: format!("{:x}", rand::random::<u32>()),
        synchronous: args.synchronous.clone(),
    })?;
    println!("{}", queue::markdown(&report));
    let out = args.out.with_file_name("queue.json");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("wrote {}", out.display());
    if report.problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("the queue benchmark's checks failed")
    }
}

fn run_scale(args: &BenchArgs, secret: &str) -> anyhow::Result<()> {
    let report = scale::run(&scale::Options {
        connections: args.connections,
        duration: args.duration,
        watchers: watchers_that_fit(args.watchers, args.connections),
        stock: args.scale_stock,
        config: args.haproxy_config.clone(),
        tokens: sign_tokens(secret, args.buyers)?,
        secret: secret.to_owned(),
        run_id: format!("{:x}", rand::random::<u32>()),
    })?;
    println!("{}", scale::markdown(&report));
    let out = args.out.with_file_name("scale.json");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", out.display());
    if !report.problems.is_empty() {
        bail!(
            "the sharded setup broke a rule: {}",
            report.problems.join("; ")
        );
    }
    Ok(())
}

/// Watchers that fit under this process's open-file limit, leaving room for the rest.
fn watchers_that_fit(wanted: usize, connections: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<usize>().ok())
                })
        })
        .unwrap_or(1024);
    wanted.min(soft.saturating_sub(connections + 512))
}

const READERS: usize = 16;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.rounds == 0 || args.buyers == 0 {
        bail!("--connections, --rounds and --buyers must be at least 1");
    }
    if args.replication {
        let report = replication::run(&replication::Options {
            rates: args.rates.clone(),
            duration: args.replication_duration,
            restore_size: args.restore_size.as_u64(),
            litestream: args.litestream.clone(),
        })?;
        println!("{}", replication::markdown(&report));
        let out = args.out.with_file_name("replication.json");
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", out.display());
        return Ok(());
    }
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let own_secret = hex::encode(rand::random::<[u8; 32]>());
    if args.scale {
        return run_scale(&args, &own_secret);
    }
    if args.queue {
        return run_queue(&args, &own_secret);
    }
    let (mut own, base, admin_key, secret) = match &args.url {
        Some(url) => {
            let admin = args
                .admin_key
                .clone()
                .context("--url needs --admin-key (or DROPD_ADMIN_KEY)")?;
            let secret = args
                .token_secret
                .clone()
                .context("--url needs --token-secret (or DROPD_TOKEN_SECRET)")?;
            (None, url.trim_end_matches('/').to_owned(), admin, secret)
        }
        None => {
            let admin = server::create_admin_key(dir.path())?;
            let replica = format!("file://{}", dir.path().join("replica").display());
            let extra: Vec<&str> = if args.with_replica {
                vec!["--replica", &replica]
            } else {
                Vec::new()
            };
            let srv = OwnServer::start(dir.path(), &own_secret, &args.synchronous, &extra)?;
            let base = srv.base.clone();
            (Some(srv), base, admin, own_secret.clone())
        }
    };
    let addr = loopback_addr(&base)?;
    let tokens = sign_tokens(&secret, args.buyers)?;
    let run_id = format!("{:x}", rand::random::<u32>());
    let mut ctx = Arc::new(Ctx {
        addr,
        host: HeaderValue::from_str(&addr.to_string())?,
        tokens,
        run_id: run_id.clone(),
    });
    let admin = Admin::new(&base, &admin_key)?;
    if args.sse {
        let Some(srv) = own.take() else {
            bail!("--sse starts its own server (it measures the server's memory); drop --url");
        };
        let names = ["alone", "watched", "probe"].map(|n| format!("bench-{run_id}-sse-{n}"));
        for name in &names {
            admin.create_drop(name, 1_000_000_000)?;
        }
        let subscribers = watchers_that_fit(args.sse_subscribers, args.connections);
        let report = sse::run(
            ctx.clone(),
            srv.pid,
            (&names[0], &names[1], &names[2]),
            subscribers,
            args.connections,
            args.duration,
        )?;
        srv.stop()?;
        println!("{}", sse::markdown(&report));
        let out = args.out.with_file_name("sse.json");
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", out.display());
        return Ok(());
    }
    // The ledger's cost, measured in the same rounds: a second server that chains nothing.
    let bare_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let bare = match &own {
        Some(_) => Some(Baseline::start(bare_dir.path(), &own_secret, &args, &ctx)?),
        None => None,
    };
    let mut report = Report::new(&args, own.is_some());
    let wrk = if args.skip_wrk {
        None
    } else {
        wrk::Wrk::find(args.wrk.as_deref(), &ctx.tokens)?
    };
    if wrk.is_none() && !args.skip_wrk {
        eprintln!("wrk not found: only the benchmark's own load generator runs (apt install wrk)");
    }
    let phases_run = std::cell::Cell::new(0usize);
    // WAL bytes the last phase wrote (from the server's /metrics).
    let last_wal = std::cell::Cell::new(None::<f64>);
    let last_wal_max = std::cell::Cell::new(None::<f64>);
    let phase = |name: &str,
                 groups: &[Group],
                 own: &Option<OwnServer>,
                 ctx: &Arc<Ctx>|
     -> anyhow::Result<(Vec<GroupResult>, cpu::Usage)> {
        eprintln!("phase {name}...");
        let pid = own.as_ref().map(|s| s.pid);
        let wal_before = wrk::wal_bytes(ctx.addr).ok();
        let watch = own.as_ref().map(|s| server::WalWatch::start(&s.db_path));
        let before = cpu::sample(pid);
        let number = phases_run.get();
        phases_run.set(number + 1);
        let results = load::run(
            ctx.clone(),
            number,
            groups,
            args.duration,
            args.max_requests_per_connection,
        )?;
        let usage = cpu::between(&before, &cpu::sample(pid));
        last_wal_max.set(watch.map(server::WalWatch::stop));
        last_wal.set(match (wal_before, wrk::wal_bytes(ctx.addr)) {
            (Some(a), Ok(b)) => Some(b - a),
            _ => None,
        });
        Ok((results, usage))
    };
    let wal_per_request =
        |requests: u64| last_wal.get().map(|bytes| bytes / requests.max(1) as f64);
    let stampede = |drop: &str| Group {
        workload: Workload::Hold { drop: drop.into() },
        connections: args.connections,
    };

    for round in 1..=args.rounds {
        let (ceiling, usage) = phase(
            "ceiling",
            &[Group {
                workload: Workload::Health,
                connections: args.connections,
            }],
            &own,
            &ctx,
        )?;
        report.add(Phase::new("ceiling", round, &ceiling[0], usage));

        // Which of the two goes first alternates, so neither has the warmer machine.
        let without_ledger = |report: &mut Report| -> anyhow::Result<()> {
            let Some(bare) = &bare else {
                return Ok(());
            };
            let drop = format!("bench-{run_id}-bare-{round}");
            bare.admin.create_drop(&drop, 1_000_000_000)?;
            let (results, usage) = phase(
                "stampede without ledger",
                &[stampede(&drop)],
                &bare.server,
                &bare.ctx,
            )?;
            let mut p = Phase::new("stampede without ledger", round, &results[0], usage);
            p.invariants = verify(&bare.server, &drop, &results[0], None)?;
            report.add(p);
            Ok(())
        };
        if round % 2 == 0 {
            without_ledger(&mut report)?;
        }
        let big = format!("bench-{run_id}-big-{round}");
        admin.create_drop(&big, 1_000_000_000)?;
        let (results, usage) = phase("stampede", &[stampede(&big)], &own, &ctx)?;
        let mut p = Phase::new("stampede", round, &results[0], usage);
        p.wal_bytes_per_request = wal_per_request(results[0].requests);
        p.wal_max_mb = last_wal_max.get();
        p.invariants = verify(&own, &big, &results[0], None)?;
        report.add(p);
        if round % 2 == 1 {
            without_ledger(&mut report)?;
        }

        let small = format!("bench-{run_id}-small-{round}");
        admin.create_drop(&small, 100)?;
        let (results, usage) = phase("sold-out", &[stampede(&small)], &own, &ctx)?;
        let mut p = Phase::new("sold-out", round, &results[0], usage);
        p.invariants = verify(&own, &small, &results[0], Some(100))?;
        report.add(p);

        if let Some(wrk) = &wrk {
            let pid = own.as_ref().map(|s| s.pid);
            let wrk_phase = |name: &str, target: &wrk::Target<'_>, duration: Duration| {
                eprintln!("phase {name}...");
                let watch = own.as_ref().map(|s| server::WalWatch::start(&s.db_path));
                let (before, wal_before) = (cpu::sample(pid), wrk::wal_bytes(addr).ok());
                let result = wrk.run(addr, target, args.connections, duration)?;
                let usage = cpu::between(&before, &cpu::sample(pid));
                let mut p = Phase::from_wrk(name, round, &result, usage);
                p.wal_max_mb = watch.map(server::WalWatch::stop);
                if let (Some(a), Ok(b)) = (wal_before, wrk::wal_bytes(addr)) {
                    p.wal_bytes_per_request = Some((b - a) / result.requests.max(1) as f64);
                }
                anyhow::Ok((p, result))
            };
            let (p, _) = wrk_phase("wrk ceiling", &wrk::Target::Health, args.duration)?;
            report.add(p);

            // The way a drop starts: the writer idle long enough to truncate the WAL (it waits
            // for a second without commands).
            let drop = format!("bench-{run_id}-wrk-{round}");
            admin.create_drop(&drop, 1_000_000_000)?;
            std::thread::sleep(Duration::from_millis(2_500));
            let mut acked = 0;
            for (name, duration, part) in [
                ("wrk stampede from idle", args.idle_duration, "idle"),
                ("wrk stampede steady", args.duration, "steady"),
            ] {
                let prefix = format!("{run_id}-{round}-{part}");
                let target = wrk::Target::Hold {
                    drop: &drop,
                    key_prefix: &prefix,
                };
                let (mut p, result) = wrk_phase(name, &target, duration)?;
                acked += result.requests - result.non_2xx;
                p.invariants = verify_counts(&own, &drop, acked, true, None)?;
                report.add(p);
            }
            let small = format!("bench-{run_id}-wrk-small-{round}");
            admin.create_drop(&small, 100)?;
            let prefix = format!("{run_id}-{round}-sold-out");
            let target = wrk::Target::Hold {
                drop: &small,
                key_prefix: &prefix,
            };
            let (mut p, result) = wrk_phase("wrk sold-out", &target, args.duration)?;
            p.invariants = verify_counts(
                &own,
                &small,
                result.requests - result.non_2xx,
                true,
                Some((result.requests, 100)),
            )?;
            report.add(p);
        }
    }

    let checkout_drop = format!("bench-{run_id}-checkout");
    admin.create_drop(&checkout_drop, 1_000_000_000)?;
    let (results, usage) = phase(
        "checkout",
        &[Group {
            workload: Workload::Checkout {
                drop: checkout_drop.clone(),
            },
            connections: args.connections,
        }],
        &own,
        &ctx,
    )?;
    let mut p = Phase::new("checkout", 1, &results[0], usage);
    p.invariants = verify(&own, &checkout_drop, &results[0], None)?;
    report.add(p);

    let fire = format!("bench-{run_id}-fire");
    admin.create_drop(&fire, 1_000_000_000)?;
    let (results, usage) = phase(
        "reads under fire",
        &[
            stampede(&fire),
            Group {
                workload: Workload::ReadDrop { drop: fire.clone() },
                connections: READERS,
            },
        ],
        &own,
        &ctx,
    )?;
    let mut p = Phase::new("stampede+reads", 1, &results[0], usage);
    p.invariants = verify(&own, &fire, &results[0], None)?;
    report.add(p);
    report.add(Phase::new("reads under fire", 1, &results[1], usage));

    let watched = format!("bench-{run_id}-watched");
    admin.create_drop(&watched, 1_000_000_000)?;
    let watchers = watchers_that_fit(args.watchers, args.connections);
    let (results, usage) = phase(
        "watched stampede",
        &[
            stampede(&watched),
            Group {
                workload: Workload::Watch {
                    drop: watched.clone(),
                },
                connections: watchers,
            },
        ],
        &own,
        &ctx,
    )?;
    let mut p = Phase::new("watched stampede", 1, &results[0], usage);
    p.invariants = verify(&own, &watched, &results[0], None)?;
    report.add(p);
    let mut p = Phase::new("watchers", 1, &results[1], usage);
    p.catch_up_p99_ms = Some(results[1].catch_up.value_at_quantile(0.99) as f64 / 1000.0);
    report.add(p);

    if let Some(Baseline {
        server: Some(srv), ..
    }) = bare
    {
        srv.stop()?;
    }
    if let Some(srv) = own.take() {
        srv.stop()?;
        let attacked = tempfile::tempdir().context("creating a temporary data directory")?;
        attack::run(&args, attacked.path(), &own_secret, &ctx, &mut report)?;
        if !args.skip_naive {
            let naive = OwnServer::start(
                dir.path(),
                &own_secret,
                &args.synchronous,
                &["--naive-writes"],
            )?;
            let naive_addr = loopback_addr(&naive.base)?;
            let mut naive_ctx = Ctx {
                addr: naive_addr,
                host: HeaderValue::from_str(&naive_addr.to_string())?,
                tokens: Vec::new(),
                run_id: format!("{run_id}-naive"),
            };
            std::mem::swap(
                &mut naive_ctx.tokens,
                &mut Arc::get_mut(&mut ctx)
                    .context("load context still shared")?
                    .tokens,
            );
            let ctx = Arc::new(naive_ctx);
            let drop = format!("bench-{run_id}-naive");
            Admin::new(&naive.base, &admin_key)?.create_drop(&drop, 1_000_000_000)?;
            let own = Some(naive);
            let (results, usage) = phase("naive baseline", &[stampede(&drop)], &own, &ctx)?;
            let mut p = Phase::new("naive stampede", 1, &results[0], usage);
            p.invariants = verify(&own, &drop, &results[0], None)?;
            report.add(p);
            if let Some(srv) = own {
                srv.stop()?;
            }
        }
    }
    report.finish();
    println!("{}", report.markdown());
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    if report.broken_invariants() {
        bail!("an invariant was broken: see the report");
    }
    Ok(())
}

/// A second server without the fairness ledger, for the stampede's rate without it.
struct Baseline {
    server: Option<OwnServer>,
    ctx: Arc<Ctx>,
    admin: Admin,
}

impl Baseline {
    fn start(dir: &Path, secret: &str, args: &BenchArgs, like: &Ctx) -> anyhow::Result<Self> {
        let admin_key = server::create_admin_key(dir)?;
        let srv = OwnServer::start(dir, secret, &args.synchronous, &["--without-ledger"])?;
        let addr = loopback_addr(&srv.base)?;
        let ctx = Arc::new(Ctx {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            tokens: like.tokens.clone(),
            run_id: format!("{}-bare", like.run_id),
        });
        let admin = Admin::new(&srv.base, &admin_key)?;
        Ok(Self {
            server: Some(srv),
            ctx,
            admin,
        })
    }
}

/// Only loopback targets: the benchmark never loads anything but this machine.
fn loopback_addr(base: &str) -> anyhow::Result<SocketAddr> {
    let authority = base
        .strip_prefix("http://")
        .context("the URL must start with http://")?
        .split('/')
        .next()
        .unwrap_or_default();
    let authority = authority.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("{base} is not host:port"))?;
    if !addr.ip().is_loopback() {
        bail!(
            "dropd bench only targets loopback (127.0.0.1 or localhost), not {}",
            addr.ip()
        );
    }
    Ok(addr)
}

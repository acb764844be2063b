//! `dropd bench --scale` (`make bench-scale`): two leaders (boxes `a` and `b`, each with its
//! replica), a follower of each, and the real HAProxy with `docs/scale-out/haproxy.cfg` in
//! front, all on loopback. It shows the routing is right under a stampede on both drops at once
//! with watchers on the followers (every hold counted on the box that owns its drop, nothing
//! sold past its stock, the followers ending where their leaders did), and what the proxy hop
//! costs per request. On a 2-core machine this is correctness and overhead, not a speed-up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::header::HeaderValue;
use serde::Serialize;

use super::checks::Admin;
use super::load::{self, Ctx, Group, GroupResult, Workload};
use super::server::{create_admin_key, OwnServer};

pub struct Options {
    pub connections: usize,
    pub duration: Duration,
    pub watchers: usize,
    pub stock: i64,
    pub config: PathBuf,
    pub tokens: Vec<HeaderValue>,
    pub secret: String,
    pub run_id: String,
}

#[derive(Debug, Serialize)]
pub struct DropOutcome {
    pub drop: String,
    pub stock: i64,
    /// 201s the load generator counted, through the proxy.
    pub held: u64,
    pub sold_out: u64,
    /// Answers neither (transport errors included).
    pub other: u64,
    /// What the owning leader says is left, and what its follower says through the proxy.
    pub leader_available: i64,
    pub follower_available: i64,
}

#[derive(Debug, Serialize)]
pub struct HopFigures {
    pub route: &'static str,
    pub direct_per_s: f64,
    pub proxied_per_s: f64,
    pub direct_p50_ms: f64,
    pub proxied_p50_ms: f64,
    /// Added latency at the median, per request.
    pub hop_p50_us: f64,
}

#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub connections: usize,
    pub duration_s: f64,
    pub watchers: usize,
    pub drops: Vec<DropOutcome>,
    pub stampede_holds_per_s: f64,
    pub watcher_stalest_gap_p99_ms: f64,
    pub watcher_catch_up_p99_ms: f64,
    pub hop: Vec<HopFigures>,
    /// Every check that failed (empty: the routing held).
    pub problems: Vec<String>,
}

/// Kills HAProxy when dropped.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn authority(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

fn start_proxy(config: &Path, map: &Path, boxes: [&str; 4]) -> anyhow::Result<(Proxy, String)> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(config)
        .env("DROPD_PROXY_LISTEN", &listen)
        .env("DROPD_LEADER_A", authority(boxes[0]))
        .env("DROPD_LEADER_B", authority(boxes[1]))
        .env("DROPD_FOLLOWER_A", authority(boxes[2]))
        .env("DROPD_FOLLOWER_B", authority(boxes[3]))
        .env("DROPD_DROPS_MAP", map)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting haproxy (Debian package haproxy)")?;
    let proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&listen).is_err() {
        if Instant::now() > deadline {
            bail!("haproxy never listened on {listen}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((proxy, format!("http://{listen}")))
}

/// Waits until a leader's replica holds everything it committed, so a follower can start.
fn wait_shipped(admin: &Admin) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = admin.get_json("/readyz")?;
        if ready["replica"]["state"] == "ok" && ready["replica"]["pending_wal_bytes"] == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("a leader's replica never caught up: {ready}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn available(admin: &Admin, drop: &str) -> anyhow::Result<i64> {
    admin.get_json(&format!("/v1/drops/{drop}"))?["skus"][0]["available"]
        .as_i64()
        .context("a drop view without availability")
}

fn ctx(base: &str, opts: &Options) -> anyhow::Result<Arc<Ctx>> {
    let addr = super::loopback_addr(base)?;
    Ok(Arc::new(Ctx {
        addr,
        host: HeaderValue::from_str(&addr.to_string())?,
        tokens: opts.tokens.clone(),
        run_id: opts.run_id.clone(),
    }))
}

fn hop(route: &'static str, direct: &GroupResult, proxied: &GroupResult) -> HopFigures {
    HopFigures {
        route,
        direct_per_s: direct.rate(),
        proxied_per_s: proxied.rate(),
        direct_p50_ms: direct.percentile_ms(0.5),
        proxied_p50_ms: proxied.percentile_ms(0.5),
        hop_p50_us: (proxied.percentile_ms(0.5) - direct.percentile_ms(0.5)) * 1000.0,
    }
}

pub fn run(opts: &Options) -> anyhow::Result<ScaleReport> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut leaders = Vec::new();
    let mut admins = Vec::new();
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let data = dir.path().join(format!("leader-{name}"));
        std::fs::create_dir_all(&data)?;
        let key = create_admin_key(&data)?;
        let replica = format!(
            "file://{}",
            dir.path().join(format!("replica-{name}")).display()
        );
        let leader = OwnServer::start(
            &data,
            &opts.secret,
            "full",
            &[
                "--box-id",
                name,
                "--replica",
                &replica,
                "--sync-interval",
                "200ms",
            ],
        )?;
        let admin = Admin::new(&leader.base, &key)?;
        admin.create_drop(&format!("scale-{}-{name}", opts.run_id), opts.stock)?;
        wait_shipped(&admin)?;
        leaders.push(leader);
        admins.push(admin);
        replicas.push(replica);
    }
    let mut followers = Vec::new();
    for (name, replica) in ["a", "b"].iter().zip(&replicas) {
        let data = dir.path().join(format!("follower-{name}"));
        followers.push(OwnServer::start(
            &data,
            &opts.secret,
            "full",
            &["--follow", replica, "--follow-interval", "200ms"],
        )?);
    }
    let drops = ["a", "b"].map(|n| format!("scale-{}-{n}", opts.run_id));
    let map = dir.path().join("drops.map");
    std::fs::write(&map, format!("{} a\n{} b\n", drops[0], drops[1]))?;
    let (proxy, proxy_base) = start_proxy(
        &opts.config,
        &map,
        [
            &leaders[0].base,
            &leaders[1].base,
            &followers[0].base,
            &followers[1].base,
        ],
    )?;
    let through = Admin::new(&proxy_base, "none")?;
    for drop in &drops {
        let deadline = Instant::now() + Duration::from_secs(15);
        while through.get_json(&format!("/v1/drops/{drop}")).is_err() {
            if Instant::now() > deadline {
                bail!("{drop} never served through the proxy");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (proxied, leader_a, follower_a) = (
        ctx(&proxy_base, opts)?,
        ctx(&leaders[0].base, opts)?,
        ctx(&followers[0].base, opts)?,
    );

    eprintln!("phase hop: /healthz and a drop read, direct and through the proxy...");
    let health_direct = load::phase(&leader_a, 0, Workload::Health, opts)?;
    let health_proxied = load::phase(&proxied, 1, Workload::Health, opts)?;
    let read = || Workload::ReadDrop {
        drop: drops[0].clone(),
    };
    let read_direct = load::phase(&follower_a, 2, read(), opts)?;
    let read_proxied = load::phase(&proxied, 3, read(), opts)?;

    eprintln!(
        "phase stampede: both drops at once through the proxy, {} watchers on the followers...",
        opts.watchers
    );
    let half = (opts.connections / 2).max(1);
    let watchers = (opts.watchers / 2).max(1);
    let groups: Vec<Group> = drops
        .iter()
        .map(|d| Group {
            workload: Workload::Hold { drop: d.clone() },
            connections: half,
        })
        .chain(drops.iter().map(|d| Group {
            workload: Workload::Watch { drop: d.clone() },
            connections: watchers,
        }))
        .collect();
    let results = load::run(proxied.clone(), 4, &groups, opts.duration, 1_000_000)?;
    // The followers are a sync interval and a poll behind.
    std::thread::sleep(Duration::from_secs(2));

    let mut problems = Vec::new();
    let mut outcomes = Vec::new();
    for (i, drop) in drops.iter().enumerate() {
        let r = &results[i];
        let held = r.outcome("held");
        let sold_out = r.outcome("sold-out");
        let leader_available = available(&admins[i], drop)?;
        let follower_available = available(&through, drop)?;
        if held as i64 > opts.stock {
            problems.push(format!("{drop}: {held} held of {} (oversold)", opts.stock));
        }
        if opts.stock - leader_available != held as i64 {
            problems.push(format!(
                "{drop}: the leader counts {} held, the load generator {held}",
                opts.stock - leader_available
            ));
        }
        if follower_available != leader_available {
            problems.push(format!(
                "{drop}: the follower shows {follower_available} available, the leader \
                 {leader_available}"
            ));
        }
        outcomes.push(DropOutcome {
            drop: drop.clone(),
            stock: opts.stock,
            held,
            sold_out,
            other: r.requests - held - sold_out + r.errors,
            leader_available,
            follower_available,
        });
    }
    let elapsed = results[0].elapsed.max(results[1].elapsed).as_secs_f64();
    let watch_gap = results[2]
        .percentile_ms(0.99)
        .max(results[3].percentile_ms(0.99));
    let catch_up = results[2]
        .catch_up
        .value_at_quantile(0.99)
        .max(results[3].catch_up.value_at_quantile(0.99)) as f64
        / 1000.0;
    drop(proxy);
    for server in followers.into_iter().chain(leaders) {
        server.stop()?;
    }
    Ok(ScaleReport {
        connections: opts.connections,
        duration_s: opts.duration.as_secs_f64(),
        watchers: watchers * 2,
        stampede_holds_per_s: (outcomes[0].held
            + outcomes[0].sold_out
            + outcomes[1].held
            + outcomes[1].sold_out) as f64
            / elapsed.max(1e-9),
        drops: outcomes,
        watcher_stalest_gap_p99_ms: watch_gap,
        watcher_catch_up_p99_ms: catch_up,
        hop: vec![
            hop("GET /healthz (leader a)", &health_direct, &health_proxied),
            hop(
                "GET /v1/drops/{drop} (follower a)",
                &read_direct,
                &read_proxied,
            ),
        ],
        problems,
    })
}

pub fn markdown(r: &ScaleReport) -> String {
    let mut out = format!(
        "## Scale-out behind HAProxy ({} connections, {:.0} s, {} watchers)\n\n\
         | drop | stock | held | sold-out | other | leader available | follower available |\n\
         |---|---|---|---|---|---|---|\n",
        r.connections, r.duration_s, r.watchers
    );
    for d in &r.drops {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            d.drop, d.stock, d.held, d.sold_out, d.other, d.leader_available, d.follower_available
        );
    }
    out += &format!(
        "\nstampede attempts/s through the proxy (both drops): {:.0}; watchers' stalest gap p99 \
         {:.0} ms, catch-up after the stampede p99 {:.0} ms\n\n\
         | route | direct /s | proxied /s | proxied / direct | direct p50 ms | proxied p50 ms | hop p50 us |\n\
         |---|---|---|---|---|---|---|\n",
        r.stampede_holds_per_s, r.watcher_stalest_gap_p99_ms, r.watcher_catch_up_p99_ms
    );
    for h in &r.hop {
        out += &format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} |\n",
            h.route,
            h.direct_per_s,
            h.proxied_per_s,
            h.proxied_per_s / h.direct_per_s.max(1e-9),
            h.direct_p50_ms,
            h.proxied_p50_ms,
            h.hop_p50_us
        );
    }
    out += &if r.problems.is_empty() {
        "\nrouting: every hold on its drop's box, nothing oversold, followers agree\n".to_owned()
    } else {
        format!("\nPROBLEMS:\n- {}\n", r.problems.join("\n- "))
    };
    out
}

impl load::PhaseShape for Options {
    fn connections(&self) -> usize {
        self.connections
    }

    fn duration(&self) -> Duration {
        self.duration
    }
}

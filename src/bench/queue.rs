//! `dropd bench --queue` (`make bench-queue`): a queue drop's paths against the server's own
//! ceiling in the same run. Joins into the pre-queue against hold attempts on a first-come drop
//! (a join is one append, so it should keep up with an attempt); the admission rate the
//! serving number actually held over wall-clock time against the one set; and what an
//! admitted buyer's read of their place (which signs their admission) costs against
//! `GET /healthz`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::header::HeaderValue;
use serde::Serialize;
use serde_json::json;

use super::checks::Admin;
use super::load::{self, Ctx, Workload};
use super::server::{create_admin_key, OwnServer};

pub struct Options {
    pub connections: usize,
    pub duration: Duration,
    pub tokens: Vec<HeaderValue>,
    pub secret: String,
    pub run_id: String,
    pub synchronous: String,
}

#[derive(Debug, Serialize)]
pub struct QueueReport {
    pub connections: usize,
    pub duration_s: f64,
    pub health_per_s: f64,
    pub joins_per_s: f64,
    /// Joins that made a new entry (the rest were buyers joining again).
    pub fresh_joins: u64,
    pub hold_attempts_per_s: f64,
    /// The goal is at least 1.
    pub joins_over_holds: f64,
    pub admitted_reads_per_s: f64,
    pub admitted_reads_over_health: f64,
    pub admitted_read_p50_ms: f64,
    pub health_p50_ms: f64,
    pub admission_rate_set: i64,
    pub admission_rate_held: f64,
    pub problems: Vec<String>,
}

const QUEUE_DROP: &str = "bench-queue";
const FCFS_DROP: &str = "bench-queue-fcfs";
const MEASURED_RATE: i64 = 500;

/// The serving number one joined buyer reads, and when.
fn serving(base: &str, token: &HeaderValue) -> anyhow::Result<(i64, Instant)> {
    // Admin sends its key as a bearer: a buyer's token goes the same way.
    let buyer = Admin::new(base, token.to_str()?.trim_start_matches("Bearer "))?;
    let place = buyer.get_json(&format!("/v1/drops/{QUEUE_DROP}/queue"))?;
    let serving = place["serving"]
        .as_i64()
        .context("a place without serving")?;
    Ok((serving, Instant::now()))
}

pub fn run(opts: &Options) -> anyhow::Result<QueueReport> {
    let dir = tempfile::tempdir()?;
    let key = create_admin_key(dir.path())?;
    let server = OwnServer::start(dir.path(), &opts.secret, &opts.synchronous, &[])?;
    let admin = Admin::new(&server.base, &key)?;
    let now = chrono::Utc::now();
    let rfc = crate::domain::clock::rfc3339;
    let spec = json!({
        "id": QUEUE_DROP, "name": QUEUE_DROP, "description": "benchmark",
        "starts_at": rfc(now + chrono::Duration::hours(1)),
        "ends_at": rfc(now + chrono::Duration::hours(6)),
        "per_buyer_limit": 1, "hold_seconds": 3600, "mode": "queue",
        "admission_rate": crate::domain::queue::MAX_ADMISSION_RATE,
        "skus": [{"sku": "S1", "name": "S1", "price": {"amount": 1000, "currency": "EUR"}, "stock": 1000}]
    });
    let status = admin.send("POST", "/v1/admin/drops", &spec)?;
    anyhow::ensure!(status == 201, "creating the queue drop answered {status}");
    admin.create_drop(FCFS_DROP, 100_000_000)?;
    let addr = super::loopback_addr(&server.base)?;
    let ctx = Arc::new(Ctx {
        addr,
        host: HeaderValue::from_str(&addr.to_string())?,
        tokens: opts.tokens.clone(),
        run_id: opts.run_id.clone(),
    });
    let queue = || QUEUE_DROP.to_owned();

    eprintln!(
        "phase health, joins, hold attempts ({} connections)...",
        opts.connections
    );
    let health = load::phase(&ctx, 0, Workload::Health, opts)?;
    let joins = load::phase(&ctx, 1, Workload::Join { drop: queue() }, opts)?;
    let holds = load::phase(
        &ctx,
        2,
        Workload::Hold {
            drop: FCFS_DROP.to_owned(),
        },
        opts,
    )?;

    // The start, now: the draw, and everyone admitted at once (the rate is the highest).
    let status = admin.send(
        "PATCH",
        &format!("/v1/admin/drops/{QUEUE_DROP}"),
        &json!({"state": "live"}),
    )?;
    anyhow::ensure!(status == 200, "starting the queue drop answered {status}");
    std::thread::sleep(Duration::from_secs(1));
    eprintln!("phase admitted buyers reading their place (each read signs an admission)...");
    // Only buyers who joined read a place: the join phase went through the tokens in order,
    // so nearly all of the first `fresh` did; the checks below count any that did not.
    let joined_first = (joins.outcome("held") as usize * 9 / 10).max(1);
    let readers = Arc::new(Ctx {
        tokens: opts.tokens[..joined_first.min(opts.tokens.len())].to_vec(),
        addr: ctx.addr,
        host: ctx.host.clone(),
        run_id: ctx.run_id.clone(),
    });
    let reads = load::phase(&readers, 3, Workload::QueuePlace { drop: queue() }, opts)?;

    eprintln!("phase the admission rate held at {MEASURED_RATE}/s...");
    let status = admin.send(
        "PATCH",
        &format!("/v1/admin/drops/{QUEUE_DROP}"),
        &json!({"admission_rate": MEASURED_RATE}),
    )?;
    anyhow::ensure!(status == 200, "setting the rate answered {status}");
    let (first, t0) = serving(&server.base, &opts.tokens[0])?;
    std::thread::sleep(Duration::from_secs(3));
    let (last, t1) = serving(&server.base, &opts.tokens[0])?;
    let held_rate = (last - first) as f64 / t1.duration_since(t0).as_secs_f64();

    let mut problems = Vec::new();
    let joined = admin.get_json(&format!("/v1/drops/{QUEUE_DROP}"))?["queue"]["joined"]
        .as_u64()
        .unwrap_or(0);
    let fresh = joins.outcome("held");
    if joined != fresh {
        problems.push(format!(
            "{fresh} joins answered 201, the queue counts {joined}"
        ));
    }
    let admitted = reads.outcome("ok");
    if admitted == 0 || admitted < reads.requests {
        problems.push(format!(
            "{} of {} place reads answered 200",
            admitted, reads.requests
        ));
    }
    server.stop()?;
    Ok(QueueReport {
        connections: opts.connections,
        duration_s: opts.duration.as_secs_f64(),
        health_per_s: health.rate(),
        joins_per_s: joins.rate(),
        fresh_joins: fresh,
        hold_attempts_per_s: holds.rate(),
        joins_over_holds: joins.rate() / holds.rate().max(1e-9),
        admitted_reads_per_s: reads.rate(),
        admitted_reads_over_health: reads.rate() / health.rate().max(1e-9),
        admitted_read_p50_ms: reads.percentile_ms(0.50),
        health_p50_ms: health.percentile_ms(0.50),
        admission_rate_set: MEASURED_RATE,
        admission_rate_held: held_rate,
        problems,
    })
}

pub fn markdown(r: &QueueReport) -> String {
    let mut out = format!(
        "## Queue drops ({} connections, {:.0} s)\n\n\
         | path | /s | over the other | p50 ms |\n|---|---|---|---|\n\
         | GET /healthz | {:.0} | | {:.2} |\n\
         | POST .../queue (join) | {:.0} | {:.2} x hold attempts | |\n\
         | POST .../holds (first come) | {:.0} | | |\n\
         | GET .../queue, admitted (signs the admission) | {:.0} | {:.2} x /healthz | {:.2} |\n\n\
         joins that made an entry: {} (a buyer joining again is answered 200); admission rate set {} /s, held {:.1} /s over 3 s of wall clock\n",
        r.connections,
        r.duration_s,
        r.health_per_s,
        r.health_p50_ms,
        r.joins_per_s,
        r.joins_over_holds,
        r.hold_attempts_per_s,
        r.admitted_reads_per_s,
        r.admitted_reads_over_health,
        r.admitted_read_p50_ms,
        r.fresh_joins,
        r.admission_rate_set,
        r.admission_rate_held,
    );
    if r.problems.is_empty() {
        out.push_str("\nchecks: every 201 join is in the queue; admitted reads answered\n");
    } else {
        for p in &r.problems {
            out.push_str(&format!("\nPROBLEM: {p}\n"));
        }
    }
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

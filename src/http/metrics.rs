//! `/metrics` in Prometheus' text format, and the per-route request metrics it shows.
//!
//! Per route template, method and status: `dropd_http_requests_total` and the latency
//! histogram `dropd_http_request_duration_seconds`; per route and method, what requests cost
//! the database (`dropd_http_sql_statements_total`, the histogram `dropd_http_sql_seconds`)
//! and how many went over their budget (`dropd_http_over_budget_total`). At each scrape: the writer's queue depth,
//! the replica's state, the process (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`), `dropd_build_info{version,revision}`
//! and `dropd_sku_available{drop,sku}`.

use crate::http::openapi::problems::{problems, EVERY, SPLIT};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use metrics::{Counter, Histogram};

use crate::http::state::AppState;
use crate::store::cost::Cost;

/// Latency buckets, in seconds: a hold is answered in milliseconds, a stall shows as seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Time a request spent in SQLite, in seconds: a hold's statements take microseconds.
pub const SQL_BUCKETS: &[f64] = &[
    0.000_05, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

struct Handles {
    route: Box<str>,
    method: Method,
    status: u16,
    requests: Counter,
    duration: Histogram,
    statements: Counter,
    sql_time: Histogram,
    over_budget: Counter,
}

impl Handles {
    fn record(&self, seconds: f64, cost: Cost, over_budget: bool) {
        self.requests.increment(1);
        self.duration.record(seconds);
        self.statements.increment(u64::from(cost.statements));
        self.sql_time.record(cost.time.as_secs_f64());
        if over_budget {
            self.over_budget.increment(1);
        }
    }
}

thread_local! {
    /// Each worker keeps the handles it used: a labelled metric is looked up in the registry
    /// (allocating its key) once per worker, not once per request.
    static HANDLES: RefCell<HashMap<u64, Handles>> = RefCell::new(HashMap::new());
    static HASHER: RandomState = RandomState::new();
}

/// Counts one answered request, and what it cost the database.
pub fn observe(
    route: &str,
    method: &Method,
    status: u16,
    seconds: f64,
    cost: Cost,
    over_budget: bool,
) {
    let key = HASHER.with(|h| h.hash_one((route, method.as_str(), status)));
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        let found = handles
            .get(&key)
            .filter(|h| &*h.route == route && h.method == method && h.status == status);
        if let Some(h) = found {
            h.record(seconds, cost, over_budget);
            return;
        }
        let labels = [
            ("route", route.to_owned()),
            ("method", method.as_str().to_owned()),
        ];
        let h = Handles {
            route: route.into(),
            method: method.clone(),
            status,
            requests: metrics::counter!(
                "dropd_http_requests_total",
                &[
                    labels[0].clone(),
                    labels[1].clone(),
                    ("status", status.to_string())
                ]
            ),
            duration: metrics::histogram!("dropd_http_request_duration_seconds", &labels),
            statements: metrics::counter!("dropd_http_sql_statements_total", &labels),
            sql_time: metrics::histogram!("dropd_http_sql_seconds", &labels),
            over_budget: metrics::counter!("dropd_http_over_budget_total", &labels),
        };
        h.record(seconds, cost, over_budget);
        // A collision of two keys (rare) just swaps whose handles are kept.
        handles.insert(key, h);
    });
}

/// This process's CPU seconds, resident bytes and open descriptors, from /proc.
fn process_figures() -> (Option<f64>, Option<f64>, Option<f64>) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            // The kernel's USER_HZ is 100 on every Linux dropd runs on.
            Some(ticks / 100.0)
        });
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let kb = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()?;
            Some(kb * 1024.0)
        });
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as f64);
    (cpu, rss, fds)
}

problems!(MetricsProblems: EVERY, SPLIT);

/// Prometheus text exposition: per-route requests and latency, the writer, the replica, the
/// process, stock per SKU (docs/design.md, Metrics).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "the metrics", body = String, content_type = "text/plain"),
        MetricsProblems,
    ))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::gauge!("dropd_writer_queue_depth").set(state.writer.stats().queue_depth as f64);
    if let Some(replica) = &state.replica {
        let s = replica.snapshot();
        metrics::gauge!("dropd_replica_up").set(if s.state == "failing" { 0.0 } else { 1.0 });
        metrics::gauge!("dropd_replica_txid")
            .set(u64::from_str_radix(&s.txid, 16).unwrap_or(0) as f64);
        metrics::gauge!("dropd_replica_uploads").set(s.uploads as f64);
        metrics::gauge!("dropd_replica_upload_failures").set(s.upload_failures as f64);
        metrics::gauge!("dropd_replica_uploaded_bytes").set(s.uploaded_bytes as f64);
        metrics::gauge!("dropd_replica_pending_wal_bytes").set(s.pending_wal_bytes as f64);
        if let Some(at) = s.last_sync_at {
            let age = std::time::SystemTime::now()
                .duration_since(at)
                .unwrap_or_default();
            metrics::gauge!("dropd_replica_last_sync_age_seconds").set(age.as_secs_f64());
        }
    }
    if let Some(lease) = &state.lease {
        let s = lease.snapshot();
        metrics::gauge!("dropd_lease_held").set(if s.state == "held" { 1.0 } else { 0.0 });
        metrics::gauge!("dropd_lease_valid_seconds").set(s.valid_for_seconds);
    }
    if let Some(role) = &state.follower {
        let s = role.status.snapshot(std::time::SystemTime::now());
        metrics::gauge!("dropd_follower_txid").set(s.txid() as f64);
        metrics::gauge!("dropd_follower_replica_txid").set(s.replica_txid() as f64);
        metrics::gauge!("dropd_follower_behind_txids").set(s.behind_txids as f64);
        metrics::gauge!("dropd_follower_behind_seconds").set(s.behind_seconds);
        metrics::gauge!("dropd_follower_files_applied").set(s.files_applied as f64);
        metrics::gauge!("dropd_follower_rebuilds").set(s.rebuilds as f64);
        metrics::gauge!("dropd_follower_up").set(if s.error.is_some() { 0.0 } else { 1.0 });
    }
    let (cpu, rss, fds) = process_figures();
    if let Some(cpu) = cpu {
        metrics::gauge!("process_cpu_seconds_total").set(cpu);
    }
    if let Some(rss) = rss {
        metrics::gauge!("process_resident_memory_bytes").set(rss);
    }
    if let Some(fds) = fds {
        metrics::gauge!("process_open_fds").set(fds);
    }
    metrics::gauge!(
        "dropd_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "revision" => crate::REVISION
    )
    .set(1.0);
    if let Ok(drops) = state.hub.list_or_load().await {
        for cached in drops {
            for sku in &cached.view.skus {
                metrics::gauge!(
                    "dropd_sku_available",
                    "drop" => cached.view.id.clone(),
                    "sku" => sku.sku.clone()
                )
                .set(sku.available as f64);
            }
        }
    }
    match &state.metrics {
        Some(handle) => {
            handle.run_upkeep();
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4")
                .body(handle.render())
        }
        None => HttpResponse::Ok().content_type("text/plain").body(""),
    }
}

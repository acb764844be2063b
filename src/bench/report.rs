//! The benchmark's report: a markdown table for people, JSON for machines, and the machine it
//! ran on.

use std::collections::BTreeMap;

use serde::Serialize;

use super::cpu::Usage;
use super::load::GroupResult;
use super::wrk::WrkResult;
use super::BenchArgs;

/// A phase is flagged when something besides dropd and the load generator used this much.
const NOISY_CORES: f64 = 0.2;

#[derive(Debug, Serialize)]
pub struct Phase {
    pub name: String,
    /// Whose load: `dropd` (the benchmark's own generator) or `wrk`.
    pub client: &'static str,
    pub round: usize,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub outcomes: BTreeMap<String, u64>,
    pub cpu: Usage,
    pub server_us_per_request: Option<f64>,
    pub loadgen_us_per_request: f64,
    /// The server's store-writer thread alone.
    pub writer_us_per_request: Option<f64>,
    /// Bytes the writer wrote into the WAL per request of the phase.
    pub wal_bytes_per_request: Option<f64>,
    /// The largest the WAL file was during the phase (sampled every 50 ms).
    pub wal_max_mb: Option<f64>,
    pub noisy: bool,
    /// `ok`, what was broken, or absent when the benchmark could not see the database.
    pub invariants: Option<String>,
    /// Watchers: time after the stampede ended until the last one had the final stock.
    pub catch_up_p99_ms: Option<f64>,
}

impl Phase {
    /// The figures every phase derives from its CPU use; the caller fills in what it measured.
    fn with_cpu(name: &str, client: &'static str, round: usize, requests: u64, cpu: Usage) -> Self {
        let per_request = |seconds: f64| seconds * 1e6 / (requests.max(1) as f64);
        Self {
            name: name.to_owned(),
            client,
            round,
            requests,
            errors: 0,
            requests_per_second: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: f64::NAN,
            outcomes: BTreeMap::new(),
            cpu,
            server_us_per_request: cpu.server_seconds().map(per_request),
            loadgen_us_per_request: per_request(cpu.loadgen_seconds()),
            writer_us_per_request: cpu.writer_cores.map(|c| per_request(c * cpu.seconds)),
            wal_bytes_per_request: None,
            wal_max_mb: None,
            noisy: cpu.other_cores > NOISY_CORES,
            invariants: None,
            catch_up_p99_ms: None,
        }
    }

    pub fn new(name: &str, round: usize, r: &GroupResult, cpu: Usage) -> Self {
        Self {
            errors: r.errors,
            requests_per_second: r.rate(),
            p50_ms: r.percentile_ms(0.50),
            p99_ms: r.percentile_ms(0.99),
            p999_ms: r.percentile_ms(0.999),
            outcomes: r
                .outcomes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            ..Self::with_cpu(name, "dropd", round, r.requests, cpu)
        }
    }

    pub fn from_wrk(name: &str, round: usize, r: &WrkResult, cpu: Usage) -> Self {
        let mut outcomes = BTreeMap::new();
        outcomes.insert("2xx".to_owned(), r.requests - r.non_2xx.min(r.requests));
        if r.non_2xx > 0 {
            outcomes.insert("non-2xx".to_owned(), r.non_2xx);
        }
        Self {
            errors: r.socket_errors,
            requests_per_second: r.rate(),
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            outcomes,
            ..Self::with_cpu(name, "wrk", round, r.requests, cpu)
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub sqlite: String,
    pub dropd: String,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub connections: usize,
    pub phase_seconds: f64,
    pub rounds: usize,
    pub synchronous: String,
    pub buyers: usize,
    pub own_server: bool,
    /// The server ran with a file replica (`--with-replica`).
    pub replica: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// wrk -t1, the independent client: holds from an idle server (its first seconds, the WAL
    /// truncated), in steady state, and the sold-out path, each over wrk's /healthz in the same
    /// round (medians). Goals: >= 0.8, >= 0.8, >= 0.9.
    pub wrk_ceiling_rps: Option<f64>,
    pub wrk_idle_over_ceiling: Option<f64>,
    pub wrk_idle_p99_ms: Option<f64>,
    pub wrk_steady_over_ceiling: Option<f64>,
    pub wrk_steady_p99_ms: Option<f64>,
    pub wrk_sold_out_over_ceiling: Option<f64>,
    /// The benchmark's own generator's CPU per request over wrk's (goal <= 1.5).
    pub loadgen_cost_over_wrk_health: Option<f64>,
    pub loadgen_cost_over_wrk_hold: Option<f64>,
    /// WAL bytes per hold attempt in the steady wrk stampede (goal <= 1 KB).
    pub wal_bytes_per_attempt: Option<f64>,
    /// The largest the WAL grew in any stampede phase (goal < 64 MB without a replica).
    pub wal_max_mb: Option<f64>,
    pub ceiling_rps: Option<f64>,
    pub stampede_rps: Option<f64>,
    /// Median over rounds of stampede/ceiling measured in the same round. Goal: >= 0.8.
    pub stampede_over_ceiling: Option<f64>,
    /// The stampede over the same on a server without the fairness ledger, same round
    /// (median). Goal: >= 0.95.
    pub ledger_kept: Option<f64>,
    /// Goal: under 10 ms at 256 connections.
    pub stampede_p99_ms: Option<f64>,
    pub sold_out_rps: Option<f64>,
    pub sold_out_over_ceiling: Option<f64>,
    pub checkout_rps: Option<f64>,
    /// Goal: under 5 ms.
    pub reads_under_fire_p99_ms: Option<f64>,
    pub naive_rps: Option<f64>,
    /// Goal: >= 3.
    pub group_commit_over_naive: Option<f64>,
    /// The stampede with SSE watchers attached over the median stampede without. Goal: >= 0.8.
    pub watched_over_unwatched: Option<f64>,
    pub watchers: Option<u64>,
    /// p99 over watchers of the longest wait between two messages during the stampede.
    /// Goal: under 1 s.
    pub watched_staleness_p99_ms: Option<f64>,
    pub watched_catch_up_p99_ms: Option<f64>,
    /// Honest holds/s while a scalper and a flood add half as many connections again, over
    /// the same with those connections on /healthz (same round, median). Goal: >= 0.9.
    pub under_attack_over_healthz: Option<f64>,
    pub under_attack_p99_ms: Option<f64>,
    pub healthz_beside_p99_ms: Option<f64>,
    pub noisy_phases: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub phases: Vec<Phase>,
    pub summary: Summary,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

impl Report {
    pub fn new(args: &BenchArgs, own_server: bool) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        Self {
            machine: Machine {
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                cpu_model,
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                sqlite: rusqlite::version().to_owned(),
                dropd: env!("CARGO_PKG_VERSION").to_owned(),
            },
            settings: Settings {
                connections: args.connections,
                phase_seconds: args.duration.as_secs_f64(),
                rounds: args.rounds,
                synchronous: args.synchronous.clone(),
                buyers: args.buyers,
                own_server,
                replica: args.with_replica,
            },
            phases: Vec::new(),
            summary: Summary::default(),
        }
    }

    pub fn add(&mut self, phase: Phase) {
        eprintln!(
            "  {} round {}: {:.0} req/s, p99 {:.2} ms{}",
            phase.name,
            phase.round,
            phase.requests_per_second,
            phase.p99_ms,
            if phase.noisy { " (noisy)" } else { "" }
        );
        self.phases.push(phase);
    }

    fn of(&self, name: &str) -> impl Iterator<Item = &Phase> {
        let name = name.to_owned();
        self.phases.iter().filter(move |p| p.name == name)
    }

    fn rate_in_round(&self, name: &str, round: usize) -> Option<f64> {
        self.of(name)
            .find(|p| p.round == round)
            .map(|p| p.requests_per_second)
    }

    pub fn finish(&mut self) {
        let rates = |name: &str| median(self.of(name).map(|p| p.requests_per_second).collect());
        let ratio_to_ceiling = |name: &str| {
            median(
                self.of(name)
                    .filter_map(|p| {
                        Some(p.requests_per_second / self.rate_in_round("ceiling", p.round)?)
                    })
                    .collect(),
            )
        };
        let wrk_ratio = |name: &str| {
            median(
                self.of(name)
                    .filter_map(|p| {
                        Some(p.requests_per_second / self.rate_in_round("wrk ceiling", p.round)?)
                    })
                    .collect(),
            )
        };
        let cost = |name: &str| median(self.of(name).map(|p| p.loadgen_us_per_request).collect());
        let over = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let summary = Summary {
            wrk_ceiling_rps: rates("wrk ceiling"),
            wrk_idle_over_ceiling: wrk_ratio("wrk stampede from idle"),
            wrk_idle_p99_ms: median(
                self.of("wrk stampede from idle")
                    .map(|p| p.p99_ms)
                    .collect(),
            ),
            wrk_steady_over_ceiling: wrk_ratio("wrk stampede steady"),
            wrk_steady_p99_ms: median(self.of("wrk stampede steady").map(|p| p.p99_ms).collect()),
            wrk_sold_out_over_ceiling: wrk_ratio("wrk sold-out"),
            loadgen_cost_over_wrk_health: over(cost("ceiling"), cost("wrk ceiling")),
            loadgen_cost_over_wrk_hold: over(cost("stampede"), cost("wrk stampede steady")),
            wal_bytes_per_attempt: median(
                self.of("wrk stampede steady")
                    .filter_map(|p| p.wal_bytes_per_request)
                    .collect(),
            ),
            wal_max_mb: self
                .phases
                .iter()
                .filter(|p| p.name.contains("stampede"))
                .filter_map(|p| p.wal_max_mb)
                .reduce(f64::max),
            ceiling_rps: rates("ceiling"),
            stampede_rps: rates("stampede"),
            stampede_over_ceiling: ratio_to_ceiling("stampede"),
            ledger_kept: median(
                self.of("stampede")
                    .filter_map(|p| {
                        Some(
                            p.requests_per_second
                                / self.rate_in_round("stampede without ledger", p.round)?,
                        )
                    })
                    .collect(),
            ),
            stampede_p99_ms: median(self.of("stampede").map(|p| p.p99_ms).collect()),
            sold_out_rps: rates("sold-out"),
            sold_out_over_ceiling: ratio_to_ceiling("sold-out"),
            checkout_rps: rates("checkout"),
            reads_under_fire_p99_ms: median(
                self.of("reads under fire").map(|p| p.p99_ms).collect(),
            ),
            naive_rps: rates("naive stampede"),
            group_commit_over_naive: None,
            watched_over_unwatched: None,
            watchers: self
                .of("watchers")
                .next()
                .map(|p| p.outcomes.get("watching").copied().unwrap_or(0)),
            watched_staleness_p99_ms: self.of("watchers").next().map(|p| p.p99_ms),
            watched_catch_up_p99_ms: self.of("watchers").next().and_then(|p| p.catch_up_p99_ms),
            under_attack_over_healthz: median(
                self.of("honest under attack")
                    .filter_map(|p| {
                        Some(
                            p.requests_per_second
                                / self.rate_in_round("honest, healthz beside", p.round)?,
                        )
                    })
                    .collect(),
            ),
            under_attack_p99_ms: median(self.of("honest under attack").map(|p| p.p99_ms).collect()),
            healthz_beside_p99_ms: median(
                self.of("honest, healthz beside")
                    .map(|p| p.p99_ms)
                    .collect(),
            ),
            noisy_phases: self.phases.iter().filter(|p| p.noisy).count(),
        };
        self.summary = Summary {
            group_commit_over_naive: match (summary.stampede_rps, summary.naive_rps) {
                (Some(group), Some(naive)) if naive > 0.0 => Some(group / naive),
                _ => None,
            },
            watched_over_unwatched: match (rates("watched stampede"), summary.stampede_rps) {
                (Some(watched), Some(plain)) if plain > 0.0 => Some(watched / plain),
                _ => None,
            },
            ..summary
        };
    }

    pub fn broken_invariants(&self) -> bool {
        self.phases
            .iter()
            .any(|p| p.invariants.as_deref().is_some_and(|i| i != "ok"))
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let s = &self.settings;
        let mut out = format!(
            "## dropd bench\n\n{} cores ({}), Linux {}, SQLite {}, dropd {}; synchronous={}, \
             {} connections, {} s phases, {} rounds, {} buyers{}.\n\n",
            m.cores,
            m.cpu_model,
            m.kernel,
            m.sqlite,
            m.dropd,
            s.synchronous,
            s.connections,
            s.phase_seconds,
            s.rounds,
            s.buyers,
            if s.replica { ", file replica" } else { "" }
        );
        out.push_str(
            "| phase | client | round | req/s | p50 ms | p99 ms | p99.9 ms | outcomes | server us/req | writer us/req | WAL B/req | WAL max MB | loadgen us/req | other cores | invariants |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for p in &self.phases {
            let outcomes: Vec<String> =
                p.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {}{} | {} | {} | {} | {} | {:.1} | {:.2}{} | {} |\n",
                p.name,
                p.client,
                p.round,
                p.requests_per_second,
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                outcomes.join(", "),
                if p.errors > 0 {
                    format!(", transport errors {}", p.errors)
                } else {
                    String::new()
                },
                p.server_us_per_request
                    .map_or("n/a".into(), |v| format!("{v:.1}")),
                p.writer_us_per_request
                    .map_or("n/a".into(), |v| format!("{v:.1}")),
                p.wal_bytes_per_request
                    .map_or("n/a".into(), |v| format!("{v:.0}")),
                p.wal_max_mb.map_or("n/a".into(), |v| format!("{v:.1}")),
                p.loadgen_us_per_request,
                p.cpu.other_cores,
                if p.noisy { " (noisy)" } else { "" },
                p.invariants.as_deref().unwrap_or("n/a"),
            ));
        }
        let fmt =
            |v: Option<f64>, digits: usize| v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"));
        let sum = &self.summary;
        out.push_str(&format!(
            "\n| headline | measured | goal |\n|---|---|---|\n\
             | wrk: holds from an idle server / healthz | {} (p99 {} ms) | >= 0.8, p99 < 10 ms |\n\
             | wrk: holds in steady state / healthz | {} (p99 {} ms) | >= 0.8, p99 < 10 ms |\n\
             | wrk: sold-out path / healthz | {} | >= 0.9 |\n\
             | WAL bytes per hold attempt (wrk steady) | {} | <= 1024 |\n\
             | largest WAL during any stampede | {} MB | < 64 MB without a replica |\n\
             | own load generator CPU / wrk's, healthz and holds | {} and {} | <= 1.5 |\n\
             | stampede / ceiling, own generator (median of per-round ratios) | {} | >= 0.8 |\n\
             | stampede with the fairness ledger / without (same round, median) | {} | >= 0.95 |\n\
             | stampede p99 at {} connections | {} ms | < 10 ms |\n\
             | group commit / naive transaction-per-request | {} | >= 3 |\n\
             | reads under fire p99 | {} ms | < 5 ms |\n\
             | sold-out path / ceiling | {} | |\n\
             | checkout (hold + confirm) per second | {} | |\n\
             | watched stampede / stampede, with {} SSE watchers | {} | >= 0.8 |\n\
             | longest wait between messages, p99 over watchers | {} ms | < 1000 ms |\n\
             | final stock on every watcher after the stampede, p99 | {} ms | |\n\
             | honest holds under attack / with healthz beside (p99 {} ms against {} ms) | {} | >= 0.9 |\n\
             | phases flagged noisy (others used > {NOISY_CORES} core) | {} | 0 |\n",
            fmt(sum.wrk_idle_over_ceiling, 2),
            fmt(sum.wrk_idle_p99_ms, 1),
            fmt(sum.wrk_steady_over_ceiling, 2),
            fmt(sum.wrk_steady_p99_ms, 1),
            fmt(sum.wrk_sold_out_over_ceiling, 2),
            fmt(sum.wal_bytes_per_attempt, 0),
            fmt(sum.wal_max_mb, 1),
            fmt(sum.loadgen_cost_over_wrk_health, 2),
            fmt(sum.loadgen_cost_over_wrk_hold, 2),
            fmt(sum.stampede_over_ceiling, 2),
            fmt(sum.ledger_kept, 2),
            s.connections,
            fmt(sum.stampede_p99_ms, 2),
            fmt(sum.group_commit_over_naive, 2),
            fmt(sum.reads_under_fire_p99_ms, 2),
            fmt(sum.sold_out_over_ceiling, 2),
            fmt(sum.checkout_rps, 0),
            sum.watchers.unwrap_or(0),
            fmt(sum.watched_over_unwatched, 2),
            fmt(sum.watched_staleness_p99_ms, 0),
            fmt(sum.watched_catch_up_p99_ms, 0),
            fmt(sum.under_attack_p99_ms, 1),
            fmt(sum.healthz_beside_p99_ms, 1),
            fmt(sum.under_attack_over_healthz, 2),
            sum.noisy_phases,
        ));
        out
    }
}

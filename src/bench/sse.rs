//! `dropd bench --sse` (`make bench-sse`): live stock at scale. As many subscribers as the
//! open-file limit allows watch one drop; then (a) one stock change: how long until every one
//! has it, and the server's memory per subscriber; (b) a stampede while they all watch, against
//! the same stampede with nobody watching, and the staleness every subscriber saw.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use serde::Serialize;

use super::load::{self, Ctx, Group, Workload};

/// What one subscriber saw, written by its task and read by the orchestrator.
#[derive(Default)]
struct Seen {
    frames: AtomicU64,
    /// Nanoseconds after the base instant of the first `stock` message.
    first_stock: AtomicU64,
    last_frame: AtomicU64,
    /// Longest wait between two messages while the stampede ran, in nanoseconds.
    longest_gap: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct SseReport {
    pub subscribers: usize,
    pub connected: usize,
    pub change_p50_ms: f64,
    pub change_p99_ms: f64,
    pub change_max_ms: f64,
    pub missed_change: usize,
    pub server_rss_before_mb: f64,
    pub server_rss_after_mb: f64,
    pub bytes_per_subscriber: f64,
    pub stampede_alone_rps: f64,
    pub stampede_watched_rps: f64,
    pub watched_over_alone: f64,
    pub staleness_p50_ms: f64,
    pub staleness_p99_ms: f64,
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn subscribe(
    ctx: Arc<Ctx>,
    drop: String,
    seen: Arc<Seen>,
    base: Instant,
    stampede: Arc<AtomicBool>,
    end: Arc<AtomicBool>,
) {
    let Ok(mut sender) = load::connect(&ctx).await else {
        return;
    };
    let Ok(res) = sender
        .send_request(load::get(&ctx, &format!("/v1/drops/{drop}/events")))
        .await
    else {
        return;
    };
    if res.status() != 200 {
        return;
    }
    let mut body = res.into_body();
    while !end.load(Ordering::Relaxed) {
        let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_millis(500), body.frame()).await
        else {
            continue;
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if !data.windows(7).any(|w| w == b"\ndata: ") {
            continue;
        }
        let now = base.elapsed().as_nanos() as u64;
        if data.windows(12).any(|w| w == b"event: stock") {
            let _ = seen
                .first_stock
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        let previous = seen.last_frame.swap(now, Ordering::Relaxed);
        if stampede.load(Ordering::Relaxed) && previous > 0 {
            seen.longest_gap
                .fetch_max(now - previous, Ordering::Relaxed);
        }
        seen.frames.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn run(
    ctx: Arc<Ctx>,
    server_pid: u32,
    drops: (&str, &str, &str),
    subscribers: usize,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<SseReport> {
    let (alone_drop, watched_drop, probe_drop) = drops;
    eprintln!("stampede with nobody watching...");
    let alone = load::run(
        ctx.clone(),
        900,
        &[Group {
            workload: Workload::Hold {
                drop: alone_drop.into(),
            },
            connections,
        }],
        duration,
        1_000_000,
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let base = Instant::now();
        let stampede = Arc::new(AtomicBool::new(false));
        let end = Arc::new(AtomicBool::new(false));
        let rss_before = rss_bytes(server_pid);
        eprintln!("connecting {subscribers} subscribers...");
        let mut seen = Vec::with_capacity(subscribers);
        let mut tasks = Vec::with_capacity(subscribers);
        for i in 0..subscribers {
            let s = Arc::new(Seen::default());
            seen.push(s.clone());
            // Half watch the probe drop for (a), all of them are attached during (b).
            let drop = if i % 2 == 0 { probe_drop } else { watched_drop };
            tasks.push(tokio::spawn(subscribe(
                ctx.clone(),
                drop.into(),
                s,
                base,
                stampede.clone(),
                end.clone(),
            )));
            if i % 500 == 499 {
                tokio::task::yield_now().await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen
            .iter()
            .filter(|s| s.frames.load(Ordering::Relaxed) > 0)
            .count()
            < subscribers
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let connected = seen
            .iter()
            .filter(|s| s.frames.load(Ordering::Relaxed) > 0)
            .count();
        let rss_after = rss_bytes(server_pid);

        // (a) one change on the probe drop.
        eprintln!(
            "one stock change to {} watchers...",
            subscribers.div_ceil(2)
        );
        let sent = base.elapsed().as_nanos() as u64;
        let mut sender = load::connect(&ctx).await?;
        let key = format!("{}-probe", ctx.run_id);
        let (status, _) = load::send(
            &mut sender,
            load::post(
                &ctx,
                &format!("/v1/drops/{probe_drop}/holds"),
                0,
                &key,
                br#"{"sku":"S1","quantity":1}"#,
            ),
        )
        .await?;
        anyhow::ensure!(status == 201, "the probe hold answered {status}");
        let probe: Vec<&Arc<Seen>> = seen.iter().step_by(2).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while probe
            .iter()
            .any(|s| s.first_stock.load(Ordering::Relaxed) == 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut change = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut missed = 0;
        for s in &probe {
            match s.first_stock.load(Ordering::Relaxed) {
                0 => missed += 1,
                at => {
                    let _ = change.record((at.saturating_sub(sent) / 1000).max(1));
                }
            }
        }

        // (b) the stampede with everyone attached.
        eprintln!("stampede with {connected} subscribers attached...");
        stampede.store(true, Ordering::Relaxed);
        let stampede_ctx = ctx.clone();
        let watched_drop = watched_drop.to_owned();
        let watched = tokio::task::spawn_blocking(move || {
            load::run(
                stampede_ctx,
                901,
                &[Group {
                    workload: Workload::Hold { drop: watched_drop },
                    connections,
                }],
                duration,
                1_000_000,
            )
        })
        .await??;
        stampede.store(false, Ordering::Relaxed);
        let mut staleness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for s in seen.iter().skip(1).step_by(2) {
            let _ = staleness.record((s.longest_gap.load(Ordering::Relaxed) / 1000).max(1));
        }
        end.store(true, Ordering::Relaxed);
        for task in tasks {
            task.abort();
        }
        let alone_rps = alone[0].rate();
        let watched_rps = watched[0].rate();
        Ok(SseReport {
            subscribers,
            connected,
            change_p50_ms: ms(&change, 0.5),
            change_p99_ms: ms(&change, 0.99),
            change_max_ms: change.max() as f64 / 1000.0,
            missed_change: missed,
            server_rss_before_mb: rss_before as f64 / 1e6,
            server_rss_after_mb: rss_after as f64 / 1e6,
            bytes_per_subscriber: rss_after.saturating_sub(rss_before) as f64
                / connected.max(1) as f64,
            stampede_alone_rps: alone_rps,
            stampede_watched_rps: watched_rps,
            watched_over_alone: if alone_rps > 0.0 {
                watched_rps / alone_rps
            } else {
                0.0
            },
            staleness_p50_ms: ms(&staleness, 0.5),
            staleness_p99_ms: ms(&staleness, 0.99),
        })
    })
}

pub fn markdown(r: &SseReport) -> String {
    format!(
        "## dropd bench --sse\n\n\
         | figure | measured | goal |\n|---|---|---|\n\
         | subscribers connected | {} of {} | at least 10,000 |\n\
         | one change, time until a subscriber has it, p50 / p99 / max | {:.0} / {:.0} / {:.0} ms | p99 < 100 ms |\n\
         | subscribers that never got the change | {} | 0 |\n\
         | server memory per subscriber | {:.0} bytes (RSS {:.0} MB -> {:.0} MB) | < 10 KB |\n\
         | stampede with everyone watching / nobody watching | {:.2} ({:.0} / {:.0} req/s) | >= 0.8 |\n\
         | staleness during the stampede (longest wait between messages), p50 / p99 | {:.0} / {:.0} ms | < 1000 ms |\n",
        r.connected, r.subscribers, r.change_p50_ms, r.change_p99_ms, r.change_max_ms, r.missed_change,
        r.bytes_per_subscriber, r.server_rss_before_mb, r.server_rss_after_mb, r.watched_over_alone,
        r.stampede_watched_rps, r.stampede_alone_rps, r.staleness_p50_ms, r.staleness_p99_ms,
    )
}

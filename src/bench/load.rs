//! The load generator: one thread, one current-thread runtime, HTTP/1.1 keep-alive connections
//! that each send a request, wait for the answer, and send the next (closed loop, like wrk).
//! Bounded by a deadline and a request count per connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::workload::classify;
use super::workload::{problem_code, HOLD_BODY};
pub use super::workload::{Ctx, Group, GroupResult, Workload, WATCH_GRACE};

const CONFIRM_BODY: &[u8] = br#"{"payment_ref":"pi_bench"}"#;

/// Runs every group at once until `duration` passes or each connection sent `max_per_conn`.
pub fn run(
    ctx: Arc<Ctx>,
    phase: usize,
    groups: &[Group],
    duration: Duration,
    max_per_conn: u64,
) -> anyhow::Result<Vec<GroupResult>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = Vec::new();
        let mut conn_index = 0usize;
        for (g, group) in groups.iter().enumerate() {
            for _ in 0..group.connections {
                let ctx = ctx.clone();
                let workload = group.workload.clone();
                let total = groups.iter().map(|g| g.connections).sum::<usize>();
                let index = conn_index;
                conn_index += 1;
                tasks.push((
                    g,
                    tokio::spawn(async move {
                        drive(ctx, workload, phase, index, total, deadline, max_per_conn).await
                    }),
                ));
            }
        }
        let mut results: Vec<GroupResult> = groups.iter().map(|_| GroupResult::new()).collect();
        for (g, task) in tasks {
            let part = task.await?;
            results[g].merge(part);
        }
        for r in &mut results {
            // Each group's own span: watchers read on after the closed loops stopped.
            r.elapsed = r
                .finished
                .map_or(started.elapsed(), |f| f.duration_since(started));
            r.started = Some(started);
        }
        Ok(results)
    })
}

/// One workload on `connections` connections for `duration`: one phase's figures.
pub(super) fn phase(
    ctx: &Arc<Ctx>,
    phase: usize,
    workload: Workload,
    opts: &impl PhaseShape,
) -> anyhow::Result<GroupResult> {
    let groups = [Group {
        workload,
        connections: opts.connections(),
    }];
    let mut results = run(ctx.clone(), phase, &groups, opts.duration(), 1_000_000)?;
    results
        .pop()
        .ok_or_else(|| anyhow::anyhow!("a phase without its result"))
}

/// How wide and how long a phase runs.
pub(super) trait PhaseShape {
    fn connections(&self) -> usize;
    fn duration(&self) -> Duration;
}

pub(super) async fn connect(
    ctx: &Ctx,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(ctx.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn drive(
    ctx: Arc<Ctx>,
    workload: Workload,
    phase: usize,
    index: usize,
    total: usize,
    deadline: Instant,
    max: u64,
) -> GroupResult {
    if let Workload::Watch { drop } = &workload {
        let mut result = watch(&ctx, drop, deadline).await;
        result.finished = Some(deadline.min(Instant::now()));
        return result;
    }
    if matches!(
        workload,
        Workload::Health
            | Workload::Hold { .. }
            | Workload::ReadDrop { .. }
            | Workload::HoldForwarded { .. }
            | Workload::Scalp { .. }
            | Workload::Flood { .. }
            | Workload::Join { .. }
            | Workload::QueuePlace { .. }
    ) {
        // One timer per connection, not per request: a server that stops answering ends the
        // connection's loop 30 s after the phase.
        let work = super::raw::drive(&ctx, &workload, phase, index, total, deadline, max);
        return match tokio::time::timeout_at((deadline + Duration::from_secs(30)).into(), work)
            .await
        {
            Ok(result) => result,
            Err(_) => {
                let mut result = GroupResult::new();
                result.errors += 1;
                result.finished = Some(Instant::now());
                result
            }
        };
    }
    let mut result = GroupResult::new();
    let Ok(mut sender) = connect(&ctx).await else {
        result.errors += 1;
        return result;
    };
    let mut i: u64 = 0;
    while i < max && Instant::now() < deadline {
        // Spread buyers so that no two connections share one at the same moment.
        let buyer = (i as usize * total + index) % ctx.tokens.len().max(1);
        let started = Instant::now();
        let key = || format!("{}-{phase}-{index}-{i}", ctx.run_id);
        // Plain requests and watchers were handed off above: only checkout pairs get here.
        let answer = match &workload {
            Workload::Checkout { drop } => {
                let key = key();
                match send(
                    &mut sender,
                    post(
                        &ctx,
                        &format!("/v1/drops/{drop}/holds"),
                        buyer,
                        &key,
                        HOLD_BODY,
                    ),
                )
                .await
                {
                    Ok((201, body)) => match hold_id(&body) {
                        Some(hold) => {
                            let path = format!("/v1/holds/{hold}/confirm");
                            // A confirmation is another request: it needs a key of its own.
                            let key = format!("{key}-confirm");
                            let confirm =
                                send(&mut sender, post(&ctx, &path, buyer, &key, CONFIRM_BODY))
                                    .await;
                            result.requests += 1;
                            confirm.map(|(status, body)| {
                                (if status == 201 { 2010 } else { status }, body)
                            })
                        }
                        None => Ok((500, body)),
                    },
                    other => other,
                }
            }
            _ => break,
        };
        let micros = started.elapsed().as_micros() as u64;
        match answer {
            Ok((status, body)) => {
                result.requests += 1;
                let _ = result.latency.record(micros.max(1));
                *result.outcomes.entry(classify(status, &body)).or_default() += 1;
            }
            Err(_) => {
                result.errors += 1;
                match connect(&ctx).await {
                    Ok(fresh) => sender = fresh,
                    Err(_) => break,
                }
            }
        }
        i += 1;
    }
    result.finished = Some(Instant::now());
    result
}

/// One watcher: subscribes, then counts messages and the longest gap between them.
async fn watch(ctx: &Ctx, drop: &str, deadline: Instant) -> GroupResult {
    let mut result = GroupResult::new();
    let Ok(mut sender) = connect(ctx).await else {
        result.errors += 1;
        return result;
    };
    let answer = async {
        sender.ready().await?;
        anyhow::Ok(
            sender
                .send_request(get(ctx, &format!("/v1/drops/{drop}/events")))
                .await?,
        )
    }
    .await;
    let res = match answer {
        Ok(res) if res.status() == 200 => res,
        Ok(res) => {
            let body = res
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            *result
                .outcomes
                .entry(problem_code(&body).unwrap_or("other"))
                .or_default() += 1;
            return result;
        }
        Err(_) => {
            result.errors += 1;
            return result;
        }
    };
    *result.outcomes.entry("watching").or_default() += 1;
    let mut body = res.into_body();
    let end = deadline + WATCH_GRACE;
    let mut last: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(end.into(), body.frame()).await {
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if !data.windows(7).any(|w| w == b"\ndata: ") {
            continue;
        }
        let now = Instant::now();
        if let Some(previous) = last {
            if now <= deadline {
                longest = longest.max(now - previous);
            }
        }
        last = Some(now);
        result.requests += 1;
    }
    let _ = result.latency.record((longest.as_micros() as u64).max(1));
    let caught_up = last.map_or(Duration::ZERO, |t| t.saturating_duration_since(deadline));
    let _ = result
        .catch_up
        .record((caught_up.as_micros() as u64).max(1));
    result
}

pub(super) fn get(ctx: &Ctx, path: &str) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = path.parse().expect("bench paths are valid URIs");
    req.headers_mut().insert(HOST, ctx.host.clone());
    req
}

pub(super) fn post(
    ctx: &Ctx,
    path: &str,
    buyer: usize,
    key: &str,
    body: &'static [u8],
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = path.parse().expect("bench paths are valid URIs");
    let headers = req.headers_mut();
    headers.insert(HOST, ctx.host.clone());
    headers.insert(AUTHORIZATION, ctx.tokens[buyer].clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(key) {
        headers.insert("idempotency-key", value);
    }
    req
}

pub(super) async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let res = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req)).await??;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn hold_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["hold_id"].as_str().map(str::to_owned)
}

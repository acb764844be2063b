//! The supervisor (one task per active endpoint, restarted when the endpoint changes) and an
//! endpoint's delivery loop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::domain::outbox::wants;
use crate::store::outbox as table;
use crate::store::webhooks::{self, Endpoint, WebhookChange};
use crate::store::{ReadPool, StoreError, Writer};

use super::policy::TargetPolicy;
use super::{sign, OutboxConfig};

/// Changes come with the endpoints bell; this is only the supervisor's and the tasks' backstop
/// (a change another process made to the table, say). Idle, the worker reads nothing sooner.
const LOOK_AGAIN: Duration = Duration::from_secs(30);
/// Events read per page.
const PAGE: i64 = 100;
/// The longest an endpoint's accepted events go unreported to the writer (a crash redelivers
/// at most these).
const REPORT_EVERY: Duration = Duration::from_millis(250);

pub(super) struct Context {
    pub(super) config: OutboxConfig,
    pub(super) reads: ReadPool,
    pub(super) writer: Writer,
    pub(super) http: reqwest::Client,
    pub(super) targets: Arc<TargetPolicy>,
    pub(super) permits: tokio::sync::Semaphore,
    pub(super) bell: watch::Receiver<u64>,
    pub(super) endpoints: watch::Receiver<u64>,
}

impl Context {
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reads = self.reads.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reads.get()?;
            f(&conn).map_err(StoreError::from)
        })
        .await
        .map_err(|_| StoreError::Internal("a read task failed"))?
    }
}

/// What a running task was started for: a change to any of it restarts the task.
fn shape(endpoint: &Endpoint) -> (String, Vec<String>, String) {
    (
        endpoint.webhook.url.clone(),
        endpoint.webhook.events.clone(),
        endpoint.secret.clone(),
    )
}

pub(super) async fn supervise(ctx: Arc<Context>, mut stopped: watch::Receiver<bool>) {
    type Running = (
        (String, Vec<String>, String),
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    );
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut endpoints = ctx.endpoints.clone();
    loop {
        match ctx.read(webhooks::list).await {
            Ok(endpoints) => {
                let active: HashMap<String, Endpoint> = endpoints
                    .into_iter()
                    .filter(|e| e.webhook.state == "active")
                    .map(|e| (e.webhook.id.clone(), e))
                    .collect();
                running.retain(|id, (was, stop, _)| {
                    let keep = active.get(id).is_some_and(|e| shape(e) == *was);
                    if !keep {
                        let _ = stop.send(true);
                    }
                    keep
                });
                for (id, endpoint) in active {
                    if running.contains_key(&id) {
                        continue;
                    }
                    let (stop, stop_rx) = watch::channel(false);
                    let was = shape(&endpoint);
                    let task = tokio::spawn(run_endpoint(ctx.clone(), endpoint, stop_rx));
                    running.insert(id, (was, stop, task));
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading webhook endpoints failed"),
        }
        tokio::select! {
            _ = stopped.changed() => break,
            _ = endpoints.changed() => {}
            _ = tokio::time::sleep(LOOK_AGAIN) => {}
        }
    }
    for (_, (_, stop, _)) in running.iter() {
        let _ = stop.send(true);
    }
    for (_, (_, _, task)) in running.drain() {
        let _ = task.await;
    }
}

/// Why an attempt failed, as the dead letter and the log say it.
type Failure = String;

async fn run_endpoint(ctx: Arc<Context>, endpoint: Endpoint, mut stop: watch::Receiver<bool>) {
    let id = endpoint.webhook.id.clone();
    let mut bell = ctx.bell.clone();
    let mut endpoints = ctx.endpoints.clone();
    let mut cursor = endpoint.webhook.delivered_seq;
    let mut reported = cursor;
    let mut last_report = Instant::now();
    'serve: loop {
        if *stop.borrow() {
            break;
        }
        retry_dead_letters(&ctx, &endpoint, &stop).await;
        let after = cursor;
        let events = match ctx.read(move |c| table::after(c, after, PAGE)).await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(error = %err, webhook = %id, "reading the outbox failed");
                Vec::new()
            }
        };
        if events.is_empty() {
            if reported < cursor && report(&ctx, &id, cursor).await {
                reported = cursor;
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = bell.changed() => {}
                _ = endpoints.changed() => {}
                _ = tokio::time::sleep(LOOK_AGAIN) => {}
            }
            continue;
        }
        for event in events {
            if !wants(&endpoint.webhook.events, &event.kind) {
                cursor = event.seq;
                continue;
            }
            let body = event.body();
            let mut attempts = 0;
            loop {
                attempts += 1;
                match post(&ctx, &endpoint, &event.id, &event.kind, &body).await {
                    Ok(()) => break,
                    Err(why) if attempts >= ctx.config.max_attempts => {
                        tracing::warn!(webhook = %id, event = %event.id, attempts, error = %why,
                            "webhook delivery dead-lettered");
                        let bury = WebhookChange::Bury {
                            id: id.clone(),
                            event: event.clone(),
                            body: body.clone(),
                            attempts: i64::from(attempts),
                            error: why,
                        };
                        if let Err(err) = ctx.writer.change_webhook(bury).await {
                            // Not recorded: the event stays ahead of the cursor, so it is
                            // tried again rather than lost.
                            tracing::error!(error = %err, webhook = %id, "recording a dead letter failed");
                            break 'serve;
                        }
                        reported = event.seq;
                        break;
                    }
                    Err(why) => {
                        tracing::info!(webhook = %id, event = %event.id, attempts, error = %why,
                            "webhook delivery failed; retrying");
                        let wait = ctx.config.delay_after(attempts);
                        tokio::select! {
                            _ = stop.changed() => break 'serve,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
            cursor = event.seq;
            if last_report.elapsed() >= REPORT_EVERY && report(&ctx, &id, cursor).await {
                reported = cursor;
                last_report = Instant::now();
            }
            if *stop.borrow() {
                break 'serve;
            }
        }
    }
    if reported < cursor {
        report(&ctx, &id, cursor).await;
    }
}

/// Tells the writer the endpoint has everything up to `seq`.
async fn report(ctx: &Context, id: &str, seq: i64) -> bool {
    let change = WebhookChange::Advance {
        id: id.to_owned(),
        seq,
    };
    match ctx.writer.change_webhook(change).await {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(error = %err, webhook = %id, "recording webhook progress failed");
            false
        }
    }
}

/// Dead letters an operator asked to try again: one attempt each.
async fn retry_dead_letters(ctx: &Context, endpoint: &Endpoint, stop: &watch::Receiver<bool>) {
    let id = endpoint.webhook.id.clone();
    let Ok(letters) = ctx
        .read(move |c| webhooks::dead_letters(c, &id, Some("retrying")))
        .await
    else {
        return;
    };
    for letter in letters {
        if *stop.borrow() {
            return;
        }
        let result = post(ctx, endpoint, &letter.event_id, &letter.kind, &letter.body).await;
        let change = WebhookChange::RetryDone {
            id: endpoint.webhook.id.clone(),
            event_seq: letter.event_seq,
            delivered: result.is_ok(),
            error: result.err().unwrap_or_default(),
        };
        if let Err(err) = ctx.writer.change_webhook(change).await {
            tracing::warn!(error = %err, "recording a dead letter's retry failed");
        }
    }
}

async fn post(
    ctx: &Context,
    endpoint: &Endpoint,
    event_id: &str,
    kind: &str,
    body: &str,
) -> Result<(), Failure> {
    let url = reqwest::Url::parse(&endpoint.webhook.url).map_err(|e| e.to_string())?;
    // reqwest asks the resolver only for names: a literal address is checked here.
    if let Some(host) = url.host_str() {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            ctx.targets.check_ip(ip)?;
        }
    }
    let _permit = ctx
        .permits
        .acquire()
        .await
        .map_err(|_| "shutting down".to_owned())?;
    let t = chrono::Utc::now().timestamp();
    let res = ctx
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(sign::HEADER, sign::header_value(&endpoint.secret, t, body))
        .header("Dropd-Event-Id", event_id)
        .header("Dropd-Event-Type", kind)
        .body(body.to_owned())
        .send()
        .await
        .map_err(describe)?;
    let status = res.status();
    if status.is_success() {
        metrics::counter!("dropd_webhook_deliveries_total", "outcome" => "delivered").increment(1);
        Ok(())
    } else {
        metrics::counter!("dropd_webhook_deliveries_total", "outcome" => "failed").increment(1);
        Err(format!("HTTP {}", status.as_u16()))
    }
}

fn describe(err: reqwest::Error) -> Failure {
    metrics::counter!("dropd_webhook_deliveries_total", "outcome" => "failed").increment(1);
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

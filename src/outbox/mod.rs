//! Webhook delivery from the outbox: the `outbox-worker` thread reads committed events from
//! the read pool and posts them, signed, to every active endpoint that wants them. At least
//! once and in order per endpoint: an endpoint's cursor moves (through the writer) only past
//! what it accepted or what was dead-lettered after `max_attempts`. Each endpoint has its own
//! task, so a slow or dead one never delays another; attempts across endpoints share a bound.

pub mod policy;
pub mod sign;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use policy::TargetPolicy;

use crate::store::outbox::OutboxBell;
use crate::store::{ReadPool, Writer};

/// `--webhook-*` and `--outbox-retention`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    pub retention: Duration,
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// The first retry's delay; each later one doubles, up to `backoff_max`, with jitter.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Deliveries in flight at once, across endpoints.
    pub concurrency: usize,
    pub targets: TargetPolicy,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            retention: crate::defaults::OUTBOX_RETENTION,
            max_attempts: crate::defaults::WEBHOOK_MAX_ATTEMPTS,
            connect_timeout: crate::defaults::WEBHOOK_CONNECT_TIMEOUT,
            timeout: crate::defaults::WEBHOOK_TIMEOUT,
            backoff: crate::defaults::WEBHOOK_BACKOFF,
            backoff_max: crate::defaults::WEBHOOK_BACKOFF_MAX,
            concurrency: crate::defaults::WEBHOOK_CONCURRENCY,
            targets: TargetPolicy::default(),
        }
    }
}

impl OutboxConfig {
    /// The wait before attempt `attempt + 1`: doubling from `backoff`, capped, and drawn at
    /// random from its upper half so endpoints that failed together do not retry together.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let cap = doubled.min(self.backoff_max);
        let half = cap / 2;
        half + cap.saturating_sub(half).mul_f64(rand::random::<f64>())
    }
}

/// The running worker.
pub struct OutboxWorker {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl OutboxWorker {
    /// Stops every endpoint's task (each reports its cursor first) and waits for the thread.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        if self.thread.join().is_err() {
            tracing::error!("the outbox-worker thread panicked");
        }
    }
}

pub fn start(
    config: OutboxConfig,
    reads: ReadPool,
    writer: Writer,
    bell: &OutboxBell,
) -> anyhow::Result<OutboxWorker> {
    let targets = Arc::new(config.targets.clone());
    let http = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        // A redirect could point anywhere; the endpoint's own URL is the only target.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(policy::Resolver(targets.clone())))
        .user_agent(concat!("dropd/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the webhook HTTP client")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(worker::Context {
        permits: tokio::sync::Semaphore::new(config.concurrency.max(1)),
        config,
        reads,
        writer,
        http,
        targets,
        bell: bell.subscribe(),
        endpoints: bell.subscribe_endpoints(),
    });
    let thread = std::thread::Builder::new()
        .name("outbox-worker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!(error = %err, "the outbox worker could not start a runtime");
                    return;
                }
            };
            runtime.block_on(worker::supervise(ctx, stopped));
        })
        .context("starting the outbox-worker thread")?;
    Ok(OutboxWorker { stop, thread })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_the_cap() {
        let config = OutboxConfig {
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..OutboxConfig::default()
        };
        for _ in 0..50 {
            let first = config.delay_after(1);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let third = config.delay_after(3);
            assert!((200..=400).contains(&third.as_millis()), "{third:?}");
            let late = config.delay_after(30);
            assert!((500..=1000).contains(&late.as_millis()), "{late:?}");
        }
    }
}

//! Stopping a running application from outside it: signals, the watchdog, tests.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use anyhow::Context;

use crate::events::Hub;
use crate::http::state::Lifecycle;
use crate::store::Writer;

/// Stops a running application from elsewhere (signals, tests).
#[derive(Clone)]
pub struct AppHandle {
    pub(super) server: ServerHandle,
    pub(super) lifecycle: Lifecycle,
    pub(super) hub: Arc<Hub>,
    pub(super) drain_grace: Duration,
    pub(super) writer: Writer,
    pub(super) stuck_after: Duration,
    /// A follower's progress is its follow thread's, not a writer's.
    pub(super) follow_alive: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl AppHandle {
    /// Calls `ping` every `every` while the writer makes progress, and stops calling it while
    /// the writer is stuck, so a supervisor that expects pings (systemd's watchdog) restarts a
    /// process whose writer hung.
    pub fn feed_watchdog(&self, every: Duration, ping: impl Fn() + Send + 'static) {
        let writer = self.writer.clone();
        let (stuck_after, lifecycle) = (self.stuck_after, self.lifecycle.clone());
        let follow_alive = self.follow_alive.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if lifecycle.phase() == "stopped" {
                    break;
                }
                if let Some(alive) = &follow_alive {
                    if alive.load(std::sync::atomic::Ordering::Relaxed) {
                        ping();
                    } else {
                        tracing::error!("the follow thread stopped: not feeding the watchdog");
                    }
                    continue;
                }
                if writer.is_running() && writer.stats().quiet_for < stuck_after {
                    ping();
                } else {
                    tracing::error!(
                        quiet_ms = writer.stats().quiet_for.as_millis() as u64,
                        "the store writer makes no progress: not feeding the watchdog"
                    );
                }
            }
        });
    }
    /// Graceful: readiness goes false, new connections stop, in-flight requests finish.
    pub async fn stop(&self) {
        self.lifecycle.set_draining();
        // Event streams never finish on their own: end them first, or the graceful stop would
        // wait its whole timeout for them.
        self.hub.close();
        self.server.stop(true).await;
    }

    /// Stops on SIGTERM or SIGINT: `/readyz` says 503 at once while requests are still
    /// served for the drain grace (a load balancer moves traffic away meanwhile; a second
    /// signal cuts it short), then gracefully as `stop`.
    pub fn stop_on_signals(&self) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let handle = self.clone();
        actix_web::rt::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            handle.lifecycle.set_draining();
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            tracing::info!(
                signal = name,
                grace_ms = handle.drain_grace.as_millis() as u64,
                "stopping: not ready, still serving for the drain grace; then the requests in \
                 flight, then the writer"
            );
            tokio::select! {
                _ = tokio::time::sleep(handle.drain_grace) => {}
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            handle.stop().await;
        });
        Ok(())
    }
}

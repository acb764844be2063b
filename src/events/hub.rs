//! The hub, a thin front over the view cache (`cache`), the subscribers (`fanout`) and the
//! ticker (`ticker`): per drop, the latest committed view (for hot reads) and the subscribers of
//! its event stream.
//!
//! Costs are bounded by design: the writer only swaps the view and notes what changed (it never
//! waits for a subscriber); a ticker thread sends at most one message per drop per tick, carrying
//! every SKU that changed since the last, serialized once; the tick stretches as fan-out gets more
//! expensive, so fan-out stays within a CPU budget (between 10 Hz and 1 Hz); a SKU that sells out
//! is pushed at once. A subscriber that cannot keep up is never waited for: its messages are
//! dropped and it gets a fresh snapshot when it has room again.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::cache::{Cached, LoadError, ViewCache};
use super::fanout::{lock, Fanout, SubscribeError};
use super::stats::HubStats;
use super::ticker;
use crate::defaults;
use crate::domain::views::DropView;
use crate::domain::{Clock, DropId, DropState};
use crate::store::{CommitListener, ReadPool};

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Open event streams across all drops before new ones get 503.
    pub max_subscribers: usize,
    /// Share of one core that fan-out may use on average (0.25 = a quarter of a core).
    pub cpu_budget: f64,
    /// Messages buffered per subscriber before it counts as lagging.
    pub subscriber_buffer: usize,
    pub keep_alive: Duration,
    /// Streams one client address may hold (`None`: no cap).
    pub streams_per_ip: Option<usize>,
    /// A subscriber whose buffer stayed full this long is dropped.
    pub stall_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_subscribers: defaults::MAX_SUBSCRIBERS,
            cpu_budget: defaults::SSE_CPU_BUDGET,
            subscriber_buffer: defaults::SSE_SUBSCRIBER_BUFFER,
            keep_alive: defaults::SSE_KEEP_ALIVE,
            streams_per_ip: Some(defaults::STREAMS_PER_IP),
            stall_timeout: defaults::SSE_STALL_TIMEOUT,
        }
    }
}

pub struct Hub {
    cache: Arc<ViewCache>,
    fanout: Fanout,
    wake: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    last_keep_alive: Mutex<Instant>,
    config: HubConfig,
    clock: Arc<dyn Clock>,
    pub stats: Arc<HubStats>,
    /// Each buyer's own stream of news about their holds and orders.
    pub buyers: super::buyers::BuyerStreams,
}

impl Hub {
    pub fn new(config: HubConfig, clock: Arc<dyn Clock>) -> Arc<Self> {
        let stats = Arc::new(HubStats::default());
        Arc::new(Self {
            cache: Arc::new(ViewCache::new(clock.clone(), stats.clone())),
            fanout: Fanout::new(
                config.max_subscribers,
                config.subscriber_buffer,
                config.streams_per_ip,
                config.stall_timeout,
            ),
            wake: Mutex::new(None),
            last_keep_alive: Mutex::new(Instant::now()),
            config,
            clock,
            stats,
            buyers: super::buyers::BuyerStreams::default(),
        })
    }

    pub fn attach_reads(&self, reads: ReadPool) {
        self.cache.attach_reads(reads);
    }

    /// Every drop, read at start (see `ViewCache::preload`).
    pub fn preload(&self, views: Vec<DropView>) {
        self.cache.preload(views);
    }

    /// The latest committed view of a drop, if memory has it.
    pub fn cached(&self, drop_id: &DropId) -> Option<Arc<Cached>> {
        self.cache.cached(drop_id)
    }

    /// A drop's view from memory, or read once from SQLite however many ask at the same time.
    pub async fn get_or_load(&self, drop_id: &DropId) -> Result<Option<Arc<Cached>>, LoadError> {
        self.cache.get_or_load(drop_id).await
    }

    /// Every drop, in the order of their start.
    pub async fn list_or_load(&self) -> Result<Vec<Arc<Cached>>, LoadError> {
        self.cache.list_or_load().await
    }

    /// Opens an event stream for a client at `ip`: a `snapshot` first unless `last_event_id`
    /// shows the client is current, then the drop's messages.
    pub fn subscribe(
        &self,
        drop_id: &DropId,
        last_event_id: Option<i64>,
        ip: Option<std::net::IpAddr>,
    ) -> Result<mpsc::Receiver<Bytes>, SubscribeError> {
        if self.fanout.is_closed() {
            return Err(SubscribeError::Closed);
        }
        let entry = self.cache.entry(drop_id).ok_or(SubscribeError::Unknown)?;
        let st = lock(&entry.state);
        let state = st.current.view.state_at(self.clock.now());
        let current = &st.current;
        self.fanout.subscribe(
            &entry.subscribers,
            &current.snapshot,
            current.view.version,
            state,
            last_event_id,
            ip,
        )
    }

    pub fn is_closed(&self) -> bool {
        self.fanout.is_closed()
    }

    pub fn subscribers(&self) -> usize {
        self.fanout.count()
    }

    pub(super) fn is_urgent(&self) -> bool {
        self.cache.is_urgent()
    }

    /// One pass: for every drop with news, one message to every subscriber. Returns the time
    /// the fan-out took.
    pub fn tick(&self) -> Duration {
        let started = Instant::now();
        let now = self.clock.now();
        let keep_alive = {
            let mut last = lock(&self.last_keep_alive);
            if last.elapsed() >= self.config.keep_alive {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        let mut sent = 0u64;
        for entry in self.cache.entries() {
            let (message, snapshot, version, head) = {
                let mut st = lock(&entry.state);
                let state = st.current.view.state_at(now);
                if state != st.published_state {
                    st.published_state = state;
                    st.pending.state_changed(state);
                    if st.current.view.state != state {
                        let mut view = st.current.view.clone();
                        view.state = state;
                        st.current = Cached::new(view);
                    }
                }
                let version = st.current.view.version;
                let published = st.published_state;
                let message = st.pending.take_message(version, published, keep_alive);
                // The chain's head, about once a second while it moves, and at once at the close.
                let at_close = st.current.view.state == DropState::Closed && !st.close_head_sent;
                let head_due = st.head_news
                    && (at_close
                        || st
                            .head_sent
                            .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1)));
                // Its id is the drop's version it was sent at: resuming from it misses nothing.
                let head = if head_due {
                    st.head_news = false;
                    st.head_sent = Some(Instant::now());
                    st.close_head_sent |= at_close;
                    st.head
                        .as_ref()
                        .map(|head| super::sse::event(version, "ledger", head))
                } else {
                    None
                };
                let queue = queue_message(&mut st, version, now);
                (
                    message,
                    st.current.snapshot.clone(),
                    version,
                    head.into_iter().chain(queue),
                )
            };
            for message in message.into_iter().chain(head) {
                let outcome = self
                    .fanout
                    .send(&entry.subscribers, &message, &snapshot, version);
                sent += outcome.queued;
                self.stats
                    .lagged
                    .fetch_add(outcome.lagged, Ordering::Relaxed);
                if outcome.stalled > 0 {
                    metrics::counter!("dropd_sse_stalled_total").increment(outcome.stalled);
                }
            }
        }
        let took = started.elapsed();
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        self.stats.messages.fetch_add(sent, Ordering::Relaxed);
        self.stats
            .fanout_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        metrics::counter!("dropd_sse_messages_total").increment(sent);
        metrics::counter!("dropd_sse_fanout_microseconds_total").increment(took.as_micros() as u64);
        metrics::gauge!("dropd_sse_subscribers").set(self.fanout.count() as f64);
        took
    }

    /// The next tick interval: long enough that fan-out stays within the CPU budget.
    pub fn next_interval(&self, fan_out: Duration) -> Duration {
        let interval = ticker::interval_for(fan_out, self.config.cpu_budget);
        self.stats
            .interval_millis
            .store(interval.as_millis() as u64, Ordering::Relaxed);
        metrics::gauge!("dropd_sse_tick_seconds").set(interval.as_secs_f64());
        interval
    }

    /// Runs the ticker on its own thread until `close`.
    pub fn start_ticker(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        *lock(&self.wake) = Some(wake);
        ticker::spawn(self.clone(), woken)
    }

    /// Ends every stream at once (shutdown) and stops the ticker.
    pub fn close(&self) {
        self.buyers.close();
        self.fanout.close();
        for entry in self.cache.entries() {
            self.fanout.end_all(&entry.subscribers);
        }
        if let Some(wake) = lock(&self.wake).take() {
            let _ = wake.try_send(());
        }
    }
}

impl CommitListener for Hub {
    fn announced(&self, events: &[(&str, &str, &str)]) {
        self.buyers.publish(events);
    }

    fn forget(&self, drop_id: &DropId) {
        self.cache.forget(drop_id);
    }

    fn signed(&self, heads: &[crate::domain::ledger::SignedHead]) {
        for head in heads {
            let drop_id = DropId::from_trusted(head.head.drop_id.clone());
            let Some(entry) = self.cache.entry(&drop_id) else {
                continue;
            };
            let data = serde_json::to_value(head).unwrap_or_default();
            let mut st = lock(&entry.state);
            st.head = Some(data);
            st.head_news = true;
        }
    }

    fn committed(&self, views: Vec<DropView>) {
        let mut urgent = false;
        for view in views {
            urgent |= self.cache.store(view);
        }
        if urgent {
            if let Some(wake) = lock(&self.wake).as_ref() {
                let _ = wake.try_send(());
            }
        }
    }
}

/// A queue drop's serving number, rate and queue length, once a second while it is not
/// closed: every page works out its own position and wait from it, without a message of its
/// own. Its id is the drop's version, as for every message of the stream.
fn queue_message(
    st: &mut super::cache::EntryState,
    version: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<bytes::Bytes> {
    let queue = st.current.view.queue.as_ref()?;
    if st.current.view.state == DropState::Closed
        || st
            .queue_sent
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1))
    {
        return None;
    }
    st.queue_sent = Some(Instant::now());
    let data = serde_json::json!({
        "drop_id": st.current.view.id,
        "serving": queue.admission.serving_at(now.timestamp_millis()),
        "admission_rate": queue.admission_rate,
        "admission_paused": queue.admission_paused,
        "joined": queue.joined,
        "seeded": queue.seeded_at.is_some(),
        "at": crate::domain::clock::rfc3339(now),
    });
    Some(super::sse::event(version, "queue", &data))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::ManualClock;
    use crate::events::diff::tests::view;

    fn hub(buffer: usize) -> Arc<Hub> {
        let now = DateTime::parse_from_rfc3339("2026-12-01T18:30:00Z")
            .expect("valid literal")
            .with_timezone(&Utc);
        let hub = Hub::new(
            HubConfig {
                subscriber_buffer: buffer,
                max_subscribers: 3,
                ..HubConfig::default()
            },
            Arc::new(ManualClock::new(now)),
        );
        hub.committed(vec![view(1, 100)]);
        hub
    }

    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(String::from_utf8_lossy(&b).into_owned());
        }
        out
    }

    #[test]
    fn a_stalled_subscriber_never_holds_back_the_others_and_gets_a_snapshot_later() {
        let hub = hub(4);
        let id = DropId::from_trusted("d".into());
        let mut stalled = hub.subscribe(&id, None, None).expect("subscribed");
        let mut live = hub.subscribe(&id, None, None).expect("subscribed");
        drain(&mut live);
        for version in 2..=10 {
            hub.committed(vec![view(version, 100 - version)]);
            hub.tick();
            let got = drain(&mut live);
            assert_eq!(got.len(), 1, "one message per tick for the live subscriber");
            assert!(got[0].contains(&format!("id: {version}\n")), "{got:?}");
        }
        assert!(hub.stats.lagged.load(Ordering::Relaxed) > 0);
        // The stalled one reads again: after its buffer, the next tick brings a full snapshot.
        drain(&mut stalled);
        hub.committed(vec![view(11, 89)]);
        hub.tick();
        let got = drain(&mut stalled);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].contains("event: snapshot") && got[0].contains("id: 11"),
            "{got:?}"
        );
    }

    #[test]
    fn a_subscriber_that_reads_nothing_for_the_stall_timeout_is_dropped_and_frees_its_place() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T18:30:00Z")
            .expect("valid literal")
            .with_timezone(&Utc);
        let hub = Hub::new(
            HubConfig {
                subscriber_buffer: 2,
                streams_per_ip: Some(2),
                stall_timeout: Duration::from_millis(50),
                ..HubConfig::default()
            },
            Arc::new(ManualClock::new(now)),
        );
        hub.committed(vec![view(1, 100)]);
        let id = DropId::from_trusted("d".into());
        let here: std::net::IpAddr = "192.0.2.1".parse().expect("address");
        let there: std::net::IpAddr = "192.0.2.2".parse().expect("address");
        let _stalled = hub.subscribe(&id, None, Some(here)).expect("first");
        let mut reading = hub.subscribe(&id, None, Some(here)).expect("second");
        assert_eq!(
            hub.subscribe(&id, None, Some(here)).err(),
            Some(SubscribeError::TooManyFromAddress)
        );
        let mut elsewhere = hub
            .subscribe(&id, None, Some(there))
            .expect("another address");
        for version in 2..=4 {
            drain(&mut reading);
            drain(&mut elsewhere);
            hub.committed(vec![view(version, 100 - version)]);
            hub.tick();
        }
        assert_eq!(hub.subscribers(), 3, "lagging, not yet stalled");
        std::thread::sleep(Duration::from_millis(60));
        drain(&mut reading);
        drain(&mut elsewhere);
        hub.committed(vec![view(5, 95)]);
        hub.tick();
        assert_eq!(hub.subscribers(), 2, "the one that read nothing is gone");
        let _again = hub
            .subscribe(&id, None, Some(here))
            .expect("its place is free again");
    }

    #[test]
    fn a_drop_whose_new_view_could_not_be_read_serves_nobody_until_it_is_read_again() {
        let hub = hub(16);
        let id = DropId::from_trusted("d".into());
        hub.committed(vec![view(2, 0)]);
        assert_eq!(hub.cached(&id).map(|c| c.view.version), Some(2));
        // A restock committed as version 3, but the writer could not read it back.
        hub.forget(&id);
        assert!(
            hub.cached(&id).is_none(),
            "a view behind the database must not refuse buyers sold out from memory"
        );
        hub.committed(vec![view(2, 0)]);
        assert!(
            hub.cached(&id).is_none(),
            "a load that began before the commit brings back the stale version"
        );
        hub.committed(vec![view(3, 40)]);
        let back = hub.cached(&id).expect("read again");
        assert_eq!((back.view.version, back.view.skus[0].available), (3, 40));
    }

    #[test]
    fn changes_between_ticks_become_one_message_and_versions_grow() {
        let hub = hub(16);
        let id = DropId::from_trusted("d".into());
        let mut rx = hub.subscribe(&id, None, None).expect("subscribed");
        let first = drain(&mut rx);
        assert!(first
            .iter()
            .any(|e| e.contains("event: snapshot") && e.contains("id: 1\n")));
        for version in 2..=6 {
            hub.committed(vec![view(version, 100 - version)]);
        }
        hub.tick();
        let got = drain(&mut rx);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("id: 6\nevent: stock") && got[0].contains(r#""available":94"#));
        // An older view arriving late never replaces a newer one.
        hub.committed(vec![view(3, 97)]);
        assert_eq!(hub.cached(&id).map(|c| c.view.version), Some(6));
    }

    #[test]
    fn a_client_that_is_current_gets_no_snapshot_and_the_cap_is_enforced() {
        let hub = hub(16);
        let id = DropId::from_trusted("d".into());
        let mut current = hub.subscribe(&id, Some(1), None).expect("subscribed");
        assert!(drain(&mut current).iter().all(|e| !e.contains("snapshot")));
        let mut behind = hub.subscribe(&id, Some(0), None).expect("subscribed");
        assert!(drain(&mut behind).iter().any(|e| e.contains("snapshot")));
        let _third = hub.subscribe(&id, None, None).expect("subscribed");
        assert_eq!(
            hub.subscribe(&id, None, None).err(),
            Some(SubscribeError::Full)
        );
        hub.close();
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(
            hub.subscribe(&id, None, None).err(),
            Some(SubscribeError::Closed)
        );
    }
}

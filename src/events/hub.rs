//! The hub: per drop, the latest committed view (for hot reads) and the subscribers of its
//! event stream.
//!
//! Costs are bounded by design: the writer only swaps the view and notes what changed (it never
//! waits for a subscriber); a ticker thread sends at most one message per drop per tick, carrying
//! every SKU that changed since the last, serialized once; the tick stretches as fan-out gets more
//! expensive, so fan-out stays within a CPU budget (between 10 Hz and 1 Hz); a SKU that sells out
//! is pushed at once. A subscriber that cannot keep up is never waited for: its messages are
//! dropped and it gets a fresh snapshot when it has room again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::sse;
use crate::domain::views::DropView;
use crate::domain::{Clock, DropId, DropState};
use crate::store::{drops, CommitListener, ReadPool};

const FASTEST_TICK: Duration = Duration::from_millis(100);
const SLOWEST_TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Open event streams across all drops before new ones get 503.
    pub max_subscribers: usize,
    /// Share of one core that fan-out may use on average (0.25 = a quarter of a core).
    pub cpu_budget: f64,
    /// Messages buffered per subscriber before it counts as lagging.
    pub subscriber_buffer: usize,
    pub keep_alive: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_subscribers: 20_000,
            cpu_budget: 0.25,
            subscriber_buffer: 16,
            keep_alive: Duration::from_secs(15),
        }
    }
}

/// A drop's committed state, serialized once for every reader.
pub struct Cached {
    pub view: DropView,
    /// The `GET /v1/drops/{drop}` body.
    pub body: Bytes,
    /// The `snapshot` event.
    pub snapshot: Bytes,
}

impl Cached {
    fn new(view: DropView) -> Arc<Self> {
        let body = Bytes::from(serde_json::to_vec(&view).unwrap_or_default());
        let snapshot = sse::event(
            view.version,
            "snapshot",
            &serde_json::to_value(&view).unwrap_or_default(),
        );
        Arc::new(Self {
            view,
            body,
            snapshot,
        })
    }
}

/// The state the schedule gives a view at `now`, keeping an admin's pause or close.
pub fn state_at(view: &DropView, now: DateTime<Utc>) -> DropState {
    match view.state {
        DropState::Closed => DropState::Closed,
        _ if now >= view.ends_at => DropState::Closed,
        DropState::Paused => DropState::Paused,
        _ if now < view.starts_at => DropState::Scheduled,
        _ => DropState::Live,
    }
}

#[derive(Debug, Default)]
pub struct HubStats {
    /// Views read from SQLite because memory had none (one per coalesced miss).
    pub loads: AtomicU64,
    pub ticks: AtomicU64,
    /// Messages queued to subscribers.
    pub messages: AtomicU64,
    /// Time spent fanning out, in microseconds.
    pub fanout_micros: AtomicU64,
    /// The current tick interval, in milliseconds.
    pub interval_millis: AtomicU64,
    /// Messages dropped for subscribers that could not keep up.
    pub lagged: AtomicU64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("too many open event streams")]
    Full,
    #[error("the server is shutting down")]
    Closed,
    #[error("no such drop")]
    Unknown,
}

struct Subscriber {
    tx: mpsc::Sender<Bytes>,
    lagging: bool,
    /// The version it started at: older messages (built before it joined) are not for it.
    since: i64,
}

struct EntryState {
    current: Arc<Cached>,
    /// The drop state subscribers last heard of (the clock changes it without a commit).
    published_state: DropState,
    changed_skus: BTreeMap<String, i64>,
    drop_changes: Map<String, Value>,
    urgent: bool,
    /// A commit changed the drop but its new view could not be read: `current` may be behind
    /// the database, so it serves nobody until a view newer than it arrives (a load that
    /// began before the commit brings back the same version, which is no cure).
    stale: bool,
}

struct Entry {
    state: Mutex<EntryState>,
    subscribers: Mutex<Vec<Subscriber>>,
}

impl Entry {
    fn new(view: DropView) -> Arc<Entry> {
        let state = view.state;
        Arc::new(Entry {
            state: Mutex::new(EntryState {
                current: Cached::new(view),
                published_state: state,
                changed_skus: BTreeMap::new(),
                drop_changes: Map::new(),
                urgent: false,
                stale: false,
            }),
            subscribers: Mutex::new(Vec::new()),
        })
    }
}

type Load = Shared<BoxFuture<'static, Result<Option<Arc<Cached>>, String>>>;

pub struct Hub {
    drops: RwLock<HashMap<DropId, Arc<Entry>>>,
    /// True once every drop in the database is in memory (for the list).
    all_loaded: AtomicBool,
    loading: Mutex<HashMap<Option<DropId>, Load>>,
    subscriber_count: AtomicUsize,
    closed: AtomicBool,
    wake: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    last_keep_alive: Mutex<Instant>,
    config: HubConfig,
    clock: Arc<dyn Clock>,
    /// Attached once the store is open (the store needs the hub first, as its listener).
    reads: std::sync::OnceLock<ReadPool>,
    pub stats: HubStats,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a hub lock leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    pub fn new(config: HubConfig, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            drops: RwLock::new(HashMap::new()),
            all_loaded: AtomicBool::new(false),
            loading: Mutex::new(HashMap::new()),
            subscriber_count: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            wake: Mutex::new(None),
            last_keep_alive: Mutex::new(Instant::now()),
            config,
            clock,
            reads: std::sync::OnceLock::new(),
            stats: HubStats::default(),
        })
    }

    pub fn attach_reads(&self, reads: ReadPool) {
        let _ = self.reads.set(reads);
    }

    fn entry(&self, drop_id: &DropId) -> Option<Arc<Entry>> {
        self.drops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(drop_id)
            .cloned()
    }

    /// The latest committed view of a drop, if memory has it.
    pub fn cached(&self, drop_id: &DropId) -> Option<Arc<Cached>> {
        let entry = self.entry(drop_id)?;
        let state = lock(&entry.state);
        (!state.stale).then(|| state.current.clone())
    }

    /// Puts a view in memory if it is newer than what is there; notes what changed for the
    /// subscribers. Returns whether a SKU just sold out.
    fn store(&self, view: DropView) -> bool {
        let drop_id = DropId::from_trusted(view.id.clone());
        let existing = self.entry(&drop_id).or_else(|| {
            // Two first views of a drop may race (a cold load and the writer's publish): the
            // write lock decides which creates the entry; the other updates it by version.
            let mut drops = self.drops.write().unwrap_or_else(|p| p.into_inner());
            match drops.get(&drop_id) {
                Some(entry) => Some(entry.clone()),
                None => {
                    drops.insert(drop_id.clone(), Entry::new(view.clone()));
                    None
                }
            }
        });
        if let Some(entry) = existing {
            let mut st = lock(&entry.state);
            if view.version < st.current.view.version
                || (st.stale && view.version == st.current.view.version)
            {
                return false;
            }
            let old = &st.current.view;
            let mut sold_out = false;
            let mut changed = Vec::new();
            for sku in &view.skus {
                let before = old
                    .skus
                    .iter()
                    .find(|s| s.sku == sku.sku)
                    .map(|s| s.available);
                if before != Some(sku.available) {
                    sold_out |= sku.available == 0;
                    changed.push((sku.sku.clone(), sku.available));
                }
            }
            let mut fields = Map::new();
            let pairs = [
                ("name", json!(old.name), json!(view.name)),
                (
                    "description",
                    json!(old.description),
                    json!(view.description),
                ),
                (
                    "starts_at",
                    json!(crate::domain::clock::rfc3339(old.starts_at)),
                    json!(crate::domain::clock::rfc3339(view.starts_at)),
                ),
                (
                    "ends_at",
                    json!(crate::domain::clock::rfc3339(old.ends_at)),
                    json!(crate::domain::clock::rfc3339(view.ends_at)),
                ),
                (
                    "per_buyer_limit",
                    json!(old.per_buyer_limit),
                    json!(view.per_buyer_limit),
                ),
                (
                    "hold_seconds",
                    json!(old.hold_seconds),
                    json!(view.hold_seconds),
                ),
            ];
            for (name, before, after) in pairs {
                if before != after {
                    fields.insert(name.into(), after);
                }
            }
            // A new price or name must reach the pages that show it before the buyer confirms.
            let relabelled = view.skus.iter().any(|sku| {
                !old.skus
                    .iter()
                    .any(|o| o.sku == sku.sku && o.price == sku.price && o.name == sku.name)
            });
            if relabelled {
                let skus: Vec<Value> = view
                    .skus
                    .iter()
                    .map(|s| json!({"sku": s.sku, "name": s.name, "price": s.price, "available": s.available}))
                    .collect();
                fields.insert("skus".into(), Value::Array(skus));
            }
            st.changed_skus.extend(changed);
            st.drop_changes.extend(fields);
            st.urgent |= sold_out;
            st.stale = false;
            st.current = Cached::new(view);
            sold_out
        } else {
            false
        }
    }

    /// A drop's view from memory, or read once from SQLite however many ask at the same time.
    pub async fn get_or_load(
        self: &Arc<Self>,
        drop_id: &DropId,
    ) -> Result<Option<Arc<Cached>>, String> {
        if let Some(cached) = self.cached(drop_id) {
            return Ok(Some(cached));
        }
        let load = self.load(Some(drop_id.clone()));
        let result = load.await;
        lock(&self.loading).remove(&Some(drop_id.clone()));
        result?;
        Ok(self.cached(drop_id))
    }

    /// Every drop, in the order of their start.
    pub async fn list_or_load(self: &Arc<Self>) -> Result<Vec<Arc<Cached>>, String> {
        if !self.all_loaded.load(Ordering::Acquire) {
            let result = self.load(None).await;
            lock(&self.loading).remove(&None);
            result?;
        }
        let mut all: Vec<Arc<Cached>> = self
            .drops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| lock(&e.state).current.clone())
            .collect();
        all.sort_by(|a, b| (a.view.starts_at, &a.view.id).cmp(&(b.view.starts_at, &b.view.id)));
        Ok(all)
    }

    /// Starts (or joins) the read of one drop, or of all of them for `None`.
    fn load(self: &Arc<Self>, key: Option<DropId>) -> Load {
        let mut loading = lock(&self.loading);
        if let Some(load) = loading.get(&key) {
            return load.clone();
        }
        let hub = self.clone();
        let wanted = key.clone();
        let all_drops = key.is_none();
        let load: Load = async move {
            let reads = hub
                .reads
                .get()
                .cloned()
                .ok_or("the read pool is not attached yet")?;
            let now = hub.clock.now();
            hub.stats.loads.fetch_add(1, Ordering::Relaxed);
            let views = tokio::task::spawn_blocking(move || {
                let conn = reads.get()?;
                match &wanted {
                    Some(id) => Ok(drops::get_view(&conn, id.as_str(), now)?
                        .into_iter()
                        .collect()),
                    None => drops::list_views(&conn, now),
                }
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e: crate::store::StoreError| e.to_string())?;
            let all = views.len();
            for view in views {
                hub.store(view);
            }
            if all_drops {
                hub.all_loaded.store(true, Ordering::Release);
            }
            tracing::debug!(drops = all, "loaded drops into memory");
            Ok(None)
        }
        .boxed()
        .shared();
        loading.insert(key, load.clone());
        load
    }

    /// Opens an event stream: a `snapshot` first unless `last_event_id` shows the client is
    /// current, then the drop's messages.
    pub fn subscribe(
        &self,
        drop_id: &DropId,
        last_event_id: Option<i64>,
    ) -> Result<mpsc::Receiver<Bytes>, SubscribeError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SubscribeError::Closed);
        }
        let entry = self.entry(drop_id).ok_or(SubscribeError::Unknown)?;
        let taken = self.subscriber_count.fetch_add(1, Ordering::AcqRel);
        if taken >= self.config.max_subscribers {
            self.subscriber_count.fetch_sub(1, Ordering::AcqRel);
            return Err(SubscribeError::Full);
        }
        let (tx, rx) = mpsc::channel(self.config.subscriber_buffer.max(2));
        // Under the state lock, so no message can fall between the snapshot and registration.
        let st = lock(&entry.state);
        let version = st.current.view.version;
        let _ = tx.try_send(Bytes::from_static(sse::RETRY));
        if last_event_id.is_none_or(|id| id < version) {
            let _ = tx.try_send(st.current.snapshot.clone());
        } else {
            // Current by version, but the clock may have moved the drop since (scheduled to
            // live) without a new version: restate the state.
            let state =
                json!({"version": version, "state": state_at(&st.current.view, self.clock.now())});
            let _ = tx.try_send(sse::event(version, "drop", &state));
        }
        let mut subscribers = lock(&entry.subscribers);
        if self.closed.load(Ordering::Acquire) {
            // `close` ran meanwhile: this stream must not outlive it.
            self.subscriber_count.fetch_sub(1, Ordering::AcqRel);
            return Err(SubscribeError::Closed);
        }
        subscribers.push(Subscriber {
            tx,
            lagging: false,
            since: version,
        });
        drop(subscribers);
        metrics::gauge!("dropd_sse_subscribers")
            .set(self.subscriber_count.load(Ordering::Relaxed) as f64);
        Ok(rx)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn subscribers(&self) -> usize {
        self.subscriber_count.load(Ordering::Relaxed)
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
        let entries: Vec<Arc<Entry>> = self
            .drops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut sent = 0u64;
        for entry in entries {
            let (message, snapshot, version) = {
                let mut st = lock(&entry.state);
                let state = state_at(&st.current.view, now);
                if state != st.published_state {
                    st.published_state = state;
                    st.drop_changes.insert("state".into(), json!(state));
                    if st.current.view.state != state {
                        let mut view = st.current.view.clone();
                        view.state = state;
                        st.current = Cached::new(view);
                    }
                }
                let message = self.take_message(&mut st, keep_alive);
                (
                    message,
                    st.current.snapshot.clone(),
                    st.current.view.version,
                )
            };
            let Some(message) = message else { continue };
            sent += self.fan_out(&entry, &message, &snapshot, version);
        }
        let took = started.elapsed();
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        self.stats.messages.fetch_add(sent, Ordering::Relaxed);
        self.stats
            .fanout_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        metrics::counter!("dropd_sse_messages_total").increment(sent);
        metrics::counter!("dropd_sse_fanout_microseconds_total").increment(took.as_micros() as u64);
        metrics::gauge!("dropd_sse_subscribers")
            .set(self.subscriber_count.load(Ordering::Relaxed) as f64);
        took
    }

    /// The one message this tick carries for a drop: its changed SKUs and drop fields.
    fn take_message(&self, st: &mut EntryState, keep_alive: bool) -> Option<Bytes> {
        if st.changed_skus.is_empty() && st.drop_changes.is_empty() {
            return keep_alive.then(|| Bytes::from_static(sse::KEEP_ALIVE));
        }
        let version = st.current.view.version;
        let mut text = Vec::new();
        if !st.changed_skus.is_empty() {
            let skus: Vec<Value> = std::mem::take(&mut st.changed_skus)
                .into_iter()
                .map(|(sku, available)| json!({"sku": sku, "available": available}))
                .collect();
            text.extend_from_slice(&sse::event(
                version,
                "stock",
                &json!({"version": version, "skus": skus}),
            ));
        }
        if !st.drop_changes.is_empty() {
            let mut fields = std::mem::take(&mut st.drop_changes);
            fields.insert("version".into(), json!(version));
            fields.insert("state".into(), json!(st.published_state));
            text.extend_from_slice(&sse::event(version, "drop", &Value::Object(fields)));
        }
        st.urgent = false;
        Some(Bytes::from(text))
    }

    /// Queues `message` to every subscriber without waiting; a full one is marked lagging and
    /// gets `snapshot` instead once it has room.
    fn fan_out(&self, entry: &Entry, message: &Bytes, snapshot: &Bytes, version: i64) -> u64 {
        let mut sent = 0;
        let mut gone = 0;
        lock(&entry.subscribers).retain_mut(|sub| {
            if version < sub.since {
                // Built before this subscriber's snapshot: it already has newer state.
                return !sub.tx.is_closed();
            }
            let payload = if sub.lagging { snapshot } else { message };
            match sub.tx.try_send(payload.clone()) {
                Ok(()) => {
                    sub.lagging = false;
                    sent += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.lagging = true;
                    self.stats.lagged.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    gone += 1;
                    false
                }
            }
        });
        if gone > 0 {
            self.subscriber_count.fetch_sub(gone, Ordering::AcqRel);
        }
        sent
    }

    /// The next tick interval: long enough that fan-out stays within the CPU budget.
    pub fn next_interval(&self, fan_out: Duration) -> Duration {
        let budget = self.config.cpu_budget.clamp(0.01, 1.0);
        let interval = fan_out.div_f64(budget).clamp(FASTEST_TICK, SLOWEST_TICK);
        self.stats
            .interval_millis
            .store(interval.as_millis() as u64, Ordering::Relaxed);
        metrics::gauge!("dropd_sse_tick_seconds").set(interval.as_secs_f64());
        interval
    }

    fn is_urgent(&self) -> bool {
        self.drops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|e| lock(&e.state).urgent)
    }

    /// Runs the ticker on its own thread until `close`.
    pub fn start_ticker(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        *lock(&self.wake) = Some(wake);
        let hub = self.clone();
        std::thread::Builder::new()
            .name("events-ticker".into())
            .spawn(move || {
                let mut interval = FASTEST_TICK;
                let mut last = Instant::now();
                while !hub.closed.load(Ordering::Acquire) {
                    let wait = interval.saturating_sub(last.elapsed());
                    let urgent = woken.recv_timeout(wait).is_ok();
                    if hub.closed.load(Ordering::Acquire) {
                        break;
                    }
                    if urgent && last.elapsed() < interval && !hub.is_urgent() {
                        continue;
                    }
                    last = Instant::now();
                    let took = hub.tick();
                    interval = hub.next_interval(took);
                }
            })
    }

    /// Ends every stream at once (shutdown) and stops the ticker.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for entry in self
            .drops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let mut subs = lock(&entry.subscribers);
            self.subscriber_count
                .fetch_sub(subs.len(), Ordering::AcqRel);
            subs.clear();
        }
        if let Some(wake) = lock(&self.wake).take() {
            let _ = wake.try_send(());
        }
    }
}

impl CommitListener for Hub {
    fn forget(&self, drop_id: &DropId) {
        if let Some(entry) = self.entry(drop_id) {
            lock(&entry.state).stale = true;
        }
        self.all_loaded.store(false, Ordering::Release);
    }

    fn committed(&self, views: Vec<DropView>) {
        let mut urgent = false;
        for view in views {
            urgent |= self.store(view);
        }
        if urgent {
            if let Some(wake) = lock(&self.wake).as_ref() {
                let _ = wake.try_send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::views::SkuView;
    use crate::domain::{Currency, ManualClock, Money};

    fn view(version: i64, available: i64) -> DropView {
        let start = DateTime::parse_from_rfc3339("2026-12-01T18:00:00Z")
            .expect("valid literal")
            .with_timezone(&Utc);
        DropView {
            id: "d".into(),
            name: "d".into(),
            description: String::new(),
            starts_at: start,
            ends_at: start + chrono::Duration::hours(2),
            per_buyer_limit: 2,
            hold_seconds: 600,
            state: DropState::Live,
            version,
            skus: vec![SkuView {
                sku: "S1".into(),
                name: "S1".into(),
                price: Money {
                    amount: 1,
                    currency: Currency::parse("EUR").expect("valid"),
                },
                stock: 100,
                available,
                held: 100 - available,
                sold: 0,
            }],
        }
    }

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
        let mut stalled = hub.subscribe(&id, None).expect("subscribed");
        let mut live = hub.subscribe(&id, None).expect("subscribed");
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
        let mut rx = hub.subscribe(&id, None).expect("subscribed");
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
        let mut current = hub.subscribe(&id, Some(1)).expect("subscribed");
        assert!(drain(&mut current).iter().all(|e| !e.contains("snapshot")));
        let mut behind = hub.subscribe(&id, Some(0)).expect("subscribed");
        assert!(drain(&mut behind).iter().any(|e| e.contains("snapshot")));
        let _third = hub.subscribe(&id, None).expect("subscribed");
        assert_eq!(hub.subscribe(&id, None).err(), Some(SubscribeError::Full));
        hub.close();
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(hub.subscribe(&id, None).err(), Some(SubscribeError::Closed));
    }

    #[test]
    fn the_tick_stretches_with_fan_out_cost_within_bounds() {
        let hub = hub(16);
        assert_eq!(hub.next_interval(Duration::from_micros(10)), FASTEST_TICK);
        assert_eq!(
            hub.next_interval(Duration::from_millis(50)),
            Duration::from_millis(200)
        );
        assert_eq!(hub.next_interval(Duration::from_secs(5)), SLOWEST_TICK);
    }
}

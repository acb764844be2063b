//! Subscribers and the messages they get: changes gathered between ticks become one message per
//! drop, serialized once, queued to every subscriber without waiting. A subscriber that cannot
//! keep up loses messages, not the others' time, and gets a snapshot once it has room again.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::diff::Changes;
use super::sse;
use crate::domain::DropState;

/// The hub's locks guard plain data: a panic while one was held leaves nothing half-done that
/// matters, so carry on with it.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("too many open event streams")]
    Full,
    #[error("the server is shutting down")]
    Closed,
    #[error("no such drop")]
    Unknown,
    #[error("this address has as many event streams open as it may")]
    TooManyFromAddress,
}

/// What subscribers of one drop have not heard yet.
#[derive(Default)]
pub struct Pending {
    skus: BTreeMap<String, i64>,
    fields: Map<String, Value>,
    /// A SKU sold out since the last message: the ticker sends without waiting for its tick.
    pub urgent: bool,
}

impl Pending {
    pub fn absorb(&mut self, changes: Changes) {
        self.skus.extend(changes.skus);
        self.fields.extend(changes.fields);
        self.urgent |= changes.sold_out;
    }

    /// The clock moved the drop (scheduled to live, live to closed) without a commit.
    pub fn state_changed(&mut self, state: DropState) {
        self.fields.insert("state".into(), json!(state));
    }

    /// The one message for everything pending, stamped with `version`; a keep-alive when there
    /// is nothing and one is due.
    pub fn take_message(
        &mut self,
        version: i64,
        state: DropState,
        keep_alive: bool,
    ) -> Option<Bytes> {
        if self.skus.is_empty() && self.fields.is_empty() {
            return keep_alive.then(|| Bytes::from_static(sse::KEEP_ALIVE));
        }
        let mut text = Vec::new();
        if !self.skus.is_empty() {
            let skus: Vec<Value> = std::mem::take(&mut self.skus)
                .into_iter()
                .map(|(sku, available)| json!({"sku": sku, "available": available}))
                .collect();
            text.extend_from_slice(&sse::event(
                version,
                "stock",
                &json!({"version": version, "skus": skus}),
            ));
        }
        if !self.fields.is_empty() {
            let mut fields = std::mem::take(&mut self.fields);
            fields.insert("version".into(), json!(version));
            fields.insert("state".into(), json!(state));
            text.extend_from_slice(&sse::event(version, "drop", &Value::Object(fields)));
        }
        self.urgent = false;
        Some(Bytes::from(text))
    }
}

struct Subscriber {
    tx: mpsc::Sender<Bytes>,
    lagging: bool,
    /// Since when its buffer has been full: past the stall timeout it is dropped.
    full_since: Option<Instant>,
    ip: Option<IpAddr>,
    /// The version it started at: older messages (built before it joined) are not for it.
    since: i64,
}

/// One drop's open streams.
#[derive(Default)]
pub struct Subscribers(Mutex<Vec<Subscriber>>);

/// Outcome of one message to one drop's subscribers.
pub struct Sent {
    pub queued: u64,
    pub lagged: u64,
    /// Dropped for reading nothing for the stall timeout.
    pub stalled: u64,
}

/// How many streams each address holds, when that is capped.
struct PerAddress {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Every open stream across drops, under one cap.
pub struct Fanout {
    count: AtomicUsize,
    closed: AtomicBool,
    max: usize,
    buffer: usize,
    per_address: Option<PerAddress>,
    stall_timeout: Duration,
}

impl Fanout {
    /// `per_address`: most streams one address may hold (`None`: no cap).
    pub fn new(
        max: usize,
        buffer: usize,
        per_address: Option<usize>,
        stall_timeout: Duration,
    ) -> Self {
        Self {
            count: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            max,
            buffer: buffer.max(2),
            per_address: per_address.map(|cap| PerAddress {
                cap,
                open: Mutex::new(HashMap::new()),
            }),
            stall_timeout,
        }
    }

    /// Takes a place for `ip` under its cap.
    fn take_place(&self, ip: Option<IpAddr>) -> bool {
        let (Some(per), Some(ip)) = (&self.per_address, ip) else {
            return true;
        };
        let mut open = lock(&per.open);
        let held = open.entry(ip).or_insert(0);
        if *held >= per.cap {
            return false;
        }
        *held += 1;
        true
    }

    /// Gives back the places of streams that ended.
    fn release(&self, ips: impl IntoIterator<Item = Option<IpAddr>>) {
        let Some(per) = &self.per_address else {
            return;
        };
        let mut open = lock(&per.open);
        for ip in ips.into_iter().flatten() {
            if let Some(held) = open.get_mut(&ip) {
                *held -= 1;
                if *held == 0 {
                    open.remove(&ip);
                }
            }
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Opens a stream on `subscribers`: the drop's `snapshot` event (at `version`) first unless
    /// `last_event_id` shows the client is current, in which case `state` (what the clock says
    /// now) is restated. The caller holds the drop's state lock, so no message can fall between
    /// the snapshot and registration.
    pub fn subscribe(
        &self,
        subscribers: &Subscribers,
        snapshot: &Bytes,
        version: i64,
        state: DropState,
        last_event_id: Option<i64>,
        ip: Option<IpAddr>,
    ) -> Result<mpsc::Receiver<Bytes>, SubscribeError> {
        if self.is_closed() {
            return Err(SubscribeError::Closed);
        }
        if !self.take_place(ip) {
            return Err(SubscribeError::TooManyFromAddress);
        }
        let taken = self.count.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.release([ip]);
            return Err(SubscribeError::Full);
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let _ = tx.try_send(Bytes::from_static(sse::RETRY));
        if last_event_id.is_none_or(|id| id < version) {
            let _ = tx.try_send(snapshot.clone());
        } else {
            // Current by version, but the clock may have moved the drop since without a new
            // version.
            let state = json!({"version": version, "state": state});
            let _ = tx.try_send(sse::event(version, "drop", &state));
        }
        let mut list = lock(&subscribers.0);
        if self.is_closed() {
            // `close` ran meanwhile: this stream must not outlive it.
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.release([ip]);
            return Err(SubscribeError::Closed);
        }
        list.push(Subscriber {
            tx,
            lagging: false,
            full_since: None,
            ip,
            since: version,
        });
        drop(list);
        metrics::gauge!("dropd_sse_subscribers").set(self.count() as f64);
        Ok(rx)
    }

    /// Queues `message` to every subscriber without waiting; a full one is marked lagging and
    /// gets `snapshot` instead once it has room. Closed streams are dropped.
    pub fn send(
        &self,
        subscribers: &Subscribers,
        message: &Bytes,
        snapshot: &Bytes,
        version: i64,
    ) -> Sent {
        let mut sent = Sent {
            queued: 0,
            lagged: 0,
            stalled: 0,
        };
        let mut gone = Vec::new();
        let now = Instant::now();
        lock(&subscribers.0).retain_mut(|sub| {
            if version < sub.since {
                // Built before this subscriber's snapshot: it already has newer state.
                if sub.tx.is_closed() {
                    gone.push(sub.ip);
                    return false;
                }
                return true;
            }
            let payload = if sub.lagging { snapshot } else { message };
            match sub.tx.try_send(payload.clone()) {
                Ok(()) => {
                    sub.lagging = false;
                    sub.full_since = None;
                    sent.queued += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.lagging = true;
                    let since = *sub.full_since.get_or_insert(now);
                    if now.duration_since(since) >= self.stall_timeout {
                        // It reads nothing: its place goes to someone who will.
                        sent.stalled += 1;
                        gone.push(sub.ip);
                        return false;
                    }
                    sent.lagged += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    gone.push(sub.ip);
                    false
                }
            }
        });
        if !gone.is_empty() {
            self.count.fetch_sub(gone.len(), Ordering::AcqRel);
            self.release(gone);
        }
        sent
    }

    /// Refuses new streams from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Ends every stream of one drop (after `close`).
    pub fn end_all(&self, subscribers: &Subscribers) {
        let mut list = lock(&subscribers.0);
        self.count.fetch_sub(list.len(), Ordering::AcqRel);
        self.release(list.drain(..).map(|sub| sub.ip));
    }
}

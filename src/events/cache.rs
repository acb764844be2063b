//! The view cache: per drop, the latest committed view, serialized once for every reader, and
//! what its subscribers have not heard yet. A view memory lacks is read from SQLite once however
//! many ask for it at the same time (the loads are coalesced).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::diff::diff;
use super::fanout::{lock, Pending, Subscribers};
use super::sse;
use super::stats::HubStats;
use crate::domain::views::DropView;
use crate::domain::{Clock, DropId, DropState};
use crate::store::{drops, ReadPool, StoreError};

/// A drop's committed state, serialized once for every reader.
pub struct Cached {
    pub view: DropView,
    /// The `GET /v1/drops/{drop}` body.
    pub body: Bytes,
    /// The `snapshot` event.
    pub snapshot: Bytes,
}

impl Cached {
    pub(super) fn new(view: DropView) -> Arc<Self> {
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

/// Why a view could not be read into memory. Cloneable: one coalesced load answers everyone
/// who waited for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("the read pool is not attached yet")]
    NotAttached,
    #[error("reading drops: {0}")]
    Store(Arc<StoreError>),
    #[error("the read task did not finish: {0}")]
    Task(String),
}

pub(super) struct EntryState {
    pub current: Arc<Cached>,
    /// The drop state subscribers last heard of (the clock changes it without a commit).
    pub published_state: DropState,
    pub pending: Pending,
    /// A commit changed the drop but its new view could not be read: `current` may be behind
    /// the database, so it serves nobody until a view newer than it arrives (a load that
    /// began before the commit brings back the same version, which is no cure).
    pub stale: bool,
    /// The drop's latest signed ledger head, and whether subscribers have heard it; sent as a
    /// `ledger` message at most once a second.
    pub head: Option<serde_json::Value>,
    pub head_news: bool,
    pub head_sent: Option<std::time::Instant>,
    /// The head at the close went out (it is sent at once; later ones, of orders confirmed
    /// after the close, keep the second's spacing).
    pub close_head_sent: bool,
    /// When a queue drop's serving number last went out (a `queue` message once a second).
    pub queue_sent: Option<std::time::Instant>,
}

pub(super) struct Entry {
    pub state: Mutex<EntryState>,
    pub subscribers: Subscribers,
}

impl Entry {
    fn new(view: DropView) -> Arc<Entry> {
        let state = view.state;
        Arc::new(Entry {
            state: Mutex::new(EntryState {
                current: Cached::new(view),
                published_state: state,
                pending: Pending::default(),
                stale: false,
                head: None,
                head_news: false,
                head_sent: None,
                close_head_sent: false,
                queue_sent: None,
            }),
            subscribers: Subscribers::default(),
        })
    }
}

type Load = Shared<BoxFuture<'static, Result<(), LoadError>>>;

pub(super) struct ViewCache {
    drops: RwLock<HashMap<DropId, Arc<Entry>>>,
    /// True once every drop in the database is in memory (for the list).
    all_loaded: AtomicBool,
    loading: Mutex<HashMap<Option<DropId>, Load>>,
    clock: Arc<dyn Clock>,
    /// Attached once the store is open (the store needs the hub first, as its listener).
    reads: OnceLock<ReadPool>,
    stats: Arc<HubStats>,
}

impl ViewCache {
    pub fn new(clock: Arc<dyn Clock>, stats: Arc<HubStats>) -> Self {
        Self {
            drops: RwLock::new(HashMap::new()),
            all_loaded: AtomicBool::new(false),
            loading: Mutex::new(HashMap::new()),
            clock,
            reads: OnceLock::new(),
            stats,
        }
    }

    pub fn attach_reads(&self, reads: ReadPool) {
        let _ = self.reads.set(reads);
    }

    pub fn entry(&self, drop_id: &DropId) -> Option<Arc<Entry>> {
        self.drops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(drop_id)
            .cloned()
    }

    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.drops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The latest committed view of a drop, if memory has it.
    pub fn cached(&self, drop_id: &DropId) -> Option<Arc<Cached>> {
        let entry = self.entry(drop_id)?;
        let state = lock(&entry.state);
        (!state.stale).then(|| state.current.clone())
    }

    /// Puts a view in memory if it is newer than what is there; notes what changed for the
    /// subscribers. Returns whether a SKU just sold out.
    pub fn store(&self, view: DropView) -> bool {
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
        let Some(entry) = existing else {
            return false;
        };
        let mut st = lock(&entry.state);
        if view.version < st.current.view.version
            || (st.stale && view.version == st.current.view.version)
        {
            return false;
        }
        let changes = diff(&st.current.view, &view);
        let sold_out = changes.sold_out;
        st.pending.absorb(changes);
        st.stale = false;
        st.current = Cached::new(view);
        sold_out
    }

    /// Every drop, read at start: from now on memory answers for unknown ids too.
    pub fn preload(&self, views: Vec<DropView>) {
        for view in views {
            self.store(view);
        }
        self.all_loaded.store(true, Ordering::Release);
    }

    /// A commit changed the drop but its view could not be read back.
    pub fn forget(&self, drop_id: &DropId) {
        if let Some(entry) = self.entry(drop_id) {
            lock(&entry.state).stale = true;
        }
        self.all_loaded.store(false, Ordering::Release);
    }

    pub fn is_urgent(&self) -> bool {
        self.drops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|e| lock(&e.state).pending.urgent)
    }

    /// A drop's view from memory, or read once from SQLite however many ask at the same time.
    pub async fn get_or_load(
        self: &Arc<Self>,
        drop_id: &DropId,
    ) -> Result<Option<Arc<Cached>>, LoadError> {
        if let Some(cached) = self.cached(drop_id) {
            return Ok(Some(cached));
        }
        if self.all_loaded.load(Ordering::Acquire) && self.entry(drop_id).is_none() {
            // Every drop is in memory and new ones arrive before their creator is answered:
            // an unknown id costs no read (a flood of random ids starves nobody's reads).
            return Ok(None);
        }
        let result = self.load(Some(drop_id.clone())).await;
        lock(&self.loading).remove(&Some(drop_id.clone()));
        result?;
        Ok(self.cached(drop_id))
    }

    /// Every drop, in the order of their start.
    pub async fn list_or_load(self: &Arc<Self>) -> Result<Vec<Arc<Cached>>, LoadError> {
        if !self.all_loaded.load(Ordering::Acquire) {
            let result = self.load(None).await;
            lock(&self.loading).remove(&None);
            result?;
        }
        let mut all: Vec<Arc<Cached>> = self
            .entries()
            .iter()
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
        let cache = self.clone();
        let wanted = key.clone();
        let load: Load = async move {
            let reads = cache.reads.get().cloned().ok_or(LoadError::NotAttached)?;
            let now = cache.clock.now();
            cache.stats.loads.fetch_add(1, Ordering::Relaxed);
            let all_drops = wanted.is_none();
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
            .map_err(|e| LoadError::Task(e.to_string()))?
            .map_err(|e: StoreError| LoadError::Store(Arc::new(e)))?;
            let count = views.len();
            for view in views {
                cache.store(view);
            }
            if all_drops {
                cache.all_loaded.store(true, Ordering::Release);
            }
            tracing::debug!(drops = count, "loaded drops into memory");
            Ok(())
        }
        .boxed()
        .shared();
        loading.insert(key, load.clone());
        load
    }
}

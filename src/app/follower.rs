//! `dropd serve --follow URL`: a read-only follower. It restores the replica's latest state into
//! `<data-dir>/follower.db` (never `dropd.db`, so pointing it at a leader's data directory
//! cannot touch the leader's database), then a `follow` thread applies each new replica file
//! and tells the hub what changed, so live-stock streams move as the leader's do, one sync
//! interval later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;

use super::{common_parts, metrics_handle, Application, Listeners, Settings};
use crate::domain::Clock;
use crate::events::Hub;
use crate::http::state::FollowerRole;
use crate::http::state::{AppState, Lifecycle};
use crate::replicate::follow::{self, Apply, FollowStatus, Follower};
use crate::replicate::replica::ReplicaTarget;
use crate::store::follower::PageWriter;
use crate::store::{CommitListener, ReadPool, Writer};

pub const FOLLOWER_DB_FILE: &str = "follower.db";

/// The `--follow` flags.
#[derive(Debug, Clone)]
pub struct FollowSettings {
    pub target: ReplicaTarget,
    /// How often the replica is listed for new files.
    pub interval: Duration,
    /// `--leader-url`: where writes are sent.
    pub leader_url: Option<String>,
    /// False with `--no-redirect`: writes get 421 naming the leader instead of 307.
    pub redirect: bool,
    /// Further behind than this, `/readyz` says 503.
    pub max_lag: Duration,
}

/// The running follow thread.
pub(super) struct FollowThread {
    stop: SyncSender<()>,
    handle: std::thread::JoinHandle<()>,
    alive: Arc<AtomicBool>,
}

impl FollowThread {
    pub(super) fn alive(&self) -> Arc<AtomicBool> {
        self.alive.clone()
    }

    pub(super) fn stop(self) {
        let _ = self.stop.try_send(());
        let _ = self.handle.join();
    }
}

/// Removes a copy left by an earlier run, with its WAL and shared memory: the copy is rebuilt
/// from the replica at every start (the replica is the truth, and it may have moved anywhere).
fn clear_copy(db: &Path) -> anyhow::Result<()> {
    for path in [
        db.to_owned(),
        crate::store::files::wal_path(db),
        PathBuf::from(format!("{}-shm", db.display())),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing the old copy {}", path.display()))
            }
        }
    }
    Ok(())
}

pub(super) fn build(
    settings: &Settings,
    follow: &FollowSettings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Application> {
    let (tokens, workers, hub) = common_parts(settings, &clock)?;
    let db = settings.data_dir.join(FOLLOWER_DB_FILE);
    clear_copy(&db)?;
    let replica = follow
        .target
        .open()
        .with_context(|| format!("opening the replica {}", follow.target))?;
    let status = Arc::new(FollowStatus::new(follow.target.to_string()));
    // On its own thread: the S3 client blocks on its own runtime, never inside actix's.
    let follower = std::thread::scope(|scope| {
        scope
            .spawn(|| follow::bootstrap(replica, status.clone(), &db))
            .join()
    })
    .map_err(|_| anyhow::anyhow!("restoring the replica panicked"))?
    .with_context(|| format!("restoring {} to follow it", follow.target))?;
    let reads = ReadPool::open(&db, (workers as u32 * 2).max(4))
        .with_context(|| format!("opening {}", db.display()))?;
    hub.attach_reads(reads.clone());
    {
        let conn = reads.get().context("reading the drops")?;
        let views =
            crate::store::drops::list_views(&conn, clock.now()).context("reading the drops")?;
        hub.preload(views);
    }
    let pages = PageWriter::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let thread = spawn(
        follower,
        pages,
        Notify {
            hub: hub.clone(),
            reads: reads.clone(),
            clock: clock.clone(),
            heads: HashMap::new(),
        },
        follow.interval,
    )?;
    hub.start_ticker()
        .context("starting the events-ticker thread")?;
    let listeners = Listeners::bind(settings)?;
    let lifecycle = Lifecycle::default();
    let writer = Writer::detached();
    let state = web::Data::new(AppState {
        webhook_targets: Arc::new(settings.outbox.targets.clone()),
        writer: writer.clone(),
        reads: reads.clone(),
        clock,
        tokens: tokens.clone(),
        lifecycle: lifecycle.clone(),
        metrics: metrics_handle(),
        hub: hub.clone(),
        keys: Arc::new(crate::store::KeyBook::new(settings.idempotency_retention)),
        admin_keys: Arc::new(crate::auth::AdminKeyBook::default()),
        writer_stuck_after: settings.writer_stuck_after,
        admin_port: listeners.admin_port,
        admission: crate::http::admission::Admission::new(settings.admission.clone()),
        demo: false,
        buyer_confirms: false,
        payment_callback: None,
        replica: None,
        ack_after_replicated: None,
        budgets: settings.request_budgets.clone(),
        // The keys are the leader's; `/v1/keys` is asked of it.
        ledger_keys: Arc::new(Vec::new()),
        follower: Some(Arc::new(FollowerRole {
            status,
            leader_url: follow.leader_url.clone(),
            redirect: follow.redirect,
            max_lag: follow.max_lag,
        })),
        lease: None,
    });
    let (port, admin_port) = (listeners.port, listeners.admin_port);
    let server = listeners.serve(settings, state, workers)?;
    lifecycle.set_ready();
    Ok(Application {
        port,
        admin_port,
        server,
        writer,
        writer_thread: None,
        reads,
        tokens,
        lifecycle,
        hub,
        shipper: None,
        replica_status: None,
        control: None,
        admin_keys: Arc::new(crate::auth::AdminKeyBook::default()),
        drain_grace: settings.drain_grace,
        stuck_after: settings.writer_stuck_after,
        outbox: None,
        follow: Some(thread),
        lease: None,
        lease_lost: None,
    })
}

/// The copy, written through SQLite (see `store::follower`).
struct Pages(PageWriter);

impl Apply for Pages {
    fn begin(&mut self) -> Result<(), String> {
        self.0.begin().map_err(|e| e.to_string())
    }

    fn page(&mut self, pgno: u32, data: &[u8]) -> Result<(), String> {
        self.0.page(pgno, data).map_err(|e| e.to_string())
    }

    fn commit(&mut self, pages: u32) -> Result<(), String> {
        self.0.commit(pages).map_err(|e| e.to_string())
    }

    fn rollback(&mut self) {
        self.0.rollback();
    }
}

/// After a change: every drop's view, and the heads that moved, to the hub (as the writer does
/// after a commit on a leader).
struct Notify {
    hub: Arc<Hub>,
    reads: ReadPool,
    clock: Arc<dyn Clock>,
    /// The head position last told, per drop.
    heads: HashMap<String, i64>,
}

impl Notify {
    fn changed(&mut self) -> Result<(), crate::store::StoreError> {
        let conn = self.reads.get()?;
        let views = crate::store::drops::list_views(&conn, self.clock.now())?;
        let mut moved = Vec::new();
        for view in &views {
            if let Some(head) = crate::store::ledger::latest_head(&conn, &view.id)? {
                if self.heads.get(&view.id) != Some(&head.head.position) {
                    self.heads.insert(view.id.clone(), head.head.position);
                    moved.push(head);
                }
            }
        }
        drop(conn);
        self.hub.committed(views);
        self.hub.signed(&moved);
        Ok(())
    }
}

/// Marks the follow thread stopped when dropped.
struct Stopped(Arc<AtomicBool>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

fn spawn(
    mut follower: Follower,
    pages: PageWriter,
    mut notify: Notify,
    interval: Duration,
) -> anyhow::Result<FollowThread> {
    let (stop, stopped): (SyncSender<()>, Receiver<()>) = std::sync::mpsc::sync_channel(1);
    let alive = Arc::new(AtomicBool::new(true));
    let still = Stopped(alive.clone());
    let handle = std::thread::Builder::new()
        .name("follow".into())
        .spawn(move || {
            // Dropped at the end, or in a panic's unwinding: the watchdog then stops being fed.
            let _still = still;
            let mut pages = Pages(pages);
            // The heads of the restored state: the first change only sends what moved after.
            if let Err(e) = notify.changed() {
                tracing::warn!(error = %e, "reading the restored drops");
            }
            // A stop (or the handle dropped) ends the wait early; else a poll every interval.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                match follower.poll(&mut pages) {
                    Ok(0) => {}
                    Ok(files) => {
                        tracing::debug!(
                            files,
                            txid = format!("{:016x}", follower.txid()),
                            "follower applied"
                        );
                        if let Err(e) = notify.changed() {
                            tracing::warn!(error = %e, "reading the drops after a change");
                        }
                        pages.0.checkpoint();
                    }
                    Err(e) => tracing::warn!(error = %e, "following the replica"),
                }
            }
        })
        .context("starting the follow thread")?;
    Ok(FollowThread {
        stop,
        handle,
        alive,
    })
}

//! `serve --lease`: taking the replica's lease before the database is opened, restoring from the
//! replica when this server takes over from another one (the replica is the truth), and the
//! `lease` thread that renews it while serving and stops the server if another holder took it.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::replicate::lease::{Lease, Taken};
use crate::replicate::replica::Replica;
use crate::replicate::restore::{self, Target};

/// This server's name in the lease: made once, kept in the data directory, so the same box
/// restarting takes its own lease back at once.
pub const HOLDER_FILE: &str = "lease-holder";

fn holder_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(HOLDER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let id = format!("holder-{}", uuid::Uuid::now_v7().simple());
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Moves a database (and its -wal, -shm and replica position) aside under `.superseded-<ms>`
/// names: kept for an operator to look at, never served again.
fn set_aside(db: &Path) -> anyhow::Result<Option<PathBuf>> {
    if !db.exists() {
        return Ok(None);
    }
    let stamp = chrono::Utc::now().timestamp_millis();
    let aside = PathBuf::from(format!("{}.superseded-{stamp}", db.display()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} aside", from.display()))?;
        }
    }
    let position = crate::replicate::position::path(db);
    if position.exists() {
        std::fs::remove_file(&position)
            .with_context(|| format!("removing {}", position.display()))?;
    }
    Ok(Some(aside))
}

/// Takes the lease (or fails naming its holder), then makes sure the database is the replica's
/// when this server takes over from another one or has none.
pub(super) fn take(
    data_dir: &Path,
    db: &Path,
    replica: &Arc<dyn Replica>,
    url: &str,
    ttl: Duration,
) -> anyhow::Result<Held> {
    let holder = holder_id(data_dir)?;
    // On its own thread: the S3 client blocks on its own runtime, never inside actix's.
    let (lease, taken) = std::thread::scope(|scope| {
        scope
            .spawn(|| Lease::acquire(&**replica, holder, ttl))
            .join()
    })
    .map_err(|_| anyhow::anyhow!("taking the lease panicked"))?
    .with_context(|| format!("taking the lease on {url}"))?;
    tracing::info!(holder = lease.holder(), taken = ?taken, "the replica's lease is held");
    // Renewed from now on: a restore longer than the lease must not let it lapse, nor let a
    // third server take it while this one restores.
    let (tell, lost) = tokio::sync::watch::channel(None::<String>);
    let renewals = Renewals::start(lease.clone(), replica.clone(), move |why| {
        let _ = tell.send(Some(why));
    })?;
    let restore_needed = match &taken {
        Taken::TakenOver { from } => {
            if let Some(aside) = set_aside(db)? {
                tracing::warn!(
                    from,
                    kept = %aside.display(),
                    "taking over from another leader: this database is set aside and the \
                     replica's state restored"
                );
            }
            true
        }
        Taken::Fresh | Taken::OwnBack => !db.exists(),
    };
    if restore_needed {
        let restored = std::thread::scope(|scope| {
            scope
                .spawn(|| -> anyhow::Result<Option<u64>> {
                    let files = replica.list()?;
                    if files.is_empty() {
                        return Ok(None);
                    }
                    let chain = restore::plan(&files, Target::Latest, url)?;
                    Ok(Some(restore::apply(&**replica, &chain, db, 4, &|_| {})?))
                })
                .join()
        })
        .map_err(|_| anyhow::anyhow!("restoring the replica panicked"))?
        .with_context(|| format!("restoring {url} before leading it"))?;
        if let Some(txid) = restored {
            tracing::info!(
                txid = format!("{txid:016x}"),
                "restored the replica's latest state before leading it"
            );
        }
    }
    Ok(Held {
        lease,
        renewals,
        lost,
    })
}

/// A lease taken and being renewed; `lost` says why once another server took it.
pub(super) struct Held {
    pub lease: Arc<Lease>,
    pub renewals: Renewals,
    pub lost: tokio::sync::watch::Receiver<Option<String>>,
}

/// The running `lease` thread.
pub(super) struct Renewals {
    stop: SyncSender<()>,
    handle: std::thread::JoinHandle<()>,
    lease: Arc<Lease>,
    replica: Arc<dyn Replica>,
}

impl Renewals {
    /// Renews every quarter of the lease; `on_lost` runs once if another holder took it.
    pub(super) fn start(
        lease: Arc<Lease>,
        replica: Arc<dyn Replica>,
        on_lost: impl FnOnce(String) + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::sync_channel::<()>(1);
        let every = (lease.ttl() / 4).max(Duration::from_millis(100));
        let (l, r) = (lease.clone(), replica.clone());
        let handle = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                let mut on_lost = Some(on_lost);
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    match l.renew(&*r) {
                        Ok(()) => {}
                        Err(crate::replicate::lease::LeaseError::Lost { holder, host }) => {
                            let why =
                                format!("the replica's lease was taken over by {holder} ({host})");
                            tracing::error!(
                                "{why}: this server stops acknowledging writes and stops"
                            );
                            if let Some(f) = on_lost.take() {
                                f(why);
                            }
                            break;
                        }
                        Err(err) => tracing::warn!(
                            error = %err,
                            valid = l.is_valid(),
                            "renewing the replica's lease failed; retrying"
                        ),
                    }
                }
            })
            .context("starting the lease thread")?;
        Ok(Self {
            stop,
            handle,
            lease,
            replica,
        })
    }

    /// Stops renewing; after a clean stop (the shipper's last sync done) releases the lease so
    /// the next leader need not wait for it to expire.
    pub(super) fn stop(self, release: bool) {
        let _ = self.stop.try_send(());
        let _ = self.handle.join();
        if release {
            self.lease.release(&*self.replica);
        }
    }
}

//! What the shipper tells operators: shown in `/readyz` and `/metrics`, so a replica that stopped
//! accepting uploads is visible while the server goes on serving.

use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

#[derive(Debug, Default)]
pub struct ReplicaStatus {
    inner: Mutex<StatusSnapshot>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusSnapshot {
    pub url: String,
    /// `starting` until the first sync, then `ok` or `failing`.
    pub state: &'static str,
    /// The highest TXID in the replica, as hex (Litestream's file names).
    pub txid: String,
    #[serde(with = "optional_time")]
    pub last_sync_at: Option<SystemTime>,
    pub error: Option<String>,
    #[serde(with = "optional_time")]
    pub failing_since: Option<SystemTime>,
    pub uploads: u64,
    pub upload_failures: u64,
    pub uploaded_bytes: u64,
    /// Committed WAL bytes the replica does not have yet.
    pub pending_wal_bytes: u64,
    /// The last compaction, snapshot or retention error (shipping goes on regardless).
    pub maintenance_error: Option<String>,
    /// The last whole-database image this process shipped (at start, or after the WAL was
    /// folded away before the replica had it); `null` when the replica was resumed.
    pub last_image: Option<ImageReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub txid: String,
    pub pages: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// The process's resident memory just before the image was read (`VmRSS`).
    pub rss_before_bytes: u64,
    /// Why it was shipped.
    pub reason: &'static str,
}

impl ReplicaStatus {
    pub fn new(url: String) -> Self {
        Self {
            inner: Mutex::new(StatusSnapshot {
                url,
                state: "starting",
                txid: format!("{:016x}", 0),
                ..StatusSnapshot::default()
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut StatusSnapshot)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner);
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn uploaded(&self, bytes: u64) {
        self.update(|s| {
            s.uploads += 1;
            s.uploaded_bytes += bytes;
        });
    }

    pub fn synced(&self, txid: u64, pending_wal_bytes: u64) {
        self.update(|s| {
            s.state = "ok";
            s.txid = format!("{txid:016x}");
            s.last_sync_at = Some(SystemTime::now());
            s.error = None;
            s.failing_since = None;
            s.pending_wal_bytes = pending_wal_bytes;
        });
    }

    pub fn image_shipped(&self, report: ImageReport) {
        self.update(|s| s.last_image = Some(report));
    }

    pub fn maintenance_failed(&self, error: String) {
        self.update(|s| s.maintenance_error = Some(error));
    }

    pub fn failed(&self, error: String, pending_wal_bytes: u64) {
        self.update(|s| {
            s.state = "failing";
            s.error = Some(error);
            s.failing_since.get_or_insert_with(SystemTime::now);
            s.upload_failures += 1;
            s.pending_wal_bytes = pending_wal_bytes;
        });
    }
}

pub(super) mod optional_time {
    use serde::Serializer;
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(
                &chrono::DateTime::<chrono::Utc>::from(*t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            None => s.serialize_none(),
        }
    }
}

//! The leader's lease on its replica (`serve --lease`): one object, `lease.json`, beside the
//! LTX files, written only with conditional writes (S3 `If-None-Match: *` to create, `If-Match:
//! <etag>` to renew; a directory replica compares under a lock file), so two servers can never
//! both believe they lead one replica.
//!
//! Rules: a holder (its id kept in its data directory) takes a missing lease, takes its own
//! back at once, and takes another holder's only after it expired. While serving it renews
//! every quarter of the lease's length. Its own clock says the lease is valid only until four
//! fifths of the length after the start of its last successful renewal, so it stops uploading
//! (and acknowledging writes) before anyone else may take over. Losing the lease to another
//! holder is final: the server stops.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::ltx::Header;
use super::replica::{LtxFile, Replica, ReplicaError, Upload};

/// What `lease.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// Unix milliseconds from which another server may take the lease.
    pub expires_at_ms: i64,
    pub renewed_at: String,
    pub ttl_ms: u64,
}

/// How the lease was taken at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// There was none.
    Fresh,
    /// It was this holder's (the same box restarting).
    OwnBack,
    /// Another holder's, expired: this server must start from the replica's state.
    TakenOver { from: String },
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "the replica's lease is held by {holder} (host {host}, pid {pid}) for another {remaining_ms} \
         ms: a second leader would fork the replica. Stop that server, or wait until its lease \
         expires, then start this one"
    )]
    Held {
        holder: String,
        host: String,
        pid: u32,
        remaining_ms: i64,
    },
    #[error(
        "{0} in the replica is not a dropd lease ({1}): remove it if no dropd serves this replica"
    )]
    Unreadable(&'static str, String),
    #[error("the lease kept changing while it was being taken; retry")]
    Contended,
    #[error("the lease was taken over by {holder} (host {host})")]
    Lost { holder: String, host: String },
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

struct State {
    version: String,
    valid_until: Instant,
    renewed_at: SystemTime,
    lost: Option<String>,
    error: Option<String>,
}

pub struct Lease {
    holder: String,
    host: String,
    ttl: Duration,
    state: Mutex<State>,
}

/// The lease as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseSnapshot {
    pub holder: String,
    /// `held`, `expired` (renewals failing; writes refused until one succeeds) or `lost`.
    pub state: &'static str,
    pub valid_for_seconds: f64,
    pub ttl_seconds: f64,
    pub error: Option<String>,
}

impl Lease {
    fn record(&self, started_ms: i64) -> Result<Vec<u8>, LeaseError> {
        let record = Record {
            holder: self.holder.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            expires_at_ms: started_ms + self.ttl.as_millis() as i64,
            renewed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ttl_ms: self.ttl.as_millis() as u64,
        };
        serde_json::to_vec_pretty(&record)
            .map_err(|e| LeaseError::Unreadable(super::replica::LEASE_NAME, e.to_string()))
    }

    fn parse(bytes: &[u8]) -> Result<Record, LeaseError> {
        serde_json::from_slice(bytes)
            .map_err(|e| LeaseError::Unreadable(super::replica::LEASE_NAME, e.to_string()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long after a renewal began this server still counts the lease as its own.
    fn validity(&self) -> Duration {
        self.ttl * 4 / 5
    }

    /// Takes the lease for `holder` at start, or says who holds it.
    pub fn acquire(
        replica: &dyn Replica,
        holder: String,
        ttl: Duration,
    ) -> Result<(Arc<Lease>, Taken), LeaseError> {
        let lease = Lease {
            holder,
            host: host_name(),
            ttl,
            state: Mutex::new(State {
                version: String::new(),
                valid_until: Instant::now(),
                renewed_at: SystemTime::now(),
                lost: None,
                error: None,
            }),
        };
        // A few rounds: another server may write between our read and our write.
        for _ in 0..5 {
            let started = (Instant::now(), now_ms());
            let current = replica.read_lease()?;
            let (expected, taken) = match &current {
                None => (None, Taken::Fresh),
                Some((bytes, version)) => {
                    let record = Self::parse(bytes)?;
                    if record.holder == lease.holder {
                        (Some(version.as_str()), Taken::OwnBack)
                    } else if record.expires_at_ms > started.1 {
                        return Err(LeaseError::Held {
                            remaining_ms: record.expires_at_ms - started.1,
                            holder: record.holder,
                            host: record.host,
                            pid: record.pid,
                        });
                    } else {
                        (
                            Some(version.as_str()),
                            Taken::TakenOver {
                                from: record.holder,
                            },
                        )
                    }
                }
            };
            let bytes = lease.record(started.1)?;
            if let Some(version) = replica.write_lease(bytes, expected)? {
                {
                    let mut state = lease.lock();
                    state.version = version;
                    state.valid_until = started.0 + lease.validity();
                    state.renewed_at = SystemTime::now();
                }
                return Ok((Arc::new(lease), taken));
            }
        }
        Err(LeaseError::Contended)
    }

    /// Extends the lease. An error of the replica leaves it as it was (valid until its time);
    /// finding another holder's lease loses it for good.
    pub fn renew(&self, replica: &dyn Replica) -> Result<(), LeaseError> {
        let (lost, version) = {
            let state = self.lock();
            (state.lost.clone(), state.version.clone())
        };
        if let Some(to) = lost {
            return Err(LeaseError::Lost {
                holder: to,
                host: String::new(),
            });
        }
        let started = (Instant::now(), now_ms());
        let result = (|| {
            let bytes = self.record(started.1)?;
            match replica.write_lease(bytes.clone(), Some(&version))? {
                Some(version) => Ok(version),
                None => {
                    let current = replica.read_lease()?;
                    // A renewal the store applied but whose answer was lost leaves our own
                    // bytes under a version we never heard of: it is ours.
                    if let Some((written, version)) = &current {
                        if *written == bytes {
                            return Ok(version.clone());
                        }
                    }
                    let record = match current {
                        Some((bytes, _)) => Self::parse(&bytes)?,
                        None => Record {
                            holder: "nobody (the lease was deleted)".into(),
                            host: "-".into(),
                            pid: 0,
                            expires_at_ms: 0,
                            renewed_at: String::new(),
                            ttl_ms: 0,
                        },
                    };
                    Err(LeaseError::Lost {
                        holder: record.holder,
                        host: record.host,
                    })
                }
            }
        })();
        let mut state = self.lock();
        match result {
            Ok(version) => {
                state.version = version;
                state.valid_until = started.0 + self.validity();
                state.renewed_at = SystemTime::now();
                state.error = None;
                Ok(())
            }
            Err(err) => {
                if let LeaseError::Lost { holder, .. } = &err {
                    state.lost = Some(holder.clone());
                }
                state.error = Some(err.to_string());
                Err(err)
            }
        }
    }

    /// Ends the lease at a clean stop, so the next leader need not wait for it to expire.
    pub fn release(&self, replica: &dyn Replica) {
        if !self.is_valid() {
            return;
        }
        let version = self.lock().version.clone();
        // Expired already: the record says "from now on, anyone".
        let released = self
            .record(now_ms() - self.ttl.as_millis() as i64)
            .ok()
            .map(|bytes| replica.write_lease(bytes, Some(&version)));
        match released {
            Some(Ok(Some(_))) => tracing::info!("the replica's lease is released"),
            other => tracing::warn!(
                outcome = ?other.map(|r| r.map(|v| v.is_some())),
                "the lease could not be released; the next leader waits for it to expire"
            ),
        }
    }

    /// True while this server may upload and acknowledge writes.
    pub fn is_valid(&self) -> bool {
        let state = self.lock();
        state.lost.is_none() && Instant::now() < state.valid_until
    }

    pub fn is_lost(&self) -> bool {
        self.lock().lost.is_some()
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn snapshot(&self) -> LeaseSnapshot {
        let state = self.lock();
        let left = state.valid_until.saturating_duration_since(Instant::now());
        LeaseSnapshot {
            holder: self.holder.clone(),
            state: if state.lost.is_some() {
                "lost"
            } else if left.is_zero() {
                "expired"
            } else {
                "held"
            },
            valid_for_seconds: left.as_secs_f64(),
            ttl_seconds: self.ttl.as_secs_f64(),
            error: state.error.clone(),
        }
    }
}

/// A replica that takes writes only while the lease is valid: the shipper of a leader that
/// cannot renew (or was deposed) uploads nothing that could clash with a new leader's files.
pub struct Leased {
    pub inner: Arc<dyn Replica>,
    pub lease: Arc<Lease>,
}

fn not_held() -> ReplicaError {
    ReplicaError::Url("the lease on the replica is not held: nothing is uploaded".into())
}

impl Replica for Leased {
    fn list(&self) -> Result<Vec<LtxFile>, ReplicaError> {
        self.inner.list()
    }

    fn read(&self, file: &LtxFile) -> Result<Vec<u8>, ReplicaError> {
        self.inner.read(file)
    }

    fn read_into(&self, file: &LtxFile, out: &mut dyn std::io::Write) -> Result<u64, ReplicaError> {
        self.inner.read_into(file, out)
    }

    fn create(&self, level: u32, header: &Header) -> Result<Box<dyn Upload + '_>, ReplicaError> {
        if !self.lease.is_valid() {
            return Err(not_held());
        }
        Ok(Box::new(LeasedUpload {
            inner: self.inner.create(level, header)?,
            lease: &self.lease,
        }))
    }

    fn delete(&self, files: &[LtxFile]) -> Result<(), ReplicaError> {
        if !self.lease.is_valid() {
            return Err(not_held());
        }
        self.inner.delete(files)
    }

    fn refine_times(&self, files: &mut [LtxFile]) -> Result<(), ReplicaError> {
        self.inner.refine_times(files)
    }

    fn read_lease(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError> {
        self.inner.read_lease()
    }

    fn write_lease(
        &self,
        bytes: Vec<u8>,
        expected: Option<&str>,
    ) -> Result<Option<String>, ReplicaError> {
        self.inner.write_lease(bytes, expected)
    }
}

struct LeasedUpload<'a> {
    inner: Box<dyn Upload + 'a>,
    lease: &'a Lease,
}

impl std::io::Write for LeasedUpload<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Upload for LeasedUpload<'_> {
    fn finish(self: Box<Self>) -> Result<LtxFile, ReplicaError> {
        // Checked again at the end: the lease may have lapsed while a large file was encoded.
        if !self.lease.is_valid() {
            self.inner.abort();
            return Err(not_held());
        }
        self.inner.finish()
    }

    fn abort(self: Box<Self>) {
        self.inner.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicate::replica::FileReplica;

    #[test]
    fn a_lease_is_taken_kept_refused_to_others_and_taken_over_once_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let replica = FileReplica::new(dir.path().to_owned());
        let ttl = Duration::from_millis(400);
        let (a, taken) = Lease::acquire(&replica, "a".into(), ttl).expect("a takes it");
        assert_eq!(taken, Taken::Fresh);
        assert!(a.is_valid());
        let refused = Lease::acquire(&replica, "b".into(), ttl);
        assert!(
            matches!(&refused, Err(LeaseError::Held { holder, .. }) if holder == "a"),
            "{:?}",
            refused.err()
        );
        a.renew(&replica).expect("a renews");
        let (a2, taken) = Lease::acquire(&replica, "a".into(), ttl).expect("a takes it back");
        assert_eq!(taken, Taken::OwnBack);
        std::thread::sleep(ttl + Duration::from_millis(50));
        let (b, taken) = Lease::acquire(&replica, "b".into(), ttl).expect("b takes over");
        assert_eq!(taken, Taken::TakenOver { from: "a".into() });
        assert!(b.is_valid());
        assert!(
            matches!(a2.renew(&replica), Err(LeaseError::Lost { holder, .. }) if holder == "b")
        );
        assert!(!a2.is_valid() && a2.is_lost());
        assert_eq!(a2.snapshot().state, "lost");
        b.release(&replica);
        let (_, taken) = Lease::acquire(&replica, "c".into(), ttl).expect("released: c takes it");
        assert_eq!(taken, Taken::TakenOver { from: "b".into() });
    }

    #[test]
    fn a_replica_without_the_lease_refuses_uploads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn Replica> = Arc::new(FileReplica::new(dir.path().to_owned()));
        let (lease, _) =
            Lease::acquire(&*inner, "a".into(), Duration::from_millis(100)).expect("lease");
        let leased = Leased { inner, lease };
        let header = Header {
            page_size: 512,
            commit: 1,
            min_txid: 1,
            max_txid: 1,
            timestamp_ms: 1,
            ..Header::default()
        };
        let bytes = crate::replicate::ltx::encode(&header, [(1, &[0u8; 512][..])]).expect("ltx");
        leased.write(0, &header, bytes.clone()).expect("while held");
        std::thread::sleep(Duration::from_millis(120));
        assert!(leased.write(0, &header, bytes).is_err(), "after expiry");
        assert!(leased.delete(&[]).is_err());
    }
}

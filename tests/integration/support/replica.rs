//! dropd's own replication as tests configure and watch it: a config with a short sync
//! interval, and the wait for a sync to have shipped everything.

use std::time::{Duration, Instant, SystemTime};

use dropd::replicate::config::ReplicationConfig;
use dropd::replicate::replica::ReplicaTarget;
use serde_json::Value;

use super::api::Api;

/// Replication to `target`, syncing every `sync`, the rest as configured by default.
pub fn replication(target: ReplicaTarget, sync: Duration) -> ReplicationConfig {
    ReplicationConfig {
        sync_interval: sync,
        ..ReplicationConfig::for_target(target)
    }
}

/// Waits until a sync that started after this call has shipped everything; returns the
/// replica's status then.
pub async fn wait_replicated(api: &Api, interval: Duration) -> Value {
    let since = SystemTime::now() + interval * 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replica = api.readyz_replica().await;
        let synced_after = replica["last_sync_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| SystemTime::from(t) > since);
        if replica["state"] == "ok" && replica["pending_wal_bytes"] == 0 && synced_after {
            return replica;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never caught up: {replica}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! `dropd config [serve flags]`: the settings `serve` would run with, from its flags, the
//! environment and the config file, as JSON, with every secret left out: token secrets are
//! shown by their public key ids, S3 credentials only as whether they are set.

use serde_json::{json, Value};

use super::serve::{settings, ServeArgs};
use crate::auth;
use crate::replicate::replica::ReplicaTarget;

fn human(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub(super) fn print(args: &ServeArgs) -> anyhow::Result<()> {
    let s = settings(args)?;
    let secrets = if s.token_secrets.is_empty() {
        // Read, never created, here.
        let from_file = auth::load_secrets(&[], &s.data_dir, false).ok();
        json!({
            "source": s.data_dir.join(auth::SECRET_FILE).display().to_string(),
            "key_ids": from_file.map(|f| f.iter().map(|x| auth::key_id(x)).collect::<Vec<_>>()),
        })
    } else {
        json!({
            "source": "--token-secret / DROPD_TOKEN_SECRET",
            "key_ids": s.token_secrets.iter().map(|x| auth::key_id(x.as_bytes())).collect::<Vec<_>>(),
        })
    };
    let replica = s.replica.as_ref().map(|r| {
        // As the S3 backend finds them: the config file's, else the environment's.
        let from_env = |names: &[&str]| names.iter().any(|n| std::env::var_os(n).is_some());
        let credentials = match &r.target {
            ReplicaTarget::S3(s3) => json!({
                "access_key_id": s3.access_key_id.is_some()
                    || from_env(&["LITESTREAM_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]),
                "secret_access_key": s3.secret_access_key.is_some()
                    || from_env(&["LITESTREAM_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"]),
            }),
            ReplicaTarget::File(_) => Value::Null,
        };
        json!({
            "url": r.target.to_string(),
            "credentials_set": credentials,
            "sync_interval": human(r.sync_interval),
            "levels": r.levels.iter().map(|l| human(*l)).collect::<Vec<_>>(),
            "snapshot_interval": human(r.snapshot_interval),
            "snapshot_retention": human(r.snapshot_retention),
            "l0_retention": human(r.l0_retention),
            "retention_enabled": r.retention_enabled,
            "checkpoint_wal_size": r.checkpoint_wal_size,
            "max_wal_size": r.max_wal_size,
        })
    });
    let out = json!({
        "version": crate::VERSION,
        "listen": s.listen,
        "data_dir": s.data_dir.display().to_string(),
        "database": s.db_path().display().to_string(),
        "synchronous": s.synchronous.as_str(),
        "batch_limit": s.batch_limit,
        "queue_size": s.queue_size,
        "workers": s.workers,
        "token_secrets": secrets,
        "token_max_lifetime": human(s.token_policy.max_lifetime),
        "token_issuer": s.token_policy.issuer,
        "token_audience": s.token_policy.audience,
        "idempotency_retention": human(s.idempotency_retention),
        "box_id": s.box_id,
        "max_subscribers": s.max_subscribers,
        "sse_cpu_budget": s.sse_cpu_budget,
        "request_budget": s.request_budgets.spec(),
        "streams_per_ip": s.streams_per_ip,
        "rate_limit": if s.admission.enabled { "on" } else { "off" },
        "ip_bucket": {"rate": s.admission.per_ip.rate, "burst": s.admission.per_ip.burst},
        "buyer_bucket": {"rate": s.admission.per_buyer.rate, "burst": s.admission.per_buyer.burst},
        "trusted_proxies": s.admission.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "max_header_bytes": s.request_limits.max_header_bytes,
        "request_timeout": human(s.request_limits.timeout),
        "max_connections": s.max_connections,
        "drain_grace": human(s.drain_grace),
        "demo": s.demo,
        "buyer_confirms": s.buyer_confirms || s.demo,
        "payment_callback": s.payment_callback.as_ref().map(|(_, tolerance)| json!({
            "secret": "(set)", "tolerance": human(*tolerance),
        })),
        "replica": replica,
        "ack_after_replicated": s.ack_after_replicated,
        "webhooks": {
            "allow_private": s.outbox.targets.allow_private,
            "allow": s.outbox.targets.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "max_attempts": s.outbox.max_attempts,
            "connect_timeout": human(s.outbox.connect_timeout),
            "timeout": human(s.outbox.timeout),
            "backoff": human(s.outbox.backoff),
            "backoff_max": human(s.outbox.backoff_max),
            "concurrency": s.outbox.concurrency,
        },
        "outbox_retention": human(s.outbox.retention),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

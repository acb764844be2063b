//! `dropd serve`'s defaults, written once: clap's `--help`, `Settings::for_data_dir` (what tests
//! and embedders start from) and the hub read them from here, and docs/design.md's CLI table
//! quotes them. A leaf: it imports nothing from the crate.

use std::time::Duration;

pub const LISTEN: &str = "127.0.0.1:8080";
pub const DATA_DIR: &str = "./data";
/// Most write commands committed in one transaction.
pub const BATCH_LIMIT: u32 = 512;
/// Write commands that may wait for the writer before requests get 503 overloaded.
pub const QUEUE_SIZE: u32 = 8_192;
/// How long an Idempotency-Key is remembered, as `--idempotency-retention` spells it...
pub const IDEMPOTENCY_RETENTION_TEXT: &str = "24h";
/// ...and as a duration (a test keeps the two equal).
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most due holds one writer batch expires.
pub const SWEEP_LIMIT: i64 = 2_000;
/// Open event streams before new ones get 503 too-many-subscribers.
pub const MAX_SUBSCRIBERS: usize = 20_000;
/// Share of one core that live-stock fan-out may use.
pub const SSE_CPU_BUDGET: f64 = 0.25;
/// What a request may cost the database before it is reported: `ROUTE=STATEMENTS/TIME`
/// entries, `*` for every route.
pub const REQUEST_BUDGET: &str = "*=50/50ms";
/// Messages buffered per subscriber before it counts as lagging.
pub const SSE_SUBSCRIBER_BUFFER: usize = 16;
/// Longest a buyer token may live, as `--token-max-lifetime` spells it and as a duration.
pub const TOKEN_MAX_LIFETIME_TEXT: &str = "24h";
pub const TOKEN_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest buyer token accepted, in bytes (an HS256 token with a short `sub` is about 200).
pub const TOKEN_MAX_LEN: usize = 4096;
/// Writes (holds, confirms, releases) one client address may send: per second, and at once.
pub const IP_RATE: u32 = 50;
pub const IP_BURST: u32 = 100;
/// Writes one buyer may send: per second, and at once (a hold and its confirm fit easily).
pub const BUYER_RATE: u32 = 2;
pub const BUYER_BURST: u32 = 5;
/// Name and value bytes of a request's headers together (a JWT is a few hundred).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long a request's head, and then its body, may take to arrive.
pub const REQUEST_TIMEOUT_TEXT: &str = "10s";
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections the server keeps at once (spread over its workers); more wait in the
/// listen backlog.
pub const MAX_CONNECTIONS: usize = 25_000;
/// Live-stock streams one client address may hold open.
pub const STREAMS_PER_IP: usize = 4;
/// A subscriber that has read nothing for this long is dropped.
pub const SSE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// After SIGTERM, how long `/readyz` says 503 while requests are still served, so a load
/// balancer moves traffic away before the listener closes.
pub const DRAIN_GRACE_TEXT: &str = "5s";
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long a leader's lease on its replica lasts without renewal.
pub const LEASE_TTL_TEXT: &str = "15s";
/// How often a follower lists its replica for new files.
pub const FOLLOW_INTERVAL_TEXT: &str = "1s";
/// A follower whose view is older than this says 503 at `/readyz`.
pub const MAX_LAG_TEXT: &str = "30s";
/// A writer that has not gone round its loop for this long (it does every 200 ms when idle)
/// is stuck: `/readyz` says so and the systemd watchdog is no longer fed.
pub const WRITER_STUCK_AFTER: Duration = Duration::from_secs(5);
/// A writer queue this full (in tenths) makes `/readyz` say 503 saturated.
pub const QUEUE_SATURATED_TENTHS: usize = 9;
/// How long delivered outbox events are kept (for the export and late endpoints), as spelled
/// and as a duration.
pub const OUTBOX_RETENTION_TEXT: &str = "72h";
pub const OUTBOX_RETENTION: Duration = Duration::from_secs(72 * 3600);
/// Attempts at one event before it is dead-lettered.
pub const WEBHOOK_MAX_ATTEMPTS: u32 = 8;
/// A webhook endpoint must accept the connection, and then answer, within these.
pub const WEBHOOK_CONNECT_TIMEOUT_TEXT: &str = "5s";
pub const WEBHOOK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const WEBHOOK_TIMEOUT_TEXT: &str = "10s";
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's delay, doubling up to the cap.
pub const WEBHOOK_BACKOFF_TEXT: &str = "1s";
pub const WEBHOOK_BACKOFF: Duration = Duration::from_secs(1);
pub const WEBHOOK_BACKOFF_MAX_TEXT: &str = "5m";
pub const WEBHOOK_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Webhook requests in flight at once, across endpoints.
pub const WEBHOOK_CONCURRENCY: usize = 16;
/// How far a payment callback's signed time may be from the server's clock.
pub const PAYMENT_CALLBACK_TOLERANCE_TEXT: &str = "5m";
/// A comment line this often keeps proxies from closing an idle stream.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI table of docs/design.md quotes these; a default changed here must change there.
    #[test]
    fn the_design_documents_the_defaults_written_here() {
        let design = include_str!("../docs/design.md");
        let row = |flag: &str| {
            design
                .lines()
                .find(|l| l.starts_with(&format!("| `{flag}` |")))
                .unwrap_or_else(|| panic!("docs/design.md has no row for {flag}"))
                .split('|')
                .nth(3)
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .unwrap_or_default()
        };
        assert_eq!(row("--listen"), LISTEN);
        assert_eq!(row("--data-dir"), DATA_DIR);
        assert_eq!(row("--batch-limit"), BATCH_LIMIT.to_string());
        assert_eq!(row("--queue-size"), QUEUE_SIZE.to_string());
        assert_eq!(row("--idempotency-retention"), IDEMPOTENCY_RETENTION_TEXT);
        assert_eq!(row("--max-subscribers"), MAX_SUBSCRIBERS.to_string());
        assert_eq!(row("--sse-cpu-budget"), SSE_CPU_BUDGET.to_string());
        assert_eq!(row("--ip-rate"), IP_RATE.to_string());
        assert_eq!(row("--drain-grace"), DRAIN_GRACE_TEXT);
        assert_eq!(row("--follow-interval"), FOLLOW_INTERVAL_TEXT);
        assert_eq!(row("--max-lag"), MAX_LAG_TEXT);
        assert_eq!(row("--lease-ttl"), LEASE_TTL_TEXT);
        assert_eq!(row("--request-timeout"), REQUEST_TIMEOUT_TEXT);
        assert_eq!(row("--ip-burst"), IP_BURST.to_string());
        assert_eq!(row("--buyer-rate"), BUYER_RATE.to_string());
        assert_eq!(row("--buyer-burst"), BUYER_BURST.to_string());
        assert_eq!(row("--outbox-retention"), OUTBOX_RETENTION_TEXT);
        assert_eq!(
            row("--webhook-max-attempts"),
            WEBHOOK_MAX_ATTEMPTS.to_string()
        );
        assert_eq!(
            row("--webhook-connect-timeout"),
            WEBHOOK_CONNECT_TIMEOUT_TEXT
        );
        assert_eq!(row("--webhook-timeout"), WEBHOOK_TIMEOUT_TEXT);
        assert_eq!(row("--webhook-backoff"), WEBHOOK_BACKOFF_TEXT);
        assert_eq!(row("--webhook-backoff-max"), WEBHOOK_BACKOFF_MAX_TEXT);
        assert_eq!(
            row("--webhook-concurrency"),
            WEBHOOK_CONCURRENCY.to_string()
        );
        for (text, value) in [
            (OUTBOX_RETENTION_TEXT, OUTBOX_RETENTION),
            (WEBHOOK_CONNECT_TIMEOUT_TEXT, WEBHOOK_CONNECT_TIMEOUT),
            (WEBHOOK_TIMEOUT_TEXT, WEBHOOK_TIMEOUT),
            (WEBHOOK_BACKOFF_TEXT, WEBHOOK_BACKOFF),
            (WEBHOOK_BACKOFF_MAX_TEXT, WEBHOOK_BACKOFF_MAX),
        ] {
            assert_eq!(humantime::parse_duration(text).ok(), Some(value), "{text}");
        }
    }

    #[test]
    fn the_retention_text_and_duration_agree() {
        assert_eq!(
            humantime::parse_duration(IDEMPOTENCY_RETENTION_TEXT).ok(),
            Some(IDEMPOTENCY_RETENTION)
        );
        assert_eq!(
            humantime::parse_duration(TOKEN_MAX_LIFETIME_TEXT).ok(),
            Some(TOKEN_MAX_LIFETIME)
        );
        assert_eq!(
            humantime::parse_duration(REQUEST_TIMEOUT_TEXT).ok(),
            Some(REQUEST_TIMEOUT)
        );
        assert_eq!(
            humantime::parse_duration(DRAIN_GRACE_TEXT).ok(),
            Some(DRAIN_GRACE)
        );
    }
}

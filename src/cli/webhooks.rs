//! `serve`'s webhook and outbox flags.

use std::time::Duration;

use clap::Args;

use crate::defaults;
use crate::outbox::{OutboxConfig, TargetPolicy};

#[derive(Debug, Clone, Args)]
pub struct WebhookFlags {
    /// Let webhooks reach loopback, private and link-local addresses (refused by default: an
    /// endpoint URL must not become a way into the server's network).
    #[arg(long, env = "DROPD_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Only these networks (comma-separated CIDRs, e.g. 203.0.113.0/24) may receive webhooks;
    /// what is listed is allowed even if private.
    #[arg(long, env = "DROPD_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// Attempts at one event before it is dead-lettered.
    #[arg(long, env = "DROPD_WEBHOOK_MAX_ATTEMPTS", default_value_t = defaults::WEBHOOK_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,
    /// How long an endpoint may take to accept the connection.
    #[arg(long, env = "DROPD_WEBHOOK_CONNECT_TIMEOUT",
          default_value = defaults::WEBHOOK_CONNECT_TIMEOUT_TEXT, value_parser = humantime::parse_duration)]
    pub webhook_connect_timeout: Duration,
    /// How long one delivery may take in all.
    #[arg(long, env = "DROPD_WEBHOOK_TIMEOUT", default_value = defaults::WEBHOOK_TIMEOUT_TEXT,
          value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,
    /// The first retry's delay; each next one doubles (with jitter) up to --webhook-backoff-max.
    #[arg(long, env = "DROPD_WEBHOOK_BACKOFF", default_value = defaults::WEBHOOK_BACKOFF_TEXT,
          value_parser = humantime::parse_duration)]
    pub webhook_backoff: Duration,
    #[arg(long, env = "DROPD_WEBHOOK_BACKOFF_MAX", default_value = defaults::WEBHOOK_BACKOFF_MAX_TEXT,
          value_parser = humantime::parse_duration)]
    pub webhook_backoff_max: Duration,
    /// Webhook requests in flight at once, across endpoints.
    #[arg(long, env = "DROPD_WEBHOOK_CONCURRENCY", default_value_t = defaults::WEBHOOK_CONCURRENCY)]
    pub webhook_concurrency: usize,
    /// How long outbox events are kept once every active endpoint has them.
    #[arg(long, env = "DROPD_OUTBOX_RETENTION", default_value = defaults::OUTBOX_RETENTION_TEXT,
          value_parser = humantime::parse_duration)]
    pub outbox_retention: Duration,
}

impl WebhookFlags {
    pub fn config(&self) -> OutboxConfig {
        OutboxConfig {
            retention: self.outbox_retention,
            max_attempts: self.webhook_max_attempts,
            connect_timeout: self.webhook_connect_timeout,
            timeout: self.webhook_timeout,
            backoff: self.webhook_backoff,
            backoff_max: self.webhook_backoff_max.max(self.webhook_backoff),
            concurrency: self.webhook_concurrency.max(1),
            targets: TargetPolicy {
                allow_private: self.webhook_allow_private,
                allow: self.webhook_allow.clone(),
            },
        }
    }
}

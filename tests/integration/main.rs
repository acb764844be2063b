//! One integration binary: each test starts the real app (or the real binary) on port 0 with its
//! own temporary data directory and talks HTTP to it.

mod support;

mod access_codes;
mod admin_keys;
mod admin_listener;
mod admission;
mod audit;
mod authorization;
mod bad_input;
mod browser;
mod budgets;
mod crash;
mod disk_full;
mod drain;
mod draw;
mod events;
mod exports;
mod follow;
mod fuzz;
mod hot_path;
mod idempotency;
mod io_error;
mod large;
mod lease;
mod ledger;
mod lifecycle;
mod litestream;
mod operations;
mod outside;
mod pages;
mod paid;
mod queue;
mod replay;
mod replication;
mod replication_outage;
mod request_ids;
mod scale;
mod slow_clients;
mod stampede;
mod store_model;
mod tokens;
mod torture;
mod waitlist;
mod watchdog;
mod webhooks;

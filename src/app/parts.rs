//! What leaders and followers are built from: the shared parts, the sockets and the server
//! on them, the metrics recorder.

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};

use actix_web::dev::Server;
use actix_web::middleware::ErrorHandlers;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::auth::{self, TokenKeys};
use crate::domain::Clock;
use crate::events::{Hub, HubConfig};
use crate::http::limits;
use crate::http::state::AppState;
use crate::http::{self, problem};

use super::Settings;

/// What leaders and followers share: buyer-token keys, the HTTP worker count, the event hub.
pub(super) fn common_parts(
    settings: &Settings,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<(TokenKeys, usize, Arc<Hub>)> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let secrets = auth::load_secrets(&settings.token_secrets, &settings.data_dir, true)?;
    let tokens = TokenKeys::with_secrets(&secrets, settings.token_policy.clone())
        .context("loading the buyer-token secrets")?;
    let workers = settings
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let hub = Hub::new(
        HubConfig {
            max_subscribers: settings.max_subscribers,
            cpu_budget: settings.sse_cpu_budget,
            // The benchmark opens thousands of streams from one address.
            streams_per_ip: settings
                .admission
                .enabled
                .then_some(settings.streams_per_ip),
            ..HubConfig::default()
        },
        clock.clone(),
    );
    Ok((tokens, workers, hub))
}

/// The sockets, bound before anything answers on them (tests ask for port 0).
pub(super) struct Listeners {
    public: TcpListener,
    pub port: u16,
    admin: Option<TcpListener>,
    pub admin_port: Option<u16>,
}

impl Listeners {
    pub(super) fn bind(settings: &Settings) -> anyhow::Result<Self> {
        let public = TcpListener::bind(&settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = public.local_addr()?.port();
        let admin = settings
            .admin_listen
            .as_ref()
            .map(|addr| {
                TcpListener::bind(addr).with_context(|| format!("binding --admin-listen {addr}"))
            })
            .transpose()?;
        let admin_port = admin
            .as_ref()
            .map(|l| l.local_addr().map(|a| a.port()))
            .transpose()?;
        Ok(Self {
            public,
            port,
            admin,
            admin_port,
        })
    }

    pub(super) fn serve(
        self,
        settings: &Settings,
        state: web::Data<AppState>,
        workers: usize,
    ) -> anyhow::Result<Server> {
        let request_limits = web::Data::new(settings.request_limits);
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(http::lease::route))
                .wrap(actix_web::middleware::from_fn(limits::guard))
                .wrap(actix_web::middleware::from_fn(http::follower::route))
                .wrap(actix_web::middleware::from_fn(http::sides::route))
                .wrap(ErrorHandlers::new().default_handler(problem::ensure_problem))
                // Outermost: every answer, the framework's own included, gets its id.
                .wrap(actix_web::middleware::from_fn(http::request_id::trace))
                .app_data(state.clone())
                .app_data(request_limits.clone())
                .configure(http::configure)
        })
        .workers(workers)
        .client_request_timeout(settings.request_limits.timeout)
        .max_connections(settings.max_connections.div_ceil(workers).max(1))
        .backlog(4096)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(self.public)?;
        // One server on both sockets: which routes answer is decided by the socket a request
        // came in on (see `http::Side`).
        let server = match self.admin {
            Some(admin) => server.listen(admin)?,
            None => server,
        };
        Ok(server.run())
    }
}

/// One Prometheus recorder per process (tests build many applications in one process).
pub(super) fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "dropd_http_request_duration_seconds".into(),
                ),
                http::metrics::DURATION_BUCKETS,
            );
            let builder = builder.and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("dropd_http_sql_seconds".into()),
                    http::metrics::SQL_BUCKETS,
                )
            });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => Some(handle),
                Err(err) => {
                    tracing::warn!(error = %err, "metrics are disabled");
                    None
                }
            }
        })
        .clone()
}

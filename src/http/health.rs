use actix_web::{web, HttpResponse};

use crate::http::codes::Code;
use crate::http::openapi::problems::{problems, EVERY};
use crate::http::problem::ApiError;
use crate::http::state::AppState;

problems!(HealthProblems: EVERY);

/// Alive: the process answers. Cheap on purpose; it is the benchmark's ceiling.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "alive", content_type = "application/json",
            body = inline(Liveness), example = json!({"status": "ok"})),
        HealthProblems,
    ))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// Ready to take buyers: started, not draining, and the writer is running.
/// The body of `/healthz`, sent as fixed bytes.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Liveness {
    status: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    status: &'static str,
    /// Null on a follower, which has no writer.
    writer: Option<WriterReadiness>,
    /// On a follower (`serve --follow`): the TXID it serves, the replica's, and how far
    /// behind it is (`behind_txids`, `behind_seconds`); null on a leader.
    #[schema(value_type = Option<Object>)]
    follower: Option<serde_json::Value>,
    /// With `--lease`: `holder`, `state` (`held`, `expired`, `lost`), `valid_for_seconds`,
    /// `ttl_seconds`, `error`; null without.
    #[schema(value_type = Option<Object>)]
    lease: Option<serde_json::Value>,
    /// Without a replica, null; else its `state` (`starting`, `ok`, `failing`), and for
    /// operators (admin listener, or an admin key) its URL, TXID, errors and counters.
    #[schema(value_type = Option<Object>)]
    replica: Option<serde_json::Value>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WriterReadiness {
    queue_depth: i64,
}

problems!(ReadyProblems: EVERY, &[Code::Unavailable]);

/// Ready for buyers: 503 with the reason while starting, draining, or when the writer is
/// stuck, its queue saturated or the disk full. A failing replica does not make it unready.
/// A follower is unready while it is further behind its replica than `--max-lag`.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", body = Readiness), ReadyProblems))]
pub async fn readyz(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let phase = state.lifecycle.phase();
    if phase != "ready" {
        return Err(ApiError::new(
            Code::Unavailable,
            format!("the server is {phase}"),
        ));
    }
    if let Some(role) = &state.follower {
        return follower_readiness(role);
    }
    if !state.writer.is_running() {
        return Err(ApiError::new(
            Code::Unavailable,
            "the store writer is not running",
        ));
    }
    let writer = state.writer.stats();
    let unready = |detail: String| Err(ApiError::new(Code::Unavailable, detail));
    if writer.quiet_for >= state.writer_stuck_after {
        return unready(format!(
            "the store writer is stuck: no progress for {} ms",
            writer.quiet_for.as_millis()
        ));
    }
    if writer.disk_full {
        return unready("the disk is full: the last commit failed for want of space".into());
    }
    let lease = state.lease.as_ref().map(|l| l.snapshot());
    if let Some(lease) = lease.as_ref().filter(|l| l.state != "held") {
        return Err(ApiError::new(
            Code::Unavailable,
            format!(
                "the replica's lease is {}: writes are refused until it is held again",
                lease.state
            ),
        )
        .with_member("lease", serde_json::to_value(lease).unwrap_or_default()));
    }
    let depth = writer.queue_depth.max(0) as usize;
    if depth * 10 >= writer.queue_size * crate::defaults::QUEUE_SATURATED_TENTHS {
        return unready(format!(
            "the writer's queue is saturated: {depth} of {} commands waiting",
            writer.queue_size
        ));
    }
    // A failing replica does not make the server unready (buyers are still served); it is shown
    // here and in /metrics for operators and alerts, but its URL and errors only to them: on
    // the admin listener, or with an admin key.
    let operator = crate::http::sides::on_admin_listener(&req)
        || (state.admin_port.is_none() && crate::http::extract::admin_key_id(&req).is_some());
    let replica = state.replica.as_ref().map(|r| {
        let snapshot = r.snapshot();
        if operator {
            serde_json::to_value(&snapshot).unwrap_or_default()
        } else {
            serde_json::json!({ "state": snapshot.state })
        }
    });
    Ok(HttpResponse::Ok().json(Readiness {
        status: "ready",
        writer: Some(WriterReadiness {
            queue_depth: writer.queue_depth,
        }),
        follower: None,
        lease: lease.map(|l| serde_json::to_value(l).unwrap_or_default()),
        replica,
    }))
}

/// A follower is ready while its copy is at most `--max-lag` old; its lag is public (it says
/// nothing an operator would hide), so a load balancer can weigh followers by it.
fn follower_readiness(role: &crate::http::state::FollowerRole) -> Result<HttpResponse, ApiError> {
    let snapshot = role.status.snapshot(std::time::SystemTime::now());
    if snapshot.behind_seconds > role.max_lag.as_secs_f64() {
        let why = snapshot
            .error
            .as_deref()
            .map_or(String::new(), |e| format!(" (last error: {e})"));
        return Err(ApiError::new(
            Code::Unavailable,
            format!(
                "the follower is {:.1} s behind its replica, more than --max-lag {} s; it \
                 serves TXID {} of {}{why}",
                snapshot.behind_seconds,
                role.max_lag.as_secs_f64(),
                snapshot.txid,
                snapshot.replica_txid
            ),
        )
        .with_member(
            "follower",
            serde_json::to_value(&snapshot).unwrap_or_default(),
        ));
    }
    Ok(HttpResponse::Ok().json(Readiness {
        status: "ready",
        writer: None,
        follower: Some(serde_json::to_value(&snapshot).unwrap_or_default()),
        lease: None,
        replica: None,
    }))
}

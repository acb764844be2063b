use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::http::problem::ApiError;
use crate::http::state::AppState;

/// Alive: the process answers. Cheap on purpose; it is the benchmark's ceiling.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// Ready to take buyers: started, not draining, and the writer is running.
pub async fn readyz(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let phase = state.lifecycle.phase();
    if phase != "ready" {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the server is {phase}"),
        ));
    }
    if !state.writer.is_running() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the store writer is not running",
        ));
    }
    let writer = state.writer.stats();
    let unready = |detail: String| {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            detail,
        ))
    };
    if writer.quiet_for >= state.writer_stuck_after {
        return unready(format!(
            "the store writer is stuck: no progress for {} ms",
            writer.quiet_for.as_millis()
        ));
    }
    if writer.disk_full {
        return unready("the disk is full: the last commit failed for want of space".into());
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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "writer": { "queue_depth": writer.queue_depth },
        "replica": replica,
    })))
}

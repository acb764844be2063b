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
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
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
    // A failing replica does not make the server unready (buyers are still served); it is shown
    // here and in /metrics for operators and alerts.
    let replica = state.replica.as_ref().map(|r| r.snapshot());
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "writer": { "queue_depth": writer.queue_depth },
        "replica": replica,
    })))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::gauge!("dropd_writer_queue_depth").set(state.writer.stats().queue_depth as f64);
    if let Some(replica) = &state.replica {
        let s = replica.snapshot();
        metrics::gauge!("dropd_replica_up").set(if s.state == "failing" { 0.0 } else { 1.0 });
        metrics::gauge!("dropd_replica_txid")
            .set(u64::from_str_radix(&s.txid, 16).unwrap_or(0) as f64);
        metrics::gauge!("dropd_replica_uploads").set(s.uploads as f64);
        metrics::gauge!("dropd_replica_upload_failures").set(s.upload_failures as f64);
        metrics::gauge!("dropd_replica_uploaded_bytes").set(s.uploaded_bytes as f64);
        metrics::gauge!("dropd_replica_pending_wal_bytes").set(s.pending_wal_bytes as f64);
        if let Some(at) = s.last_sync_at {
            let age = std::time::SystemTime::now()
                .duration_since(at)
                .unwrap_or_default();
            metrics::gauge!("dropd_replica_last_sync_age_seconds").set(age.as_secs_f64());
        }
    }
    match &state.metrics {
        Some(handle) => {
            handle.run_upkeep();
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4")
                .body(handle.render())
        }
        None => HttpResponse::Ok().content_type("text/plain").body(""),
    }
}

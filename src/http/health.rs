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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "writer": { "queue_depth": writer.queue_depth },
    })))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::gauge!("dropd_writer_queue_depth").set(state.writer.stats().queue_depth as f64);
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

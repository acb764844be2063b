//! The admin API for webhook endpoints, their dead letters, and the outbox export.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::domain::outbox::parse_filter;
use crate::http::codes::Code;
use crate::http::extract::Admin;
use crate::http::openapi::problems::{problems, ADMIN, BODY, EVERY, READ, SPLIT, WRITE};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::outbox::sign;
use crate::store::webhooks::{self, DeadLetter, Webhook, WebhookAnswer, WebhookChange};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `http` or `https`; loopback and private addresses are refused unless the server allows
    /// them (`--webhook-allow-private`, `--webhook-allow`).
    #[schema(max_length = 2048)]
    url: String,
    /// Event types (`hold.created`, `order.created`, ...) or `*` for all.
    #[schema(min_items = 1)]
    events: Vec<String>,
}

/// A new endpoint: its signing secret is shown here, once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    webhook: Webhook,
    /// Verifies `Dropd-Signature`: HMAC-SHA256 over `<t>.<body>`, hex, as `v1`.
    secret: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    webhooks: Vec<Webhook>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    /// `disabled` stops deliveries (events wait, within the outbox retention); `active` resumes
    /// them where they stopped.
    #[schema(pattern = "^(active|disabled)$")]
    state: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
}

const MAX_URL: usize = 2048;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("webhook {id} not found"))
}

async fn change(state: &AppState, change: WebhookChange) -> Result<WebhookAnswer, ApiError> {
    Ok(state.writer.change_webhook(change).await?)
}

problems!(CreateWebhookProblems: EVERY, SPLIT, ADMIN, BODY, WRITE, &[Code::WebhookTargetRefused]);

/// Add an endpoint. It hears of events from now on; the answer carries its secret, once.
#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "admin", security(("admin" = [])),
    request_body = NewWebhook,
    responses(
        (status = 201, description = "the endpoint and its secret", body = CreatedWebhook),
        CreateWebhookProblems,
    ))]
pub async fn create_webhook(
    state: web::Data<AppState>,
    _: Admin,
    body: web::Json<NewWebhook>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let events = parse_filter(&body.events).map_err(ApiError::validation)?;
    if body.url.len() > MAX_URL {
        return Err(ApiError::validation(format!(
            "url must be at most {MAX_URL} bytes"
        )));
    }
    let url = state
        .webhook_targets
        .check_url(&body.url)
        .map_err(|why| ApiError::new(Code::WebhookTargetRefused, why))?;
    if let Some(url::Host::Domain(host)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        state
            .webhook_targets
            .resolve(host, port)
            .await
            .map_err(|why| ApiError::new(Code::WebhookTargetRefused, why))?;
    }
    let secret = sign::new_secret();
    let id = format!("whk_{}", uuid::Uuid::now_v7().simple());
    let created = change(
        &state,
        WebhookChange::Create {
            id: id.clone(),
            url: url.to_string(),
            events,
            secret: secret.clone(),
        },
    )
    .await?;
    let WebhookAnswer::Endpoint(Some(webhook)) = created else {
        return Err(ApiError::internal());
    };
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/admin/webhooks/{id}")))
        .json(CreatedWebhook { webhook, secret }))
}

problems!(ListWebhooksProblems: EVERY, SPLIT, ADMIN, READ);

/// Every endpoint, with how far its deliveries are.
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "the endpoints", body = WebhookList),
        ListWebhooksProblems))]
pub async fn list_webhooks(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let all = state
        .read(|conn, _| Ok(webhooks::list(conn)?))
        .await?
        .into_iter()
        .map(|e| e.webhook)
        .collect();
    Ok(HttpResponse::Ok().json(WebhookList { webhooks: all }))
}

problems!(GetWebhookProblems: EVERY, SPLIT, ADMIN, READ);

/// One endpoint.
#[utoipa::path(get, path = "/v1/admin/webhooks/{webhook}", tag = "admin",
    security(("admin" = [])),
    params(("webhook" = String, Path, description = "the endpoint's id")),
    responses((status = 200, description = "the endpoint", body = Webhook), GetWebhookProblems))]
pub async fn get_webhook(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let key = id.clone();
    let found = state
        .read(move |conn, _| Ok(webhooks::get(conn, &key)?))
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(HttpResponse::Ok().json(found.webhook))
}

problems!(PatchWebhookProblems: EVERY, SPLIT, ADMIN, BODY, WRITE);

/// Disable an endpoint, or make it active again.
#[utoipa::path(patch, path = "/v1/admin/webhooks/{webhook}", tag = "admin",
    security(("admin" = [])),
    params(("webhook" = String, Path, description = "the endpoint's id")),
    request_body = WebhookPatch,
    responses((status = 200, description = "the endpoint", body = Webhook), PatchWebhookProblems))]
pub async fn update_webhook(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
    body: web::Json<WebhookPatch>,
) -> Result<HttpResponse, ApiError> {
    let target = match body.state.as_str() {
        "active" => "active",
        "disabled" => "disabled",
        other => {
            return Err(ApiError::validation(format!(
                "state must be active or disabled, not {other:?}"
            )))
        }
    };
    let id = path.into_inner();
    let answer = change(
        &state,
        WebhookChange::SetState {
            id: id.clone(),
            state: target,
        },
    )
    .await?;
    match answer {
        WebhookAnswer::Endpoint(Some(webhook)) => Ok(HttpResponse::Ok().json(webhook)),
        _ => Err(not_found(&id)),
    }
}

problems!(DeleteWebhookProblems: EVERY, SPLIT, ADMIN, WRITE);

/// Remove an endpoint and its dead letters.
#[utoipa::path(delete, path = "/v1/admin/webhooks/{webhook}", tag = "admin",
    security(("admin" = [])),
    params(("webhook" = String, Path, description = "the endpoint's id")),
    responses((status = 204, description = "removed"), DeleteWebhookProblems))]
pub async fn delete_webhook(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    match change(&state, WebhookChange::Delete { id: id.clone() }).await? {
        WebhookAnswer::Done(true) => Ok(HttpResponse::NoContent().finish()),
        _ => Err(not_found(&id)),
    }
}

problems!(DeadLettersProblems: EVERY, SPLIT, ADMIN, READ);

/// The events this endpoint did not take within the attempts allowed.
#[utoipa::path(get, path = "/v1/admin/webhooks/{webhook}/dead-letters", tag = "admin",
    security(("admin" = [])),
    params(("webhook" = String, Path, description = "the endpoint's id")),
    responses((status = 200, description = "its dead letters", body = DeadLetterList),
        DeadLettersProblems))]
pub async fn list_dead_letters(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let key = id.clone();
    let (exists, letters) = state
        .read(move |conn, _| {
            Ok((
                webhooks::get(conn, &key)?.is_some(),
                webhooks::dead_letters(conn, &key, None)?,
            ))
        })
        .await?;
    if !exists {
        return Err(not_found(&id));
    }
    Ok(HttpResponse::Ok().json(DeadLetterList {
        dead_letters: letters,
    }))
}

problems!(RetryDeadLetterProblems: EVERY, SPLIT, ADMIN, WRITE);

/// Deliver a dead letter again (one more attempt, soon).
#[utoipa::path(post, path = "/v1/admin/webhooks/{webhook}/dead-letters/{event}/retry",
    tag = "admin", security(("admin" = [])),
    params(
        ("webhook" = String, Path, description = "the endpoint's id"),
        ("event" = String, Path, description = "the event's id"),
    ),
    responses((status = 202, description = "queued for another attempt", body = DeadLetter),
        RetryDeadLetterProblems))]
pub async fn retry_dead_letter(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, event) = path.into_inner();
    let key = id.clone();
    let letters = state
        .read(move |conn, _| Ok(webhooks::dead_letters(conn, &key, Some("dead"))?))
        .await?;
    let Some(mut letter) = letters.into_iter().find(|l| l.event_id == event) else {
        return Err(ApiError::not_found(format!(
            "webhook {id} has no dead letter for event {event}"
        )));
    };
    match change(
        &state,
        WebhookChange::Retry {
            id: id.clone(),
            event_seq: letter.event_seq,
        },
    )
    .await?
    {
        WebhookAnswer::Done(true) => {
            letter.state = "retrying".into();
            Ok(HttpResponse::Accepted().json(letter))
        }
        _ => Err(ApiError::not_found(format!(
            "webhook {id} has no dead letter for event {event}"
        ))),
    }
}

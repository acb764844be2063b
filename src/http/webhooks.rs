//! The admin API for webhook endpoints, their dead letters, and the outbox export.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::domain::outbox::parse_filter;
use crate::http::admin::answer;
use crate::http::codes::Code;
use crate::http::extract::{admin_act, Admin};
use crate::http::openapi::problems::{problems, ADMIN, BODY, EVERY, READ, SPLIT, WRITE};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::outbox::sign;
use crate::store::audit::{Acted, Acting};
use crate::store::webhooks::{
    self, CreatedWebhook, DeadLetter, Webhook, WebhookAnswer, WebhookChange,
};

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    webhooks: Vec<Webhook>,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
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

/// An operator's change, audited; `not-found` when it finds nothing to change.
async fn change(
    state: &AppState,
    act: Acting,
    change: WebhookChange,
) -> Result<Acted<WebhookAnswer>, ApiError> {
    Ok(state.writer.act_on_webhook(act, change).await??)
}

/// A replayed answer as it was first given; a fresh one as `render` makes it.
fn respond(
    acted: Acted<WebhookAnswer>,
    status: StatusCode,
    render: impl FnOnce(WebhookAnswer) -> Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    match acted {
        Acted::Done(answer) => render(answer),
        Acted::Replayed(body) => answer(Acted::<()>::Replayed(body), status, |_| None),
    }
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
    req: HttpRequest,
    admin: Admin,
    body: web::Json<NewWebhook>,
) -> Result<HttpResponse, ApiError> {
    let act = admin_act(&req, &admin, "create_webhook", "", &*body)?;
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
        act,
        WebhookChange::Create {
            id: id.clone(),
            url: url.to_string(),
            events,
            secret: secret.clone(),
        },
    )
    .await?;
    let created = match created {
        Acted::Done(WebhookAnswer::Endpoint(Some(webhook))) => {
            Acted::Done(CreatedWebhook { webhook, secret })
        }
        Acted::Replayed(body) => Acted::Replayed(body),
        Acted::Done(_) => return Err(ApiError::internal()),
    };
    let location = match &created {
        Acted::Done(c) => format!("/v1/admin/webhooks/{}", c.webhook.id),
        Acted::Replayed(body) => serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v["id"]
                    .as_str()
                    .map(|id| format!("/v1/admin/webhooks/{id}"))
            })
            .unwrap_or_default(),
    };
    let mut res = answer(created, StatusCode::CREATED, |_| None)?;
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&location) {
        res.headers_mut()
            .insert(actix_web::http::header::LOCATION, value);
    }
    Ok(res)
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
    req: HttpRequest,
    admin: Admin,
    path: web::Path<String>,
    body: web::Json<WebhookPatch>,
) -> Result<HttpResponse, ApiError> {
    let act = admin_act(&req, &admin, "update_webhook", &path, &*body)?;
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
    let acted = change(
        &state,
        act,
        WebhookChange::SetState {
            id: id.clone(),
            state: target,
        },
    )
    .await?;
    respond(acted, StatusCode::OK, |answer| match answer {
        WebhookAnswer::Endpoint(Some(webhook)) => Ok(HttpResponse::Ok().json(webhook)),
        _ => Err(not_found(&id)),
    })
}

problems!(DeleteWebhookProblems: EVERY, SPLIT, ADMIN, WRITE);

/// Remove an endpoint and its dead letters.
#[utoipa::path(delete, path = "/v1/admin/webhooks/{webhook}", tag = "admin",
    security(("admin" = [])),
    params(("webhook" = String, Path, description = "the endpoint's id")),
    responses((status = 204, description = "removed"), DeleteWebhookProblems))]
pub async fn delete_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let act = admin_act(&req, &admin, "delete_webhook", &path, &())?;
    let id = path.into_inner();
    let acted = change(&state, act, WebhookChange::Delete { id: id.clone() }).await?;
    respond(acted, StatusCode::NO_CONTENT, |answer| match answer {
        WebhookAnswer::Done(true) => Ok(HttpResponse::NoContent().finish()),
        _ => Err(not_found(&id)),
    })
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
    req: HttpRequest,
    admin: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, event) = path.into_inner();
    let act = admin_act(
        &req,
        &admin,
        "retry_dead_letter",
        &format!("{id}/{event}"),
        &(),
    )?;
    let key = id.clone();
    let letters = state
        .read(move |conn, _| Ok(webhooks::dead_letters(conn, &key, None)?))
        .await?;
    let Some(mut letter) = letters.into_iter().find(|l| l.event_id == event) else {
        return Err(ApiError::not_found(format!(
            "webhook {id} has no dead letter for event {event}"
        )));
    };
    let acted = change(
        &state,
        act,
        WebhookChange::Retry {
            id: id.clone(),
            event_seq: letter.event_seq,
        },
    )
    .await?;
    respond(acted, StatusCode::ACCEPTED, |answer| match answer {
        WebhookAnswer::Done(true) => {
            letter.state = "retrying".into();
            Ok(HttpResponse::Accepted().json(letter))
        }
        _ => Err(ApiError::not_found(format!(
            "webhook {id} has no dead letter for event {event}"
        ))),
    })
}

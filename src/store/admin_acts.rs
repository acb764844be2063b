//! Admin and service-key actions as the writer runs them: each replays its first answer if its
//! retry key was used, or makes its change and records it in the audit log, in one transaction.

use rusqlite::Connection;

use crate::domain::views::{DropPatch, DropView, NewDrop};
use crate::domain::{DropId, Refusal};

use super::audit::{self, json, Acted, Acting, Entry};
use super::batch::Batch;
use super::tx::decided;
use super::webhooks::{self, CreatedWebhook, WebhookAnswer, WebhookChange};
use super::{access_codes, drops, StoreError};
use crate::domain::access_codes::{CodeView, CreatedCodes, NewCodes};

type Audited<T> = Result<Result<Acted<T>, Refusal>, StoreError>;

pub(crate) fn create_drop(
    conn: &Connection,
    batch: &mut Batch<'_>,
    act: &Acting,
    spec: &NewDrop,
) -> Audited<DropView> {
    let now_ms = batch.now.timestamp_millis();
    audit::run(conn, now_ms, act, |c| {
        Ok(decided(c, |c| drops::create(c, batch, spec))?.map(|view| {
            let entry = Entry {
                action: "drop.create",
                target: view.id.clone(),
                before: None,
                after: json(&view),
                answer: None,
            };
            (view, entry)
        }))
    })
}

pub(crate) fn update_drop(
    conn: &Connection,
    batch: &mut Batch<'_>,
    act: &Acting,
    drop_id: &DropId,
    patch: &DropPatch,
    if_match: Option<i64>,
) -> Audited<DropView> {
    let now_ms = batch.now.timestamp_millis();
    audit::run(conn, now_ms, act, |c| {
        let before = drops::get_view(c, drop_id.as_str(), batch.now)?;
        Ok(
            decided(c, |c| drops::update(c, batch, drop_id, patch, if_match))?.map(|view| {
                let entry = Entry {
                    action: "drop.update",
                    target: drop_id.to_string(),
                    before: before.as_ref().and_then(json),
                    after: json(&view),
                    answer: None,
                };
                (view, entry)
            }),
        )
    })
}

pub(crate) fn adjust_stock(
    conn: &Connection,
    batch: &mut Batch<'_>,
    act: &Acting,
    drop_id: &DropId,
    sku: &str,
    delta: i64,
) -> Audited<DropView> {
    let now_ms = batch.now.timestamp_millis();
    audit::run(conn, now_ms, act, |c| {
        let before = drops::get_view(c, drop_id.as_str(), batch.now)?;
        Ok(
            decided(c, |c| drops::adjust_stock(c, batch, drop_id, sku, delta))?.map(|view| {
                let entry = Entry {
                    action: "stock.adjust",
                    target: format!("{drop_id}/{sku}"),
                    before: before.as_ref().and_then(json),
                    after: json(&view),
                    answer: None,
                };
                (view, entry)
            }),
        )
    })
}

/// New access codes: the log keeps their ids and limits, never the codes (only their hashes are
/// stored), so a retry under the same key answers the codes without their text.
pub(crate) fn create_codes(
    conn: &Connection,
    batch: &mut Batch<'_>,
    act: &Acting,
    drop_id: &DropId,
    spec: &NewCodes,
) -> Audited<CreatedCodes> {
    let now_ms = batch.now.timestamp_millis();
    audit::run(conn, now_ms, act, |c| {
        Ok(
            decided(c, |c| access_codes::create(c, batch, drop_id, spec))?.map(|codes| {
                let views: Vec<&CodeView> = codes.iter().map(|c| &c.view).collect();
                let entry = Entry {
                    action: "codes.create",
                    target: drop_id.to_string(),
                    before: None,
                    after: json(&serde_json::json!({ "codes": views })),
                    answer: None,
                };
                (CreatedCodes { codes }, entry)
            }),
        )
    })
}

/// An operator's change to a webhook endpoint or dead letter. A change that finds nothing to
/// change is `not-found` and leaves no entry.
pub(crate) fn change_webhook(
    conn: &Connection,
    now_ms: i64,
    act: &Acting,
    change: &WebhookChange,
) -> Audited<WebhookAnswer> {
    let (action, id, letter) = match change {
        WebhookChange::Create { id, .. } => ("webhook.create", id, None),
        WebhookChange::SetState { id, .. } => ("webhook.update", id, None),
        WebhookChange::Delete { id } => ("webhook.delete", id, None),
        WebhookChange::Retry { id, event_seq } => ("dead_letter.retry", id, Some(*event_seq)),
        _ => return Err(StoreError::Internal("the worker's changes are not audited")),
    };
    let snapshot = |c: &Connection| -> Result<Option<String>, StoreError> {
        Ok(match letter {
            Some(seq) => webhooks::dead_letters(c, id, None)?
                .into_iter()
                .find(|l| l.event_seq == seq)
                .and_then(|l| json(&l)),
            None => webhooks::get(c, id)?.and_then(|e| json(&e.webhook)),
        })
    };
    audit::run(conn, now_ms, act, |c| {
        let before = snapshot(c)?;
        let answer = webhooks::apply(c, change, now_ms)?;
        if matches!(
            answer,
            WebhookAnswer::Endpoint(None) | WebhookAnswer::Done(false)
        ) {
            return Ok(Err(Refusal::not_found(match letter {
                Some(_) => format!("a dead letter of webhook {id} in state dead"),
                None => format!("webhook {id}"),
            })));
        }
        let shown = match (change, &answer) {
            (WebhookChange::Create { secret, .. }, WebhookAnswer::Endpoint(Some(webhook))) => {
                json(&CreatedWebhook {
                    webhook: webhook.clone(),
                    secret: secret.clone(),
                })
            }
            _ => None,
        };
        let entry = Entry {
            action,
            target: letter.map_or_else(|| id.clone(), |seq| format!("{id}/{seq}")),
            before,
            after: snapshot(c)?,
            answer: shown,
        };
        Ok(Ok((answer, entry)))
    })
}

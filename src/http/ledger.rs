//! The fairness ledger in public: the server's signing keys, each drop's ledger as NDJSON, and
//! its latest signed head. Anyone may read them: that is what makes the order checkable.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::auth::ledger_keys::PublicKey;
use crate::domain::ledger::SignedHead;
use crate::http::codes::Code;
use crate::http::drops::known_drop;
use crate::http::exports::ndjson_pages;
use crate::http::openapi::problems::{problems, EVERY, READ, SPLIT};
use crate::http::problem::ApiError;
use crate::http::state::AppState;
use crate::store::ledger;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    keys: Vec<PublicKey>,
}

problems!(KeysProblems: EVERY, SPLIT);

/// The public keys ledger heads are signed with: the active one first, then every key used
/// before a rotation, so anything signed earlier still verifies.
#[utoipa::path(get, path = "/v1/keys", tag = "fairness",
    responses((status = 200, description = "the keys", body = KeyList), KeysProblems))]
pub async fn list_keys(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(KeyList {
        keys: state.ledger_keys.as_ref().clone(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FromQuery {
    /// The first position wanted (1, the default, is the drop's first entry).
    #[param(minimum = 1)]
    from: Option<i64>,
}

const LEDGER_PAGE: i64 = 1000;

problems!(LedgerProblems: EVERY, SPLIT, READ, &[Code::BadRequest]);

/// The drop's ledger from position `from`, one entry per line with its `hash`:
/// `hash = SHA-256(previous hash || canonical(entry without hash))`, from 32 zero bytes, where
/// canonical is JSON with keys in byte order and no spaces. Buyers are salted hashes.
#[utoipa::path(get, path = "/v1/drops/{drop}/ledger", tag = "fairness",
    params(("drop" = String, Path, description = "the drop's id"), FromQuery),
    responses(
        (status = 200, description = "one entry per line", content_type = "application/x-ndjson",
            body = String),
        LedgerProblems,
    ))]
pub async fn export_ledger(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<FromQuery>,
) -> Result<HttpResponse, ApiError> {
    let from = query.from.unwrap_or(1);
    if from < 1 {
        return Err(ApiError::new(
            Code::BadRequest,
            "from is a ledger position: 1 or more",
        ));
    }
    let drop_id = known_drop(&state, &path).await?;
    Ok(ndjson_pages(
        state,
        from,
        move |conn, from: &i64| ledger::page(conn, drop_id.as_str(), *from, LEDGER_PAGE),
        LEDGER_PAGE,
        |line, out| out.extend_from_slice(line.text.as_bytes()),
        |line| line.position + 1,
    ))
}

problems!(HeadProblems: EVERY, SPLIT, READ);

/// The drop's latest signed chain head: after `position` entries its hash is `hash`; the
/// `signature` (Ed25519, hex) covers the head's other members in canonical form.
#[utoipa::path(get, path = "/v1/drops/{drop}/ledger/head", tag = "fairness",
    params(("drop" = String, Path, description = "the drop's id")),
    responses((status = 200, description = "the signed head", body = SignedHead), HeadProblems))]
pub async fn ledger_head(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let drop_id = known_drop(&state, &path).await?;
    let id = drop_id.clone();
    let head = state
        .read(move |conn, _| ledger::latest_head(conn, id.as_str()))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("drop {drop_id} has no signed head yet")))?;
    Ok(HttpResponse::Ok().json(head))
}

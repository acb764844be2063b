//! The one place errors become HTTP: RFC 9457 `application/problem+json` bodies with a stable
//! kebab-case `code`. 5xx bodies never carry internal text; it is logged instead.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{error::JsonPayloadError, HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::domain::Refusal;
use crate::http::codes::Code;
use crate::store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Code,
    detail: String,
    /// Extra members beside the standard ones (for example `available` on sold-out).
    extra: Map<String, Value>,
    retry_after: Option<u32>,
    /// The `Allow` header of a 405.
    allow: Option<&'static str>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.as_str(),
            self.detail
        )
    }
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self::with_status(code.status(), code, detail)
    }

    /// A framework refusal that keeps its own status (`bad-request` travels with several).
    pub fn with_status(status: StatusCode, code: Code, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
            retry_after: None,
            allow: None,
        }
    }

    /// A known path asked with a method it does not take.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                Code::MethodNotAllowed,
                format!("this resource takes {allow}"),
            )
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Code::NotFound, detail)
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(Code::ValidationFailed, detail)
    }

    pub fn internal() -> Self {
        Self::new(
            Code::Internal,
            "the server failed to handle this request; it has been logged",
        )
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    /// One more member of the body (a hold attempt's `receipt`).
    pub fn with_member(mut self, name: &str, value: Value) -> Self {
        self.extra.insert(name.to_owned(), value);
        self
    }

    pub fn body(&self) -> Value {
        let mut body = self.extra.clone();
        body.insert(
            "type".into(),
            json!(format!("urn:dropd:problem:{}", self.code.as_str())),
        );
        let title = match self.code {
            Code::BadRequest => self.status.canonical_reason().unwrap_or("Bad Request"),
            code => code.title(),
        };
        body.insert("title".into(), json!(title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        body.insert("code".into(), json!(self.code.as_str()));
        Value::Object(body)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(allow) = self.allow {
            res.insert_header((header::ALLOW, allow));
        }
        res.body(self.body().to_string())
    }
}

impl ApiError {
    /// The answer for a refusal given from memory. Every buyer refused `sold-out` on a SKU for
    /// the same quantity gets the same bytes, so each worker renders them once (a few hundred
    /// distinct refusals at most are kept).
    pub fn cached_refusal(refusal: &Refusal) -> HttpResponse<BoxBody> {
        type Rendered = (StatusCode, actix_web::web::Bytes);
        thread_local! {
            static RENDERED: std::cell::RefCell<std::collections::HashMap<Refusal, Rendered>> =
                std::cell::RefCell::new(std::collections::HashMap::new());
        }
        let (status, body) = RENDERED.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(rendered) = cache.get(refusal) {
                return rendered.clone();
            }
            if cache.len() >= 512 {
                cache.clear();
            }
            let err = ApiError::from(refusal.clone());
            let rendered = (
                err.status,
                actix_web::web::Bytes::from(err.body().to_string()),
            );
            cache.insert(refusal.clone(), rendered.clone());
            rendered
        });
        HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
            .body(body)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let mut err = ApiError::new(Code::of_refusal(&refusal), refusal.to_string());
        if let Ok(Value::Object(fields)) = serde_json::to_value(&refusal) {
            err.extra = fields;
            err.extra.remove("code");
        }
        err
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Overloaded => {
                let mut e = ApiError::new(
                    Code::Overloaded,
                    "too many requests are waiting for the writer; retry after the given delay",
                );
                // 1-3 s at random: a crowd refused together must not return together.
                e.retry_after = Some(rand::Rng::random_range(&mut rand::rng(), 1..=3));
                e
            }
            StoreError::WriterStopped => {
                let mut e = ApiError::new(
                    Code::Unavailable,
                    "the server is shutting down; retry shortly",
                );
                e.retry_after = Some(2);
                e
            }
            StoreError::DiskFull => {
                tracing::error!("a write failed: the disk is full");
                let mut e = ApiError::new(
                    Code::InsufficientStorage,
                    "the server's disk is full; nothing was written; retry later",
                );
                e.retry_after = Some(30);
                e
            }
            StoreError::StorageReplaced(_) => {
                let mut e = ApiError::new(
                    Code::StorageReplaced,
                    "another process deleted or replaced the server's database files; the server \
                     is restarting and this request's outcome is unknown: retry with the same \
                     Idempotency-Key",
                );
                e.retry_after = Some(5);
                e
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(err: actix_web::error::BlockingError) -> Self {
        tracing::error!(error = %err, "blocking task failed");
        ApiError::internal()
    }
}

/// Extractor failures for JSON bodies: syntax is 400, shape or type is 422, size is 413.
pub fn from_json_error(err: &JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::new(
            Code::PayloadTooLarge,
            format!("the request body is larger than the {limit} bytes allowed"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            Code::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::validation(e.to_string()),
        JsonPayloadError::Deserialize(e) => ApiError::new(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        ),
        other => ApiError::new(
            Code::BadRequest,
            format!("the request body could not be read: {other}"),
        ),
    }
}

/// Turns any error response that is not already a problem (unknown route, wrong method, a
/// framework default) into one, keeping its status and headers.
pub fn ensure_problem<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, detail): (Code, String) = match status {
        StatusCode::NOT_FOUND => (Code::NotFound, "no such resource".into()),
        StatusCode::METHOD_NOT_ALLOWED => (
            Code::MethodNotAllowed,
            "this method is not allowed here".into(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            Code::PayloadTooLarge,
            "the request body is too large".into(),
        ),
        s if s.is_server_error() => (
            Code::Internal,
            "the server failed to handle this request".into(),
        ),
        s => (
            Code::BadRequest,
            s.canonical_reason().unwrap_or("bad request").to_lowercase(),
        ),
    };
    let problem = ApiError::with_status(status, code, detail);
    let (req, res) = res.into_parts();
    let mut new = problem.error_response();
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    new.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let res = ServiceResponse::new(req, new).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

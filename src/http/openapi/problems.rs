//! The problems each route can answer, declared beside its handler with `problems!` and turned
//! into the document's responses: one per status, its `code` restricted to the codes the route
//! really sends with that status, so a generated client (and schemathesis) holds the server to
//! them.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

use crate::http::codes::Code;
use crate::http::problem::PROBLEM_JSON;

/// Any request: the header cap is checked before routing.
pub const EVERY: &[Code] = &[Code::HeaderTooLarge];
/// With `--admin-listen`, a route asked on the other listener is not there.
pub const SPLIT: &[Code] = &[Code::NotFound];
/// A route that reads a JSON body.
pub const BODY: &[Code] = &[
    Code::MalformedJson,
    Code::ValidationFailed,
    Code::PayloadTooLarge,
    Code::UnsupportedMediaType,
    Code::BadRequest,
    Code::RequestTimeout,
];
/// A buyer's bearer token.
pub const BUYER: &[Code] = &[
    Code::Unauthorized,
    Code::TokenTooLong,
    Code::TokenNotYetValid,
    Code::TokenLifetimeTooLong,
    Code::TokenWrongAudience,
    Code::TokenWrongIssuer,
];
/// An admin key; a buyer's token is recognised and refused as such.
pub const ADMIN: &[Code] = &[Code::Unauthorized, Code::Forbidden];
/// Fair admission: the address's bucket, then the buyer's.
pub const ADMITTED: &[Code] = &[Code::TooManyRequests];
/// `Idempotency-Key` required.
pub const IDEMPOTENT: &[Code] = &[
    Code::IdempotencyKeyMissing,
    Code::IdempotencyKeyInvalid,
    Code::IdempotencyKeyReused,
];
/// A command queued for the writer.
pub const WRITE: &[Code] = &[
    Code::Overloaded,
    Code::Unavailable,
    Code::InsufficientStorage,
    Code::StorageReplaced,
    Code::Internal,
];
/// A read on the pool or the in-memory drops, which can fail only inside the server.
pub const READ: &[Code] = &[Code::Internal];

/// Declares a type whose responses are the problems of the given code groups.
macro_rules! problems {
    ($(#[$doc:meta])* $name:ident: $($group:expr),+ $(,)?) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::Response>,
            > {
                $crate::http::openapi::problems::responses(&[$($group),+])
            }
        }
    };
}
pub(crate) use problems;

/// The codes of `groups`, one response per status.
pub fn responses(groups: &[&[Code]]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for code in groups.iter().flat_map(|g| g.iter().copied()) {
        let codes = by_status.entry(code.status_u16()).or_default();
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| (status.to_string(), RefOr::T(response(status, &codes))))
        .collect()
}

fn response(status: u16, codes: &[Code]) -> Response {
    let description = codes
        .iter()
        .map(|c| format!("`{}`: {}", c.as_str(), c.title()))
        .collect::<Vec<_>>()
        .join("; ");
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name("Problem"))
        .item(
            ObjectBuilder::new().property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(codes.iter().map(|c| c.as_str()))),
            ),
        );
    let mut res = ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new().schema(Some(schema)).build(),
    );
    if status == 401 {
        res = res.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some("`Bearer`"))
                .build(),
        );
    }
    if matches!(status, 429 | 503 | 507) {
        res = res.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some("seconds to wait before trying again"))
                .build(),
        );
    }
    res.build()
}

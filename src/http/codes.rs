//! Every problem code the API can answer, with its status and title: the one list that the
//! error bodies, the OpenAPI document and the design's error table are held to.

use actix_web::http::StatusCode;

use crate::domain::Refusal;

macro_rules! codes {
    ($($variant:ident = $code:literal, $status:literal, $title:literal;)*) => {
        /// A stable kebab-case `code` of a problem+json body; clients branch on it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// The status it answers with; only `bad-request` also travels with other 4xx
            /// statuses (framework refusals keep theirs).
            pub const fn status_u16(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            /// A short summary that stays the same for every problem of this code.
            pub const fn title(self) -> &'static str {
                match self {
                    $(Code::$variant => $title,)*
                }
            }
        }
    };
}

codes! {
    NotFound = "not-found", 404, "Not Found";
    SoldOut = "sold-out", 409, "Sold out";
    LimitExceeded = "limit-exceeded", 409, "Per-buyer limit reached";
    DropNotLive = "drop-not-live", 409, "Drop is not live";
    HoldExpired = "hold-expired", 410, "Hold expired";
    HoldReleased = "hold-released", 409, "Hold was released";
    HoldConfirmed = "hold-confirmed", 409, "Hold already confirmed";
    IdempotencyKeyMissing = "idempotency-key-missing", 400, "Idempotency-Key header required";
    IdempotencyKeyInvalid = "idempotency-key-invalid", 400, "Idempotency-Key header malformed";
    IdempotencyKeyReused = "idempotency-key-reused", 422, "Idempotency-Key reused with another request";
    ValidationFailed = "validation-failed", 422, "Request failed validation";
    MalformedJson = "malformed-json", 400, "Request body is not valid JSON";
    UnknownSku = "unknown-sku", 422, "Unknown SKU";
    DropExists = "drop-exists", 409, "Drop already exists";
    StockBelowCommitted = "stock-below-committed", 409, "Stock below what is held or sold";
    InvalidStateTransition = "invalid-state-transition", 409, "State change not allowed";
    StaleRevision = "stale-revision", 412, "Drop settings changed since read";
    Unauthorized = "unauthorized", 401, "Unauthorized";
    TokenTooLong = "token-too-long", 401, "Token too long";
    TokenNotYetValid = "token-not-yet-valid", 401, "Token not yet valid";
    TokenLifetimeTooLong = "token-lifetime-too-long", 401, "Token lifetime too long";
    TokenWrongAudience = "token-wrong-audience", 401, "Token for another audience";
    TokenWrongIssuer = "token-wrong-issuer", 401, "Token from another issuer";
    Forbidden = "forbidden", 403, "Forbidden";
    ConfirmationNotAllowed = "confirmation-not-allowed", 403, "Only a payment service confirms";
    SignatureInvalid = "signature-invalid", 401, "Signature invalid";
    SignatureExpired = "signature-expired", 401, "Signature outside the tolerance window";
    CallbackReplayed = "callback-replayed", 409, "Payment notice already taken";
    PayloadTooLarge = "payload-too-large", 413, "Payload Too Large";
    UnsupportedMediaType = "unsupported-media-type", 415, "Unsupported Media Type";
    BadRequest = "bad-request", 400, "Bad Request";
    MethodNotAllowed = "method-not-allowed", 405, "Method Not Allowed";
    Overloaded = "overloaded", 503, "Server overloaded";
    TooManyRequests = "too-many-requests", 429, "Too Many Requests";
    Unavailable = "unavailable", 503, "Service unavailable";
    TooManyStreams = "too-many-streams", 429, "Too many streams from this address";
    HeaderTooLarge = "header-too-large", 431, "Request Header Fields Too Large";
    RequestTimeout = "request-timeout", 408, "Request Timeout";
    TooManySubscribers = "too-many-subscribers", 503, "Too many live-stock streams";
    ReplicaUnavailable = "replica-unavailable", 503, "Not yet confirmed by the replica";
    NotLeader = "not-leader", 421, "Read-only follower";
    LeaseExpired = "lease-expired", 503, "Leader lease not held";
    InsufficientStorage = "insufficient-storage", 507, "Disk full";
    StorageReplaced = "storage-replaced", 503, "Database files replaced";
    WebhookTargetRefused = "webhook-target-refused", 422, "Webhook target refused";
    NoQueue = "no-queue", 409, "Drop has no queue";
    QueueClosed = "queue-closed", 409, "Queue closed";
    NotAdmitted = "not-admitted", 403, "Not admitted from the queue";
    AdmissionExpired = "admission-expired", 410, "Admission expired";
    NotSoldOut = "not-sold-out", 409, "Not sold out";
    NoDraw = "no-draw", 409, "Drop is not a raffle";
    EntriesClosed = "entries-closed", 409, "Entries closed";
    CodeInvalid = "code-invalid", 403, "Access code not valid";
    CodeUsedUp = "code-used-up", 409, "Access code used up";
    Internal = "internal", 500, "Internal Server Error";
}

impl Code {
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.status_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// For codes named by other modules as text (token refusals).
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == text)
    }

    pub fn of_refusal(refusal: &Refusal) -> Code {
        match refusal {
            Refusal::NotFound { .. } => Code::NotFound,
            Refusal::SoldOut { .. } => Code::SoldOut,
            Refusal::LimitExceeded { .. } => Code::LimitExceeded,
            Refusal::DropNotLive { .. } => Code::DropNotLive,
            Refusal::HoldExpired { .. } => Code::HoldExpired,
            Refusal::HoldReleased => Code::HoldReleased,
            Refusal::HoldConfirmed { .. } => Code::HoldConfirmed,
            Refusal::IdempotencyKeyReused => Code::IdempotencyKeyReused,
            Refusal::ValidationFailed { .. } => Code::ValidationFailed,
            Refusal::UnknownSku { .. } => Code::UnknownSku,
            Refusal::DropExists { .. } => Code::DropExists,
            Refusal::StockBelowCommitted { .. } => Code::StockBelowCommitted,
            Refusal::InvalidTransition { .. } => Code::InvalidStateTransition,
            Refusal::StaleRevision { .. } => Code::StaleRevision,
            Refusal::NoQueue { .. } => Code::NoQueue,
            Refusal::QueueClosed { .. } => Code::QueueClosed,
            Refusal::NotAdmitted { .. } => Code::NotAdmitted,
            Refusal::AdmissionExpired { .. } => Code::AdmissionExpired,
            Refusal::NotSoldOut { .. } => Code::NotSoldOut,
            Refusal::NoDraw { .. } => Code::NoDraw,
            Refusal::EntriesClosed { .. } => Code::EntriesClosed,
            Refusal::CodeInvalid { .. } => Code::CodeInvalid,
            Refusal::CodeUsedUp { .. } => Code::CodeUsedUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_their_statuses_are_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{code:?} twice");
            assert!(code.status().is_client_error() || code.status().is_server_error());
            assert_eq!(Code::parse(code.as_str()), Some(*code));
        }
    }

    #[test]
    fn a_refusal_keeps_the_code_the_domain_gives_it() {
        let refusals = [
            Refusal::NotFound { what: "x".into() },
            Refusal::HoldReleased,
            Refusal::IdempotencyKeyReused,
            Refusal::InvalidTransition {
                from: "closed".into(),
                to: "live".into(),
            },
            Refusal::HoldExpired {
                expired_at: "t".into(),
            },
        ];
        for refusal in refusals {
            assert_eq!(Code::of_refusal(&refusal).as_str(), refusal.code());
        }
    }
}

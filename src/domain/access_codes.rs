//! Access codes (presale tiers), free of I/O: what a code is, how it is kept (only a hash), and
//! whether a hold may use it now.
//!
//! A code belongs to one drop and a tier (a label such as `members`), may be used `max_uses`
//! times, and only within its window. Inside its window a code also opens the drop before its
//! start: that is the presale.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::clock::serde_rfc3339;
use super::views::opt_rfc3339;
use super::Refusal;

/// At most this many codes per request.
pub const MAX_CODES: i64 = 10_000;
pub const MAX_USES: i64 = 1_000_000;

/// `POST /v1/admin/drops/{drop}/codes`: `count` new codes of one tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCodes {
    /// A label for the codes (`members`, `vip`...): 1-64 letters, digits, `-` or `_`.
    pub tier: String,
    /// How many codes to make (each shown once, in the answer).
    #[schema(minimum = 1, maximum = 10000)]
    pub count: i64,
    /// Holds each code may be used for.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_uses: i64,
    /// From when a code works (also before the drop's start: the presale); always, if absent.
    #[serde(default, with = "opt_rfc3339", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_from: Option<DateTime<Utc>>,
    /// Until when a code works; until the drop ends, if absent.
    #[serde(default, with = "opt_rfc3339", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_until: Option<DateTime<Utc>>,
    /// A SKU whose `reserved` units only this tier's codes may take (with `reserved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Units of `sku` set aside for the tier, on top of what it reserved before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub reserved: Option<i64>,
}

impl NewCodes {
    pub fn check(&self) -> Result<(), Refusal> {
        let tier_ok = !self.tier.is_empty()
            && self.tier.len() <= 64
            && self
                .tier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !tier_ok {
            return Err(Refusal::invalid(
                "tier must be 1-64 letters, digits, '-' or '_'",
            ));
        }
        if !(1..=MAX_CODES).contains(&self.count) {
            return Err(Refusal::invalid(format!(
                "count must be between 1 and {MAX_CODES}"
            )));
        }
        if !(1..=MAX_USES).contains(&self.max_uses) {
            return Err(Refusal::invalid(format!(
                "max_uses must be between 1 and {MAX_USES}"
            )));
        }
        match (&self.sku, self.reserved) {
            (Some(_), Some(units)) if units >= 1 => {}
            (None, None) => {}
            _ => {
                return Err(Refusal::invalid(
                    "a reserved share needs both sku and reserved (at least 1 unit)",
                ))
            }
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until) {
            if until <= from {
                return Err(Refusal::invalid("valid_until must be after valid_from"));
            }
        }
        Ok(())
    }
}

/// A code as the admin API lists it: never the code itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CodeView {
    /// `code_<number>`: names the code in the export and the audit log.
    pub id: String,
    pub drop_id: String,
    pub tier: String,
    pub max_uses: i64,
    pub uses: i64,
    #[serde(default, with = "opt_rfc3339", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_from: Option<DateTime<Utc>>,
    #[serde(default, with = "opt_rfc3339", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_until: Option<DateTime<Utc>>,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A new code and its plain text, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CreatedCode {
    /// The code to hand to a buyer; only its hash is kept, so it is never shown again.
    pub code: String,
    #[serde(flatten)]
    pub view: CodeView,
}

/// The answer to `POST /v1/admin/drops/{drop}/codes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CreatedCodes {
    pub codes: Vec<CreatedCode>,
}

/// How a code is kept: SHA-256 over the drop's id, a newline and the code as typed (trimmed,
/// upper-cased, so `ab12-cd34` is `AB12-CD34`).
pub fn code_hash(drop_id: &str, code: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(drop_id.as_bytes());
    digest.update(b"\n");
    digest.update(code.trim().to_ascii_uppercase().as_bytes());
    digest.finalize().into()
}

/// A fresh code: 16 characters of Crockford's base32 (80 random bits) in four groups.
pub fn generate() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let bytes: [u8; 16] = rand::random();
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A stored code's limits, as a hold checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLimits {
    pub max_uses: i64,
    pub uses: i64,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
}

/// Whether a hold at `now_ms` may use the code.
pub fn check_use(
    limits: CodeLimits,
    now_ms: i64,
    drop_id: &str,
    tier: &str,
) -> Result<(), Refusal> {
    let invalid = |reason: &str| Refusal::CodeInvalid {
        drop_id: drop_id.to_owned(),
        reason: reason.to_owned(),
    };
    if limits.valid_from.is_some_and(|from| now_ms < from) {
        return Err(invalid("the code is not valid yet"));
    }
    if limits.valid_until.is_some_and(|until| now_ms >= until) {
        return Err(invalid("the code is no longer valid"));
    }
    if limits.uses >= limits.max_uses {
        return Err(Refusal::CodeUsedUp {
            drop_id: drop_id.to_owned(),
            tier: tier.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kept_as_hashes_of_the_drop_and_the_code_as_typed() {
        let code = generate();
        assert_eq!(code.len(), 19);
        assert_eq!(
            code_hash("d", &code),
            code_hash("d", &format!(" {} ", code.to_lowercase()))
        );
        assert_ne!(code_hash("d", &code), code_hash("e", &code));
        assert_ne!(generate(), code);
    }

    #[test]
    fn a_code_works_inside_its_window_until_used_up() {
        let limits = CodeLimits {
            max_uses: 2,
            uses: 1,
            valid_from: Some(100),
            valid_until: Some(200),
        };
        assert!(check_use(limits, 150, "d", "t").is_ok());
        assert_eq!(
            check_use(limits, 99, "d", "t").map_err(|r| r.code()),
            Err("code-invalid")
        );
        assert_eq!(
            check_use(limits, 200, "d", "t").map_err(|r| r.code()),
            Err("code-invalid")
        );
        let used = CodeLimits { uses: 2, ..limits };
        assert_eq!(
            check_use(used, 150, "d", "t").map_err(|r| r.code()),
            Err("code-used-up")
        );
    }
}

//! Identifiers, each parsed once at the edge so the rest of the code can trust them.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// For values read back from the database, which were validated on the way in.
            pub fn from_trusted(value: String) -> Self {
                Self(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A drop's slug: `aj1-chicago`.
    DropId
);
string_id!(
    /// A SKU code, unique within its drop: `AJ1-42`.
    SkuCode
);
string_id!(
    /// The `sub` of a buyer's token.
    BuyerId
);
string_id!(HoldId);
string_id!(OrderId);
string_id!(
    /// A client-chosen key that makes a retried request safe.
    IdempotencyKey
);

impl DropId {
    /// Lowercase letters, digits and inner dashes, 1 to 64 characters: safe in URLs and logs.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "drop id {text:?} must be 1-64 lowercase letters, digits or inner dashes"
            ))
        }
    }
}

impl SkuCode {
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "sku {text:?} must be 1-64 letters, digits, '-', '_' or '.'"
            ))
        }
    }
}

impl BuyerId {
    pub fn parse(text: &str) -> Result<Self, String> {
        if (1..=128).contains(&text.len()) && !text.chars().any(char::is_control) {
            Ok(Self(text.to_owned()))
        } else {
            Err("token subject must be 1-128 characters without control characters".to_owned())
        }
    }
}

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, String> {
        if (1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(text.to_owned()))
        } else {
            Err("Idempotency-Key must be 1-255 visible ASCII characters".to_owned())
        }
    }
}

impl HoldId {
    /// Time-ordered, so holds sort by creation in indexes and logs.
    pub fn generate() -> Self {
        Self(format!("hld_{}", uuid::Uuid::now_v7().simple()))
    }
}

impl OrderId {
    pub fn generate() -> Self {
        Self(format!("ord_{}", uuid::Uuid::now_v7().simple()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_ids_are_url_safe_slugs() {
        assert!(DropId::parse("aj1-chicago").is_ok());
        assert!(DropId::parse("AJ1").is_err());
        assert!(DropId::parse("-x").is_err());
        assert!(DropId::parse("").is_err());
        assert!(DropId::parse(&"a".repeat(65)).is_err());
        assert!(DropId::parse("a/b").is_err());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse("8e03978e-40d5-43e8-bc93-6894a57f9324").is_ok());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("").is_err());
    }
}

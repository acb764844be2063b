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

/// What a hold id names: a numbered hold (its row, the secret that must match, and the box that
/// made it), or a hold made before holds were numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldRef<'a> {
    Numbered {
        box_id: Option<&'a str>,
        seq: i64,
        secret: i64,
    },
    Legacy(&'a str),
}

impl HoldId {
    /// `hld_[<box>_]<seq hex>-<secret hex>`; the database derives the same text (`holds.id`).
    pub fn numbered(box_id: Option<&str>, seq: i64, secret: i64) -> Self {
        match box_id {
            Some(b) => Self(format!("hld_{b}_{seq:x}-{secret:016x}")),
            None => Self(format!("hld_{seq:x}-{secret:016x}")),
        }
    }

    /// A random secret for a new hold: 63 bits, so it stays a positive SQLite integer.
    pub fn new_secret() -> i64 {
        (rand::random::<u64>() >> 1) as i64
    }

    pub fn parse_ref(&self) -> HoldRef<'_> {
        Self::numbered_parts(&self.0).unwrap_or(HoldRef::Legacy(&self.0))
    }

    fn numbered_parts(text: &str) -> Option<HoldRef<'_>> {
        let rest = text.strip_prefix("hld_")?;
        let (box_id, rest) = match rest.split_once('_') {
            Some((b, rest)) => (Some(b), rest),
            None => (None, rest),
        };
        let (seq, secret) = rest.split_once('-')?;
        let hex = |t: &str| {
            (1..=16).contains(&t.len()) && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(seq) || secret.len() != 16 || !hex(secret) {
            return None;
        }
        Some(HoldRef::Numbered {
            box_id,
            seq: i64::from_str_radix(seq, 16).ok()?,
            secret: i64::from_str_radix(secret, 16).ok()?,
        })
    }
}

/// A box id (`--box-id`): 1-16 lowercase letters or digits, so it reads cleanly inside ids.
pub fn parse_box_id(text: &str) -> Result<String, String> {
    if (1..=16).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "box id {text:?} must be 1-16 lowercase letters or digits"
        ))
    }
}

impl OrderId {
    /// `ord_[<box>_]<uuid v7>`: like a hold's, an order's id names the box that made it, so a
    /// proxy can route `GET /v1/orders/{order}` to it.
    pub fn generate(box_id: Option<&str>) -> Self {
        match box_id {
            Some(b) => Self(format!("ord_{b}_{}", uuid::Uuid::now_v7().simple())),
            None => Self(format!("ord_{}", uuid::Uuid::now_v7().simple())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_carry_the_box_that_made_them() {
        assert!(OrderId::generate(Some("eu1"))
            .as_str()
            .starts_with("ord_eu1_"));
        let plain = OrderId::generate(None);
        assert_eq!(plain.as_str().len(), "ord_".len() + 32);
    }

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
    fn numbered_hold_ids_round_trip_and_old_ids_stay_legacy() {
        for box_id in [None, Some("eu1")] {
            let id = HoldId::numbered(box_id, 0x2a, 0x7fff_ffff_ffff_ffff);
            assert_eq!(
                id.parse_ref(),
                HoldRef::Numbered {
                    box_id,
                    seq: 42,
                    secret: i64::MAX
                }
            );
        }
        assert_eq!(
            HoldId::numbered(None, 255, 1).as_str(),
            "hld_ff-0000000000000001"
        );
        let old = HoldId::from_trusted("hld_0190c1c2d3e4f5a6b7c8d9e0f1a2b3c4".into());
        assert!(matches!(old.parse_ref(), HoldRef::Legacy(_)));
        let bad = HoldId::from_trusted("hld_1-xyz".into());
        assert!(matches!(bad.parse_ref(), HoldRef::Legacy(_)));
        assert!(parse_box_id("eu1").is_ok());
        assert!(parse_box_id("EU").is_err());
        assert!(parse_box_id("a_b").is_err());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse("8e03978e-40d5-43e8-bc93-6894a57f9324").is_ok());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("").is_err());
    }
}

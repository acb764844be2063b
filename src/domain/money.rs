//! Money is an integer count of minor units plus an ISO 4217 currency: no floats anywhere.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "currency {text:?} must be a three-letter ISO 4217 code such as EUR"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_trusted(value: String) -> Self {
        Self(value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Minor units (cents).
    pub amount: i64,
    /// ISO 4217.
    #[schema(value_type = String, pattern = "^[A-Z]{3}$")]
    pub currency: Currency,
}

impl Money {
    /// The price of `quantity` units, or `None` if it would not fit.
    pub fn times(&self, quantity: i64) -> Option<Money> {
        Some(Money {
            amount: self.amount.checked_mul(quantity)?,
            currency: self.currency.clone(),
        })
    }
}

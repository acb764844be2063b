//! The shapes the API speaks, as plain data. Input specs reject unknown fields; outputs are what
//! the store returns and what an idempotency record replays.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::clock::serde_rfc3339;
use crate::domain::queue::{Admission, Mode};
use crate::domain::{DropState, Money};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSku {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub price: Money,
    #[schema(minimum = 0)]
    pub stock: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDrop {
    /// Lowercase letters, digits and inner dashes: the drop's address.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(with = "serde_rfc3339")]
    pub starts_at: DateTime<Utc>,
    #[serde(with = "serde_rfc3339")]
    pub ends_at: DateTime<Utc>,
    #[schema(minimum = 1, maximum = 1000)]
    pub per_buyer_limit: i64,
    /// How long a hold keeps its units before they go back on sale.
    #[schema(minimum = 10, maximum = 86400)]
    pub hold_seconds: i64,
    #[schema(min_items = 1, max_items = 200)]
    pub skus: Vec<NewSku>,
    /// `fcfs` (the default): first come, first served. `queue`: buyers join before the start,
    /// are ordered by a seeded draw at the start and admitted at `admission_rate` per second.
    #[serde(default)]
    pub mode: Mode,
    /// Buyers admitted per second (`queue` only, and required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100000)]
    pub admission_rate: Option<i64>,
    /// How long an admitted buyer may place holds (`queue` only; 300 unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 30, maximum = 3600)]
    pub admission_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuPricePatch {
    pub sku: String,
    pub price: Money,
}

/// Admin changes to a drop; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DropPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default, with = "opt_rfc3339")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, with = "opt_rfc3339")]
    pub ends_at: Option<DateTime<Utc>>,
    pub per_buyer_limit: Option<i64>,
    pub hold_seconds: Option<i64>,
    /// `paused`, `live` (resume, or start now) or `closed` (for good).
    #[schema(schema_with = patch_state)]
    pub state: Option<DropState>,
    /// New prices for some SKUs; an order takes its SKU's price at confirmation.
    pub prices: Option<Vec<SkuPricePatch>>,
    /// A queue drop's admission rate from now on (buyers per second; 0 admits nobody).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100000)]
    pub admission_rate: Option<i64>,
    /// Pauses (`true`) or resumes a queue drop's admission; the serving number stays put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_paused: Option<bool>,
    /// A new mode, before the drop starts and before anyone joined its queue or entered its
    /// draw (`queue` needs `admission_rate` in the same patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Sku)]
pub struct SkuView {
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub stock: i64,
    /// Units a buyer can hold now: stock less held, sold and reserved.
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    /// Units still set aside for access-code tiers (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Drop)]
pub struct DropView {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(with = "serde_rfc3339")]
    pub starts_at: DateTime<Utc>,
    #[serde(with = "serde_rfc3339")]
    pub ends_at: DateTime<Utc>,
    pub per_buyer_limit: i64,
    pub hold_seconds: i64,
    pub state: DropState,
    /// Grows with every committed change; the `ETag` and the live stream's event ids.
    pub version: i64,
    /// Grows only with admin edits of the drop's settings (never with a sale): what `PATCH`'s
    /// `If-Match` is checked against.
    pub revision: i64,
    pub skus: Vec<SkuView>,
    pub mode: Mode,
    /// A queue drop's queue (absent for `fcfs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueView>,
    /// A raffle's draw (`mode: draw` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<DrawView>,
}

/// A raffle's public draw: its commitment from the open, its seed and winners once drawn at the
/// start, so anyone can recompute the winners from the ledger's `enter` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Draw)]
pub struct DrawView {
    /// SHA-256 (hex) of the seed, published when the drop opened for entries.
    pub commitment: String,
    /// Entries so far (one per buyer and SKU).
    pub entered: i64,
    /// The seed (hex), revealed at the draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub drawn_at: Option<DateTime<Utc>>,
    /// Entries that won units, once drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winners: Option<i64>,
}

/// A queue drop's public queue: its commitment from the start, its seed once drawn, and what
/// the serving number follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Queue)]
pub struct QueueView {
    /// Buyers admitted per second.
    pub admission_rate: i64,
    pub admission_paused: bool,
    /// How long an admitted buyer may place holds.
    pub admission_seconds: i64,
    /// Buyers in the queue.
    pub joined: i64,
    /// SHA-256 (hex) of the seed, published when the queue opened.
    pub commitment: String,
    /// The seed (hex), revealed when the places were drawn at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub seeded_at: Option<DateTime<Utc>>,
    /// The serving number's history (see `domain::queue::Admission`); not part of the API.
    #[serde(skip)]
    #[schema(ignore)]
    pub admission: Admission,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Active,
    Confirmed,
    Released,
    Expired,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Active => "active",
            HoldState::Confirmed => "confirmed",
            HoldState::Released => "released",
            HoldState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(HoldState::Active),
            "confirmed" => Some(HoldState::Confirmed),
            "released" => Some(HoldState::Released),
            "expired" => Some(HoldState::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Hold)]
pub struct HoldView {
    pub hold_id: String,
    pub drop_id: String,
    pub sku: String,
    pub quantity: i64,
    /// The order in which the writer took this drop's attempts: first come, first served.
    pub attempt_seq: i64,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_rfc3339")]
    pub expires_at: DateTime<Utc>,
    pub state: HoldState,
    /// Once confirmed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(required = false, nullable = false)]
    pub order_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    pub order_id: String,
    pub hold_id: String,
    pub drop_id: String,
    pub sku: String,
    pub buyer: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub total: Money,
    pub payment_ref: String,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A patch may move a drop to these states only; `scheduled` comes from the clock.
fn patch_state() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["paused", "live", "closed"]))
        .build()
}

pub(crate) mod opt_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&crate::domain::clock::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

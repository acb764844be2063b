//! The shapes of what streams carry, which no handler returns as a value: the live events
//! (`text/event-stream`, each `data` one line of JSON) and the operator's stats. The events
//! are written by `events::` and `http::admin`; a test reads a real stream and checks every
//! message against these schemas.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{DropState, Money};

/// `stock`: the SKUs whose available count moved since the last message.
#[derive(ToSchema)]
#[allow(dead_code)] // a shape for the document; the stream writes it as JSON directly
pub struct StockEvent {
    pub version: i64,
    pub skus: Vec<SkuAvailable>,
}

/// `queue`: a queue drop's serving number, once a second; a page's position is
/// `place - 1 - serving` and its wait `ceil(position / admission_rate)`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct QueueEvent {
    pub drop_id: String,
    pub serving: i64,
    pub admission_rate: i64,
    pub admission_paused: bool,
    pub joined: i64,
    /// Whether the start drew the places yet.
    pub seeded: bool,
    #[schema(format = DateTime)]
    pub at: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SkuAvailable {
    pub sku: String,
    pub available: i64,
}

/// `drop`: the drop's fields that changed (only those), with its version and state.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DropEvent {
    pub version: i64,
    pub state: DropState,
    #[schema(required = false, nullable = false)]
    pub name: Option<String>,
    #[schema(required = false, nullable = false)]
    pub description: Option<String>,
    #[schema(required = false, nullable = false, format = DateTime)]
    pub starts_at: Option<String>,
    #[schema(required = false, nullable = false, format = DateTime)]
    pub ends_at: Option<String>,
    #[schema(required = false, nullable = false)]
    pub per_buyer_limit: Option<i64>,
    /// A raffle's draw: entries counted, then its seed and winners.
    #[schema(required = false, nullable = false)]
    pub draw: Option<crate::domain::views::DrawView>,
    /// A new mode (changed before the start): the page shows the drop again.
    #[schema(required = false, nullable = false)]
    pub mode: Option<crate::domain::queue::Mode>,
    #[schema(required = false, nullable = false)]
    pub hold_seconds: Option<i64>,
    /// Every SKU, when a name or price changed.
    #[schema(required = false, nullable = false)]
    pub skus: Option<Vec<SkuLabel>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SkuLabel {
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub available: i64,
}

/// The operator page's figures, once a second.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OperatorStats {
    #[schema(format = DateTime)]
    pub at: String,
    /// Attempts by outcome since the server started.
    #[schema(value_type = Object, additional_properties)]
    pub attempts: std::collections::BTreeMap<String, u64>,
    pub batches: u64,
    pub batched_commands: u64,
    pub wal_bytes_written: u64,
    pub queue_depth: i64,
    pub sse_subscribers: u64,
    pub sse_tick_ms: u64,
    /// Since the replica last confirmed a sync; null without a replica or before the first.
    pub replica_lag_ms: Option<u64>,
    pub drops: Vec<OperatorDrop>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OperatorDrop {
    pub id: String,
    pub name: String,
    pub version: i64,
    pub state: DropState,
    pub skus: Vec<OperatorSku>,
    /// A queue drop's queue, as of the message.
    pub queue: Option<OperatorQueue>,
    /// A raffle's draw, as of the message.
    pub draw: Option<crate::domain::views::DrawView>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OperatorQueue {
    pub joined: i64,
    pub serving: i64,
    pub admission_rate: i64,
    pub admission_paused: bool,
    pub seeded: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OperatorSku {
    pub sku: String,
    pub stock: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    /// Buyers on the SKU's waiting list.
    pub waiting: i64,
}

/// One event as a webhook receives it (`seq` only in the export, where it is the position).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OutboxLine {
    #[schema(required = false, nullable = false)]
    pub seq: Option<i64>,
    /// Unique per event: receivers deduplicate by it (delivery is at least once).
    pub id: String,
    /// `hold.created`, `hold.expired`, `hold.released`, `order.created`, `drop.sold_out`,
    /// `drop.state_changed`, `stock.adjusted`, `checkout.requested`, `waitlist.offered`,
    /// `draw.won` or `draw.lost`.
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub drop_id: String,
    /// The drop's version once the change committed.
    pub version: i64,
    /// What changed; its members depend on `type` (see docs/design.md, Outbox).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// One server-sent event named `name` whose `data` is `data`.
fn event(name: &str, data: &str, id: bool) -> ObjectBuilder {
    let mut event = ObjectBuilder::new()
        .property(
            "event",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([name])),
        )
        .required("event")
        .property("data", Ref::from_schema_name(data))
        .required("data");
    if id {
        event = event
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "the drop's version: send it back as Last-Event-ID to resume",
                    )),
            )
            .required("id");
    }
    event
}

/// On the wire an event's `data` is text: JSON Schema says so with `contentMediaType` and
/// `contentSchema`, which utoipa's builders lack, so the events are written with the payload's
/// schema in `data` and turned into that here.
pub fn data_as_text(doc: &mut serde_json::Value) {
    for name in [LiveEvent::name(), OperatorEvent::name()] {
        let Some(schema) = doc
            .pointer_mut(&format!("/components/schemas/{name}"))
            .map(std::mem::take)
        else {
            continue;
        };
        let mut schema = schema;
        let variants: Vec<&mut serde_json::Value> = match schema.get_mut("oneOf") {
            Some(serde_json::Value::Array(items)) => items.iter_mut().collect(),
            _ => vec![&mut schema],
        };
        for variant in variants {
            if let Some(data) = variant.pointer_mut("/properties/data") {
                if data.get("$ref").is_some() {
                    let payload = std::mem::take(data);
                    *data = serde_json::json!({
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": payload,
                    });
                }
            }
        }
        if let Some(slot) = doc.pointer_mut(&format!("/components/schemas/{name}")) {
            *slot = schema;
        }
    }
}

/// A message of `GET /v1/drops/{drop}/events`.
pub struct LiveEvent;

impl PartialSchema for LiveEvent {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "One server-sent event: `event` names it, `data` is its JSON on one line. The \
                 stream opens with `retry` and a `snapshot` (or, resuming at the current \
                 version, a `drop` with the state), then sends `stock` and `drop` as commits \
                 change the drop (coalesced, at most a few a second; a sell-out at once), \
                 `ledger` with the drop's signed chain head about once a second while it \
                 moves, `queue` once a second on a queue drop, and `: keep-alive` comments \
                 when idle.",
            ))
            .item(event("snapshot", "Drop", true))
            .item(event("stock", "StockEvent", true))
            .item(event("drop", "DropEvent", true))
            .item(event("ledger", "SignedHead", true))
            .item(event("queue", "QueueEvent", true))
            .item(
                ObjectBuilder::new()
                    .property(
                        "retry",
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .description(Some("milliseconds to wait before reconnecting")),
                    )
                    .required("retry"),
            )
            .into()
    }
}

impl ToSchema for LiveEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("LiveEvent")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.extend([
            (StockEvent::name().into(), StockEvent::schema()),
            (SkuAvailable::name().into(), SkuAvailable::schema()),
            (DropEvent::name().into(), DropEvent::schema()),
            (SkuLabel::name().into(), SkuLabel::schema()),
            (QueueEvent::name().into(), QueueEvent::schema()),
        ]);
    }
}

/// A message of `GET /v1/me/events`: the outbox event's type and `data`.
pub struct BuyerEvent;

impl PartialSchema for BuyerEvent {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "News about one of your holds; `data` is the event's JSON",
            ))
            .item(
                ObjectBuilder::new()
                    .property(
                        "event",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some([
                                "hold.created",
                                "hold.expired",
                                "hold.released",
                                "order.created",
                                "checkout.requested",
                                "waitlist.offered",
                                "draw.won",
                                "draw.lost",
                            ])),
                    )
                    .required("event")
                    .property(
                        "data",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .content_media_type("application/json"),
                    )
                    .required("data"),
            )
            .item(
                ObjectBuilder::new()
                    .property("retry", ObjectBuilder::new().schema_type(Type::Integer))
                    .required("retry"),
            )
            .into()
    }
}

impl ToSchema for BuyerEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("BuyerEvent")
    }
}

/// A message of `GET /v1/admin/events`.
pub struct OperatorEvent;

impl PartialSchema for OperatorEvent {
    fn schema() -> RefOr<Schema> {
        event("stats", "OperatorStats", false)
            .description(Some("One `stats` event a second"))
            .into()
    }
}

impl ToSchema for OperatorEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OperatorEvent")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.extend([
            (OperatorStats::name().into(), OperatorStats::schema()),
            (OperatorDrop::name().into(), OperatorDrop::schema()),
            (OperatorQueue::name().into(), OperatorQueue::schema()),
            (OperatorSku::name().into(), OperatorSku::schema()),
        ]);
    }
}

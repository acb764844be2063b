//! The rules of a drop, free of I/O: what state a drop is in, whether a hold may be placed,
//! how units move between available, held and sold. The store calls these rules inside the
//! writer's transaction; the property tests call them directly.

pub mod access_codes;
pub mod clock;
pub mod draw;
pub mod drop;
pub mod ids;
pub mod inventory;
pub mod ledger;
pub mod money;
pub mod outbox;
pub mod queue;
pub mod refusal;
pub mod replay;
pub mod views;
pub mod waitlist;

pub use clock::{Clock, ManualClock, SystemClock};
pub use drop::{DropSchedule, DropState, OverrideState};
pub use ids::{parse_box_id, BuyerId, DropId, HoldId, HoldRef, IdempotencyKey, OrderId, SkuCode};
pub use inventory::{Allowance, SkuStock};
pub use money::{Currency, Money};
pub use refusal::Refusal;

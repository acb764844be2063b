//! A drop's state comes from its schedule and the clock, unless an admin paused or closed it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::views::DropView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DropState {
    Scheduled,
    Live,
    Paused,
    Closed,
}

impl DropState {
    pub fn as_str(self) -> &'static str {
        match self {
            DropState::Scheduled => "scheduled",
            DropState::Live => "live",
            DropState::Paused => "paused",
            DropState::Closed => "closed",
        }
    }
}

/// What an admin set on top of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideState {
    Paused,
    Closed,
}

impl OverrideState {
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideState::Paused => "paused",
            OverrideState::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "paused" => Some(OverrideState::Paused),
            "closed" => Some(OverrideState::Closed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropSchedule {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub override_state: Option<OverrideState>,
}

impl DropSchedule {
    pub fn state_at(&self, now: DateTime<Utc>) -> DropState {
        match self.override_state {
            Some(OverrideState::Closed) => DropState::Closed,
            _ if now >= self.ends_at => DropState::Closed,
            Some(OverrideState::Paused) => DropState::Paused,
            None if now < self.starts_at => DropState::Scheduled,
            None => DropState::Live,
        }
    }
}

impl DropSchedule {
    /// The schedule after an admin sets the drop's state to `target` at `now`, from `from` (the
    /// state they saw). Closed is final; going live before the start means starting now.
    pub fn set_state(
        self,
        from: DropState,
        target: DropState,
        now: DateTime<Utc>,
    ) -> Result<DropSchedule, crate::domain::Refusal> {
        let refuse = || crate::domain::Refusal::InvalidTransition {
            from: from.as_str().to_owned(),
            to: target.as_str().to_owned(),
        };
        match (from, target) {
            (DropState::Closed, t) if t != DropState::Closed => Err(refuse()),
            (_, DropState::Paused) => Ok(DropSchedule {
                override_state: Some(OverrideState::Paused),
                ..self
            }),
            (_, DropState::Closed) => Ok(DropSchedule {
                override_state: Some(OverrideState::Closed),
                ..self
            }),
            (_, DropState::Live) => Ok(DropSchedule {
                override_state: None,
                starts_at: self.starts_at.min(now),
                ..self
            }),
            (_, DropState::Scheduled) => Err(refuse()),
        }
    }
}

impl DropView {
    /// The state the schedule gives this view at `now`: the view's state was computed when it
    /// was read, and the clock moves a drop from scheduled to live to closed without a commit.
    /// An admin's pause or close is kept (the one rule is `DropSchedule::state_at`).
    pub fn state_at(&self, now: DateTime<Utc>) -> DropState {
        let override_state = match self.state {
            DropState::Closed => Some(OverrideState::Closed),
            DropState::Paused => Some(OverrideState::Paused),
            DropState::Scheduled | DropState::Live => None,
        };
        DropSchedule {
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            override_state,
        }
        .state_at(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn schedule(override_state: Option<OverrideState>) -> (DropSchedule, DateTime<Utc>) {
        let start = DateTime::parse_from_rfc3339("2026-12-01T18:00:00Z")
            .expect("valid literal")
            .with_timezone(&Utc);
        (
            DropSchedule {
                starts_at: start,
                ends_at: start + Duration::hours(2),
                override_state,
            },
            start,
        )
    }

    #[test]
    fn a_drop_follows_its_schedule_without_overrides() {
        let (s, start) = schedule(None);
        assert_eq!(
            s.state_at(start - Duration::seconds(1)),
            DropState::Scheduled
        );
        assert_eq!(s.state_at(start), DropState::Live);
        assert_eq!(s.state_at(start + Duration::hours(2)), DropState::Closed);
    }

    #[test]
    fn a_paused_drop_stays_paused_until_its_end() {
        let (s, start) = schedule(Some(OverrideState::Paused));
        assert_eq!(s.state_at(start - Duration::hours(1)), DropState::Paused);
        assert_eq!(s.state_at(start + Duration::minutes(5)), DropState::Paused);
        assert_eq!(s.state_at(start + Duration::hours(3)), DropState::Closed);
    }

    #[test]
    fn a_closed_drop_is_closed_at_any_time() {
        let (s, start) = schedule(Some(OverrideState::Closed));
        assert_eq!(s.state_at(start - Duration::hours(1)), DropState::Closed);
        assert_eq!(s.state_at(start + Duration::minutes(5)), DropState::Closed);
    }
}

pub mod rules {
    //! What a well-formed drop looks like; checked before anything reaches the writer.

    use std::collections::HashSet;

    use crate::domain::inventory::MAX_STOCK;
    use crate::domain::queue::{Mode, MAX_ADMISSION_RATE};
    use crate::domain::views::{DropPatch, NewDrop};
    use crate::domain::{Currency, DropId, Refusal, SkuCode};

    pub const MAX_PER_BUYER_LIMIT: i64 = 1_000;
    pub const MIN_HOLD_SECONDS: i64 = 10;
    pub const MAX_HOLD_SECONDS: i64 = 86_400;
    pub const MAX_SKUS: usize = 200;
    pub const MAX_PAYMENT_REF: usize = 255;

    fn check_name(field: &str, value: &str, max: usize, allow_empty: bool) -> Result<(), Refusal> {
        let len = value.chars().count();
        if (!allow_empty && value.trim().is_empty()) || len > max {
            return Err(Refusal::invalid(format!(
                "{field} must be {}at most {max} characters",
                if allow_empty { "" } else { "non-empty and " }
            )));
        }
        Ok(())
    }

    fn check_limit(limit: i64) -> Result<(), Refusal> {
        if !(1..=MAX_PER_BUYER_LIMIT).contains(&limit) {
            return Err(Refusal::invalid(format!(
                "per_buyer_limit must be between 1 and {MAX_PER_BUYER_LIMIT}"
            )));
        }
        Ok(())
    }

    fn check_hold_seconds(seconds: i64) -> Result<(), Refusal> {
        if !(MIN_HOLD_SECONDS..=MAX_HOLD_SECONDS).contains(&seconds) {
            return Err(Refusal::invalid(format!(
                "hold_seconds must be between {MIN_HOLD_SECONDS} and {MAX_HOLD_SECONDS}"
            )));
        }
        Ok(())
    }

    fn check_price(sku: &str, amount: i64, currency: &Currency) -> Result<(), Refusal> {
        Currency::parse(currency.as_str()).map_err(Refusal::invalid)?;
        if !(0..=MAX_STOCK * 1_000).contains(&amount) {
            return Err(Refusal::invalid(format!(
                "price of {sku} must be a non-negative number of minor units"
            )));
        }
        Ok(())
    }

    pub fn check_new_drop(spec: &NewDrop) -> Result<(), Refusal> {
        DropId::parse(&spec.id).map_err(Refusal::invalid)?;
        check_name("name", &spec.name, 200, false)?;
        check_name("description", &spec.description, 5_000, true)?;
        if spec.ends_at <= spec.starts_at {
            return Err(Refusal::invalid("ends_at must be after starts_at"));
        }
        check_limit(spec.per_buyer_limit)?;
        check_hold_seconds(spec.hold_seconds)?;
        check_queue(spec)?;
        if spec.skus.is_empty() || spec.skus.len() > MAX_SKUS {
            return Err(Refusal::invalid(format!(
                "a drop needs between 1 and {MAX_SKUS} skus"
            )));
        }
        let mut seen = HashSet::new();
        for sku in &spec.skus {
            SkuCode::parse(&sku.sku).map_err(Refusal::invalid)?;
            if !seen.insert(sku.sku.as_str()) {
                return Err(Refusal::invalid(format!("sku {} appears twice", sku.sku)));
            }
            check_name("sku name", &sku.name, 200, false)?;
            check_price(&sku.sku, sku.price.amount, &sku.price.currency)?;
            if !(0..=MAX_STOCK).contains(&sku.stock) {
                return Err(Refusal::invalid(format!(
                    "stock of {} must be between 0 and {MAX_STOCK}",
                    sku.sku
                )));
            }
        }
        Ok(())
    }

    pub fn check_patch(patch: &DropPatch) -> Result<(), Refusal> {
        if let Some(name) = &patch.name {
            check_name("name", name, 200, false)?;
        }
        if let Some(description) = &patch.description {
            check_name("description", description, 5_000, true)?;
        }
        if let Some(limit) = patch.per_buyer_limit {
            check_limit(limit)?;
        }
        if let Some(seconds) = patch.hold_seconds {
            check_hold_seconds(seconds)?;
        }
        for price in patch.prices.iter().flatten() {
            check_price(&price.sku, price.price.amount, &price.price.currency)?;
        }
        if let Some(rate) = patch.admission_rate {
            check_rate(rate, 0)?;
        }
        Ok(())
    }

    fn check_rate(rate: i64, least: i64) -> Result<(), Refusal> {
        if !(least..=MAX_ADMISSION_RATE).contains(&rate) {
            return Err(Refusal::invalid(format!(
                "admission_rate must be between {least} and {MAX_ADMISSION_RATE} buyers per second"
            )));
        }
        Ok(())
    }

    fn check_queue(spec: &NewDrop) -> Result<(), Refusal> {
        match spec.mode {
            Mode::Fcfs | Mode::Draw => {
                if spec.admission_rate.is_some() || spec.admission_seconds.is_some() {
                    return Err(Refusal::invalid(
                        "admission_rate and admission_seconds apply only to queue drops (mode: queue)",
                    ));
                }
            }
            Mode::Queue => {
                let Some(rate) = spec.admission_rate else {
                    return Err(Refusal::invalid(
                        "a queue drop needs admission_rate (buyers admitted per second)",
                    ));
                };
                check_rate(rate, 1)?;
                if let Some(seconds) = spec.admission_seconds {
                    if !(30..=3600).contains(&seconds) {
                        return Err(Refusal::invalid(
                            "admission_seconds must be between 30 and 3600",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn check_payment_ref(payment_ref: &str) -> Result<(), Refusal> {
        if payment_ref.is_empty()
            || payment_ref.len() > MAX_PAYMENT_REF
            || payment_ref.chars().any(char::is_control)
        {
            return Err(Refusal::invalid(format!(
                "payment_ref must be 1-{MAX_PAYMENT_REF} characters without control characters"
            )));
        }
        Ok(())
    }
}

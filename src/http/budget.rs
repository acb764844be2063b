//! Per-request database budgets: how many SQL statements, and how much time in SQLite, a
//! request of a route may cost before it is reported (`--request-budget`). A request over its
//! budget is answered as usual; it logs a warning with its route, request id and figures, and
//! counts in `dropd_http_over_budget_total{route}`.

use std::collections::HashMap;
use std::time::Duration;

use crate::store::cost::Cost;

/// The most a request may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub statements: u32,
    pub time: Duration,
}

/// The budget of every route: a default, and routes (by template) with budgets of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    default: Budget,
    routes: HashMap<String, Budget>,
}

impl Default for Budgets {
    fn default() -> Self {
        Self::parse(crate::defaults::REQUEST_BUDGET).unwrap_or(Budgets {
            default: Budget {
                statements: 50,
                time: Duration::from_millis(50),
            },
            routes: HashMap::new(),
        })
    }
}

impl Budgets {
    /// `*=50/50ms,/v1/drops/{drop}/holds=6/5ms`: `ROUTE=STATEMENTS/TIME` entries, `*` for every
    /// route without its own.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut default = None;
        let mut routes = HashMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (route, limits) = entry.split_once('=').ok_or_else(|| {
                format!("{entry:?}: a budget is ROUTE=STATEMENTS/TIME, for example *=50/50ms")
            })?;
            let (statements, time) = limits.split_once('/').ok_or_else(|| {
                format!("{entry:?}: a budget is ROUTE=STATEMENTS/TIME, for example *=50/50ms")
            })?;
            let budget = Budget {
                statements: statements
                    .trim()
                    .parse()
                    .map_err(|_| format!("{entry:?}: {statements:?} is not a statement count"))?,
                time: humantime::parse_duration(time.trim())
                    .map_err(|e| format!("{entry:?}: {time:?} is not a duration ({e})"))?,
            };
            match route.trim() {
                "*" => default = Some(budget),
                r if r.starts_with('/') => {
                    routes.insert(r.to_owned(), budget);
                }
                r => {
                    return Err(format!(
                        "{r:?} is not a route template (as /v1/drops/{{drop}}/holds) or *"
                    ))
                }
            }
        }
        let default = default.unwrap_or_else(|| Budgets::default().default);
        Ok(Budgets { default, routes })
    }

    pub fn of(&self, route: &str) -> Budget {
        self.routes.get(route).copied().unwrap_or(self.default)
    }

    /// The budget `cost` exceeds on `route`, if it exceeds it.
    pub fn exceeded(&self, route: &str, cost: Cost) -> Option<Budget> {
        let budget = self.of(route);
        (cost.statements > budget.statements || cost.time > budget.time).then_some(budget)
    }

    /// As `--request-budget` spells it (for `dropd config`).
    pub fn spec(&self) -> String {
        let show = |b: &Budget| format!("{}/{}", b.statements, humantime::format_duration(b.time));
        let mut routes: Vec<_> = self.routes.iter().collect();
        routes.sort_by_key(|(route, _)| *route);
        std::iter::once(format!("*={}", show(&self.default)))
            .chain(routes.into_iter().map(|(r, b)| format!("{r}={}", show(b))))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_has_its_own_budget_or_the_default() {
        let budgets = Budgets::parse("*=10/20ms, /v1/drops/{drop}/holds=3/1ms").expect("parses");
        let holds = "/v1/drops/{drop}/holds";
        assert_eq!(budgets.of(holds).statements, 3);
        assert_eq!(budgets.of("/v1/orders").time, Duration::from_millis(20));
        let cost = |statements, ms| Cost {
            statements,
            time: Duration::from_millis(ms),
        };
        assert!(budgets.exceeded(holds, cost(4, 0)).is_some());
        assert!(budgets.exceeded(holds, cost(3, 2)).is_some());
        assert!(budgets.exceeded(holds, cost(3, 1)).is_none());
        assert_eq!(
            Budgets::parse(&budgets.spec()).expect("its own spelling parses"),
            budgets
        );
    }

    #[test]
    fn a_malformed_budget_says_what_is_wrong() {
        for bad in ["holds=3/1ms", "*=3", "*=x/1ms", "*=3/soon"] {
            assert!(Budgets::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Budgets::parse("").expect("empty is the default"),
            Budgets::default()
        );
    }
}

//! The adaptive tick: the ticker thread sends at most one message per drop per tick, and the
//! tick stretches as fan-out gets more expensive, so fan-out stays within its CPU budget. A SKU
//! that sells out wakes it early.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Hub;

pub const FASTEST_TICK: Duration = Duration::from_millis(100);
pub const SLOWEST_TICK: Duration = Duration::from_secs(1);

/// The tick that keeps a fan-out costing `fan_out` within `budget` of one core.
pub fn interval_for(fan_out: Duration, budget: f64) -> Duration {
    let budget = budget.clamp(0.01, 1.0);
    fan_out.div_f64(budget).clamp(FASTEST_TICK, SLOWEST_TICK)
}

/// Runs `hub`'s ticks on a thread of its own until the hub closes; `woken` brings urgent news
/// (and the close).
pub fn spawn(hub: Arc<Hub>, woken: Receiver<()>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("events-ticker".into())
        .spawn(move || {
            let mut interval = FASTEST_TICK;
            let mut last = Instant::now();
            while !hub.is_closed() {
                let wait = interval.saturating_sub(last.elapsed());
                let urgent = woken.recv_timeout(wait).is_ok();
                if hub.is_closed() {
                    break;
                }
                if urgent && last.elapsed() < interval && !hub.is_urgent() {
                    continue;
                }
                last = Instant::now();
                let took = hub.tick();
                interval = hub.next_interval(took);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_stretches_with_fan_out_cost_within_bounds() {
        assert_eq!(interval_for(Duration::from_micros(10), 0.25), FASTEST_TICK);
        assert_eq!(
            interval_for(Duration::from_millis(50), 0.25),
            Duration::from_millis(200)
        );
        assert_eq!(interval_for(Duration::from_secs(5), 0.25), SLOWEST_TICK);
        assert_eq!(
            interval_for(Duration::from_millis(50), 0.0),
            SLOWEST_TICK,
            "a budget of nothing still ticks once a second"
        );
    }
}

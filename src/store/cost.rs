//! What a request costs the database: the SQL statements it ran and the time it spent running
//! them, on a read connection or in the writer. SQLite counts the statements (its profile hook,
//! on every connection this process opens); the time is measured around the work itself (the
//! hook's own clock ticks in milliseconds, too coarse for statements of microseconds).
//!
//! Costs are charged to the request being served: the HTTP layer runs each request inside
//! [`scoped`], and reads and writer answers charge what they cost to it.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::Connection;

/// Statements run and time spent in SQLite.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub statements: u32,
    pub time: Duration,
}

impl std::ops::Add for Cost {
    type Output = Cost;

    fn add(self, other: Cost) -> Cost {
        Cost {
            statements: self.statements.saturating_add(other.statements),
            time: self.time + other.time,
        }
    }
}

thread_local! {
    /// Statements finished on this thread's connections (each thread uses one at a time).
    static STATEMENTS: Cell<u32> = const { Cell::new(0) };
    /// Where the command the writer runs now started: `(statements, instant)`.
    static STARTED: Cell<Option<(u32, Instant)>> = const { Cell::new(None) };
}

tokio::task_local! {
    static SPENT: Cell<Cost>;
}

fn on_statement(event: TraceEvent<'_>) {
    if let TraceEvent::Profile(..) = event {
        STATEMENTS.with(|s| s.set(s.get().wrapping_add(1)));
    }
}

/// Counts the statements `conn` runs.
pub fn watch(conn: &Connection) {
    conn.trace_v2(TraceEventCodes::SQLITE_TRACE_PROFILE, Some(on_statement));
}

fn statements() -> u32 {
    STATEMENTS.with(Cell::get)
}

/// Runs `work` (on this thread's connection) and what it cost.
pub fn measure<T>(work: impl FnOnce() -> T) -> (T, Cost) {
    let (before, started) = (statements(), Instant::now());
    let out = work();
    let cost = Cost {
        statements: statements().wrapping_sub(before),
        time: started.elapsed(),
    };
    (out, cost)
}

/// The writer starts a command.
pub(crate) fn start() {
    STARTED.with(|s| s.set(Some((statements(), Instant::now()))));
}

/// What the writer's command has cost since [`start`].
pub(crate) fn since_start() -> Cost {
    STARTED
        .with(Cell::get)
        .map_or_else(Cost::default, |(before, at)| Cost {
            statements: statements().wrapping_sub(before),
            time: at.elapsed(),
        })
}

/// Charges `cost` to the request being served, if any.
pub fn charge(cost: Cost) {
    let _ = SPENT.try_with(|spent| spent.set(spent.get() + cost));
}

/// Runs a request's future, and what it charged while it ran.
pub async fn scoped<F: Future>(request: F) -> (F::Output, Cost) {
    SPENT
        .scope(Cell::new(Cost::default()), async {
            let out = request.await;
            (out, SPENT.with(Cell::get))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_counted_per_piece_of_work() {
        let conn = Connection::open_in_memory().expect("in-memory db");
        watch(&conn);
        conn.execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("table");
        let ((), cost) = measure(|| {
            for i in 0..3 {
                conn.execute("INSERT INTO t VALUES (?1)", [i])
                    .expect("insert");
            }
        });
        assert_eq!(cost.statements, 3);
        let (n, cost) = measure(|| {
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .expect("count")
        });
        assert_eq!((n, cost.statements), (3, 1));
    }

    #[tokio::test]
    async fn charges_reach_the_request_they_were_made_for() {
        let cost = Cost {
            statements: 2,
            time: Duration::from_millis(1),
        };
        let ((), spent) = scoped(async {
            charge(cost);
            charge(cost);
        })
        .await;
        assert_eq!(spent.statements, 4);
        charge(cost); // outside any request: nobody to charge, no panic
    }
}

//! Savepoints inside the writer's batch transaction: one command's failure never undoes another's.

use rusqlite::Connection;

use crate::domain::Refusal;

use super::StoreError;

/// Why a command's savepoint was rolled back: the rules refused, or the database failed.
#[derive(Debug)]
pub(crate) enum Outcome {
    Refused(Refusal),
    Failed(StoreError),
}

impl From<Refusal> for Outcome {
    fn from(refusal: Refusal) -> Self {
        Outcome::Refused(refusal)
    }
}

impl From<StoreError> for Outcome {
    fn from(err: StoreError) -> Self {
        Outcome::Failed(err)
    }
}

impl From<rusqlite::Error> for Outcome {
    fn from(err: rusqlite::Error) -> Self {
        Outcome::Failed(err.into())
    }
}

impl From<serde_json::Error> for Outcome {
    fn from(err: serde_json::Error) -> Self {
        Outcome::Failed(err.into())
    }
}

impl Outcome {
    /// Splits into the answer a client gets (`Ok(Err(refusal))`) and a database failure.
    pub(crate) fn split<T>(result: Result<T, Outcome>) -> Result<Result<T, Refusal>, StoreError> {
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(Outcome::Refused(refusal)) => Ok(Err(refusal)),
            Err(Outcome::Failed(err)) => Err(err),
        }
    }
}

/// Runs `f` under a named savepoint, rolling back to it if `f` fails.
pub(crate) fn in_savepoint<T, E, F>(conn: &Connection, name: &str, f: F) -> Result<T, E>
where
    E: From<rusqlite::Error>,
    F: FnOnce(&Connection) -> Result<T, E>,
{
    conn.execute_batch(&format!("SAVEPOINT {name}"))?;
    match f(conn) {
        Ok(value) => {
            conn.execute_batch(&format!("RELEASE {name}"))?;
            Ok(value)
        }
        Err(err) => {
            conn.execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))?;
            Err(err)
        }
    }
}

//! How a command ends inside the writer's batch transaction.
//!
//! Commands decide before they write: every refusal is found before the first change, so a
//! refused command leaves nothing behind and needs no savepoint (savepoints copy every page the
//! batch already touched into a sub-journal, which made them the writer's largest cost). The
//! writer checks this with `total_changes` and treats a refusal that wrote as a failure.

use crate::domain::Refusal;

use super::StoreError;

/// Why a command did not produce its value: the rules refused, or the database failed.
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

/// Runs one command's effect and enforces "decide before writing".
pub(crate) fn decided<T>(
    conn: &rusqlite::Connection,
    effect: impl FnOnce(&rusqlite::Connection) -> Result<T, Outcome>,
) -> Result<Result<T, Refusal>, StoreError> {
    let before = conn.total_changes();
    let result = Outcome::split(effect(conn))?;
    if result.is_err() && conn.total_changes() != before {
        return Err(StoreError::Internal(
            "a refused command had already written; the batch is retried without it",
        ));
    }
    Ok(result)
}

/// Runs work the writer does on its own account (a sweep, a waiting list's offers): it cannot be
/// refused, only fail.
pub(crate) fn chore(result: Result<(), Outcome>) -> Result<(), StoreError> {
    match result {
        Ok(()) => Ok(()),
        Err(Outcome::Failed(err)) => Err(err),
        Err(Outcome::Refused(_)) => Err(StoreError::Internal("the writer's own work was refused")),
    }
}

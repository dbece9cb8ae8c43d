//! The store's one error type, sorted by what the caller can do about it:
//! unavailable (retry later), a unique-index conflict, a missing row, or anything
//! else.

use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// What went wrong in the database, sorted by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer (refused, dropped, timed out, locked too long).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] DbErr),
    /// A unique index refused the row.
    #[error("unique constraint violated")]
    Conflict,
    /// A row that should exist does not (for example the user of a session).
    #[error("missing row: {0}")]
    Missing(&'static str),
    #[error("database error: {0}")]
    Database(#[source] DbErr),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
            return StoreError::Conflict;
        }
        let unavailable = match &err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            other => sqlx_error(other).is_some_and(is_connection_error),
        };
        if unavailable {
            StoreError::Unavailable(err)
        } else {
            StoreError::Database(err)
        }
    }
}

/// The sqlx error under a sea-orm one, when there is one.
pub(super) fn sqlx_error(err: &DbErr) -> Option<&sqlx::Error> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// Errors that mean "try again later" rather than "this statement is wrong".
fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: class 08 (connection), 57P01-57P03 (shutdown, cannot connect
            // now). SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6) after the busy timeout.
            code.starts_with("08") || code.starts_with("57P") || code == "5" || code == "6"
        }
        _ => false,
    }
}

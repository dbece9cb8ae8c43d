//! The store's one error type, sorted by what the caller can do about it:
//! unavailable (retry later), a unique-index conflict, a missing row, or anything
//! else.
//!
//! Storage faults count as unavailable: a full disk or an I/O error is the
//! database's trouble, not a bug, and goes away by itself once space returns.

use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// What went wrong in the database, sorted by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer (refused, dropped, timed out, locked too long),
    /// or could not store what it was given (disk full, I/O error).
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
            other => match sqlx_error(other) {
                Some(sqlx) => is_connection_error(sqlx),
                None => storage_fault_message(&other.to_string()),
            },
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
            let retry_later = match db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                Some(_) => db
                    .code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(sqlite_retry_later),
                None => db.code().is_some_and(|code| postgres_retry_later(&code)),
            };
            retry_later || storage_fault_message(db.message())
        }
        _ => false,
    }
}

/// SQLite result codes, by their primary code (the low byte of an extended code):
/// SQLITE_BUSY (5) and SQLITE_LOCKED (6) after the busy timeout, SQLITE_IOERR (10)
/// and SQLITE_FULL (13).
fn sqlite_retry_later(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 10 | 13)
}

/// PostgreSQL SQLSTATEs: class 08 (connection), 57P01-57P03 (shutdown, cannot
/// connect now), class 53 (insufficient resources, 53100 disk full) and 58030
/// (I/O error).
fn postgres_retry_later(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") || code == "58030"
}

/// The messages of a storage fault, for errors that arrive without their code.
fn storage_fault_message(message: &str) -> bool {
    message.contains("database or disk is full") || message.contains("disk I/O error")
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sea_orm::{DbErr, RuntimeErr};
    use sqlx::{error::ErrorKind, ConnectOptions, Connection};

    use super::*;

    /// A PostgreSQL-like error with a given SQLSTATE (PgDatabaseError cannot be built
    /// outside sqlx).
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "a server error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn from_postgres(code: &'static str) -> StoreError {
        let err = sqlx::Error::Database(Box::new(Sqlstate(code)));
        StoreError::from(DbErr::Exec(RuntimeErr::SqlxError(err)))
    }

    #[test]
    fn postgres_disk_full_and_io_errors_are_unavailable() {
        for code in [
            "53100", "53000", "53200", "53300", "53400", "58030", "08006", "57P01",
        ] {
            assert!(
                matches!(from_postgres(code), StoreError::Unavailable(_)),
                "{code}"
            );
        }
        for code in ["42P01", "23502", "22001", "58000", "XX000"] {
            assert!(
                matches!(from_postgres(code), StoreError::Database(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn sqlite_full_ioerr_busy_and_locked_are_unavailable_with_their_extended_codes() {
        // SQLITE_IOERR_WRITE (778), SQLITE_IOERR_FSYNC (1034), SQLITE_IOERR_SHORT_READ
        // (522), SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED_SHAREDCACHE (262).
        for code in [5, 6, 10, 13, 778, 1034, 522, 517, 262] {
            assert!(sqlite_retry_later(code), "{code}");
        }
        // SQLITE_ERROR, SQLITE_CONSTRAINT(_UNIQUE), SQLITE_CORRUPT, SQLITE_READONLY.
        for code in [1, 19, 2067, 11, 8] {
            assert!(!sqlite_retry_later(code), "{code}");
        }
    }

    #[tokio::test]
    async fn a_real_sqlite_full_error_is_unavailable() {
        // A database that may not grow past its current size is "full" as a full
        // disk is: SQLite answers SQLITE_FULL, "database or disk is full".
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .in_memory(true)
            .connect()
            .await
            .expect("in-memory SQLite");
        sqlx::query("CREATE TABLE t (v TEXT)")
            .execute(&mut conn)
            .await
            .expect("create");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut conn)
            .await
            .expect("page count");
        sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .execute(&mut conn)
            .await
            .expect("cap");
        let err = sqlx::query("INSERT INTO t VALUES (zeroblob(100000))")
            .execute(&mut conn)
            .await
            .expect_err("no room");
        let _ = conn.close().await;
        assert!(err.to_string().contains("full"), "{err}");
        let err = StoreError::from(DbErr::Exec(RuntimeErr::SqlxError(err)));
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn a_storage_fault_is_recognised_by_its_message_too() {
        assert!(storage_fault_message("database or disk is full"));
        assert!(storage_fault_message("disk I/O error"));
        assert!(!storage_fault_message("no such table: users"));
    }
}

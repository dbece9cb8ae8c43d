//! Wake-ups of the change feed on PostgreSQL: every transaction that appends a
//! change sends `NOTIFY authd_changes` (see `changes.rs`), and each replica listens on
//! a connection of its own, so a revocation made on one replica reaches the others
//! in milliseconds rather than at their next poll. Polling stays, as the fallback for
//! a lost listener connection and for SQLite, which has no notifications.

use sqlx::postgres::PgListener;

use super::{changes::CHANGES_CHANNEL, Backend, Store, StoreError};

/// A listening connection; [`ChangeNotifications::next`] waits for the next change.
pub struct ChangeNotifications {
    listener: PgListener,
}

impl Store {
    /// Starts listening for changes; `None` on SQLite.
    pub async fn change_notifications(&self) -> Result<Option<ChangeNotifications>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let pool = self.reader.get_postgres_connection_pool();
        let mut listener = PgListener::connect_with(pool).await.map_err(unavailable)?;
        listener
            .listen(CHANGES_CHANNEL)
            .await
            .map_err(unavailable)?;
        Ok(Some(ChangeNotifications { listener }))
    }
}

impl ChangeNotifications {
    /// Resolves when a change has been committed somewhere (possibly several:
    /// the reader catches up with all of them at once). An error means the
    /// connection was lost; listen again later.
    pub async fn next(&mut self) -> Result<(), StoreError> {
        self.listener.recv().await.map_err(unavailable)?;
        Ok(())
    }
}

fn unavailable(err: sqlx::Error) -> StoreError {
    StoreError::Unavailable(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(err)))
}

//! Storage: the database connection, migrations and the queries the domain needs.
//!
//! Knows SQL and sea-orm, nothing about gRPC or tokens. Every query returns
//! [`StoreError`], which says whether the database was unreachable, a unique index
//! refused a row, or something else went wrong.

pub mod entities;

mod api_keys;
mod audit;
mod changes;
mod connect;
mod error;
mod keys;
mod locks;
mod login_failures;
mod paging;
mod prune;
mod sessions;
mod users;

pub use api_keys::NewApiKey;
pub use audit::AuditEvent;
pub use changes::{ChangeKind, ChangeRow};
pub use connect::{Backend, DatabaseSettings};
pub use error::StoreError;
pub use keys::KeyRevocation;
pub use paging::Page;
pub use prune::{PruneBatch, PruneCutoffs, PruneLease, PruneStep, PrunedRows};
pub use sessions::{
    EndedSession, LiveSession, NewSession, RefreshSpend, Rotation, SessionEnd, SessionState,
};
pub use users::{Activation, NewUser, Taken, UserWithRoles, Withdrawal};

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};

/// Connections in the pool(s).
#[derive(Clone, Copy, Debug)]
pub struct PoolStats {
    pub open: usize,
    pub idle: usize,
}

/// Handles to the database. On SQLite all writes go through a one-connection pool
/// so that writers queue in-process instead of failing with `SQLITE_BUSY`; on
/// PostgreSQL both handles share one pool.
#[derive(Clone, Debug)]
pub struct Store {
    reader: DatabaseConnection,
    writer: DatabaseConnection,
    backend: Backend,
}

impl Store {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (a
    /// no-op UPDATE as its first statement): a transaction that reads first and
    /// writes later fails at once with SQLITE_BUSY when another process wrote in
    /// between, while one that starts by writing waits out the busy timeout.
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let txn = self.writer.begin().await?;
        if self.backend == Backend::Sqlite {
            txn.execute_unprepared("UPDATE changes SET kind = kind WHERE seq < 0")
                .await?;
        }
        Ok(txn)
    }

    /// Connections open and idle in the pool(s).
    pub fn pool_stats(&self) -> PoolStats {
        let (open, idle) = match self.backend {
            Backend::Sqlite => {
                let (r, w) = (
                    self.reader.get_sqlite_connection_pool(),
                    self.writer.get_sqlite_connection_pool(),
                );
                (r.size() + w.size(), r.num_idle() + w.num_idle())
            }
            Backend::Postgres => {
                let pool = self.reader.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
        };
        PoolStats {
            open: open as usize,
            idle,
        }
    }

    pub async fn close(self) {
        let _ = self.reader.close().await;
        if self.backend == Backend::Sqlite {
            let _ = self.writer.close().await;
        }
    }
}

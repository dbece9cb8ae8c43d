//! Storage: the database connection, migrations and the queries the domain needs.
//!
//! Knows SQL and sea-orm, nothing about gRPC or tokens. Every query returns
//! [`StoreError`], which says whether the database was unreachable, a unique index
//! refused a row, or something else went wrong.
//!
//! Writes fail closed: a write transaction ([`WriteTxn`]) is acknowledged only when
//! its commit succeeded, and the store remembers whether writes are failing (a full
//! disk, an I/O error) until a small probe write succeeds again, for readiness.

pub mod entities;

mod account_tokens;
mod api_keys;
mod audit;
mod changes;
mod connect;
mod error;
mod identity_links;
mod keys;
mod locks;
mod login_failures;
mod mfa;
mod notifications;
mod paging;
mod prune;
mod revocations;
mod roles;
mod sessions;
mod users;

pub use account_tokens::{NewAccountToken, PasswordReset, TokenPurpose};
pub use api_keys::NewApiKey;
pub use audit::{AuditEvent, AuditFilter};
pub use changes::{ChangeKind, ChangeRow};
pub use connect::{Backend, DatabaseSettings, OpenError};
pub use error::StoreError;
pub use identity_links::NewLink;
pub use keys::KeyRevocation;
pub use login_failures::LoginFailures;
pub use mfa::{Confirmation, Enrolment};
pub use notifications::ChangeNotifications;
pub use paging::Page;
pub use prune::{PruneBatch, PruneCutoffs, PruneLease, PruneStep, PrunedRows};
pub use revocations::Revoked;
pub use roles::{RoleDefinition, RoleEdit, RoleGraphState};
pub use sessions::{
    EndedSession, LiveSession, NewSession, RefreshSpend, Rotation, SessionEnd, SessionState,
    SessionSummary,
};
pub use users::{
    Activation, Erasure, NewUser, PasswordSet, ProfileChange, ProfileUpdate, Taken, Unlinking,
    UserFilter, UserWithRoles, Withdrawal, NO_PASSWORD,
};

use std::{
    ops::Deref,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use sea_orm::{
    prelude::async_trait::async_trait, ConnAcquireErr, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, ExecResult, QueryResult, Set, Statement,
    TransactionTrait,
};
use tokio::sync::watch;

use self::entities::change;

/// How often a write is tried while writes fail, to see them succeed again.
const WRITE_PROBE_EVERY: Duration = Duration::from_secs(1);

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
    writes: Arc<WriteHealth>,
}

/// Whether write transactions reach the database. A begin or commit that fails for
/// a storage or connection fault marks writes failing; only a probe that really
/// wrote marks them healthy again, since a transaction that changed nothing commits
/// even on a full disk.
#[derive(Debug)]
struct WriteHealth {
    ok: watch::Sender<bool>,
    /// A probe task is running.
    probing: AtomicBool,
}

impl Default for WriteHealth {
    fn default() -> Self {
        WriteHealth {
            ok: watch::Sender::new(true),
            probing: AtomicBool::new(false),
        }
    }
}

/// A write transaction: acknowledged only by a successful [`WriteTxn::commit`].
///
/// One dropped without commit or rollback (an error returned with `?`) is rolled
/// back by sea-orm as it goes back to the pool; on SQLite a writer connection that
/// could not be rolled back is closed instead of reused (see `connect.rs`), so no
/// failure leaves the write lock held.
pub(crate) struct WriteTxn<'a> {
    txn: DatabaseTransaction,
    store: &'a Store,
}

impl Store {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (a
    /// no-op UPDATE as its first statement): a transaction that reads first and
    /// writes later fails at once with SQLITE_BUSY when another process wrote in
    /// between, while one that starts by writing waits out the busy timeout.
    pub(crate) async fn begin_write(&self) -> Result<WriteTxn<'_>, StoreError> {
        let txn = self
            .writer
            .begin()
            .await
            .map_err(|err| self.write_failed(err.into()))?;
        if self.backend == Backend::Sqlite {
            txn.execute_unprepared("UPDATE changes SET kind = kind WHERE seq < 0")
                .await
                .map_err(|err| self.write_failed(err.into()))?;
        }
        Ok(WriteTxn { txn, store: self })
    }

    /// Follows whether writes reach the database: false from a write that failed
    /// for a storage or connection fault until a probe write succeeds again.
    pub fn writes_ok(&self) -> watch::Receiver<bool> {
        self.writes.ok.subscribe()
    }

    /// Notes a failed write; a storage or connection fault marks writes failing and
    /// starts the probe that notices their recovery.
    fn write_failed(&self, err: StoreError) -> StoreError {
        if !is_write_fault(&err) {
            return err;
        }
        if self
            .writes
            .ok
            .send_if_modified(|ok| std::mem::replace(ok, false))
        {
            tracing::warn!(error = %err, "writes are failing; not ready until one succeeds");
        }
        if !self.writes.probing.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(self.clone().probe_until_writes_succeed());
                }
                Err(_) => self.writes.probing.store(false, Ordering::Release),
            }
        }
        err
    }

    /// Tries a small write every [`WRITE_PROBE_EVERY`] until one commits (or the
    /// store is closed), then marks writes healthy.
    async fn probe_until_writes_succeed(self) {
        loop {
            tokio::time::sleep(WRITE_PROBE_EVERY).await;
            if self.writer_closed() {
                self.writes.probing.store(false, Ordering::Release);
                return;
            }
            match self.probe_write().await {
                Ok(()) => break,
                Err(err) => tracing::debug!(error = %err, "write probe failed"),
            }
        }
        // Probing ends before writes count as healthy, so a failure in between
        // starts a new probe rather than being forgotten.
        self.writes.probing.store(false, Ordering::Release);
        if self
            .writes
            .ok
            .send_if_modified(|ok| !std::mem::replace(ok, true))
        {
            tracing::info!("writes succeed again");
        }
    }

    /// A write that must reach the disk: a change row inserted and deleted again in
    /// one transaction, so that no poller ever sees it.
    async fn probe_write(&self) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let probe = change::ActiveModel {
            kind: Set("write_probe".to_owned()),
            subject: Set(String::new()),
            created_at: Set(0),
            ..Default::default()
        };
        let seq = change::Entity::insert(probe)
            .exec(&txn)
            .await?
            .last_insert_id;
        change::Entity::delete_by_id(seq).exec(&txn).await?;
        txn.commit().await
    }

    fn writer_closed(&self) -> bool {
        match self.backend {
            Backend::Sqlite => self.writer.get_sqlite_connection_pool().is_closed(),
            Backend::Postgres => self.writer.get_postgres_connection_pool().is_closed(),
        }
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

/// Faults that mean writes do not reach the database. Waiting for the one writer
/// connection (a queue under load) and a closed pool (shutdown) are not.
fn is_write_fault(err: &StoreError) -> bool {
    let StoreError::Unavailable(db) = err else {
        return false;
    };
    let pool_busy_or_closed = matches!(
        db,
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed)
    ) || matches!(
        error::sqlx_error(db),
        Some(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
    );
    !pool_busy_or_closed
}

impl WriteTxn<'_> {
    /// Commits; an error means nothing was committed and must not be acknowledged.
    pub async fn commit(self) -> Result<(), StoreError> {
        let WriteTxn { txn, store } = self;
        txn.commit()
            .await
            .map_err(|err| store.write_failed(err.into()))
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.txn.rollback().await?)
    }
}

/// Lets helpers that take `&DatabaseTransaction` take a `&WriteTxn`.
impl Deref for WriteTxn<'_> {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

/// Lets sea-orm queries run on a `&WriteTxn` as on the transaction itself.
#[async_trait]
impl ConnectionTrait for WriteTxn<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.txn.execute(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn.query_one(stmt).await
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn.query_all(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.txn.support_returning()
    }
}

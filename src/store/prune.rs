//! Pruning: deleting rows that can no longer matter, a small batch at a time, and
//! the lease that lets one replica at a time do it.
//!
//! Every batch reads at most `limit` primary keys of prunable rows (from the
//! reader) and deletes those rows by key in one short write transaction that checks
//! the condition again, so a row that became relevant in between (a new login
//! failure, say) stays. Nothing here holds the writer longer than one batch; the
//! caller pauses between batches so that other writers get their turn.
//!
//! What may go is decided by [`PruneCutoffs`], which the caller works out from its
//! clock and settings; this module knows SQL, not policy.
//!
//! One replica at a time: on PostgreSQL the replica that prunes holds advisory lock
//! [`AdvisoryLock::Pruning`] on a connection of its own, outside the pool, for as
//! long as it lives; on SQLite it holds the `prune` row of `leases` and renews it.
//! Two replicas pruning at once would still be correct (every delete re-checks its
//! condition), only wasteful.

use std::time::Duration;

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, DeleteMany, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, RuntimeErr, Statement,
};
use sqlx::{ConnectOptions, Connection};

use super::{
    entities::{
        account_token, audit_event, change, login_failure, mfa_challenge, refresh_token, session,
    },
    locks::AdvisoryLock,
    Backend, Store, StoreError,
};

/// The moments (Unix ms) before which each kind of row can no longer matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneCutoffs {
    /// Sessions past their absolute end before this, ended or not, and ended
    /// sessions whose last access token expired before this, go with their refresh
    /// tokens. Spent refresh tokens must also have expired (and the access token
    /// issued with them) before this.
    pub tokens_expired_before: i64,
    /// Refresh tokens spent before this (and expired) go, even of a live session.
    pub spent_before: i64,
    /// Change-feed rows written before this go.
    pub changes_before: i64,
    /// Login-failure rows whose last failure was before this go, unless locked...
    pub failures_before: i64,
    /// ...until after this.
    pub unlocked_before: i64,
    /// Audit rows recorded before this go.
    pub audit_before: i64,
    /// Password-reset and verification tokens that expired before this go.
    pub account_tokens_expired_before: i64,
    /// Login challenges (the second factor's step) that expired before this go.
    pub mfa_challenges_expired_before: i64,
}

/// One kind of prunable row, in the order a round visits them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneStep {
    /// Spent refresh tokens that can no longer matter, of any session.
    SpentRefreshTokens,
    /// Sessions none of whose tokens can still be valid, with their refresh tokens.
    Sessions,
    Changes,
    LoginFailures,
    AuditEvents,
    /// Expired password-reset and email-verification tokens.
    AccountTokens,
    /// Expired login challenges of the second factor.
    MfaChallenges,
}

impl PruneStep {
    pub const ALL: [PruneStep; 7] = [
        PruneStep::SpentRefreshTokens,
        PruneStep::Sessions,
        PruneStep::Changes,
        PruneStep::LoginFailures,
        PruneStep::AuditEvents,
        PruneStep::AccountTokens,
        PruneStep::MfaChallenges,
    ];
}

/// Rows deleted, by table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrunedRows {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub changes: u64,
    pub login_failures: u64,
    pub audit_events: u64,
    pub account_tokens: u64,
    pub mfa_challenges: u64,
}

impl PrunedRows {
    /// (table name, rows) for each table.
    pub fn by_table(&self) -> [(&'static str, u64); 7] {
        [
            ("sessions", self.sessions),
            ("refresh_tokens", self.refresh_tokens),
            ("changes", self.changes),
            ("login_failures", self.login_failures),
            ("audit_events", self.audit_events),
            ("account_tokens", self.account_tokens),
            ("mfa_challenges", self.mfa_challenges),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_table().iter().map(|(_, rows)| rows).sum()
    }

    pub fn add(&mut self, other: PrunedRows) {
        self.sessions += other.sessions;
        self.refresh_tokens += other.refresh_tokens;
        self.changes += other.changes;
        self.login_failures += other.login_failures;
        self.audit_events += other.audit_events;
        self.account_tokens += other.account_tokens;
        self.mfa_challenges += other.mfa_challenges;
    }
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default)]
pub struct PruneBatch {
    pub deleted: PrunedRows,
    /// The batch was full: there may be more of the same kind.
    pub more: bool,
}

impl Store {
    /// Deletes at most `limit` rows of one kind in one short write transaction.
    pub async fn prune_batch(
        &self,
        step: PruneStep,
        cutoffs: &PruneCutoffs,
        limit: u64,
    ) -> Result<PruneBatch, StoreError> {
        match step {
            PruneStep::SpentRefreshTokens => self.prune_spent_refresh_tokens(cutoffs, limit).await,
            PruneStep::Sessions => self.prune_sessions(cutoffs, limit).await,
            PruneStep::Changes => {
                // A prefix of the feed, never its newest row: a watcher's cursor is
                // then resumable exactly when no row after it is gone, which the
                // oldest row kept tells (`Store::oldest_change`).
                let Some(through) = self.prunable_changes(cutoffs.changes_before).await? else {
                    return Ok(rows(PrunedRows::default(), false));
                };
                let stale = change::Column::Seq.lte(through);
                let (deleted, more) = self
                    .prune_by_key::<change::Entity, i64>(
                        change::Column::Seq,
                        Condition::all().add(stale),
                        limit,
                    )
                    .await?;
                Ok(rows(
                    PrunedRows {
                        changes: deleted,
                        ..Default::default()
                    },
                    more,
                ))
            }
            PruneStep::LoginFailures => {
                // Re-checked in the delete: a failure recorded in between keeps the row.
                let stale = Condition::all()
                    .add(login_failure::Column::UpdatedAt.lt(cutoffs.failures_before))
                    .add(
                        Condition::any()
                            .add(login_failure::Column::LockedUntil.is_null())
                            .add(login_failure::Column::LockedUntil.lt(cutoffs.unlocked_before)),
                    );
                let (deleted, more) = self
                    .prune_by_key::<login_failure::Entity, String>(
                        login_failure::Column::UsernameLc,
                        stale,
                        limit,
                    )
                    .await?;
                Ok(rows(
                    PrunedRows {
                        login_failures: deleted,
                        ..Default::default()
                    },
                    more,
                ))
            }
            PruneStep::AuditEvents => {
                let old = audit_event::Column::At.lt(cutoffs.audit_before);
                let (deleted, more) = self
                    .prune_by_key::<audit_event::Entity, i64>(
                        audit_event::Column::Id,
                        Condition::all().add(old),
                        limit,
                    )
                    .await?;
                Ok(rows(
                    PrunedRows {
                        audit_events: deleted,
                        ..Default::default()
                    },
                    more,
                ))
            }
            PruneStep::AccountTokens => {
                let expired =
                    account_token::Column::ExpiresAt.lt(cutoffs.account_tokens_expired_before);
                let (deleted, more) = self
                    .prune_by_key::<account_token::Entity, String>(
                        account_token::Column::TokenHash,
                        Condition::all().add(expired),
                        limit,
                    )
                    .await?;
                Ok(rows(
                    PrunedRows {
                        account_tokens: deleted,
                        ..Default::default()
                    },
                    more,
                ))
            }
            PruneStep::MfaChallenges => {
                let expired =
                    mfa_challenge::Column::ExpiresAt.lt(cutoffs.mfa_challenges_expired_before);
                let (deleted, more) = self
                    .prune_by_key::<mfa_challenge::Entity, String>(
                        mfa_challenge::Column::TokenHash,
                        Condition::all().add(expired),
                        limit,
                    )
                    .await?;
                Ok(rows(
                    PrunedRows {
                        mfa_challenges: deleted,
                        ..Default::default()
                    },
                    more,
                ))
            }
        }
    }

    /// Spent tokens spent before `spent_before` whose own expiry, and that of the
    /// access token issued with them, are past. A spent token presented again is
    /// taken as theft; one spent longer ago than a refresh token lives could not
    /// have been honoured anyway, so its row has done its work. The access-token
    /// condition keeps the bound an ending session records (the latest
    /// `access_expires_at` of its tokens) from losing a token that may still be valid.
    async fn prune_spent_refresh_tokens(
        &self,
        cutoffs: &PruneCutoffs,
        limit: u64,
    ) -> Result<PruneBatch, StoreError> {
        let expired = cutoffs.tokens_expired_before;
        let done = Condition::all()
            .add(refresh_token::Column::SpentAt.lt(cutoffs.spent_before))
            .add(refresh_token::Column::ExpiresAt.lt(expired))
            .add(
                Condition::any()
                    .add(refresh_token::Column::AccessExpiresAt.is_null())
                    .add(refresh_token::Column::AccessExpiresAt.lt(expired)),
            );
        let (deleted, more) = self
            .prune_by_key::<refresh_token::Entity, String>(
                refresh_token::Column::TokenHash,
                done,
                limit,
            )
            .await?;
        Ok(rows(
            PrunedRows {
                refresh_tokens: deleted,
                ..Default::default()
            },
            more,
        ))
    }

    /// A batch of sessions none of whose access tokens can still be valid: past
    /// their absolute end (which caps every token), or ended with their latest token
    /// expired (`tokens_expire_by`; NULL falls back to the absolute end). Their
    /// refresh tokens go first, `limit` at a time, so that no delete cascades over
    /// thousands of rows; the sessions follow once they have none left. Such a
    /// session cannot gain a token meanwhile: refreshing needs a live one.
    async fn prune_sessions(
        &self,
        cutoffs: &PruneCutoffs,
        limit: u64,
    ) -> Result<PruneBatch, StoreError> {
        let before = cutoffs.tokens_expired_before;
        let gone = Condition::any()
            .add(session::Column::ExpiresAt.lt(before))
            .add(
                Condition::all()
                    .add(session::Column::EndedAt.is_not_null())
                    .add(session::Column::TokensExpireBy.lt(before)),
            );
        let ids: Vec<String> = self.keys::<session::Entity, _>(gone.clone(), limit).await?;
        if ids.is_empty() {
            return Ok(PruneBatch::default());
        }
        let tokens: Vec<String> = refresh_token::Entity::find()
            .select_only()
            .column(refresh_token::Column::TokenHash)
            .filter(refresh_token::Column::SessionId.is_in(ids.clone()))
            .limit(limit)
            .into_tuple()
            .all(&self.reader)
            .await?;
        if !tokens.is_empty() {
            let deleted = self
                .delete(
                    refresh_token::Entity::delete_many()
                        .filter(refresh_token::Column::TokenHash.is_in(tokens)),
                )
                .await?;
            return Ok(PruneBatch {
                deleted: PrunedRows {
                    refresh_tokens: deleted,
                    ..Default::default()
                },
                more: true,
            });
        }
        let deleted = self
            .delete(
                session::Entity::delete_many()
                    .filter(session::Column::Id.is_in(ids.clone()))
                    .filter(gone),
            )
            .await?;
        Ok(batch(
            &ids,
            limit,
            PrunedRows {
                sessions: deleted,
                ..Default::default()
            },
        ))
    }

    /// Up to `limit` primary keys of the rows of `E` matching `condition`, read from
    /// the reader (no write lock). No ORDER BY: the condition's index finds them.
    /// The last sequence number that may go: the highest written before `before`,
    /// and below the newest row. `None` when nothing may go.
    async fn prunable_changes(&self, before: i64) -> Result<Option<i64>, StoreError> {
        let highest = |query: sea_orm::Select<change::Entity>| {
            query
                .select_only()
                .column_as(change::Column::Seq.max(), "max")
                .into_tuple::<Option<i64>>()
        };
        let stale = highest(change::Entity::find().filter(change::Column::CreatedAt.lt(before)))
            .one(&self.reader)
            .await?
            .flatten();
        let newest = highest(change::Entity::find())
            .one(&self.reader)
            .await?
            .flatten();
        Ok(match (stale, newest) {
            (Some(stale), Some(newest)) => Some(stale.min(newest - 1)),
            _ => None,
        })
    }

    /// Primary keys of rows matching `condition`, lowest first (so that pruning the
    /// change feed removes a prefix of it, batch by batch).
    async fn keys<E, K>(
        &self,
        condition: impl sea_orm::sea_query::IntoCondition,
        limit: u64,
    ) -> Result<Vec<K>, StoreError>
    where
        E: EntityTrait,
        K: sea_orm::TryGetableMany,
    {
        let mut query = E::find().select_only();
        for column in primary_key_columns::<E>() {
            query = query.column(column).order_by_asc(column);
        }
        Ok(query
            .filter(condition)
            .limit(limit)
            .into_tuple()
            .all(&self.reader)
            .await?)
    }

    /// One batch of `E` by primary key `key`: up to `limit` keys of rows matching
    /// `condition`, then those rows deleted, the condition checked again so a row
    /// that became relevant in between stays. Answers how many went, and whether the
    /// batch was full.
    async fn prune_by_key<E, K>(
        &self,
        key: E::Column,
        condition: Condition,
        limit: u64,
    ) -> Result<(u64, bool), StoreError>
    where
        E: EntityTrait,
        K: sea_orm::TryGetableMany + Into<sea_orm::Value>,
    {
        let keys: Vec<K> = self.keys::<E, _>(condition.clone(), limit).await?;
        let more = keys.len() as u64 >= limit;
        let deleted = self
            .delete(E::delete_many().filter(key.is_in(keys)).filter(condition))
            .await?;
        Ok((deleted, more))
    }

    /// Runs one delete in its own write transaction (on SQLite, through the one
    /// writer connection, holding the write lock only for this statement).
    async fn delete<E: EntityTrait>(&self, delete: DeleteMany<E>) -> Result<u64, StoreError> {
        let txn = self.begin_write().await?;
        let deleted = delete.exec(&txn).await?.rows_affected;
        txn.commit().await?;
        Ok(deleted)
    }
}

fn primary_key_columns<E: EntityTrait>() -> Vec<E::Column> {
    use sea_orm::{Iterable, PrimaryKeyToColumn};
    E::PrimaryKey::iter().map(|key| key.into_column()).collect()
}

fn rows(deleted: PrunedRows, more: bool) -> PruneBatch {
    PruneBatch { deleted, more }
}

fn batch<K>(keys: &[K], limit: u64, deleted: PrunedRows) -> PruneBatch {
    PruneBatch {
        deleted,
        more: keys.len() as u64 >= limit,
    }
}

/// The right to prune, held by one replica at a time. Keep one per replica and
/// ask [`Store::hold_prune_lease`] before each step of a round.
pub struct PruneLease {
    /// Who holds the SQLite lease row: this process and this lease.
    holder: String,
    /// PostgreSQL: the connection holding the advisory lock, while this replica
    /// prunes. Dropping it releases the lock.
    lock: Option<sqlx::PgConnection>,
}

impl std::fmt::Debug for PruneLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PruneLease")
            .field("holder", &self.holder)
            .field("locked", &self.lock.is_some())
            .finish()
    }
}

const LEASE_NAME: &str = "prune";
/// How long taking the lock (a connection and one statement) may take.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl PruneLease {
    pub fn new() -> Self {
        PruneLease {
            holder: format!("{}/{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            lock: None,
        }
    }
}

impl Default for PruneLease {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// Takes or keeps the right to prune; false when another replica holds it. On
    /// SQLite the lease is held until `now_ms + for_ms` (renewed by each call); on
    /// PostgreSQL for as long as the lock's connection lives, checked by each call.
    pub async fn hold_prune_lease(
        &self,
        lease: &mut PruneLease,
        now_ms: i64,
        for_ms: i64,
    ) -> Result<bool, StoreError> {
        match self.backend {
            Backend::Sqlite => self.hold_lease_row(lease, now_ms, for_ms).await,
            Backend::Postgres => self.hold_advisory_lock(lease).await,
        }
    }

    /// Gives the right to prune up (at shutdown), so another replica takes it over
    /// at its next round rather than when the lease runs out.
    pub async fn release_prune_lease(&self, lease: &mut PruneLease) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let txn = self.begin_write().await?;
                txn.execute(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    "DELETE FROM leases WHERE name = ? AND holder = ?",
                    [LEASE_NAME.into(), lease.holder.clone().into()],
                ))
                .await?;
                txn.commit().await?;
            }
            Backend::Postgres => {
                if let Some(conn) = lease.lock.take() {
                    // Closing the session releases its advisory locks.
                    let _ = tokio::time::timeout(LOCK_TIMEOUT, conn.close()).await;
                }
            }
        }
        Ok(())
    }

    /// SQLite: the `prune` lease row is ours if we hold it already, nobody does, or
    /// the holder let it run out (a replica that stopped without releasing it).
    async fn hold_lease_row(
        &self,
        lease: &PruneLease,
        now_ms: i64,
        for_ms: i64,
    ) -> Result<bool, StoreError> {
        const TAKE: &str = "\
            INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
            ON CONFLICT (name) DO UPDATE \
                SET holder = excluded.holder, expires_at = excluded.expires_at \
                WHERE leases.holder = excluded.holder OR leases.expires_at < ?";
        let txn = self.begin_write().await?;
        let taken = txn
            .execute(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                TAKE,
                [
                    LEASE_NAME.into(),
                    lease.holder.clone().into(),
                    now_ms.saturating_add(for_ms).into(),
                    now_ms.into(),
                ],
            ))
            .await?
            .rows_affected();
        txn.commit().await?;
        Ok(taken > 0)
    }

    /// PostgreSQL: keeps the lock while its connection answers; otherwise opens a
    /// connection of its own (outside the pool, so the pool never recycles it and
    /// drops the lock unnoticed) and tries the lock, closing it again when another
    /// replica holds the lock.
    async fn hold_advisory_lock(&self, lease: &mut PruneLease) -> Result<bool, StoreError> {
        if let Some(conn) = lease.lock.as_mut() {
            let alive = tokio::time::timeout(LOCK_TIMEOUT, conn.ping()).await;
            if matches!(alive, Ok(Ok(()))) {
                return Ok(true);
            }
            // The session is gone, and the lock with it; another replica may hold
            // it by now.
            lease.lock = None;
        }
        let options = self.writer.get_postgres_connection_pool().connect_options();
        let mut conn = within_lock_timeout(options.connect()).await?;
        let taken: Result<bool, StoreError> = within_lock_timeout(
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(AdvisoryLock::Pruning.key())
                .fetch_one(&mut conn),
        )
        .await;
        match taken {
            Ok(true) => {
                lease.lock = Some(conn);
                Ok(true)
            }
            other => {
                let _ = tokio::time::timeout(LOCK_TIMEOUT, conn.close()).await;
                other
            }
        }
    }
}

/// `work` within [`LOCK_TIMEOUT`], its failure as the store's error.
async fn within_lock_timeout<T>(
    work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    let result = match tokio::time::timeout(LOCK_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer from the database within 5 s",
        ))),
    };
    result.map_err(|e| StoreError::from(DbErr::Conn(RuntimeErr::SqlxError(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_says_there_may_be_more() {
        let rows = PrunedRows::default();
        assert!(batch(&[1, 2, 3], 3, rows).more);
        assert!(!batch(&[1, 2], 3, rows).more);
        assert!(!batch::<i64>(&[], 3, rows).more);
    }

    #[test]
    fn rows_add_up_by_table() {
        let mut total = PrunedRows {
            sessions: 1,
            ..Default::default()
        };
        total.add(PrunedRows {
            sessions: 2,
            login_failures: 5,
            ..Default::default()
        });
        assert_eq!(total.sessions, 3);
        assert_eq!(total.total(), 8);
        assert!(total.by_table().contains(&("login_failures", 5)));
    }
}

//! Consecutive failed logins per throttling counter (an account's id, or an
//! unknown login name), shared by every replica. The domain decides what a failure
//! does to a counter; this file keeps the read-change-write of one counter atomic
//! across replicas.

use sea_orm::{
    sea_query::{Expr, OnConflict},
    ColumnTrait, EntityTrait, QueryFilter, QuerySelect, Set,
};

use super::{entities::login_failure, Store, StoreError};

/// One counter as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoginFailures {
    /// Failed checks since the last lockout began (or since the last success).
    pub failures: u32,
    /// When the last lockout ends (or ended).
    pub locked_until: Option<i64>,
    /// Lockouts in a row, for their growing length.
    pub lockouts: u32,
    /// The `locked_until` of the lockout whose refusals have been audited: each
    /// lockout's refused attempts get one audit row, not one each.
    pub refusals_audited_until: Option<i64>,
}

impl From<login_failure::Model> for LoginFailures {
    fn from(row: login_failure::Model) -> Self {
        LoginFailures {
            failures: u32::try_from(row.failures).unwrap_or(0),
            locked_until: row.locked_until,
            lockouts: u32::try_from(row.lockouts).unwrap_or(0),
            refusals_audited_until: row.refusals_audited_until,
        }
    }
}

impl Store {
    /// The counter `key`, if it has one.
    pub async fn login_failures(&self, key: &str) -> Result<Option<LoginFailures>, StoreError> {
        Ok(login_failure::Entity::find_by_id(key)
            .one(&self.reader)
            .await?
            .map(LoginFailures::from))
    }

    /// Counts one failed check against `key`: `next` turns the stored counter (a
    /// fresh one if there is none) into the new one, in a write transaction that
    /// holds the row, so failures checked on several replicas at once are all
    /// counted. Answers the counter as stored.
    pub async fn record_login_failure(
        &self,
        key: &str,
        now_ms: i64,
        next: impl FnOnce(LoginFailures) -> LoginFailures,
    ) -> Result<LoginFailures, StoreError> {
        let txn = self.begin_write().await?;
        login_failure::Entity::insert(login_failure::ActiveModel {
            username_lc: Set(key.to_owned()),
            failures: Set(0),
            locked_until: Set(None),
            updated_at: Set(now_ms),
            lockouts: Set(0),
            refusals_audited_until: Set(None),
        })
        .on_conflict(
            OnConflict::column(login_failure::Column::UsernameLc)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        let current = login_failure::Entity::find_by_id(key)
            .lock_exclusive()
            .one(&txn)
            .await?
            .ok_or(StoreError::Missing("login failure counter"))?;
        let next = next(current.into());
        let as_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        login_failure::Entity::update_many()
            .col_expr(
                login_failure::Column::Failures,
                Expr::value(as_i32(next.failures)),
            )
            .col_expr(
                login_failure::Column::LockedUntil,
                Expr::value(next.locked_until),
            )
            .col_expr(
                login_failure::Column::Lockouts,
                Expr::value(as_i32(next.lockouts)),
            )
            .col_expr(login_failure::Column::UpdatedAt, Expr::value(now_ms))
            .filter(login_failure::Column::UsernameLc.eq(key))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(next)
    }

    /// Marks the lockout ending at `locked_until` as audited; true for the one call
    /// (on any replica) that marked it.
    pub async fn note_refusals_audited(
        &self,
        key: &str,
        locked_until: i64,
    ) -> Result<bool, StoreError> {
        let noted = login_failure::Entity::update_many()
            .col_expr(
                login_failure::Column::RefusalsAuditedUntil,
                Expr::value(locked_until),
            )
            .filter(login_failure::Column::UsernameLc.eq(key))
            .filter(login_failure::Column::LockedUntil.eq(locked_until))
            .filter(
                login_failure::Column::RefusalsAuditedUntil
                    .is_null()
                    .or(login_failure::Column::RefusalsAuditedUntil.ne(locked_until)),
            )
            .exec(&self.writer)
            .await?
            .rows_affected;
        Ok(noted > 0)
    }

    /// A successful login forgets the counter: failures, lockout and its growth.
    pub async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        login_failure::Entity::delete_many()
            .filter(login_failure::Column::UsernameLc.eq(key))
            .exec(&self.writer)
            .await?;
        Ok(())
    }
}

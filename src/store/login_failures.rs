//! Consecutive failed logins per canonical username, shared by every replica.

use sea_orm::{
    sea_query::{Expr, OnConflict},
    ColumnTrait, EntityTrait, QueryFilter, Set,
};

use super::{entities::login_failure, Store, StoreError};

impl Store {
    /// Until when the username is locked out, if it is.
    pub async fn locked_until(&self, username_lc: &str) -> Result<Option<i64>, StoreError> {
        Ok(login_failure::Entity::find_by_id(username_lc)
            .one(&self.reader)
            .await?
            .and_then(|row| row.locked_until))
    }

    /// Counts one more failure; at `max_failures` the username is locked until
    /// `lock_until_ms` and the count starts again. Answers whether this locked it.
    pub async fn record_login_failure(
        &self,
        username_lc: &str,
        max_failures: u32,
        lock_until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        login_failure::Entity::insert(login_failure::ActiveModel {
            username_lc: Set(username_lc.to_owned()),
            failures: Set(1),
            locked_until: Set(None),
            updated_at: Set(now_ms),
        })
        .on_conflict(
            OnConflict::column(login_failure::Column::UsernameLc)
                .value(
                    login_failure::Column::Failures,
                    Expr::col((login_failure::Entity, login_failure::Column::Failures)).add(1),
                )
                .value(login_failure::Column::UpdatedAt, Expr::value(now_ms))
                .to_owned(),
        )
        .exec_without_returning(&self.writer)
        .await?;
        // Lock only the row that reached the limit; concurrent failures cannot both
        // reset it because the filter sees the count they left.
        let locked = login_failure::Entity::update_many()
            .col_expr(login_failure::Column::Failures, Expr::value(0))
            .col_expr(
                login_failure::Column::LockedUntil,
                Expr::value(lock_until_ms),
            )
            .filter(login_failure::Column::UsernameLc.eq(username_lc))
            .filter(login_failure::Column::Failures.gte(max_failures as i32))
            .exec(&self.writer)
            .await?
            .rows_affected;
        Ok(locked > 0)
    }

    /// A successful login forgets earlier failures.
    pub async fn clear_login_failures(&self, username_lc: &str) -> Result<(), StoreError> {
        login_failure::Entity::delete_many()
            .filter(login_failure::Column::UsernameLc.eq(username_lc))
            .exec(&self.writer)
            .await?;
        Ok(())
    }
}

//! Changing and erasing users: profile updates decided by the unique indexes,
//! erasure under the admin-holders lock (with what belongs to the user), and
//! setting a password together with ending the user's sessions.

use sea_orm::{
    sea_query::{Alias, Expr, Func},
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

use super::{
    super::{
        account_tokens::TokenPurpose,
        changes::{self, ChangeKind},
        entities::{account_token, audit_event, login_failure, user, user_role},
        locks::{self, AdvisoryLock},
        Backend, Store, StoreError,
    },
    count_active_holders,
};

/// Changes to a user's profile; `None` leaves a field as it is. Values are valid
/// already; the `*_lc` columns are derived here.
#[derive(Debug)]
pub struct ProfileUpdate {
    pub user_id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub now_ms: i64,
}

/// How a profile update ended (a taken username or email is `StoreError::Conflict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileChange {
    Updated,
    NoSuchUser,
}

/// How erasing a user ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Erasure {
    Erased,
    NoSuchUser,
    /// Nothing changed: it would have left the guarded role without an active holder.
    RefusedLastHolder,
}

/// A password set, and how many of the user's sessions that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordSet {
    Done { sessions_ended: u64 },
    NoSuchUser,
}

impl Store {
    /// Updates username, email and full name in one statement, so the unique
    /// indexes decide races (`Conflict`: of concurrent renames to one name exactly
    /// one succeeds). A new email clears `email_verified` and voids the user's
    /// verification tokens, which were made for the old address.
    pub async fn update_profile(&self, update: ProfileUpdate) -> Result<ProfileChange, StoreError> {
        let txn = self.begin_write().await?;
        let Some(current) = user::Entity::find_by_id(&update.user_id).one(&txn).await? else {
            txn.rollback().await?;
            return Ok(ProfileChange::NoSuchUser);
        };
        let mut statement = user::Entity::update_many()
            .col_expr(user::Column::UpdatedAt, Expr::value(update.now_ms))
            .filter(user::Column::Id.eq(&update.user_id));
        if let Some(username) = update.username {
            statement = statement
                .col_expr(
                    user::Column::UsernameLc,
                    Expr::value(username.to_lowercase()),
                )
                .col_expr(user::Column::Username, Expr::value(username));
        }
        let mut email_changed = false;
        if let Some(email) = update.email {
            let email_lc = email.to_lowercase();
            email_changed = email_lc != current.email_lc;
            statement = statement
                .col_expr(user::Column::EmailLc, Expr::value(email_lc))
                .col_expr(user::Column::Email, Expr::value(email));
            if email_changed {
                statement = statement.col_expr(user::Column::EmailVerified, Expr::value(false));
            }
        }
        if let Some(full_name) = update.full_name {
            statement = statement.col_expr(user::Column::FullName, Expr::value(full_name));
        }
        statement.exec(&txn).await?;
        if email_changed {
            account_token::Entity::delete_many()
                .filter(account_token::Column::UserId.eq(&update.user_id))
                .filter(account_token::Column::Purpose.eq(TokenPurpose::EmailVerification.as_str()))
                .exec(&txn)
                .await?;
        }
        changes::append(
            &txn,
            self.backend,
            ChangeKind::UserUpdated,
            &update.user_id,
            update.now_ms,
        )
        .await?;
        txn.commit().await?;
        Ok(ProfileChange::Updated)
    }

    /// Erases a user and everything that belongs to it: its roles, sessions,
    /// refresh tokens, account tokens, second factor and identity links go with the
    /// row (`ON DELETE CASCADE`; the tables later capabilities add for a user join
    /// that way), its throttling counters are deleted, and audit rows that named it
    /// by its login or by an identity of it lose the name (they keep the id). API
    /// keys it created stay, with `created_by` its id.
    /// Refuses to erase the last active holder of `guarded_role`, under the same lock
    /// as demotions, so two erasures cannot each leave the other as the last.
    pub async fn erase_user(
        &self,
        user_id: &str,
        guarded_role: &str,
        now_ms: i64,
    ) -> Result<Erasure, StoreError> {
        let txn = self.begin_write().await?;
        locks::serialize(&txn, self.backend, AdvisoryLock::AdminHolders).await?;
        let Some(user) = user::Entity::find_by_id(user_id).one(&txn).await? else {
            txn.rollback().await?;
            return Ok(Erasure::NoSuchUser);
        };
        let holds_guarded =
            user_role::Entity::find_by_id((user_id.to_owned(), guarded_role.to_owned()))
                .one(&txn)
                .await?
                .is_some();
        if holds_guarded && user.active && count_active_holders(&txn, guarded_role).await? <= 1 {
            txn.rollback().await?;
            return Ok(Erasure::RefusedLastHolder);
        }
        for login in [&user.username_lc, &user.email_lc] {
            forget_login_in_audit(&txn, login).await?;
        }
        super::super::identity_links::forget_identities_in_audit(&txn, user_id).await?;
        // The account's counter, and any kept under its names (from failures while
        // the names were unknown): the names are personal data too.
        login_failure::Entity::delete_many()
            .filter(login_failure::Column::UsernameLc.is_in([
                user_id,
                user.username_lc.as_str(),
                user.email_lc.as_str(),
            ]))
            .exec(&txn)
            .await?;
        user::Entity::delete_by_id(user_id).exec(&txn).await?;
        changes::append(&txn, self.backend, ChangeKind::UserDeleted, user_id, now_ms).await?;
        txn.commit().await?;
        Ok(Erasure::Erased)
    }

    /// Sets a user's password hash and ends its sessions, all but `keep` (the
    /// caller's own, for a change of password), in one transaction.
    pub async fn set_password(
        &self,
        user_id: &str,
        hash: String,
        keep: Option<&str>,
        reason: &str,
        now_ms: i64,
    ) -> Result<PasswordSet, StoreError> {
        let txn = self.begin_write().await?;
        let set =
            set_password_ending_sessions(&txn, self.backend, user_id, hash, keep, reason, now_ms)
                .await?;
        if set == PasswordSet::NoSuchUser {
            txn.rollback().await?;
        } else {
            txn.commit().await?;
        }
        Ok(set)
    }
}

/// The password and session part of [`Store::set_password`], inside `txn`.
pub(in crate::store) async fn set_password_ending_sessions(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    user_id: &str,
    hash: String,
    keep: Option<&str>,
    reason: &str,
    now_ms: i64,
) -> Result<PasswordSet, StoreError> {
    let updated = user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(hash))
        .col_expr(user::Column::UpdatedAt, Expr::value(now_ms))
        .filter(user::Column::Id.eq(user_id))
        .exec(txn)
        .await?
        .rows_affected;
    if updated == 0 {
        return Ok(PasswordSet::NoSuchUser);
    }
    let ended =
        super::super::sessions::end_user_sessions(txn, backend, user_id, keep, reason, now_ms)
            .await?;
    Ok(PasswordSet::Done {
        sessions_ended: ended,
    })
}

/// Failed logins are audited by the login as typed (`login=<name>; …`, no
/// subject): for an erased user, its username or email there becomes `(erased)`.
async fn forget_login_in_audit(
    db: &impl ConnectionTrait,
    login_lc: &str,
) -> Result<(), StoreError> {
    let named = format!("login={login_lc}");
    let with_more = format!("{named};");
    let prefix = Func::cust(Alias::new("substr"))
        .arg(Expr::col(audit_event::Column::Detail))
        .arg(1)
        .arg(i32::try_from(with_more.chars().count()).unwrap_or(i32::MAX));
    let rows: Vec<(i64, Option<String>)> = audit_event::Entity::find()
        .select_only()
        .column(audit_event::Column::Id)
        .column(audit_event::Column::Detail)
        .filter(audit_event::Column::Action.eq("login"))
        .filter(
            Condition::any()
                .add(audit_event::Column::Detail.eq(named.as_str()))
                .add(Expr::expr(prefix).eq(with_more.as_str())),
        )
        .into_tuple()
        .all(db)
        .await?;
    for (id, detail) in rows {
        let rest = detail
            .as_deref()
            .and_then(|d| d.strip_prefix(named.as_str()))
            .unwrap_or_default();
        audit_event::Entity::update_many()
            .col_expr(
                audit_event::Column::Detail,
                Expr::value(format!("login=(erased){rest}")),
            )
            .filter(audit_event::Column::Id.eq(id))
            .exec(db)
            .await?;
    }
    Ok(())
}

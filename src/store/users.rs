//! Users, their directly granted roles, and the role hierarchy.

use std::collections::HashMap;

use sea_orm::{
    sea_query::{Alias, Expr, Func, OnConflict},
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::{
    account_tokens::TokenPurpose,
    changes::{self, ChangeKind},
    entities::{account_token, audit_event, login_failure, role, user, user_role},
    locks::{self, AdvisoryLock},
    paging::Page,
    Store, StoreError,
};

/// A user to insert; the `*_lc` columns are derived here.
#[derive(Debug)]
pub struct NewUser {
    pub id: String,
    pub username: String,
    pub email: String,
    pub full_name: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub now_ms: i64,
}

/// A user row with the names of the roles granted to it directly.
#[derive(Clone, Debug)]
pub struct UserWithRoles {
    pub user: user::Model,
    pub roles: Vec<String>,
}

/// Which of a username and an email is taken already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    Username,
    Email,
    Neither,
}

/// How a withdrawal of a role ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawal {
    /// Withdrawn, or not held in the first place.
    Done,
    /// Nothing changed: it would have left the guarded role without an active holder.
    RefusedLastHolder,
}

/// How a change of the active flag ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Done {
        sessions_ended: u64,
    },
    /// Nothing changed: it would have left the guarded role without an active holder.
    RefusedLastHolder,
}

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
    /// Inserts a user and its roles. `Conflict` when the username or email is taken
    /// (the unique indexes decide, so concurrent registrations have one winner).
    pub async fn insert_user(&self, new: NewUser) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        user::Entity::insert(user::ActiveModel {
            id: Set(new.id.clone()),
            username_lc: Set(new.username.to_lowercase()),
            username: Set(new.username),
            email_lc: Set(new.email.to_lowercase()),
            email: Set(new.email),
            full_name: Set(new.full_name),
            password_hash: Set(new.password_hash),
            active: Set(true),
            created_at: Set(new.now_ms),
            updated_at: Set(new.now_ms),
            email_verified: Set(false),
        })
        .exec_without_returning(&txn)
        .await?;
        for role in &new.roles {
            user_role::Entity::insert(user_role::ActiveModel {
                user_id: Set(new.id.clone()),
                role: Set(role.clone()),
                granted_at: Set(new.now_ms),
            })
            .exec_without_returning(&txn)
            .await?;
        }
        changes::append(&txn, self.backend, ChangeKind::User, &new.id, new.now_ms).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Which of a username and an email are already taken (case-insensitively).
    pub async fn taken(&self, username_lc: &str, email_lc: &str) -> Result<Taken, StoreError> {
        let rows: Vec<(String, String)> = user::Entity::find()
            .select_only()
            .column(user::Column::UsernameLc)
            .column(user::Column::EmailLc)
            .filter(
                Condition::any()
                    .add(user::Column::UsernameLc.eq(username_lc))
                    .add(user::Column::EmailLc.eq(email_lc)),
            )
            .into_tuple()
            .all(&self.reader)
            .await?;
        Ok(if rows.iter().any(|(u, _)| u == username_lc) {
            Taken::Username
        } else if rows.iter().any(|(_, e)| e == email_lc) {
            Taken::Email
        } else {
            Taken::Neither
        })
    }

    /// The user whose username or email is `login_lc` (already lower-case).
    pub async fn find_user_by_login(
        &self,
        login_lc: &str,
    ) -> Result<Option<user::Model>, StoreError> {
        let column = if login_lc.contains('@') {
            user::Column::EmailLc
        } else {
            user::Column::UsernameLc
        };
        Ok(user::Entity::find()
            .filter(column.eq(login_lc))
            .one(&self.reader)
            .await?)
    }

    pub async fn find_user(&self, id: &str) -> Result<Option<UserWithRoles>, StoreError> {
        let Some(user) = user::Entity::find_by_id(id).one(&self.reader).await? else {
            return Ok(None);
        };
        let roles = self.roles_of(&self.reader, id).await?;
        Ok(Some(UserWithRoles { user, roles }))
    }

    pub async fn find_user_by_username(
        &self,
        username_lc: &str,
    ) -> Result<Option<UserWithRoles>, StoreError> {
        let Some(user) = user::Entity::find()
            .filter(user::Column::UsernameLc.eq(username_lc))
            .one(&self.reader)
            .await?
        else {
            return Ok(None);
        };
        let roles = self.roles_of(&self.reader, &user.id).await?;
        Ok(Some(UserWithRoles { user, roles }))
    }

    async fn roles_of(
        &self,
        db: &impl ConnectionTrait,
        user_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(user_role::Entity::find()
            .select_only()
            .column(user_role::Column::Role)
            .filter(user_role::Column::UserId.eq(user_id))
            .order_by_asc(user_role::Column::Role)
            .into_tuple()
            .all(db)
            .await?)
    }

    /// Every user with its roles, for loading the memory view at start-up.
    pub async fn all_users(&self) -> Result<Vec<UserWithRoles>, StoreError> {
        let users = user::Entity::find().all(&self.reader).await?;
        let mut roles: HashMap<String, Vec<String>> = HashMap::new();
        for grant in user_role::Entity::find().all(&self.reader).await? {
            roles.entry(grant.user_id).or_default().push(grant.role);
        }
        Ok(users
            .into_iter()
            .map(|user| {
                let roles = roles.remove(&user.id).unwrap_or_default();
                UserWithRoles { user, roles }
            })
            .collect())
    }

    /// The role hierarchy.
    pub async fn roles(&self) -> Result<Vec<role::Model>, StoreError> {
        Ok(role::Entity::find()
            .order_by_asc(role::Column::Rank)
            .all(&self.reader)
            .await?)
    }

    pub async fn set_password_hash(
        &self,
        user_id: &str,
        hash: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash))
            .col_expr(user::Column::UpdatedAt, Expr::value(now_ms))
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.writer)
            .await?;
        Ok(())
    }

    /// Users after the `(created_at, id)` position `after`, oldest first.
    pub async fn list_users(
        &self,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> Result<Page<UserWithRoles>, StoreError> {
        let mut query = user::Entity::find()
            .order_by_asc(user::Column::CreatedAt)
            .order_by_asc(user::Column::Id)
            .limit(limit + 1);
        if let Some(after) = after {
            query = query.filter(super::paging::after(
                user::Column::CreatedAt,
                user::Column::Id,
                after,
            ));
        }
        let Page {
            items: users,
            has_more,
        } = Page::from_rows(query.all(&self.reader).await?, limit);
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        let mut roles: HashMap<String, Vec<String>> = HashMap::new();
        for grant in user_role::Entity::find()
            .filter(user_role::Column::UserId.is_in(ids))
            .order_by_asc(user_role::Column::Role)
            .all(&self.reader)
            .await?
        {
            roles.entry(grant.user_id).or_default().push(grant.role);
        }
        let users = users
            .into_iter()
            .map(|user| {
                let roles = roles.remove(&user.id).unwrap_or_default();
                UserWithRoles { user, roles }
            })
            .collect();
        Ok(Page {
            items: users,
            has_more,
        })
    }

    /// Grants `role`; granting a held role changes nothing.
    pub async fn grant_role(
        &self,
        user_id: &str,
        role: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let inserted = user_role::Entity::insert(user_role::ActiveModel {
            user_id: Set(user_id.to_owned()),
            role: Set(role.to_owned()),
            granted_at: Set(now_ms),
        })
        .on_conflict(
            OnConflict::columns([user_role::Column::UserId, user_role::Column::Role])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        if inserted > 0 {
            touch_user(&txn, user_id, now_ms).await?;
            changes::append(&txn, self.backend, ChangeKind::User, user_id, now_ms).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Takes a directly granted role away, unless that would leave no active holder
    /// of `guarded_role`.
    pub async fn withdraw_role(
        &self,
        user_id: &str,
        role: &str,
        guarded_role: &str,
        now_ms: i64,
    ) -> Result<Withdrawal, StoreError> {
        let txn = self.begin_write().await?;
        locks::serialize(&txn, self.backend, AdvisoryLock::AdminHolders).await?;
        let deleted = user_role::Entity::delete_many()
            .filter(user_role::Column::UserId.eq(user_id))
            .filter(user_role::Column::Role.eq(role))
            .exec(&txn)
            .await?
            .rows_affected;
        if deleted > 0 {
            if role == guarded_role && count_active_holders(&txn, guarded_role).await? == 0 {
                txn.rollback().await?;
                return Ok(Withdrawal::RefusedLastHolder);
            }
            touch_user(&txn, user_id, now_ms).await?;
            changes::append(&txn, self.backend, ChangeKind::User, user_id, now_ms).await?;
        }
        txn.commit().await?;
        Ok(Withdrawal::Done)
    }

    /// Activates or deactivates a user; deactivation also ends every live session.
    /// Refuses to deactivate the last active holder of `guarded_role`.
    pub async fn set_active(
        &self,
        user_id: &str,
        active: bool,
        guarded_role: &str,
        now_ms: i64,
    ) -> Result<Activation, StoreError> {
        let txn = self.begin_write().await?;
        locks::serialize(&txn, self.backend, AdvisoryLock::AdminHolders).await?;
        user::Entity::update_many()
            .col_expr(user::Column::Active, Expr::value(active))
            .col_expr(user::Column::UpdatedAt, Expr::value(now_ms))
            .filter(user::Column::Id.eq(user_id))
            .exec(&txn)
            .await?;
        let mut ended = 0;
        if !active {
            let holds_guarded =
                user_role::Entity::find_by_id((user_id.to_owned(), guarded_role.to_owned()))
                    .one(&txn)
                    .await?
                    .is_some();
            if holds_guarded && count_active_holders(&txn, guarded_role).await? == 0 {
                txn.rollback().await?;
                return Ok(Activation::RefusedLastHolder);
            }
            ended = super::sessions::end_user_sessions(&txn, user_id, None, "deactivated", now_ms)
                .await?;
            if ended > 0 {
                changes::append(
                    &txn,
                    self.backend,
                    ChangeKind::UserSessionsEnded,
                    user_id,
                    now_ms,
                )
                .await?;
            }
        }
        changes::append(&txn, self.backend, ChangeKind::User, user_id, now_ms).await?;
        txn.commit().await?;
        Ok(Activation::Done {
            sessions_ended: ended,
        })
    }
}

async fn touch_user(
    db: &impl ConnectionTrait,
    user_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    user::Entity::update_many()
        .col_expr(user::Column::UpdatedAt, Expr::value(now_ms))
        .filter(user::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
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
            ChangeKind::User,
            &update.user_id,
            update.now_ms,
        )
        .await?;
        txn.commit().await?;
        Ok(ProfileChange::Updated)
    }

    /// Erases a user and everything that belongs to it: its roles, sessions,
    /// refresh tokens and account tokens go with the row (`ON DELETE CASCADE`; the
    /// tables later capabilities add for a user join that way), its throttling
    /// counter is deleted, and audit rows that named it by its login lose the name
    /// (they keep the id). API keys it created stay, with `created_by` its id.
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
        login_failure::Entity::delete_by_id(user_id)
            .exec(&txn)
            .await?;
        user::Entity::delete_by_id(user_id).exec(&txn).await?;
        changes::append(&txn, self.backend, ChangeKind::User, user_id, now_ms).await?;
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
pub(super) async fn set_password_ending_sessions(
    txn: &sea_orm::DatabaseTransaction,
    backend: super::Backend,
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
    let ended = super::sessions::end_user_sessions(txn, user_id, keep, reason, now_ms).await?;
    if ended > 0 {
        changes::append(txn, backend, ChangeKind::UserSessionsEnded, user_id, now_ms).await?;
    }
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
        .arg(with_more.chars().count() as i64);
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

/// Active users holding `role` directly.
async fn count_active_holders(db: &impl ConnectionTrait, role: &str) -> Result<u64, StoreError> {
    let holders: Vec<String> = user_role::Entity::find()
        .select_only()
        .column(user_role::Column::UserId)
        .filter(user_role::Column::Role.eq(role))
        .into_tuple()
        .all(db)
        .await?;
    if holders.is_empty() {
        return Ok(0);
    }
    Ok(user::Entity::find()
        .filter(user::Column::Id.is_in(holders))
        .filter(user::Column::Active.eq(true))
        .count(db)
        .await?)
}

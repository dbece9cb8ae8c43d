//! Users and their directly granted roles (the roles themselves: `roles.rs`).

mod identities;
mod lifecycle;

use std::collections::HashMap;

pub use identities::Unlinking;
pub(in crate::store) use lifecycle::set_password_ending_sessions;
pub use lifecycle::{Erasure, PasswordSet, ProfileChange, ProfileUpdate};

use sea_orm::{
    sea_query::{Expr, OnConflict},
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::{
    changes::{self, ChangeKind},
    entities::{identity_link, user, user_role},
    identity_links,
    locks::{self, AdvisoryLock},
    paging::Page,
    Store, StoreError,
};

/// The `password_hash` of an account without a password (one made by a sign-in
/// with an external identity provider). It is no PHC string, so no password
/// verifies against it: the hasher checks a login against its dummy hash instead,
/// at the same cost as for an unknown user.
pub const NO_PASSWORD: &str = "!";

/// A user to insert; the `*_lc` columns are derived here.
#[derive(Debug)]
pub struct NewUser {
    pub id: String,
    pub username: String,
    pub email: String,
    pub full_name: String,
    /// A PHC string, or [`NO_PASSWORD`].
    pub password_hash: String,
    /// True only where someone vouches for the address (an identity provider).
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub now_ms: i64,
}

/// A user row with the names of the roles granted to it directly and the
/// identities linked to it (by provider name).
#[derive(Clone, Debug)]
pub struct UserWithRoles {
    pub user: user::Model,
    pub roles: Vec<String>,
    pub links: Vec<identity_link::Model>,
}

/// Which users ListUsers answers with; the default is every user.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    /// Only users granted one of these roles directly.
    pub holding_any_of: Option<Vec<String>>,
    pub active: Option<bool>,
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

impl Store {
    /// Inserts a user and its roles. `Conflict` when the username or email is taken
    /// (the unique indexes decide, so concurrent registrations have one winner).
    #[tracing::instrument(name = "db.insert_user", skip_all)]
    pub async fn insert_user(&self, new: NewUser) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        insert_user_rows(&txn, self.backend, &new).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Which of a username and an email are already taken (case-insensitively).
    #[tracing::instrument(name = "db.taken", skip_all)]
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
    #[tracing::instrument(name = "db.find_user_by_login", skip_all)]
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
        let links = identity_links::links_of(&self.reader, id).await?;
        Ok(Some(UserWithRoles { user, roles, links }))
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
        let links = identity_links::links_of(&self.reader, &user.id).await?;
        Ok(Some(UserWithRoles { user, roles, links }))
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
        let mut links = identity_links::links_of_users(&self.reader, None).await?;
        Ok(users
            .into_iter()
            .map(|user| {
                let roles = roles.remove(&user.id).unwrap_or_default();
                let links = links.remove(&user.id).unwrap_or_default();
                UserWithRoles { user, roles, links }
            })
            .collect())
    }

    #[tracing::instrument(name = "db.set_password_hash", skip_all)]
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

    /// Users after the `(created_at, id)` position `after` that pass `filter`,
    /// oldest first.
    pub async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> Result<Page<UserWithRoles>, StoreError> {
        let mut query = user::Entity::find()
            .order_by_asc(user::Column::CreatedAt)
            .order_by_asc(user::Column::Id)
            .limit(limit + 1);
        if let Some(roles) = &filter.holding_any_of {
            let holders = sea_orm::sea_query::Query::select()
                .column(user_role::Column::UserId)
                .from(user_role::Entity)
                .and_where(user_role::Column::Role.is_in(roles.iter().cloned()))
                .to_owned();
            query = query.filter(user::Column::Id.in_subquery(holders));
        }
        if let Some(active) = filter.active {
            query = query.filter(user::Column::Active.eq(active));
        }
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
            .filter(user_role::Column::UserId.is_in(ids.iter().cloned()))
            .order_by_asc(user_role::Column::Role)
            .all(&self.reader)
            .await?
        {
            roles.entry(grant.user_id).or_default().push(grant.role);
        }
        let mut links = identity_links::links_of_users(&self.reader, Some(&ids)).await?;
        let users = users
            .into_iter()
            .map(|user| {
                let roles = roles.remove(&user.id).unwrap_or_default();
                let links = links.remove(&user.id).unwrap_or_default();
                UserWithRoles { user, roles, links }
            })
            .collect();
        Ok(Page {
            items: users,
            has_more,
        })
    }

    /// Grants `role`; granting a held role changes nothing.
    #[tracing::instrument(name = "db.grant_role", skip_all)]
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
            changes::append(&txn, self.backend, ChangeKind::UserRoles, user_id, now_ms).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Takes a directly granted role away, unless that would leave no active holder
    /// of `guarded_role`.
    #[tracing::instrument(name = "db.withdraw_role", skip_all)]
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
            changes::append(&txn, self.backend, ChangeKind::UserRoles, user_id, now_ms).await?;
        }
        txn.commit().await?;
        Ok(Withdrawal::Done)
    }

    /// Activates or deactivates a user; deactivation also ends every live session.
    /// Refuses to deactivate the last active holder of `guarded_role`.
    #[tracing::instrument(name = "db.set_active", skip_all)]
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
            ended = super::sessions::end_user_sessions(
                &txn,
                self.backend,
                user_id,
                None,
                "deactivated",
                now_ms,
            )
            .await?;
        }
        let kind = if active {
            ChangeKind::UserUpdated
        } else {
            ChangeKind::UserDisabled
        };
        changes::append(&txn, self.backend, kind, user_id, now_ms).await?;
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

/// The rows of a new user (the account, its roles, the change row), inside `txn`.
/// `Conflict` when the username or email is taken.
pub(in crate::store) async fn insert_user_rows(
    txn: &sea_orm::DatabaseTransaction,
    backend: super::Backend,
    new: &NewUser,
) -> Result<(), StoreError> {
    user::Entity::insert(user::ActiveModel {
        id: Set(new.id.clone()),
        username_lc: Set(new.username.to_lowercase()),
        username: Set(new.username.clone()),
        email_lc: Set(new.email.to_lowercase()),
        email: Set(new.email.clone()),
        full_name: Set(new.full_name.clone()),
        password_hash: Set(new.password_hash.clone()),
        active: Set(true),
        created_at: Set(new.now_ms),
        updated_at: Set(new.now_ms),
        email_verified: Set(new.email_verified),
        mfa_enabled: Set(false),
    })
    .exec_without_returning(txn)
    .await?;
    for role in &new.roles {
        user_role::Entity::insert(user_role::ActiveModel {
            user_id: Set(new.id.clone()),
            role: Set(role.clone()),
            granted_at: Set(new.now_ms),
        })
        .exec_without_returning(txn)
        .await?;
    }
    changes::append(txn, backend, ChangeKind::UserUpdated, &new.id, new.now_ms).await
}

//! Identity links: which account an identity at an external provider reaches,
//! (provider, `sub`) → user. The primary key decides races between first sign-ins
//! of one identity; the unique (user, provider) index keeps an account to one
//! identity per provider. Links hold nothing the hot path reads, so they append no
//! change row; a user made by a sign-in does (through the user's own rows).

use std::collections::HashMap;

use sea_orm::{
    sea_query::Expr, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use super::{
    entities::{audit_event, identity_link, user},
    users::{insert_user_rows, NO_PASSWORD},
    NewUser, Store, StoreError,
};

/// An identity to link to an existing account.
#[derive(Debug)]
pub struct NewLink<'a> {
    pub user_id: &'a str,
    pub provider: &'a str,
    pub subject: &'a str,
    pub now_ms: i64,
}

/// How an unlinking ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unlinking {
    /// Removed; the identity's `sub` was this.
    Unlinked {
        subject: String,
    },
    NoSuchUser,
    /// The user has no identity at that provider.
    NoSuchLink,
    /// Nothing changed: the account has no password and this was its last link,
    /// so nobody could sign in to it any more.
    RefusedLastWayIn,
}

/// The audit actions whose rows name an identity (`…; subject=<sub>` last).
const IDENTITY_ACTIONS: [&str; 4] = [
    "id_token_login",
    "link_identity",
    "unlink_identity",
    "register",
];

impl Store {
    /// The link of (provider, subject), if any.
    #[tracing::instrument(name = "db.find_link", skip_all)]
    pub async fn find_link(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<identity_link::Model>, StoreError> {
        Ok(
            identity_link::Entity::find_by_id((provider.to_owned(), subject.to_owned()))
                .one(&self.reader)
                .await?,
        )
    }

    /// Links an identity to an existing account. `Conflict` when the identity is
    /// linked already or the account holds another identity of the provider (the
    /// caller reads [`Store::find_link`] to tell which).
    #[tracing::instrument(name = "db.link_identity", skip_all)]
    pub async fn link_identity(&self, link: NewLink<'_>) -> Result<(), StoreError> {
        identity_link::Entity::insert(new_link(&link))
            .exec_without_returning(&self.writer)
            .await?;
        Ok(())
    }

    /// Creates an account (see [`Store::insert_user`]) and links the identity to
    /// it, in one transaction. `Conflict` when the username, the email or the
    /// identity is taken: of concurrent first sign-ins of one identity one wins.
    #[tracing::instrument(name = "db.insert_user_with_link", skip_all)]
    pub async fn insert_user_with_link(
        &self,
        new: NewUser,
        provider: &str,
        subject: &str,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        insert_user_rows(&txn, self.backend, &new).await?;
        identity_link::Entity::insert(new_link(&NewLink {
            user_id: &new.id,
            provider,
            subject,
            now_ms: new.now_ms,
        }))
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await
    }

    /// Removes the user's identity at `provider`, unless the account has no
    /// password and this is its last link. The user's row is updated first, which
    /// holds it for the transaction, so two unlinkings of one account cannot each
    /// leave the other as the last way in.
    #[tracing::instrument(name = "db.unlink_identity", skip_all)]
    pub async fn unlink_identity(
        &self,
        user_id: &str,
        provider: &str,
        now_ms: i64,
    ) -> Result<Unlinking, StoreError> {
        let txn = self.begin_write().await?;
        let touched = user::Entity::update_many()
            .col_expr(user::Column::UpdatedAt, Expr::value(now_ms))
            .filter(user::Column::Id.eq(user_id))
            .exec(&*txn)
            .await?
            .rows_affected;
        if touched == 0 {
            txn.rollback().await?;
            return Ok(Unlinking::NoSuchUser);
        }
        let Some(link) = identity_link::Entity::find()
            .filter(identity_link::Column::UserId.eq(user_id))
            .filter(identity_link::Column::Provider.eq(provider))
            .one(&*txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(Unlinking::NoSuchLink);
        };
        identity_link::Entity::delete_by_id((link.provider.clone(), link.subject.clone()))
            .exec(&*txn)
            .await?;
        let remaining = identity_link::Entity::find()
            .filter(identity_link::Column::UserId.eq(user_id))
            .count(&*txn)
            .await?;
        let passwordless = user::Entity::find_by_id(user_id)
            .filter(user::Column::PasswordHash.eq(NO_PASSWORD))
            .count(&*txn)
            .await?
            > 0;
        if passwordless && remaining == 0 {
            txn.rollback().await?;
            return Ok(Unlinking::RefusedLastWayIn);
        }
        txn.commit().await?;
        Ok(Unlinking::Unlinked {
            subject: link.subject,
        })
    }
}

fn new_link(link: &NewLink<'_>) -> identity_link::ActiveModel {
    identity_link::ActiveModel {
        provider: Set(link.provider.to_owned()),
        subject: Set(link.subject.to_owned()),
        user_id: Set(link.user_id.to_owned()),
        linked_at: Set(link.now_ms),
    }
}

/// A user's links, by provider name.
pub(in crate::store) async fn links_of(
    db: &impl ConnectionTrait,
    user_id: &str,
) -> Result<Vec<identity_link::Model>, StoreError> {
    Ok(identity_link::Entity::find()
        .filter(identity_link::Column::UserId.eq(user_id))
        .order_by_asc(identity_link::Column::Provider)
        .all(db)
        .await?)
}

/// The links of these users (`None`: of every user), by user id.
pub(in crate::store) async fn links_of_users(
    db: &impl ConnectionTrait,
    user_ids: Option<&[String]>,
) -> Result<HashMap<String, Vec<identity_link::Model>>, StoreError> {
    let mut query = identity_link::Entity::find().order_by_asc(identity_link::Column::Provider);
    if let Some(ids) = user_ids {
        query = query.filter(identity_link::Column::UserId.is_in(ids.iter().cloned()));
    }
    let mut by_user: HashMap<String, Vec<identity_link::Model>> = HashMap::new();
    for link in query.all(db).await? {
        by_user.entry(link.user_id.clone()).or_default().push(link);
    }
    Ok(by_user)
}

/// Audit rows about an erased user keep its id but not the identities it had: the
/// `subject=<sub>` that ends their detail becomes `subject=(erased)`.
pub(in crate::store) async fn forget_identities_in_audit(
    db: &impl ConnectionTrait,
    user_id: &str,
) -> Result<(), StoreError> {
    const MARK: &str = "subject=";
    let rows: Vec<(i64, Option<String>)> = audit_event::Entity::find()
        .select_only()
        .column(audit_event::Column::Id)
        .column(audit_event::Column::Detail)
        .filter(audit_event::Column::Subject.eq(user_id))
        .filter(audit_event::Column::Action.is_in(IDENTITY_ACTIONS))
        .filter(audit_event::Column::Detail.contains(MARK))
        .into_tuple()
        .all(db)
        .await?;
    for (id, detail) in rows {
        let Some(detail) = detail else { continue };
        // The first mark: what comes before it (provider and role names) cannot
        // hold one, while the `sub` after it, chosen by the provider, may.
        let Some(at) = detail.find(MARK) else {
            continue;
        };
        audit_event::Entity::update_many()
            .col_expr(
                audit_event::Column::Detail,
                Expr::value(format!("{}{MARK}(erased)", &detail[..at])),
            )
            .filter(audit_event::Column::Id.eq(id))
            .exec(db)
            .await?;
    }
    Ok(())
}

//! A user's identities at external providers, where the account is concerned: an
//! account made together with its first link (one transaction, so a lost race
//! leaves nothing behind), and unlinking, which must leave an account without a
//! password some way in.

use sea_orm::{sea_query::Expr, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use super::{
    super::{
        entities::{identity_link, user},
        identity_links::{new_link, NewLink},
        Store, StoreError,
    },
    insert_user_rows, NewUser, NO_PASSWORD,
};

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

impl Store {
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

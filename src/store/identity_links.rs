//! Identity links: which account an identity at an external provider reaches,
//! (provider, `sub`) → user. The primary key decides races between first sign-ins
//! of one identity; the unique (user, provider) index keeps an account to one
//! identity per provider. Links hold nothing the hot path reads, so they append no
//! change row. A user made together with its link, and unlinking (which must keep
//! an account without a password a way in), are the users' (`users/identities.rs`).

use std::collections::HashMap;

use sea_orm::{
    sea_query::Expr, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::{
    entities::{audit_event, identity_link},
    Store, StoreError,
};

/// An identity to link to an existing account.
#[derive(Debug)]
pub struct NewLink<'a> {
    pub user_id: &'a str,
    pub provider: &'a str,
    pub subject: &'a str,
    pub now_ms: i64,
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
}

pub(in crate::store) fn new_link(link: &NewLink<'_>) -> identity_link::ActiveModel {
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

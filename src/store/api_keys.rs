//! API keys: creation (names unique among live keys), listing, revocation and the
//! batched `last_used_at` updates.

use sea_orm::{
    sea_query::Expr, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::{
    changes::{self, ChangeKind},
    entities::api_key,
    locks::{self, AdvisoryLock},
    paging::Page,
    Store, StoreError,
};

#[derive(Debug)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub created_by: Option<String>,
}

pub(super) fn live(now_ms: i64) -> Condition {
    Condition::all()
        .add(api_key::Column::RevokedAt.is_null())
        .add(
            Condition::any()
                .add(api_key::Column::ExpiresAt.is_null())
                .add(api_key::Column::ExpiresAt.gt(now_ms)),
        )
}

impl Store {
    /// Inserts a key; `Conflict` when a live key already has the name.
    pub async fn insert_api_key(&self, new: NewApiKey) -> Result<api_key::Model, StoreError> {
        let txn = self.begin_write().await?;
        locks::serialize(&txn, self.backend, AdvisoryLock::ApiKeyName).await?;
        let taken = api_key::Entity::find()
            .filter(api_key::Column::Name.eq(&new.name))
            .filter(live(new.created_at))
            .one(&txn)
            .await?
            .is_some();
        if taken {
            txn.rollback().await?;
            return Err(StoreError::Conflict);
        }
        let row = api_key::Model {
            id: new.id,
            name: new.name,
            prefix: new.prefix,
            secret_hash: new.secret_hash,
            roles: new.roles.join(","),
            created_at: new.created_at,
            expires_at: new.expires_at,
            last_used_at: None,
            revoked_at: None,
            created_by: new.created_by,
        };
        api_key::Entity::insert(api_key::ActiveModel {
            id: Set(row.id.clone()),
            name: Set(row.name.clone()),
            prefix: Set(row.prefix.clone()),
            secret_hash: Set(row.secret_hash.clone()),
            roles: Set(row.roles.clone()),
            created_at: Set(row.created_at),
            expires_at: Set(row.expires_at),
            last_used_at: Set(None),
            revoked_at: Set(None),
            created_by: Set(row.created_by.clone()),
        })
        .exec_without_returning(&txn)
        .await?;
        changes::append(
            &txn,
            self.backend,
            ChangeKind::ApiKeyCreated,
            &row.id,
            row.created_at,
        )
        .await?;
        txn.commit().await?;
        Ok(row)
    }

    pub async fn find_api_key(&self, id: &str) -> Result<Option<api_key::Model>, StoreError> {
        Ok(api_key::Entity::find_by_id(id).one(&self.reader).await?)
    }

    /// Keys that are neither revoked nor expired, for the memory view.
    pub async fn live_api_keys(&self, now_ms: i64) -> Result<Vec<api_key::Model>, StoreError> {
        Ok(api_key::Entity::find()
            .filter(live(now_ms))
            .all(&self.reader)
            .await?)
    }

    /// Keys after the `(created_at, id)` position `after`, oldest first.
    pub async fn list_api_keys(
        &self,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> Result<Page<api_key::Model>, StoreError> {
        let mut query = api_key::Entity::find()
            .order_by_asc(api_key::Column::CreatedAt)
            .order_by_asc(api_key::Column::Id)
            .limit(limit + 1);
        if let Some(after) = after {
            query = query.filter(super::paging::after(
                api_key::Column::CreatedAt,
                api_key::Column::Id,
                after,
            ));
        }
        Ok(Page::from_rows(query.all(&self.reader).await?, limit))
    }

    /// Revokes a key (a revoked key stays revoked as of its first revocation).
    /// `None` when there is no such key.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<api_key::Model>, StoreError> {
        let txn = self.begin_write().await?;
        let revoked = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now_ms))
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        if revoked > 0 {
            changes::append(&txn, self.backend, ChangeKind::ApiKeyRevoked, id, now_ms).await?;
        }
        let key = api_key::Entity::find_by_id(id).one(&txn).await?;
        txn.commit().await?;
        Ok(key)
    }

    /// Records when keys were last used (batched by the caller).
    pub async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        for (id, at) in used {
            api_key::Entity::update_many()
                .col_expr(api_key::Column::LastUsedAt, Expr::value(*at))
                .filter(api_key::Column::Id.eq(id))
                .exec(&self.writer)
                .await?;
        }
        Ok(())
    }
}

//! Signing keys. Every replica reads the same rows, so all sign and verify alike.

use sea_orm::{
    sea_query::Expr, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use super::{
    changes::{self, ChangeKind},
    connect::Backend,
    entities::signing_key,
    locks::{self, AdvisoryLock},
    Store, StoreError,
};

impl Store {
    /// Keys still published: not retired, or retired after `retired_after_ms`.
    pub async fn published_keys(
        &self,
        retired_after_ms: i64,
    ) -> Result<Vec<signing_key::Model>, StoreError> {
        Ok(signing_key::Entity::find()
            .filter(signing_key::Column::RevokedAt.is_null())
            .filter(
                sea_orm::Condition::any()
                    .add(signing_key::Column::RetiredAt.is_null())
                    .add(signing_key::Column::RetiredAt.gt(retired_after_ms)),
            )
            .order_by_asc(signing_key::Column::CreatedAt)
            .all(&self.reader)
            .await?)
    }

    /// Inserts `key` unless an active key exists already; answers whether it did.
    pub async fn insert_first_key(&self, key: signing_key::Model) -> Result<bool, StoreError> {
        let txn = self.begin_write().await?;
        locks::serialize(&txn, self.backend, AdvisoryLock::FirstSigningKey).await?;
        let active = signing_key::Entity::find()
            .filter(signing_key::Column::RetiredAt.is_null())
            .count(&txn)
            .await?;
        if active > 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        let kid = key.kid.clone();
        let created_at = key.created_at;
        signing_key::Entity::insert(into_active(key))
            .exec_without_returning(&txn)
            .await?;
        changes::append(
            &txn,
            self.backend,
            ChangeKind::SigningKeys,
            &kid,
            created_at,
        )
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Publishes `key` now and makes it the signing key from its `signs_from()`,
    /// retiring the others as of that moment.
    pub async fn rotate_key(&self, key: signing_key::Model) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let now_ms = key.created_at;
        let switch_at = key.signs_from();
        let kid = key.kid.clone();
        signing_key::Entity::update_many()
            .col_expr(signing_key::Column::RetiredAt, Expr::value(switch_at))
            .filter(
                sea_orm::Condition::any()
                    .add(signing_key::Column::RetiredAt.is_null())
                    // An earlier rotation that has not switched yet: this one replaces it.
                    .add(signing_key::Column::RetiredAt.gt(switch_at)),
            )
            .exec(&txn)
            .await?;
        signing_key::Entity::insert(into_active(key))
            .exec_without_returning(&txn)
            .await?;
        erase_private_halves(&txn, now_ms).await?;
        changes::append(&txn, self.backend, ChangeKind::SigningKeys, &kid, now_ms).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Erases the private half of every key retired by `now_ms`: it never signs again.
    pub async fn erase_retired_private_keys(&self, now_ms: i64) -> Result<u64, StoreError> {
        let txn = self.begin_write().await?;
        let erased = erase_private_halves(&txn, now_ms).await?;
        txn.commit().await?;
        Ok(erased)
    }

    /// Rewrites the private halves still held (erased ones stay empty): `rewrite`
    /// sees each kid and stored value and answers its new value, or `None` to leave
    /// it. All changes are written in one transaction, or none when `rewrite`
    /// refuses a row (its error is answered inside `Ok`). Sealing at rest and
    /// `keys rewrap` use it; the key material does not change, so the change feed
    /// is not told.
    pub async fn rewrite_private_keys<E>(
        &self,
        mut rewrite: impl FnMut(&str, &str) -> Result<Option<String>, E>,
    ) -> Result<Result<u64, E>, StoreError> {
        // The common case, nothing to change, needs no write lock: look first.
        let held = held_private_keys(&self.reader).await?;
        let mut changes = false;
        for (kid, stored) in &held {
            match rewrite(kid, stored) {
                Err(err) => return Ok(Err(err)),
                Ok(new) => changes |= new.is_some(),
            }
        }
        if !changes {
            return Ok(Ok(0));
        }
        let txn = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Holds off rotations and erasures (not readers) until commit, so that
            // no key is added or changed between reading and rewriting.
            txn.execute_unprepared("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
                .await?;
        }
        let mut rewritten = 0;
        for (kid, stored) in held_private_keys(&txn).await? {
            let new = match rewrite(&kid, &stored) {
                Err(err) => {
                    txn.rollback().await?;
                    return Ok(Err(err));
                }
                Ok(None) => continue,
                Ok(Some(new)) => new,
            };
            signing_key::Entity::update_many()
                .col_expr(signing_key::Column::PrivateKey, Expr::value(new))
                .filter(signing_key::Column::Kid.eq(kid))
                .exec(&txn)
                .await?;
            rewritten += 1;
        }
        txn.commit().await?;
        Ok(Ok(rewritten))
    }

    /// Withdraws a key that no longer signs (see [`KeyRevocation`]).
    pub async fn revoke_key(&self, kid: &str, now_ms: i64) -> Result<KeyRevocation, StoreError> {
        let txn = self.begin_write().await?;
        let Some(key) = signing_key::Entity::find_by_id(kid)
            .filter(signing_key::Column::RevokedAt.is_null())
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(KeyRevocation::Unknown);
        };
        if key.retired_at.is_none_or(|retired| retired > now_ms) {
            txn.rollback().await?;
            return Ok(KeyRevocation::StillSigns);
        }
        signing_key::Entity::update_many()
            .col_expr(signing_key::Column::RevokedAt, Expr::value(now_ms))
            .col_expr(signing_key::Column::PrivateKey, Expr::value(""))
            .filter(signing_key::Column::Kid.eq(kid))
            .exec(&txn)
            .await?;
        changes::append(&txn, self.backend, ChangeKind::SigningKeys, kid, now_ms).await?;
        txn.commit().await?;
        Ok(KeyRevocation::Revoked)
    }
}

/// How `authd keys revoke` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRevocation {
    Revoked,
    /// No such key, or it was revoked before.
    Unknown,
    /// It signs now or will: refused.
    StillSigns,
}

/// Kid and private half of every key whose private half is not erased.
async fn held_private_keys(db: &impl ConnectionTrait) -> Result<Vec<(String, String)>, StoreError> {
    Ok(signing_key::Entity::find()
        .select_only()
        .column(signing_key::Column::Kid)
        .column(signing_key::Column::PrivateKey)
        .filter(signing_key::Column::PrivateKey.ne(""))
        .order_by_asc(signing_key::Column::Kid)
        .into_tuple()
        .all(db)
        .await?)
}

async fn erase_private_halves(
    txn: &sea_orm::DatabaseTransaction,
    now_ms: i64,
) -> Result<u64, StoreError> {
    Ok(signing_key::Entity::update_many()
        .col_expr(signing_key::Column::PrivateKey, Expr::value(""))
        .filter(signing_key::Column::RetiredAt.lte(now_ms))
        .filter(signing_key::Column::PrivateKey.ne(""))
        .exec(txn)
        .await?
        .rows_affected)
}

fn into_active(key: signing_key::Model) -> signing_key::ActiveModel {
    signing_key::ActiveModel {
        kid: Set(key.kid),
        algorithm: Set(key.algorithm),
        private_key: Set(key.private_key),
        public_key: Set(key.public_key),
        created_at: Set(key.created_at),
        active_from: Set(key.active_from),
        retired_at: Set(key.retired_at),
        revoked_at: Set(key.revoked_at),
    }
}

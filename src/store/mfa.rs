//! The second factor's rows: a user's TOTP credential (pending or confirmed, with
//! the last time step spent), recovery codes and login challenges. Each "works
//! once" rule is one conditional UPDATE, so concurrent attempts (on any replica)
//! cannot both succeed. `users.mfa_enabled` changes in the transaction that confirms
//! or removes the credential.

use sea_orm::{
    sea_query::Expr, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter,
};

use super::{
    entities::{mfa_challenge, recovery_code, totp_credential, user},
    Store, StoreError,
};

/// What enrolling found.
#[derive(Debug, PartialEq, Eq)]
pub enum Enrolment {
    /// The new secret is pending (any earlier pending one is replaced).
    Pending,
    /// TOTP is on already; nothing changed.
    AlreadyOn,
}

/// A confirmation: the step its code was valid at and the recovery codes' hashes.
pub struct Confirmation<'a> {
    pub user_id: &'a str,
    pub step: i64,
    pub recovery_code_hashes: Vec<String>,
    pub now_ms: i64,
}

impl Store {
    /// Stores a pending secret for the user, unless TOTP is on already.
    pub async fn put_pending_totp(
        &self,
        user_id: &str,
        secret: String,
        now_ms: i64,
    ) -> Result<Enrolment, StoreError> {
        let txn = self.begin_write().await?;
        if let Some(existing) = totp_credential::Entity::find_by_id(user_id)
            .one(&*txn)
            .await?
        {
            if existing.confirmed_at.is_some() {
                txn.rollback().await?;
                return Ok(Enrolment::AlreadyOn);
            }
            totp_credential::Entity::delete_by_id(user_id)
                .exec(&*txn)
                .await?;
        }
        totp_credential::Entity::insert(totp_credential::ActiveModel {
            user_id: Set(user_id.to_owned()),
            secret: Set(secret),
            created_at: Set(now_ms),
            confirmed_at: Set(None),
            last_step: Set(None),
        })
        .exec_without_returning(&*txn)
        .await?;
        txn.commit().await?;
        Ok(Enrolment::Pending)
    }

    /// Rewrites stored TOTP secrets: `rewrite` answers the new form of a
    /// (user id, stored secret), or `None` to leave it. Each row is replaced only if
    /// it still holds what was read, in one transaction; answers how many changed.
    pub async fn rewrite_totp_secrets<E>(
        &self,
        mut rewrite: impl FnMut(&str, &str) -> Result<Option<String>, E>,
    ) -> Result<Result<u64, E>, StoreError> {
        let held = totp_credential::Entity::find().all(&self.reader).await?;
        let mut new_forms = Vec::new();
        for row in &held {
            match rewrite(&row.user_id, &row.secret) {
                Err(err) => return Ok(Err(err)),
                Ok(Some(new)) => new_forms.push((row.user_id.clone(), row.secret.clone(), new)),
                Ok(None) => {}
            }
        }
        if new_forms.is_empty() {
            return Ok(Ok(0));
        }
        let txn = self.begin_write().await?;
        let mut rewritten = 0;
        for (user_id, old, new) in new_forms {
            rewritten += totp_credential::Entity::update_many()
                .col_expr(totp_credential::Column::Secret, Expr::value(new))
                .filter(totp_credential::Column::UserId.eq(user_id))
                .filter(totp_credential::Column::Secret.eq(old))
                .exec(&*txn)
                .await?
                .rows_affected;
        }
        txn.commit().await?;
        Ok(Ok(rewritten))
    }

    pub async fn totp_credential(
        &self,
        user_id: &str,
    ) -> Result<Option<totp_credential::Model>, StoreError> {
        Ok(totp_credential::Entity::find_by_id(user_id)
            .one(&self.reader)
            .await?)
    }

    /// Turns the pending secret on and replaces the recovery codes, if the step has
    /// not been spent; false when it has (a replay) or nothing is pending.
    pub async fn confirm_totp(&self, confirmation: Confirmation<'_>) -> Result<bool, StoreError> {
        let Confirmation {
            user_id,
            step,
            recovery_code_hashes,
            now_ms,
        } = confirmation;
        let txn = self.begin_write().await?;
        let confirmed = totp_credential::Entity::update_many()
            .col_expr(totp_credential::Column::ConfirmedAt, Expr::value(now_ms))
            .col_expr(totp_credential::Column::LastStep, Expr::value(step))
            .filter(totp_credential::Column::UserId.eq(user_id))
            .filter(totp_credential::Column::ConfirmedAt.is_null())
            .filter(step_unspent(step))
            .exec(&*txn)
            .await?;
        if confirmed.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        recovery_code::Entity::delete_many()
            .filter(recovery_code::Column::UserId.eq(user_id))
            .exec(&*txn)
            .await?;
        recovery_code::Entity::insert_many(recovery_code_hashes.into_iter().map(|hash| {
            recovery_code::ActiveModel {
                user_id: Set(user_id.to_owned()),
                code_hash: Set(hash),
                used_at: Set(None),
            }
        }))
        .exec_without_returning(&*txn)
        .await?;
        set_mfa_enabled(&txn, user_id, true, now_ms).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Spends a time step of the user's confirmed credential: true once per step,
    /// and only for a step later than the last one spent.
    pub async fn claim_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        let txn = self.begin_write().await?;
        let claimed = totp_credential::Entity::update_many()
            .col_expr(totp_credential::Column::LastStep, Expr::value(step))
            .filter(totp_credential::Column::UserId.eq(user_id))
            .filter(totp_credential::Column::ConfirmedAt.is_not_null())
            .filter(step_unspent(step))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        Ok(claimed.rows_affected == 1)
    }

    /// Spends a recovery code: true once.
    pub async fn use_recovery_code(
        &self,
        user_id: &str,
        code_hash: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let txn = self.begin_write().await?;
        let used = recovery_code::Entity::update_many()
            .col_expr(recovery_code::Column::UsedAt, Expr::value(now_ms))
            .filter(recovery_code::Column::UserId.eq(user_id))
            .filter(recovery_code::Column::CodeHash.eq(code_hash))
            .filter(recovery_code::Column::UsedAt.is_null())
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        Ok(used.rows_affected == 1)
    }

    /// Removes the user's credential, recovery codes and open challenges; true when
    /// there was a credential.
    pub async fn remove_totp(&self, user_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let txn = self.begin_write().await?;
        let removed = totp_credential::Entity::delete_many()
            .filter(totp_credential::Column::UserId.eq(user_id))
            .exec(&*txn)
            .await?;
        recovery_code::Entity::delete_many()
            .filter(recovery_code::Column::UserId.eq(user_id))
            .exec(&*txn)
            .await?;
        mfa_challenge::Entity::delete_many()
            .filter(mfa_challenge::Column::UserId.eq(user_id))
            .exec(&*txn)
            .await?;
        set_mfa_enabled(&txn, user_id, false, now_ms).await?;
        txn.commit().await?;
        Ok(removed.rows_affected > 0)
    }

    pub async fn insert_mfa_challenge(
        &self,
        token_hash: String,
        user_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        mfa_challenge::Entity::insert(mfa_challenge::ActiveModel {
            token_hash: Set(token_hash),
            user_id: Set(user_id.to_owned()),
            expires_at: Set(expires_at),
            failures: Set(0),
            spent_at: Set(None),
        })
        .exec_without_returning(&*txn)
        .await?;
        txn.commit().await
    }

    /// A challenge that can still be answered: not spent, not expired and with
    /// fewer than `max_failures` wrong codes.
    pub async fn open_mfa_challenge(
        &self,
        token_hash: &str,
        now_ms: i64,
        max_failures: i32,
    ) -> Result<Option<mfa_challenge::Model>, StoreError> {
        Ok(mfa_challenge::Entity::find_by_id(token_hash)
            .filter(open_challenge(now_ms, max_failures))
            .one(&self.reader)
            .await?)
    }

    /// Counts a wrong code against the challenge.
    pub async fn fail_mfa_challenge(&self, token_hash: &str) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        mfa_challenge::Entity::update_many()
            .col_expr(
                mfa_challenge::Column::Failures,
                Expr::col(mfa_challenge::Column::Failures).add(1),
            )
            .filter(mfa_challenge::Column::TokenHash.eq(token_hash))
            .exec(&*txn)
            .await?;
        txn.commit().await
    }

    /// Spends the challenge if it is still open: true once.
    pub async fn spend_mfa_challenge(
        &self,
        token_hash: &str,
        now_ms: i64,
        max_failures: i32,
    ) -> Result<bool, StoreError> {
        let txn = self.begin_write().await?;
        let spent = mfa_challenge::Entity::update_many()
            .col_expr(mfa_challenge::Column::SpentAt, Expr::value(now_ms))
            .filter(mfa_challenge::Column::TokenHash.eq(token_hash))
            .filter(open_challenge(now_ms, max_failures))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        Ok(spent.rows_affected == 1)
    }
}

fn step_unspent(step: i64) -> Condition {
    Condition::any()
        .add(totp_credential::Column::LastStep.is_null())
        .add(totp_credential::Column::LastStep.lt(step))
}

fn open_challenge(now_ms: i64, max_failures: i32) -> Condition {
    Condition::all()
        .add(mfa_challenge::Column::SpentAt.is_null())
        .add(mfa_challenge::Column::ExpiresAt.gt(now_ms))
        .add(mfa_challenge::Column::Failures.lt(max_failures))
}

async fn set_mfa_enabled(
    txn: &super::WriteTxn<'_>,
    user_id: &str,
    enabled: bool,
    now_ms: i64,
) -> Result<(), StoreError> {
    user::Entity::update_many()
        .col_expr(user::Column::MfaEnabled, Expr::value(enabled))
        .col_expr(user::Column::UpdatedAt, Expr::value(now_ms))
        .filter(user::Column::Id.eq(user_id))
        .exec(&**txn)
        .await?;
    Ok(())
}

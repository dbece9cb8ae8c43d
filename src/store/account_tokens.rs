//! Password-reset and email-verification tokens: issued one live token per user
//! and purpose (a newer one deletes the older), spent by deleting the row.
//!
//! Spending is a conditional `DELETE` inside the transaction that does what the
//! token is for, so of concurrent spends of one token exactly one affects the row
//! (on PostgreSQL the others wait for its lock and then find it gone; on SQLite the
//! write transactions run one at a time) and only that one acts.

use sea_orm::{sea_query::Expr, ColumnTrait, EntityTrait, QueryFilter, Set};

use super::{
    entities::{account_token, user},
    users::{self, PasswordSet},
    Store, StoreError,
};

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPurpose {
    PasswordReset,
    EmailVerification,
}

impl TokenPurpose {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::PasswordReset => "password_reset",
            TokenPurpose::EmailVerification => "email_verification",
        }
    }
}

/// A token to store (already hashed).
#[derive(Debug)]
pub struct NewAccountToken<'a> {
    pub purpose: TokenPurpose,
    pub hash: &'a str,
    pub user_id: &'a str,
    pub expires_at: i64,
    pub now_ms: i64,
}

/// A password reset that spent its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordReset {
    pub user_id: String,
    pub sessions_ended: u64,
}

impl Store {
    /// Stores a token for the user, deleting the user's older ones of that purpose
    /// (a verification token records the user's email now); `false` when there is
    /// no such user.
    pub async fn issue_account_token(&self, new: NewAccountToken<'_>) -> Result<bool, StoreError> {
        let txn = self.begin_write().await?;
        let Some(user) = user::Entity::find_by_id(new.user_id).one(&txn).await? else {
            txn.rollback().await?;
            return Ok(false);
        };
        account_token::Entity::delete_many()
            .filter(account_token::Column::UserId.eq(new.user_id))
            .filter(account_token::Column::Purpose.eq(new.purpose.as_str()))
            .exec(&txn)
            .await?;
        let email_lc = (new.purpose == TokenPurpose::EmailVerification).then_some(user.email_lc);
        account_token::Entity::insert(account_token::ActiveModel {
            token_hash: Set(new.hash.to_owned()),
            purpose: Set(new.purpose.as_str().to_owned()),
            user_id: Set(new.user_id.to_owned()),
            email_lc: Set(email_lc),
            created_at: Set(new.now_ms),
            expires_at: Set(new.expires_at),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Whether `hash` is a live token of `purpose` (a cheap check before work that
    /// a spend would waste; the spend itself decides).
    pub async fn account_token_is_live(
        &self,
        purpose: TokenPurpose,
        hash: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(live_token(purpose, hash, now_ms)
            .one(&self.reader)
            .await?
            .is_some())
    }

    /// Spends a live reset token: sets the password hash and ends every session of
    /// the user, in one transaction. `None` when the token is unknown, spent or
    /// expired (or another call spent it first).
    pub async fn spend_password_reset(
        &self,
        hash: &str,
        password_hash: String,
        now_ms: i64,
    ) -> Result<Option<PasswordReset>, StoreError> {
        let txn = self.begin_write().await?;
        let Some(token) = spend(&txn, TokenPurpose::PasswordReset, hash, now_ms).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let set = users::set_password_ending_sessions(
            &txn,
            self.backend,
            &token.user_id,
            password_hash,
            None,
            "password_reset",
            now_ms,
        )
        .await?;
        let PasswordSet::Done { sessions_ended } = set else {
            txn.rollback().await?;
            return Ok(None);
        };
        txn.commit().await?;
        Ok(Some(PasswordReset {
            user_id: token.user_id,
            sessions_ended,
        }))
    }

    /// Spends a live verification token and marks the user's email verified, if it
    /// is still the address the token was made for; answers the user's id, `None`
    /// when the token is unknown, spent or expired.
    pub async fn spend_email_verification(
        &self,
        hash: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let txn = self.begin_write().await?;
        let Some(token) = spend(&txn, TokenPurpose::EmailVerification, hash, now_ms).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let verified = user::Entity::update_many()
            .col_expr(user::Column::EmailVerified, Expr::value(true))
            .col_expr(user::Column::UpdatedAt, Expr::value(now_ms))
            .filter(user::Column::Id.eq(&token.user_id))
            .filter(user::Column::EmailLc.eq(token.email_lc.unwrap_or_default()))
            .exec(&txn)
            .await?
            .rows_affected;
        // Spent either way: a token for an address the user no longer has is void.
        txn.commit().await?;
        Ok((verified > 0).then_some(token.user_id))
    }
}

fn live_token(
    purpose: TokenPurpose,
    hash: &str,
    now_ms: i64,
) -> sea_orm::Select<account_token::Entity> {
    account_token::Entity::find_by_id(hash)
        .filter(account_token::Column::Purpose.eq(purpose.as_str()))
        .filter(account_token::Column::ExpiresAt.gt(now_ms))
}

/// Deletes a live token of `purpose`; the row when this call deleted it.
async fn spend(
    txn: &sea_orm::DatabaseTransaction,
    purpose: TokenPurpose,
    hash: &str,
    now_ms: i64,
) -> Result<Option<account_token::Model>, StoreError> {
    let Some(token) = live_token(purpose, hash, now_ms).one(txn).await? else {
        return Ok(None);
    };
    let deleted = account_token::Entity::delete_many()
        .filter(account_token::Column::TokenHash.eq(hash))
        .filter(account_token::Column::Purpose.eq(purpose.as_str()))
        .filter(account_token::Column::ExpiresAt.gt(now_ms))
        .exec(txn)
        .await?
        .rows_affected;
    Ok((deleted == 1).then_some(token))
}

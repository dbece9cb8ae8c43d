//! `account_tokens`: password-reset and email-verification tokens, by their
//! SHA-256; at most one per user and purpose, deleted when spent.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "account_tokens")]
pub struct Model {
    /// Hex SHA-256 of the token; the token itself is never stored.
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_hash: String,
    /// `password_reset` or `email_verification`.
    pub purpose: String,
    pub user_id: String,
    /// For a verification token: the address (lower case) it was made for.
    pub email_lc: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

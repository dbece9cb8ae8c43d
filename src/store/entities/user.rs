//! `users`: accounts, with lower-case copies of username and email for the
//! case-insensitive unique indexes.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub username: String,
    pub username_lc: String,
    pub email: String,
    pub email_lc: String,
    pub full_name: String,
    pub password_hash: String,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set by spending a verification token made for the current `email`; a new
    /// email clears it.
    pub email_verified: bool,
    /// A confirmed TOTP credential exists (`mfa.rs` keeps the two in step).
    pub mfa_enabled: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `totp_credentials`: one TOTP secret per user, pending until confirmed.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "totp_credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// Sealed (`enc:v1:…`, the user id as associated data) when a key-encryption
    /// key is set, else the base32 secret.
    pub secret: String,
    pub created_at: i64,
    /// `None` while pending: the login does not ask for a code yet.
    pub confirmed_at: Option<i64>,
    /// The last time step a code was accepted at; each step works once.
    pub last_step: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `sessions`: one per login, until it ends (logout, reuse, revocation, expiry).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    /// The absolute end of the session; refresh cannot move it.
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    /// Set when the session ends: the latest `exp` (Unix ms) of any access token
    /// issued in it. `None`: use `expires_at`, which caps every token of the session.
    pub tokens_expire_by: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

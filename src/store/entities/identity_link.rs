//! `identity_links`: an identity at an external provider, (provider, `sub`), and the
//! account it reaches.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "identity_links")]
pub struct Model {
    /// The provider's name in `AUTHD_OIDC_PROVIDERS_FILE`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub provider: String,
    /// The ID token's `sub`: stable and unique at the provider.
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    pub user_id: String,
    pub linked_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

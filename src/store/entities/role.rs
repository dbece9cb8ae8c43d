//! `roles`: the roles that exist. What each includes and carries is in
//! `role_includes` and `role_permissions` (the first release's `includes` column is
//! kept empty since migration 23).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "roles")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Display order, lowest first.
    pub rank: i32,
    pub description: String,
    /// Seeded by a migration: may be updated, never deleted.
    pub builtin: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

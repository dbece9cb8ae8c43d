//! `login_failures`: consecutive failed logins per throttling counter, and the
//! lockout. A counter is an account's (keyed by the user id: its username and
//! email share it) or an unknown login name's (keyed by the lower-cased name).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_failures")]
pub struct Model {
    /// The counter's key (the column's name is from when the key was the name).
    #[sea_orm(primary_key, auto_increment = false)]
    pub username_lc: String,
    pub failures: i32,
    pub locked_until: Option<i64>,
    pub updated_at: i64,
    /// Lockouts in a row without a successful login, for their growing length.
    pub lockouts: i32,
    /// The `locked_until` of the lockout whose refused attempts have been audited.
    pub refusals_audited_until: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

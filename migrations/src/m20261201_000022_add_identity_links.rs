//! Sign-in with an external identity provider (API.md, "Sign-in with an external
//! identity provider"):
//!
//! - `identity_links`: which account an identity at a provider reaches, as
//!   (provider name, the ID token's `sub`) → user id, with when it was linked. One
//!   identity reaches one account (the primary key) and an account holds at most
//!   one identity per provider (the unique index, which also serves "the links of
//!   this user"). Rows belong to their user (`ON DELETE CASCADE`), so erasing a
//!   user erases its links.
//!
//! Accounts made by a sign-in have no password: their `users.password_hash` is the
//! marker the store names `NO_PASSWORD` (no PHC string), which nothing verifies
//! against; the column itself is unchanged.

use sea_orm_migration::prelude::*;

use crate::m20261125_000001_create_accounts::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum IdentityLinks {
    Table,
    Provider,
    Subject,
    UserId,
    LinkedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdentityLinks::Table)
                    .col(
                        ColumnDef::new(IdentityLinks::Provider)
                            .string_len(64)
                            .not_null(),
                    )
                    // OpenID Connect Core 1.0 §2: at most 255 ASCII characters.
                    .col(
                        ColumnDef::new(IdentityLinks::Subject)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdentityLinks::UserId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdentityLinks::LinkedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(IdentityLinks::Provider)
                            .col(IdentityLinks::Subject),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(IdentityLinks::Table, IdentityLinks::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_identity_links_user_provider")
                    .table(IdentityLinks::Table)
                    .col(IdentityLinks::UserId)
                    .col(IdentityLinks::Provider)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdentityLinks::Table).to_owned())
            .await
    }
}

//! What the account lifecycle needs (API.md, "Account lifecycle"):
//!
//! - `users.email_verified`: false until a verification token made for the
//!   current address is spent; existing accounts start unverified;
//! - `account_tokens`: password-reset and email-verification tokens, stored only
//!   as the SHA-256 of the token (hex), one live token per user and purpose. Rows
//!   belong to their user (`ON DELETE CASCADE`), so erasing a user erases them; the
//!   tables later capabilities add for a user (second factor, identity links) join
//!   the same way.

use sea_orm_migration::prelude::*;

use crate::m20261125_000001_create_accounts::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UsersLifecycle {
    EmailVerified,
}

#[derive(DeriveIden)]
enum AccountTokens {
    Table,
    TokenHash,
    Purpose,
    UserId,
    EmailLc,
    CreatedAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(UsersLifecycle::EmailVerified)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AccountTokens::Table)
                    .col(
                        ColumnDef::new(AccountTokens::TokenHash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AccountTokens::Purpose)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AccountTokens::UserId)
                            .string_len(36)
                            .not_null(),
                    )
                    // The address a verification token was made for (lower case).
                    .col(
                        ColumnDef::new(AccountTokens::EmailLc)
                            .string_len(254)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(AccountTokens::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AccountTokens::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(AccountTokens::Table, AccountTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // "A newer token voids older ones" deletes by (user, purpose).
        manager
            .create_index(
                Index::create()
                    .name("idx_account_tokens_user_purpose")
                    .table(AccountTokens::Table)
                    .col(AccountTokens::UserId)
                    .col(AccountTokens::Purpose)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AccountTokens::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(UsersLifecycle::EmailVerified)
                    .to_owned(),
            )
            .await
    }
}

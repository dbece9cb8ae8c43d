//! The change feed and the shared login-throttling counters.
//!
//! Every write that changes an answer of the hot path appends a `changes` row in the
//! same transaction; replicas poll it by `seq` to keep their memory views fresh.
//! `login_failures` is keyed by the canonical (lower-case) username, known or not.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Changes {
    Table,
    Seq,
    Kind,
    Subject,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    UsernameLc,
    Failures,
    LockedUntil,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Changes::Table)
                    .col(
                        ColumnDef::new(Changes::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Changes::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Changes::Subject).string_len(64).not_null())
                    .col(ColumnDef::new(Changes::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LoginFailures::Table)
                    .col(
                        ColumnDef::new(LoginFailures::UsernameLc)
                            .string_len(254)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LoginFailures::Failures).integer().not_null())
                    .col(
                        ColumnDef::new(LoginFailures::LockedUntil)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LoginFailures::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LoginFailures::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Changes::Table).to_owned())
            .await
    }
}

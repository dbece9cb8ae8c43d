//! What pruning needs to find what it may delete without reading whole tables, and
//! to run on one replica at a time.
//!
//! - indexes on the columns the pruner filters by: `sessions.expires_at` and
//!   `sessions.tokens_expire_by` (sessions none of whose tokens can still be valid),
//!   `refresh_tokens.spent_at` (spent tokens), `login_failures.updated_at` (stale
//!   throttling rows); `audit_events.at` is indexed already and `changes` is small;
//! - `leases`: named leases with a holder and an expiry. On SQLite the replica
//!   holding the `prune` lease is the one that prunes; PostgreSQL uses an advisory
//!   lock instead and leaves the table empty.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    ExpiresAt,
    TokensExpireBy,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    SpentAt,
}

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Leases {
    Table,
    Name,
    Holder,
    ExpiresAt,
}

/// (index name, table, column) of every index this migration adds.
fn indexes() -> [(&'static str, DynIden, DynIden); 4] {
    [
        (
            "idx_sessions_expires_at",
            Sessions::Table.into_iden(),
            Sessions::ExpiresAt.into_iden(),
        ),
        (
            "idx_sessions_tokens_expire_by",
            Sessions::Table.into_iden(),
            Sessions::TokensExpireBy.into_iden(),
        ),
        (
            "idx_refresh_tokens_spent_at",
            RefreshTokens::Table.into_iden(),
            RefreshTokens::SpentAt.into_iden(),
        ),
        (
            "idx_login_failures_updated_at",
            LoginFailures::Table.into_iden(),
            LoginFailures::UpdatedAt.into_iden(),
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, column) in indexes() {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Leases::Table)
                    .col(
                        ColumnDef::new(Leases::Name)
                            .string_len(32)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Leases::Holder).string_len(64).not_null())
                    .col(ColumnDef::new(Leases::ExpiresAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Leases::Table).to_owned())
            .await?;
        for (name, table, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

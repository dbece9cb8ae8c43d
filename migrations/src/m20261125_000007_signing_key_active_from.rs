//! When a signing key starts to sign. A key rotated in ahead of time is published
//! at once but signs only from `active_from`, so services that cache the JWKS have
//! fetched it before they meet a token it signed. NULL means from `created_at`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    ActiveFrom,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SigningKeys::Table)
                    .add_column(ColumnDef::new(SigningKeys::ActiveFrom).big_integer().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SigningKeys::Table)
                    .drop_column(SigningKeys::ActiveFrom)
                    .to_owned(),
            )
            .await
    }
}

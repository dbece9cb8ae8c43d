//! The second factor (API.md, "Second factor"):
//!
//! - `totp_credentials`: one per user: the secret (sealed with the key-encryption
//!   key when one is set, the user id as associated data), when it was confirmed
//!   (`NULL` while pending) and the last time step spent, so each code works once;
//! - `recovery_codes`: the SHA-256 (hex) of each single-use code and when it was used;
//! - `mfa_challenges`: the second step of a login, by the SHA-256 of its opaque
//!   token, with its expiry, wrong codes so far and when it was spent.
//!
//! - `users.mfa_enabled`: whether a confirmed TOTP credential exists, set in the
//!   transaction that confirms or removes it, so reading a user needs no join.
//!
//! Every row belongs to its user (`ON DELETE CASCADE`), so erasing a user erases them.

use sea_orm_migration::prelude::*;

use crate::m20261125_000001_create_accounts::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UsersMfa {
    MfaEnabled,
}

#[derive(DeriveIden)]
enum TotpCredentials {
    Table,
    UserId,
    Secret,
    CreatedAt,
    ConfirmedAt,
    LastStep,
}

#[derive(DeriveIden)]
enum RecoveryCodes {
    Table,
    UserId,
    CodeHash,
    UsedAt,
}

#[derive(DeriveIden)]
enum MfaChallenges {
    Table,
    TokenHash,
    UserId,
    ExpiresAt,
    Failures,
    SpentAt,
}

fn belongs_to_user(
    table: impl IntoIden + 'static,
    column: impl IntoIden + 'static,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, column)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(UsersMfa::MfaEnabled)
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
                    .table(TotpCredentials::Table)
                    .col(
                        ColumnDef::new(TotpCredentials::UserId)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(TotpCredentials::Secret).text().not_null())
                    .col(
                        ColumnDef::new(TotpCredentials::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TotpCredentials::ConfirmedAt)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(TotpCredentials::LastStep)
                            .big_integer()
                            .null(),
                    )
                    .foreign_key(&mut belongs_to_user(
                        TotpCredentials::Table,
                        TotpCredentials::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RecoveryCodes::Table)
                    .col(
                        ColumnDef::new(RecoveryCodes::UserId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RecoveryCodes::CodeHash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(RecoveryCodes::UsedAt).big_integer().null())
                    .primary_key(
                        Index::create()
                            .col(RecoveryCodes::UserId)
                            .col(RecoveryCodes::CodeHash),
                    )
                    .foreign_key(&mut belongs_to_user(
                        RecoveryCodes::Table,
                        RecoveryCodes::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MfaChallenges::Table)
                    .col(
                        ColumnDef::new(MfaChallenges::TokenHash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(MfaChallenges::UserId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(MfaChallenges::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(MfaChallenges::Failures)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(MfaChallenges::SpentAt).big_integer().null())
                    .foreign_key(&mut belongs_to_user(
                        MfaChallenges::Table,
                        MfaChallenges::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mfa_challenges_expires_at")
                    .table(MfaChallenges::Table)
                    .col(MfaChallenges::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            MfaChallenges::Table.into_iden(),
            RecoveryCodes::Table.into_iden(),
            TotpCredentials::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(UsersMfa::MfaEnabled)
                    .to_owned(),
            )
            .await
    }
}

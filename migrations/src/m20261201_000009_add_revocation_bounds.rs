//! What revocation needs to survive a restart and a change of settings.
//!
//! - `refresh_tokens.access_expires_at`: the `exp` bound (Unix ms) of the access
//!   token issued with each refresh token, recorded at issue;
//! - `sessions.tokens_expire_by`: when a session ends, the latest of those bounds,
//!   so an ended session is remembered exactly as long as one of its tokens may
//!   still be unexpired, whatever `AUTHD_ACCESS_TOKEN_TTL` says after a restart.
//!   NULL (sessions ended before this migration) falls back to the session's
//!   absolute end, which caps every token of the session;
//! - `signing_keys.revoked_at`: a key withdrawn with `authd keys revoke`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    AccessExpiresAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    TokensExpireBy,
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .add_column(
                        ColumnDef::new(RefreshTokens::AccessExpiresAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .add_column(
                        ColumnDef::new(Sessions::TokensExpireBy)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(SigningKeys::Table)
                    .add_column(ColumnDef::new(SigningKeys::RevokedAt).big_integer().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SigningKeys::Table)
                    .drop_column(SigningKeys::RevokedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .drop_column(Sessions::TokensExpireBy)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .drop_column(RefreshTokens::AccessExpiresAt)
                    .to_owned(),
            )
            .await
    }
}

//! Login throttling per account, with growing lockouts and aggregated audit rows.
//!
//! `login_failures` was keyed by the lower-cased login, so an account's username
//! and email each had a counter (twice the guesses). From here a known account's
//! counter is keyed by its user id; unknown names keep the lower-cased login. The
//! counters of existing accounts move to their id (the larger count and the later
//! lockout of the two spellings), so an upgrade does not lift a running lockout.
//! `lockouts` counts lockouts in a row (each lasts longer); `refusals_audited_until`
//! marks the lockout whose refused attempts already have their one audit row.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    Lockouts,
    RefusalsAuditedUntil,
}

/// Portable SQL (SQLite and PostgreSQL). An unknown name spelled like a user id
/// (none in practice) gives way to that account's counter.
const REKEY: [&str; 3] = [
    "DELETE FROM login_failures WHERE username_lc IN (SELECT id FROM users)",
    "INSERT INTO login_failures (username_lc, failures, locked_until, updated_at, lockouts) \
     SELECT u.id, MAX(f.failures), MAX(f.locked_until), MAX(f.updated_at), 0 \
     FROM login_failures f JOIN users u \
       ON f.username_lc = u.username_lc OR f.username_lc = u.email_lc \
     GROUP BY u.id",
    "DELETE FROM login_failures \
     WHERE username_lc IN (SELECT username_lc FROM users) \
        OR username_lc IN (SELECT email_lc FROM users)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(LoginFailures::Table)
                    .add_column(
                        ColumnDef::new(LoginFailures::Lockouts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(LoginFailures::Table)
                    .add_column(
                        ColumnDef::new(LoginFailures::RefusalsAuditedUntil)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in REKEY {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Counters keyed by user id stay; without the code that reads them they are
        // never consulted again, and a counter lost costs at most one lockout.
        for column in [LoginFailures::RefusalsAuditedUntil, LoginFailures::Lockouts] {
            manager
                .alter_table(
                    Table::alter()
                        .table(LoginFailures::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

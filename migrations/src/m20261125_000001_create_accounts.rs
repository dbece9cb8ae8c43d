//! Users, the role hierarchy and the roles granted to users.
//!
//! The hierarchy is data: each role names the role directly below it in `includes`,
//! and a user holding a role holds everything reachable through that chain.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Users {
    Table,
    Id,
    Username,
    UsernameLc,
    Email,
    EmailLc,
    FullName,
    PasswordHash,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
pub enum Roles {
    Table,
    Name,
    Includes,
    Rank,
}

#[derive(DeriveIden)]
pub enum UserRoles {
    Table,
    UserId,
    Role,
    GrantedAt,
}

/// The default hierarchy, lowest first: each role includes the one before it.
const DEFAULT_ROLES: [&str; 5] = ["viewer", "user", "editor", "moderator", "admin"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(
                        ColumnDef::new(Users::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Users::Username).string_len(32).not_null())
                    .col(
                        ColumnDef::new(Users::UsernameLc)
                            .string_len(32)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Users::Email).string_len(254).not_null())
                    .col(
                        ColumnDef::new(Users::EmailLc)
                            .string_len(254)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Users::FullName).string_len(256).not_null())
                    .col(ColumnDef::new(Users::PasswordHash).text().not_null())
                    .col(ColumnDef::new(Users::Active).boolean().not_null())
                    .col(ColumnDef::new(Users::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Users::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // ListUsers pages in (created_at, id) order.
        manager
            .create_index(
                Index::create()
                    .name("idx_users_created_at_id")
                    .table(Users::Table)
                    .col(Users::CreatedAt)
                    .col(Users::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Roles::Table)
                    .col(
                        ColumnDef::new(Roles::Name)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Roles::Includes).string_len(64).null())
                    .col(ColumnDef::new(Roles::Rank).integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Roles::Table, Roles::Includes)
                            .to(Roles::Table, Roles::Name),
                    )
                    .to_owned(),
            )
            .await?;
        let mut below: Option<&str> = None;
        for (rank, name) in DEFAULT_ROLES.iter().enumerate() {
            let insert = Query::insert()
                .into_table(Roles::Table)
                .columns([Roles::Name, Roles::Includes, Roles::Rank])
                .values_panic([
                    (*name).into(),
                    below.map(str::to_owned).into(),
                    (rank as i32).into(),
                ])
                .to_owned();
            manager.exec_stmt(insert).await?;
            below = Some(name);
        }

        manager
            .create_table(
                Table::create()
                    .table(UserRoles::Table)
                    .col(ColumnDef::new(UserRoles::UserId).string_len(36).not_null())
                    .col(ColumnDef::new(UserRoles::Role).string_len(64).not_null())
                    .col(
                        ColumnDef::new(UserRoles::GrantedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(UserRoles::UserId).col(UserRoles::Role))
                    .foreign_key(
                        ForeignKey::create()
                            .from(UserRoles::Table, UserRoles::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UserRoles::Table, UserRoles::Role)
                            .to(Roles::Table, Roles::Name),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UserRoles::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Roles::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

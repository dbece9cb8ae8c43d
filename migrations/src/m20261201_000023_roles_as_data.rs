//! Roles as data: a role includes any number of other roles (`role_includes`, a
//! graph instead of the first release's chain in `roles.includes`) and carries
//! permissions (`role_permissions`); `roles` gains a description and `builtin`, set
//! for the five roles the first migration seeded. The chain is copied into the graph
//! and `roles.includes` emptied, so nothing reads two sources of truth. `admin`
//! carries the built-in permissions that authorise AdminService (and, by rule, every
//! other permission).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Roles {
    Table,
    Name,
    Includes,
    Description,
    Builtin,
}

#[derive(DeriveIden)]
enum RoleIncludes {
    Table,
    Role,
    Included,
}

#[derive(DeriveIden)]
enum RolePermissions {
    Table,
    Role,
    Permission,
}

const BUILTIN_ROLES: [&str; 5] = ["viewer", "user", "editor", "moderator", "admin"];

/// What AdminService's methods require (API.md, "Roles and permissions as data").
const ADMIN_PERMISSIONS: [&str; 5] = [
    "authd.users.read",
    "authd.users.write",
    "authd.roles.write",
    "authd.apikeys.write",
    "authd.audit.read",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ColumnDef::new(Roles::Description)
                .string_len(256)
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(Roles::Builtin)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Roles::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .exec_stmt(
                Query::update()
                    .table(Roles::Table)
                    .value(Roles::Builtin, true)
                    .and_where(Expr::col(Roles::Name).is_in(BUILTIN_ROLES))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RoleIncludes::Table)
                    .col(ColumnDef::new(RoleIncludes::Role).string_len(64).not_null())
                    .col(
                        ColumnDef::new(RoleIncludes::Included)
                            .string_len(64)
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(RoleIncludes::Role)
                            .col(RoleIncludes::Included),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RoleIncludes::Table, RoleIncludes::Role)
                            .to(Roles::Table, Roles::Name)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RoleIncludes::Table, RoleIncludes::Included)
                            .to(Roles::Table, Roles::Name),
                    )
                    .to_owned(),
            )
            .await?;
        // "Which roles include this one?" when one is deleted.
        manager
            .create_index(
                Index::create()
                    .name("idx_role_includes_included")
                    .table(RoleIncludes::Table)
                    .col(RoleIncludes::Included)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RolePermissions::Table)
                    .col(
                        ColumnDef::new(RolePermissions::Role)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RolePermissions::Permission)
                            .string_len(128)
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(RolePermissions::Role)
                            .col(RolePermissions::Permission),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RolePermissions::Table, RolePermissions::Role)
                            .to(Roles::Table, Roles::Name)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // The chain, as edges of the graph.
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(RoleIncludes::Table)
                    .columns([RoleIncludes::Role, RoleIncludes::Included])
                    .select_from(
                        Query::select()
                            .columns([Roles::Name, Roles::Includes])
                            .from(Roles::Table)
                            .and_where(Expr::col(Roles::Includes).is_not_null())
                            .to_owned(),
                    )
                    .map_err(|err| DbErr::Migration(err.to_string()))?
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(Roles::Table)
                    .value(Roles::Includes, Option::<String>::None)
                    .to_owned(),
            )
            .await?;
        for permission in ADMIN_PERMISSIONS {
            manager
                .exec_stmt(
                    Query::insert()
                        .into_table(RolePermissions::Table)
                        .columns([RolePermissions::Role, RolePermissions::Permission])
                        .values_panic(["admin".into(), permission.into()])
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Back to the chain: each built-in role's one built-in include.
        let mut below: Option<&str> = None;
        for name in BUILTIN_ROLES {
            manager
                .exec_stmt(
                    Query::update()
                        .table(Roles::Table)
                        .value(Roles::Includes, below.map(str::to_owned))
                        .and_where(Expr::col(Roles::Name).eq(name))
                        .to_owned(),
                )
                .await?;
            below = Some(name);
        }
        manager
            .drop_table(Table::drop().table(RolePermissions::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(RoleIncludes::Table).to_owned())
            .await?;
        for column in [Roles::Builtin, Roles::Description] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Roles::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

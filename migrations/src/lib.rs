//! The authd schema, as sea-orm migrations applied in order by `authd serve`,
//! `authd migrate` and the other subcommands. Migrations only ever add: a released
//! migration is never edited, so every database reaches the same schema.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_accounts;
mod m20261125_000002_create_sessions;
mod m20261125_000003_create_signing_keys;
mod m20261125_000004_create_changes;
mod m20261125_000005_create_audit_events;
mod m20261125_000006_create_api_keys;
mod m20261125_000007_signing_key_active_from;
mod m20261201_000008_key_login_failures_by_account;
mod m20261201_000009_add_revocation_bounds;
mod m20261201_000010_prepare_pruning;
mod m20261201_000011_add_account_lifecycle;
mod m20261201_000012_audit_peer_identity;
mod m20261201_000020_index_audit_subjects;
mod m20261201_000021_add_second_factor;
mod m20261201_000022_add_identity_links;
mod m20261201_000023_roles_as_data;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_accounts::Migration),
            Box::new(m20261125_000002_create_sessions::Migration),
            Box::new(m20261125_000003_create_signing_keys::Migration),
            Box::new(m20261125_000004_create_changes::Migration),
            Box::new(m20261125_000005_create_audit_events::Migration),
            Box::new(m20261125_000006_create_api_keys::Migration),
            Box::new(m20261125_000007_signing_key_active_from::Migration),
            Box::new(m20261201_000008_key_login_failures_by_account::Migration),
            Box::new(m20261201_000009_add_revocation_bounds::Migration),
            Box::new(m20261201_000010_prepare_pruning::Migration),
            Box::new(m20261201_000011_add_account_lifecycle::Migration),
            Box::new(m20261201_000012_audit_peer_identity::Migration),
            Box::new(m20261201_000020_index_audit_subjects::Migration),
            Box::new(m20261201_000021_add_second_factor::Migration),
            Box::new(m20261201_000022_add_identity_links::Migration),
            Box::new(m20261201_000023_roles_as_data::Migration),
        ]
    }
}

//! `audit_events.peer_identity`: who the peer was by its TLS client certificate
//! (mutual TLS: a SPIFFE ID or the certificate's subject), beside its address.
//! NULL for calls without a client certificate, and for rows written before.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    PeerIdentity,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .add_column(
                        ColumnDef::new(AuditEvents::PeerIdentity)
                            .string_len(256)
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .drop_column(AuditEvents::PeerIdentity)
                    .to_owned(),
            )
            .await
    }
}

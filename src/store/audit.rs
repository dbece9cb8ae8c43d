//! The audit trail table.

use sea_orm::{EntityTrait, Set};

use super::{entities::audit_event, Store, StoreError};

/// One audit event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub at: i64,
    pub action: &'static str,
    pub outcome: &'static str,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub peer: Option<String>,
    pub peer_identity: Option<String>,
    pub detail: Option<String>,
}

impl Store {
    pub async fn insert_audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        let clip = |s: Option<String>, n: usize| s.map(|s| s.chars().take(n).collect::<String>());
        audit_event::Entity::insert(audit_event::ActiveModel {
            at: Set(event.at),
            action: Set(event.action.to_owned()),
            outcome: Set(event.outcome.to_owned()),
            actor: Set(clip(event.actor, 64)),
            subject: Set(clip(event.subject, 64)),
            peer: Set(clip(event.peer, 64)),
            peer_identity: Set(clip(event.peer_identity, 256)),
            detail: Set(clip(event.detail, 256)),
            ..Default::default()
        })
        .exec_without_returning(&self.writer)
        .await?;
        Ok(())
    }
}

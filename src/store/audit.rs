//! The audit trail table.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::{entities::audit_event, Page, Store, StoreError};

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

/// Which audit rows to list (each `None` = any), newest first, before `before_id`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub subject: Option<String>,
    pub action: Option<String>,
    pub since_ms: Option<i64>,
    pub before_id: Option<i64>,
}

impl Store {
    /// Up to `limit` audit rows matching `filter`, newest (highest id) first.
    pub async fn list_audit(
        &self,
        filter: AuditFilter,
        limit: u64,
    ) -> Result<Page<audit_event::Model>, StoreError> {
        let mut query = audit_event::Entity::find()
            .order_by_desc(audit_event::Column::Id)
            .limit(limit + 1);
        if let Some(subject) = filter.subject {
            query = query.filter(audit_event::Column::Subject.eq(subject));
        }
        if let Some(action) = filter.action {
            query = query.filter(audit_event::Column::Action.eq(action));
        }
        if let Some(since) = filter.since_ms {
            query = query.filter(audit_event::Column::At.gte(since));
        }
        if let Some(before) = filter.before_id {
            query = query.filter(audit_event::Column::Id.lt(before));
        }
        Ok(Page::from_rows(query.all(&self.reader).await?, limit))
    }

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

//! Reading the audit trail (`ListAuditEvents`): newest first, filtered by subject,
//! action and time, a page at a time. Recording is `audit.rs`'s.

use std::sync::Arc;

use super::{
    context::Context,
    error::{DomainError, DomainResult},
    model::{AuditRecord, Page},
    paging, validation,
};
use crate::store::AuditFilter;

/// What to list; empty strings and `None` mean any.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub page_size: i32,
    pub page_token: String,
    pub subject_id: String,
    pub action: String,
    pub since_ms: Option<i64>,
}

#[derive(Clone)]
pub struct AuditTrail {
    ctx: Arc<Context>,
}

impl AuditTrail {
    pub(super) fn new(ctx: Arc<Context>) -> Self {
        AuditTrail { ctx }
    }

    /// A page of events, newest first.
    pub async fn list(&self, query: AuditQuery) -> DomainResult<Page<AuditRecord>> {
        let limit = paging::page_size(query.page_size)?;
        let before_id = paging::decode_sequence(&query.page_token)?;
        let filter = AuditFilter {
            subject: filter("subject_id", query.subject_id)?,
            action: filter("action", query.action)?,
            since_ms: query.since_ms,
            before_id,
        };
        let page = self.ctx.store.list_audit(filter, limit).await?;
        let last = page.items.last().map(|row| row.id);
        Ok(Page {
            next_page_token: match last {
                Some(id) if page.has_more => paging::encode_sequence(id),
                _ => String::new(),
            },
            items: page.items.into_iter().map(AuditRecord::from).collect(),
        })
    }
}

/// The longest filter value: the columns hold at most 64 characters.
const MAX_FILTER_BYTES: usize = 256;

/// A plain-string filter: empty means any.
fn filter(field: &'static str, value: String) -> DomainResult<Option<String>> {
    if value.len() > MAX_FILTER_BYTES {
        return Err(DomainError::invalid(field, "must be at most 256 bytes"));
    }
    validation::no_nul(field, &value)?;
    Ok((!value.is_empty()).then_some(value))
}

//! The audit trail: every security-relevant event becomes a row in `audit_events`
//! and a structured log line (target `audit`). Never a password, token or hash.

use super::{service::Auth, unix_now_ms};
use crate::store::AuditEvent;

/// Who is calling, as far as the transport knows.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The authenticated user, for admin calls.
    pub actor: Option<String>,
    /// The peer's address.
    pub peer: Option<String>,
}

impl Caller {
    /// The actor when it is a user (not, say, "cli").
    pub fn user_id(&self) -> Option<String> {
        self.actor
            .as_deref()
            .filter(|a| uuid::Uuid::parse_str(a).is_ok())
            .map(str::to_owned)
    }
}

impl Auth {
    /// Records an event. A failure to store it is logged, never shown to the caller:
    /// the action it describes has already happened.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        action: &'static str,
        outcome: &'static str,
        subject: Option<&str>,
        detail: Option<String>,
    ) {
        tracing::info!(
            target: "audit",
            action,
            outcome,
            actor = caller.actor.as_deref().unwrap_or("-"),
            subject = subject.unwrap_or("-"),
            peer = caller.peer.as_deref().unwrap_or("-"),
            detail = detail.as_deref().unwrap_or(""),
            "audit"
        );
        let event = AuditEvent {
            at: unix_now_ms(),
            action,
            outcome,
            actor: caller.actor.clone(),
            subject: subject.map(str::to_owned),
            peer: caller.peer.clone(),
            detail,
        };
        if let Err(err) = self.store.insert_audit(event).await {
            tracing::warn!(error = %err, action, "could not store an audit event");
        }
    }
}

//! The audit trail: every security-relevant event becomes a row in `audit_events`,
//! a structured log line (target `audit`) and a count in
//! `authd_audit_events_total{action,outcome}`, which is what alerts on lockouts and
//! refresh reuse watch. Never a password, token or hash.

use super::caller::Caller;
use crate::{
    clock::Clock,
    store::{AuditEvent, Store},
};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Register,
    Login,
    RefreshReuse,
    Logout,
    AssignRole,
    RevokeRole,
    /// A refused change of the active flag (the last-admin rule).
    SetActive,
    Activate,
    Deactivate,
    RevokeSessions,
    CreateApiKey,
    RevokeApiKey,
    ApiKeyFirstUse,
    ChangePassword,
    RevokeSession,
    /// A password set by an operator (`authd user set-password`).
    SetPassword,
    CreatePasswordResetToken,
    ResetPassword,
    CreateEmailVerificationToken,
    VerifyEmail,
    UpdateUser,
    DeleteUser,
    EnrollTotp,
    ConfirmTotp,
    DisableTotp,
    VerifyMfa,
    ResetMfa,
    /// A sign-in with an external provider's ID token (LoginWithIdToken).
    IdTokenLogin,
    /// An identity linked to an existing account by its verified email.
    LinkIdentity,
    UnlinkIdentity,
    CreateRole,
    UpdateRole,
    DeleteRole,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Register => "register",
            Action::Login => "login",
            Action::RefreshReuse => "refresh_reuse",
            Action::Logout => "logout",
            Action::AssignRole => "assign_role",
            Action::RevokeRole => "revoke_role",
            Action::SetActive => "set_active",
            Action::Activate => "activate",
            Action::Deactivate => "deactivate",
            Action::RevokeSessions => "revoke_sessions",
            Action::CreateApiKey => "create_api_key",
            Action::RevokeApiKey => "revoke_api_key",
            Action::ApiKeyFirstUse => "api_key_first_use",
            Action::ChangePassword => "change_password",
            Action::RevokeSession => "revoke_session",
            Action::SetPassword => "set_password",
            Action::CreatePasswordResetToken => "create_password_reset_token",
            Action::ResetPassword => "reset_password",
            Action::CreateEmailVerificationToken => "create_email_verification_token",
            Action::VerifyEmail => "verify_email",
            Action::UpdateUser => "update_user",
            Action::DeleteUser => "delete_user",
            Action::EnrollTotp => "enroll_totp",
            Action::ConfirmTotp => "confirm_totp",
            Action::DisableTotp => "disable_totp",
            Action::VerifyMfa => "verify_mfa",
            Action::ResetMfa => "reset_mfa",
            Action::IdTokenLogin => "id_token_login",
            Action::LinkIdentity => "link_identity",
            Action::UnlinkIdentity => "unlink_identity",
            Action::CreateRole => "create_role",
            Action::UpdateRole => "update_role",
            Action::DeleteRole => "delete_role",
        }
    }
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    FailedAndLocked,
    Throttled,
    Deactivated,
    SessionEnded,
    RefusedLastAdmin,
    /// The right password of an account with TOTP: a code is needed next.
    MfaRequired,
    /// A valid ID token whose identity may not sign in: an unverified email of an
    /// existing account, or a stranger where the provider creates no users.
    Refused,
    /// An unlinking that would have left an account without a password no way in.
    RefusedLastWayIn,
    /// The provider's keys could not be fetched and none were cached.
    ProviderUnavailable,
    /// Refused: it would have granted a role or permission the caller lacks.
    RefusedEscalation,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::FailedAndLocked => "failed_and_locked",
            Outcome::Throttled => "throttled",
            Outcome::Deactivated => "deactivated",
            Outcome::SessionEnded => "session_ended",
            Outcome::RefusedLastAdmin => "refused_last_admin",
            Outcome::MfaRequired => "mfa_required",
            Outcome::Refused => "refused",
            Outcome::RefusedLastWayIn => "refused_last_way_in",
            Outcome::ProviderUnavailable => "provider_unavailable",
            Outcome::RefusedEscalation => "refused_escalation",
        }
    }
}

/// The detail naming an identity at an external provider. `subject=` comes last
/// (anything before it is the caller's own words, never the provider's), as the
/// store's erasure of a user expects: it cuts what follows the first `subject=`.
pub fn identity_detail(provider: &str, subject: &str) -> String {
    format!("provider={provider}; subject={subject}")
}

/// One event to record.
#[derive(Debug)]
pub struct Event<'a> {
    pub action: Action,
    pub outcome: Outcome,
    pub subject: Option<&'a str>,
    pub detail: Option<String>,
}

impl<'a> Event<'a> {
    pub fn new(action: Action, outcome: Outcome) -> Self {
        Event {
            action,
            outcome,
            subject: None,
            detail: None,
        }
    }

    pub fn subject(mut self, subject: &'a str) -> Self {
        self.subject = Some(subject);
        self
    }

    pub fn detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// Writes events; see the module docs.
pub struct Audit {
    store: Store,
    clock: Clock,
}

impl Audit {
    pub fn new(store: Store, clock: Clock) -> Self {
        Audit { store, clock }
    }

    /// Records an event. A failure to store it is logged, never shown to the caller:
    /// the action it describes has already happened.
    pub async fn record(&self, caller: &Caller, event: Event<'_>) {
        let (action, outcome) = (event.action.as_str(), event.outcome.as_str());
        // Counted whether or not the row is stored: the event has happened.
        metrics::counter!("authd_audit_events_total", "action" => action, "outcome" => outcome)
            .increment(1);
        tracing::info!(
            target: "audit",
            action,
            outcome,
            actor = caller.actor_label().unwrap_or("-"),
            subject = event.subject.unwrap_or("-"),
            peer = caller.peer.addr.as_deref().unwrap_or("-"),
            peer_identity = caller.peer.identity.as_deref().unwrap_or("-"),
            detail = event.detail.as_deref().unwrap_or(""),
            "audit"
        );
        let row = AuditEvent {
            at: self.clock.now_ms(),
            action,
            outcome,
            actor: caller.actor_label().map(str::to_owned),
            subject: event.subject.map(str::to_owned),
            peer: caller.peer.addr.clone(),
            peer_identity: caller.peer.identity.clone(),
            detail: event.detail,
        };
        if let Err(err) = self.store.insert_audit(row).await {
            tracing::warn!(error = %err, action, "could not store an audit event");
        }
    }
}

//! Domain values as protobuf messages. The transport never sees a store row.

use prost_types::Timestamp;

use super::pb;
use crate::domain::{
    accounts::{IssuedTokens, LoginOutcome},
    hot::{Principal, RevocationEvent, RevocationKind},
    model::{ApiKey, AuditRecord, IdentityLink, Role, Session, User},
    roles::RoleSpec,
    DomainError,
};

pub fn timestamp_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn timestamp_secs(secs: i64) -> Timestamp {
    Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

pub fn user(user: User) -> pb::User {
    pb::User {
        id: user.id,
        username: user.username,
        email: user.email,
        full_name: user.full_name,
        roles: user.roles,
        active: user.active,
        created_at: Some(timestamp_ms(user.created_at_ms)),
        email_verified: user.email_verified,
        mfa_enabled: user.mfa_enabled,
        linked_identities: user.identities.into_iter().map(identity_link).collect(),
        has_password: user.has_password,
    }
}

fn identity_link(link: IdentityLink) -> pb::IdentityLink {
    pb::IdentityLink {
        provider: link.provider,
        subject: link.subject,
        linked_at: Some(timestamp_ms(link.linked_at_ms)),
    }
}

/// What Login (and LoginWithIdToken) answers: the session, or the second
/// factor's challenge.
pub fn login_response(outcome: LoginOutcome) -> pb::LoginResponse {
    match outcome {
        LoginOutcome::LoggedIn(logged_in) => pb::LoginResponse {
            tokens: Some(token_pair(logged_in.tokens)),
            user: Some(user(logged_in.user)),
            ..Default::default()
        },
        LoginOutcome::MfaRequired { mfa_token } => pb::LoginResponse {
            mfa_required: true,
            mfa_token: mfa_token.into_inner(),
            ..Default::default()
        },
    }
}

pub fn session(session: Session) -> pb::Session {
    pb::Session {
        id: session.id,
        created_at: Some(timestamp_ms(session.created_at_ms)),
        last_refreshed_at: session.last_refreshed_at_ms.map(timestamp_ms),
        expires_at: Some(timestamp_ms(session.expires_at_ms)),
        current: session.current,
    }
}

pub fn token_pair(tokens: IssuedTokens) -> pb::TokenPair {
    pb::TokenPair {
        access_token: tokens.access_token.into_inner(),
        refresh_token: tokens.refresh_token.into_inner(),
        token_type: "Bearer".to_owned(),
        expires_in: tokens.expires_in,
        refresh_expires_in: tokens.refresh_expires_in,
    }
}

/// A request's timestamp in milliseconds; `INVALID_ARGUMENT` naming `field` for one
/// that is not a valid protobuf Timestamp (nanos outside 0..1e9, years past 9999).
pub fn ms_of(field: &'static str, at: &Timestamp) -> Result<i64, DomainError> {
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(0..1_000_000_000).contains(&at.nanos)
        || !(-MAX_SECONDS..=MAX_SECONDS).contains(&at.seconds)
    {
        return Err(DomainError::invalid(field, "is not a valid timestamp"));
    }
    Ok(at.seconds * 1000 + i64::from(at.nanos) / 1_000_000)
}

pub fn audit_event(event: AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        id: event.id,
        time: Some(timestamp_ms(event.at_ms)),
        action: event.action,
        outcome: event.outcome,
        actor: event.actor.unwrap_or_default(),
        subject: event.subject.unwrap_or_default(),
        peer: event.peer.unwrap_or_default(),
        peer_identity: event.peer_identity.unwrap_or_default(),
        detail: event.detail.unwrap_or_default(),
    }
}

pub fn api_key(key: ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: key.id,
        name: key.name,
        prefix: key.prefix,
        roles: key.roles,
        created_at: Some(timestamp_ms(key.created_at_ms)),
        expires_at: key.expires_at_ms.map(timestamp_ms),
        last_used_at: key.last_used_at_ms.map(timestamp_ms),
        revoked: key.revoked,
        created_by: key.created_by.unwrap_or_default(),
    }
}

pub fn validated(principal: &Principal) -> pb::ValidateTokenResponse {
    pb::ValidateTokenResponse {
        user_id: principal.subject_id().to_owned(),
        username: principal.name().to_owned(),
        roles: principal.roles().iter().map(|r| r.to_string()).collect(),
        session_id: principal.session_id().to_owned(),
        expires_at: principal.expires_at().map(timestamp_secs),
        issued_at: Some(timestamp_secs(principal.issued_at())),
        permissions: principal
            .permissions()
            .iter()
            .map(|p| p.to_string())
            .collect(),
    }
}

/// CreateRole's fields.
pub fn role_created(r: pb::CreateRoleRequest) -> RoleSpec {
    RoleSpec {
        name: r.name,
        description: r.description,
        includes: r.includes,
        permissions: r.permissions,
    }
}

/// UpdateRole's fields (the same four as CreateRole's, replacing the role's).
pub fn role_updated(r: pb::UpdateRoleRequest) -> RoleSpec {
    RoleSpec {
        name: r.name,
        description: r.description,
        includes: r.includes,
        permissions: r.permissions,
    }
}

pub fn role(role: Role) -> pb::Role {
    pb::Role {
        name: role.name,
        description: role.description,
        includes: role.includes,
        permissions: role.permissions,
        builtin: role.builtin,
    }
}

pub fn revocation_event(event: RevocationEvent) -> pb::RevocationEvent {
    use pb::revocation_event::Kind;
    let kind = match event.kind {
        RevocationKind::SessionEnded => Kind::SessionEnded,
        RevocationKind::UserDisabled => Kind::UserDisabled,
        RevocationKind::UserDeleted => Kind::UserDeleted,
        RevocationKind::UserRolesChanged => Kind::UserRolesChanged,
        RevocationKind::RoleChanged => Kind::RoleChanged,
        RevocationKind::ApiKeyRevoked => Kind::ApiKeyRevoked,
        RevocationKind::SigningKeysChanged => Kind::SigningKeysChanged,
        RevocationKind::SnapshotComplete => Kind::SnapshotComplete,
    };
    pb::RevocationEvent {
        cursor: event.cursor.to_string(),
        kind: kind as i32,
        subject_id: event.subject_id,
        occurred_at: Some(timestamp_ms(event.occurred_at_ms)),
    }
}

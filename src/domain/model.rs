//! The domain's read models: what the slow path answers with. The transport turns
//! these into protobuf; store rows (and the password hash in them) stay behind.

use crate::store::{
    entities::{api_key, audit_event, identity_link},
    RoleDefinition, SessionSummary, UserWithRoles, NO_PASSWORD,
};

/// A user account with the roles granted to it directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub full_name: String,
    /// Granted directly, in name order; the role graph adds more on the hot path.
    pub roles: Vec<String>,
    pub active: bool,
    pub created_at_ms: i64,
    pub email_verified: bool,
    /// TOTP is on: a login needs a code as well.
    pub mfa_enabled: bool,
    /// False for an account made by a sign-in with an identity provider, until a
    /// password is set (ResetPassword, `authd user set-password`).
    pub has_password: bool,
    /// The identities at external providers that sign in to this account.
    pub identities: Vec<IdentityLink>,
}

/// An identity at an external provider, linked to an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityLink {
    /// The provider's name in `AUTHD_OIDC_PROVIDERS_FILE`.
    pub provider: String,
    /// The ID token's `sub`.
    pub subject: String,
    pub linked_at_ms: i64,
}

impl From<identity_link::Model> for IdentityLink {
    fn from(row: identity_link::Model) -> Self {
        IdentityLink {
            provider: row.provider,
            subject: row.subject,
            linked_at_ms: row.linked_at,
        }
    }
}

impl From<UserWithRoles> for User {
    fn from(row: UserWithRoles) -> Self {
        let UserWithRoles { user, roles, links } = row;
        User {
            has_password: user.password_hash != NO_PASSWORD,
            identities: links.into_iter().map(IdentityLink::from).collect(),
            id: user.id,
            username: user.username,
            email: user.email,
            full_name: user.full_name,
            roles,
            active: user.active,
            created_at_ms: user.created_at,
            email_verified: user.email_verified,
            mfa_enabled: user.mfa_enabled,
        }
    }
}

/// An API key, without its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The secret's first characters, to recognise it.
    pub prefix: String,
    pub roles: Vec<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub revoked: bool,
    /// The user who created it; `None` for the command line.
    pub created_by: Option<String>,
}

impl From<api_key::Model> for ApiKey {
    fn from(row: api_key::Model) -> Self {
        ApiKey {
            roles: row.role_list(),
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            created_at_ms: row.created_at,
            expires_at_ms: row.expires_at,
            last_used_at_ms: row.last_used_at,
            revoked: row.revoked_at.is_some(),
            created_by: row.created_by,
        }
    }
}

/// One event of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at_ms: i64,
    pub action: String,
    pub outcome: String,
    /// The caller: a user id, an API key id or `cli`.
    pub actor: Option<String>,
    /// The user or key the event is about.
    pub subject: Option<String>,
    pub peer: Option<String>,
    /// The client certificate's identity, under mutual TLS.
    pub peer_identity: Option<String>,
    pub detail: Option<String>,
}

impl From<audit_event::Model> for AuditRecord {
    fn from(row: audit_event::Model) -> Self {
        AuditRecord {
            id: row.id,
            at_ms: row.at,
            action: row.action,
            outcome: row.outcome,
            actor: row.actor,
            subject: row.subject,
            peer: row.peer,
            peer_identity: row.peer_identity,
            detail: row.detail,
        }
    }
}

/// A live session, as its user or an admin sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub created_at_ms: i64,
    pub last_refreshed_at_ms: Option<i64>,
    /// The absolute end.
    pub expires_at_ms: i64,
    /// The session of the caller's own token.
    pub current: bool,
}

impl Session {
    pub(super) fn from_summary(row: SessionSummary, current: Option<&str>) -> Self {
        Session {
            current: current == Some(row.id.as_str()),
            id: row.id,
            created_at_ms: row.created_at,
            last_refreshed_at_ms: row.last_refreshed_at,
            expires_at_ms: row.expires_at,
        }
    }
}

/// One page of a listing and the token of the next (empty on the last page).
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// A role as AdminService shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub description: String,
    /// The roles it includes directly.
    pub includes: Vec<String>,
    /// The permissions it carries itself.
    pub permissions: Vec<String>,
    /// Seeded by a migration: may be updated, never deleted.
    pub builtin: bool,
}

impl From<RoleDefinition> for Role {
    fn from(row: RoleDefinition) -> Self {
        Role {
            name: row.name,
            description: row.description,
            includes: row.includes,
            permissions: row.permissions,
            builtin: row.builtin,
        }
    }
}

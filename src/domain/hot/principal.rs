//! Who a valid credential speaks for, as the hot path answers it.

use std::sync::Arc;

use super::{
    api_keys::ApiKeyEntry,
    roles::{Grants, PermissionList, RoleList},
    tokens::VerifiedToken,
    views::UserEntry,
};

/// The holder of a valid access token or API key, with the roles they hold now.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A user's access token in a live session.
    User {
        token: Arc<VerifiedToken>,
        user: Arc<UserEntry>,
    },
    /// A live API key.
    ApiKey(Arc<ApiKeyEntry>),
}

impl Principal {
    /// The user's id, or the key's id.
    pub fn subject_id(&self) -> &str {
        match self {
            Principal::User { token, .. } => &token.user_id,
            Principal::ApiKey(key) => &key.id,
        }
    }

    /// The username, or the key's name.
    pub fn name(&self) -> &str {
        match self {
            Principal::User { user, .. } => &user.username,
            Principal::ApiKey(key) => &key.name,
        }
    }

    /// What the holder holds now, through the role graph.
    pub fn grants(&self) -> &Grants {
        match self {
            Principal::User { user, .. } => &user.grants,
            Principal::ApiKey(key) => &key.grants,
        }
    }

    /// The effective roles.
    pub fn roles(&self) -> &RoleList {
        &self.grants().roles
    }

    /// The effective permissions.
    pub fn permissions(&self) -> &PermissionList {
        &self.grants().permissions
    }

    /// Empty for an API key.
    pub fn session_id(&self) -> &str {
        match self {
            Principal::User { token, .. } => &token.session_id,
            Principal::ApiKey(_) => "",
        }
    }

    /// Unix seconds; `None` for a key that never expires.
    pub fn expires_at(&self) -> Option<i64> {
        match self {
            Principal::User { token, .. } => Some(token.expires_at),
            Principal::ApiKey(key) => key.expires_at_ms.map(|ms| ms.div_euclid(1000)),
        }
    }

    /// Unix seconds: when the token was issued, or the key created.
    pub fn issued_at(&self) -> i64 {
        match self {
            Principal::User { token, .. } => token.issued_at,
            Principal::ApiKey(key) => key.created_at_ms.div_euclid(1000),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.grants().has_role(role)
    }

    pub fn has_permission(&self, permission: &str) -> bool {
        self.grants().has_permission(permission)
    }

    pub fn is_api_key(&self) -> bool {
        matches!(self, Principal::ApiKey(_))
    }
}

/// Principals built by hand, for the transport's tests of what it writes.
#[cfg(test)]
pub mod testing {
    use std::sync::Arc;

    use super::{ApiKeyEntry, Grants, Principal, UserEntry, VerifiedToken};

    /// A user's token in a live session, issued at `issued_at` for an hour.
    pub fn user(
        id: &str,
        username: &str,
        session_id: &str,
        issued_at: i64,
        grants: Grants,
    ) -> Principal {
        Principal::User {
            token: Arc::new(VerifiedToken {
                user_id: id.to_owned(),
                session_id: session_id.to_owned(),
                user_key: 1,
                session_key: 2,
                kid: Arc::from("test-key"),
                expires_at: issued_at + 3600,
                issued_at,
            }),
            user: Arc::new(UserEntry {
                username: username.to_owned(),
                active: true,
                direct_roles: grants.roles.iter().map(|r| r.to_string()).collect(),
                grants,
            }),
        }
    }

    /// A live API key.
    pub fn api_key(
        id: &str,
        name: &str,
        created_at_ms: i64,
        expires_at_ms: Option<i64>,
        grants: Grants,
    ) -> Principal {
        Principal::ApiKey(Arc::new(ApiKeyEntry::unused(
            id,
            name,
            grants,
            created_at_ms,
            expires_at_ms,
        )))
    }
}

/// CheckRole's and CheckPermission's answer.
#[derive(Debug, Clone)]
pub struct RoleCheck {
    pub allowed: bool,
    pub principal: Principal,
}

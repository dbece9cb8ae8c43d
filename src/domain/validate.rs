//! The hot path: ValidateToken and CheckRole. Answers from memory only: for an
//! access token, the verified-token cache, then the ended-session and user views on
//! every call, so no cached answer outlives a revocation or a role change; for an
//! API key, the key view. The database is touched only on a cold miss (a user
//! registered on another replica a moment ago, or a key rotated elsewhere).

use std::sync::Arc;

use super::{
    api_keys::{looks_like_api_key, ApiKeyEntry},
    error::{DomainError, DomainResult},
    roles::RoleList,
    service::Auth,
    tokens::{Rejection, VerifiedToken},
    unix_now_ms,
    views::UserEntry,
};

/// Who a valid credential speaks for, with the roles they hold now.
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

    pub fn roles(&self) -> &RoleList {
        match self {
            Principal::User { user, .. } => &user.effective_roles,
            Principal::ApiKey(key) => &key.effective_roles,
        }
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
        self.roles().iter().any(|r| r.as_ref() == role)
    }
}

impl Auth {
    /// Verifies an access token or API key and answers for its holder as of now.
    pub async fn validate(&self, token: &str) -> DomainResult<Principal> {
        let now_ms = unix_now_ms();
        self.ensure_fresh(now_ms)?;
        if looks_like_api_key(token) {
            return self.validate_api_key(token, now_ms).map(Principal::ApiKey);
        }
        let now = now_ms / 1000;
        let verified = match self.tokens.verify(&self.keys, token, now) {
            Ok(verified) => verified,
            Err(Rejection::UnknownKey) => {
                // Another replica may have rotated the key a moment ago.
                if self
                    .keys
                    .reload_for_unknown_kid(&self.store, now_ms)
                    .await?
                {
                    self.tokens
                        .verify(&self.keys, token, now)
                        .map_err(|_| DomainError::InvalidToken)?
                } else {
                    return Err(DomainError::InvalidToken);
                }
            }
            Err(Rejection::Invalid) => return Err(DomainError::InvalidToken),
        };
        if self.views.session_ended(&verified.session_id) {
            return Err(DomainError::InvalidToken);
        }
        let user = self
            .active_user(&verified.user_id)
            .await?
            .ok_or(DomainError::InvalidToken)?;
        Ok(Principal::User {
            token: verified,
            user,
        })
    }

    /// The user as the views know it now (loading one registered on another replica
    /// a moment ago); `None` when there is no such user or it is deactivated.
    pub(super) async fn active_user(&self, id: &str) -> DomainResult<Option<Arc<UserEntry>>> {
        let user = match self.views.user(id) {
            Some(user) => Some(user),
            None => self.feed.load_user(id).await?,
        };
        Ok(user.filter(|user| user.active))
    }

    /// Whether the holder has `role` now, directly or through the hierarchy.
    pub async fn check_role(&self, token: &str, role: &str) -> DomainResult<(bool, Principal)> {
        super::validation::required("role", role)?;
        let principal = self.validate(token).await?;
        if !self.views.catalog().exists(role) {
            return Err(DomainError::NotFound(format!(
                "role {role:?} does not exist"
            )));
        }
        Ok((principal.has_role(role), principal))
    }

    /// Memory may answer only while it was confirmed against the database recently.
    fn ensure_fresh(&self, now_ms: i64) -> DomainResult<()> {
        let age = now_ms - self.views.synced_at_ms();
        if age > self.settings.max_staleness.as_millis() as i64 {
            return Err(DomainError::Unavailable);
        }
        Ok(())
    }
}

//! The hot path: ValidateToken and CheckRole. Answers from memory only: the
//! verified-token cache, then the ended-session and user views on every call, so no
//! cached answer outlives a revocation or a role change. The database is touched
//! only on a cold miss (a user registered on another replica a moment ago, or a key
//! rotated elsewhere).

use std::sync::Arc;

use super::{
    error::{DomainError, DomainResult},
    service::Auth,
    tokens::{Rejection, VerifiedToken},
    unix_now_ms,
    views::UserEntry,
};

/// Who a valid token speaks for, with the roles they hold now.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token: Arc<VerifiedToken>,
    pub user: Arc<UserEntry>,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.user.effective_roles.iter().any(|r| r.as_ref() == role)
    }
}

impl Auth {
    /// Verifies an access token and answers for its holder as of now.
    pub async fn validate(&self, token: &str) -> DomainResult<Principal> {
        let now_ms = unix_now_ms();
        self.ensure_fresh(now_ms)?;
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
        let user = match self.views.user(&verified.user_id) {
            Some(user) => user,
            None => self
                .feed
                .load_user(&verified.user_id)
                .await?
                .ok_or(DomainError::InvalidToken)?,
        };
        if !user.active {
            return Err(DomainError::InvalidToken);
        }
        Ok(Principal {
            token: verified,
            user,
        })
    }

    /// Whether the token's holder has `role` now, directly or through the hierarchy.
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

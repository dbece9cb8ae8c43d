//! Sessions after login: refresh-token rotation with reuse detection, logout, and
//! ending every session of a user.

use super::{
    accounts::{IssuedTokens, SessionRefresh},
    audit::Caller,
    error::{DomainError, DomainResult},
    secrets::{random_token, sha256_hex, Secret},
    service::Auth,
    unix_now_ms, validation,
};
use crate::store::{ChangeKind, RefreshSpend, Rotation};

/// Longer refresh tokens cannot be ours; refused before hashing.
const MAX_REFRESH_TOKEN_BYTES: usize = 512;

fn check_refresh_token(token: &Secret) -> DomainResult<()> {
    validation::required("refresh_token", token.expose())?;
    if token.expose().len() > MAX_REFRESH_TOKEN_BYTES {
        return Err(DomainError::InvalidRefreshToken);
    }
    Ok(())
}

impl Auth {
    /// Spends `refresh` and returns a new pair in the same session. A token spent
    /// before is taken as stolen: the call fails and the whole session ends.
    pub async fn refresh(&self, caller: &Caller, refresh: Secret) -> DomainResult<IssuedTokens> {
        check_refresh_token(&refresh)?;
        let now_ms = unix_now_ms();
        let next = Secret::new(random_token(32));
        let next_expires_at = now_ms + self.settings.refresh_ttl.as_millis() as i64;
        let (old_hash, new_hash) = (sha256_hex(refresh.expose()), sha256_hex(next.expose()));
        let spend = self
            .store
            .rotate_refresh(Rotation {
                old_hash: &old_hash,
                new_hash: &new_hash,
                new_expires_at: next_expires_at,
                now_ms,
            })
            .await?;
        let rotated = match spend {
            RefreshSpend::Rotated(rotated) => rotated,
            RefreshSpend::Reused {
                session_id,
                user_id,
                newly_ended,
            } => {
                if newly_ended {
                    self.feed.apply(ChangeKind::SessionEnded, &session_id).await;
                }
                tracing::warn!(user = %user_id, session = %session_id, "spent refresh token presented again; session ended");
                self.audit(
                    caller,
                    "refresh_reuse",
                    "session_ended",
                    Some(&user_id),
                    Some(format!("session={session_id}")),
                )
                .await;
                return Err(DomainError::InvalidRefreshToken);
            }
            RefreshSpend::Invalid => return Err(DomainError::InvalidRefreshToken),
        };
        // The user comes from the view the hot path keeps fresh: deactivation ends
        // the user's sessions in the same transaction, so the spend above already
        // refused a deactivated user's token; roles may be as stale as the view.
        let user = self
            .active_user(&rotated.user_id)
            .await?
            .ok_or(DomainError::InvalidRefreshToken)?;
        self.issue_pair(
            &rotated.user_id,
            &user.effective_roles,
            SessionRefresh {
                session_id: &rotated.session_id,
                session_expires_at_ms: rotated.session_expires_at,
                refresh: next,
                refresh_expires_at_ms: rotated.refresh_expires_at,
            },
            now_ms,
        )
    }

    /// Ends the session of `refresh`. Idempotent: unknown, spent or already ended
    /// tokens answer OK too, and nothing tells them apart.
    pub async fn logout(&self, caller: &Caller, refresh: Secret) -> DomainResult<()> {
        validation::required("refresh_token", refresh.expose())?;
        if refresh.expose().len() > MAX_REFRESH_TOKEN_BYTES {
            return Ok(());
        }
        let ended = self
            .store
            .end_session_by_refresh(&sha256_hex(refresh.expose()), "logout", unix_now_ms())
            .await?;
        if let Some(end) = ended {
            self.feed
                .apply(ChangeKind::SessionEnded, &end.session_id)
                .await;
            self.audit(
                caller,
                "logout",
                "ok",
                Some(&end.user_id),
                Some(format!("session={}", end.session_id)),
            )
            .await;
        }
        Ok(())
    }

    /// Ends every live session of a user; answers how many.
    pub async fn end_sessions_of(&self, user_id: &str, reason: &str) -> DomainResult<u64> {
        let ended = self
            .store
            .end_sessions_of_user(user_id, reason, unix_now_ms())
            .await?;
        if ended > 0 {
            self.feed
                .apply(ChangeKind::UserSessionsEnded, user_id)
                .await;
        }
        Ok(ended)
    }
}

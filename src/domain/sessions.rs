//! Sessions after login: refresh-token rotation with reuse detection, logout,
//! ending every session of a user, and what a user sees and ends of their own
//! sessions (with the access token the transport checked, [`UserCaller`]).

use std::sync::Arc;

use super::{
    accounts::{access_expiry_bound, issue_pair, IssuedTokens, SessionRefresh},
    audit::{Action, Event, Outcome},
    caller::{Caller, UserCaller},
    context::Context,
    error::{DomainError, DomainResult},
    model::{Page, Session},
    paging,
    secrets::{digest_hex, random_token, Secret},
    validation,
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

/// Refresh, logout, and ending a user's sessions.
#[derive(Clone)]
pub struct Sessions {
    ctx: Arc<Context>,
}

impl Sessions {
    pub(super) fn new(ctx: Arc<Context>) -> Self {
        Sessions { ctx }
    }

    /// Spends `refresh` and returns a new pair in the same session. A token spent
    /// before is taken as stolen: the call fails and the whole session ends.
    pub async fn refresh(&self, caller: &Caller, refresh: Secret) -> DomainResult<IssuedTokens> {
        check_refresh_token(&refresh)?;
        let ctx = &self.ctx;
        let now_ms = ctx.now_ms();
        let next = Secret::new(random_token(32));
        let next_expires_at = now_ms + ctx.settings.refresh_ttl.as_millis() as i64;
        let (old_hash, new_hash) = (digest_hex(refresh.expose()), digest_hex(next.expose()));
        let spend = ctx
            .store
            .rotate_refresh(Rotation {
                old_hash: &old_hash,
                new_hash: &new_hash,
                new_expires_at: next_expires_at,
                access_expires_at: access_expiry_bound(ctx, now_ms),
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
                    ctx.hot.apply(ChangeKind::SessionEnded, &session_id).await;
                }
                tracing::warn!(user = %user_id, session = %session_id, "spent refresh token presented again; session ended");
                ctx.audit
                    .record(
                        caller,
                        Event::new(Action::RefreshReuse, Outcome::SessionEnded)
                            .subject(&user_id)
                            .detail(format!("session={session_id}")),
                    )
                    .await;
                return Err(DomainError::InvalidRefreshToken);
            }
            RefreshSpend::Invalid => return Err(DomainError::InvalidRefreshToken),
        };
        // The user comes from the view the hot path keeps fresh: deactivation ends
        // the user's sessions in the same transaction, so the spend above already
        // refused a deactivated user's token; roles may be as stale as the view.
        let user = ctx
            .hot
            .active_user(&rotated.user_id)
            .await?
            .ok_or(DomainError::InvalidRefreshToken)?;
        issue_pair(
            ctx,
            &rotated.user_id,
            &user.grants.roles,
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
        let ctx = &self.ctx;
        let ended = ctx
            .store
            .end_session_by_refresh(&digest_hex(refresh.expose()), "logout", ctx.now_ms())
            .await?;
        if let Some(end) = ended {
            ctx.hot
                .apply(ChangeKind::SessionEnded, &end.session_id)
                .await;
            ctx.audit
                .record(
                    caller,
                    Event::new(Action::Logout, Outcome::Ok)
                        .subject(&end.user_id)
                        .detail(format!("session={}", end.session_id)),
                )
                .await;
        }
        Ok(())
    }

    /// Authorises a self-service call made with `token`: a user's access token in
    /// a live session. API keys are refused: they have no password and no sessions.
    pub async fn authorize_user(
        &self,
        token: &str,
        peer: crate::domain::caller::Peer,
    ) -> DomainResult<UserCaller> {
        let principal = self.ctx.hot.validate(token).await?;
        if principal.is_api_key() {
            return Err(DomainError::PermissionDenied(
                "this call acts on a user's own account and needs that user's access token; an API key cannot make it".into(),
            ));
        }
        Ok(UserCaller::new(
            principal.subject_id().to_owned(),
            principal.session_id().to_owned(),
            peer,
        ))
    }

    /// The caller's live sessions, oldest first (at most the largest page).
    pub async fn list_own(&self, caller: &UserCaller) -> DomainResult<Vec<Session>> {
        let page = self
            .ctx
            .store
            .sessions_of_user(
                caller.user_id(),
                self.ctx.now_ms(),
                None,
                paging::MAX_PAGE_SIZE,
            )
            .await?;
        Ok(page
            .items
            .into_iter()
            .map(|row| Session::from_summary(row, Some(caller.session_id())))
            .collect())
    }

    /// A page of a user's live sessions (the user is known to exist).
    pub(super) async fn list_of(
        &self,
        user_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<Session>> {
        let limit = paging::page_size(page_size)?;
        let after = paging::decode(page_token)?;
        let page = self
            .ctx
            .store
            .sessions_of_user(user_id, self.ctx.now_ms(), after, limit)
            .await?;
        let last = page.items.last().map(|s| (s.created_at, s.id.as_str()));
        Ok(Page {
            next_page_token: paging::next_token(page.has_more, last),
            items: page
                .items
                .into_iter()
                .map(|row| Session::from_summary(row, None))
                .collect(),
        })
    }

    /// Ends one of the caller's live sessions; another user's, an unknown or an
    /// ended one is `NotFound`, alike.
    pub async fn revoke_own(&self, caller: &UserCaller, session_id: &str) -> DomainResult<()> {
        let not_found = || DomainError::NotFound("you have no live session with this id".into());
        validation::required("session_id", session_id)?;
        if validation::uuid("session_id", session_id).is_err() {
            return Err(not_found());
        }
        let ctx = &self.ctx;
        let ended = ctx
            .store
            .end_session_of_user(
                caller.user_id(),
                session_id,
                "revoked_by_user",
                ctx.now_ms(),
            )
            .await?;
        if !ended {
            return Err(not_found());
        }
        ctx.hot.apply(ChangeKind::SessionEnded, session_id).await;
        ctx.audit
            .record(
                caller.caller(),
                Event::new(Action::RevokeSession, Outcome::Ok)
                    .subject(caller.user_id())
                    .detail(format!("session={session_id}")),
            )
            .await;
        Ok(())
    }

    /// Ends every live session of a user; answers how many.
    pub async fn end_sessions_of(&self, user_id: &str, reason: &str) -> DomainResult<u64> {
        let ctx = &self.ctx;
        let ended = ctx
            .store
            .end_sessions_of_user(user_id, reason, ctx.now_ms())
            .await?;
        if ended > 0 {
            ctx.hot.apply(ChangeKind::UserSessionsEnded, user_id).await;
        }
        Ok(ended)
    }
}

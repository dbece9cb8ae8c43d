//! Account tokens: password reset and email verification. An admin asks for a
//! token, the operator's own service delivers it (authd sends no mail), and its
//! holder spends it once: to set a new password (ending every session of the
//! user) or to mark the email verified.
//!
//! Tokens are 256 random bits from the OS generator, shown once and stored only as
//! their SHA-256 ([`digest_hex`]); a newer token voids the user's older ones of its
//! kind. Unknown, spent, voided and expired tokens are refused alike, with one
//! message.

use std::{sync::Arc, time::Duration};

use super::{
    admin::AdminCaller,
    audit::{Action, Event, Outcome},
    caller::Caller,
    context::Context,
    error::{DomainError, DomainResult},
    model::User,
    secrets::{digest_hex, random_token, Password, Secret},
    validation,
};
use crate::store::{NewAccountToken, StoreError, TokenPurpose};

/// Longer tokens cannot be ours; refused before hashing.
const MAX_TOKEN_BYTES: usize = 512;
/// Random bytes in a token: 256 bits.
const TOKEN_BYTES: usize = 32;

const INVALID_RESET: &str = "the reset token is invalid, expired or already used";
const INVALID_VERIFICATION: &str = "the verification token is invalid, expired or already used";

/// A token just made, with its secret (shown only to the admin who asked).
#[derive(Debug)]
pub struct IssuedAccountToken {
    pub secret: Secret,
    pub expires_at_ms: i64,
}

/// Password reset and email verification.
#[derive(Clone)]
pub struct Recovery {
    ctx: Arc<Context>,
}

impl Recovery {
    pub(super) fn new(ctx: Arc<Context>) -> Self {
        Recovery { ctx }
    }

    /// A reset token for the user; lives `AUTHD_PASSWORD_RESET_TTL`.
    pub async fn create_password_reset_token(
        &self,
        caller: &AdminCaller,
        user_id: &str,
    ) -> DomainResult<IssuedAccountToken> {
        let ttl = self.ctx.settings.password_reset_ttl;
        self.issue(caller, user_id, TokenPurpose::PasswordReset, ttl)
            .await
    }

    /// A verification token for the user's current email; lives
    /// `AUTHD_EMAIL_VERIFICATION_TTL`.
    pub async fn create_email_verification_token(
        &self,
        caller: &AdminCaller,
        user_id: &str,
    ) -> DomainResult<IssuedAccountToken> {
        let ttl = self.ctx.settings.email_verification_ttl;
        self.issue(caller, user_id, TokenPurpose::EmailVerification, ttl)
            .await
    }

    async fn issue(
        &self,
        caller: &AdminCaller,
        user_id: &str,
        purpose: TokenPurpose,
        ttl: Duration,
    ) -> DomainResult<IssuedAccountToken> {
        validation::uuid("user_id", user_id)?;
        let now_ms = self.ctx.now_ms();
        let expires_at_ms =
            now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let secret = Secret::new(random_token(TOKEN_BYTES));
        let issued = self
            .ctx
            .store
            .issue_account_token(NewAccountToken {
                purpose,
                hash: &digest_hex(secret.expose()),
                user_id,
                expires_at: expires_at_ms,
                now_ms,
            })
            .await?;
        if !issued {
            return Err(DomainError::NotFound(format!(
                "user {user_id} does not exist"
            )));
        }
        let action = match purpose {
            TokenPurpose::PasswordReset => Action::CreatePasswordResetToken,
            TokenPurpose::EmailVerification => Action::CreateEmailVerificationToken,
        };
        self.ctx
            .audit
            .record(
                caller.caller(),
                Event::new(action, Outcome::Ok).subject(user_id),
            )
            .await;
        Ok(IssuedAccountToken {
            secret,
            expires_at_ms,
        })
    }

    /// Spends a reset token: sets the new password and ends every session of the
    /// user. The token is looked up before the new password is hashed, so garbage
    /// tokens cost no hashing; the spend after the hash decides.
    pub async fn reset_password(
        &self,
        caller: &Caller,
        token: Secret,
        new_password: Password,
    ) -> DomainResult<()> {
        validation::required("reset_token", token.expose())?;
        validation::password("new_password", new_password.expose())?;
        if token.expose().len() > MAX_TOKEN_BYTES {
            return Err(DomainError::Unauthenticated(INVALID_RESET));
        }
        let ctx = &self.ctx;
        let hash = digest_hex(token.expose());
        if !ctx
            .store
            .account_token_is_live(TokenPurpose::PasswordReset, &hash, ctx.now_ms())
            .await?
        {
            return Err(DomainError::Unauthenticated(INVALID_RESET));
        }
        let password_hash = ctx.hasher.hash(new_password).await?;
        let reset = ctx
            .store
            .spend_password_reset(&hash, password_hash, ctx.now_ms())
            .await?
            .ok_or(DomainError::Unauthenticated(INVALID_RESET))?;
        if reset.sessions_ended > 0 {
            ctx.hot
                .apply(crate::store::ChangeKind::UserSessionsEnded, &reset.user_id)
                .await;
        }
        // The holder of the token proved control of the account's delivery channel;
        // a lockout from guesses at the old password no longer protects anything.
        ctx.store.clear_login_failures(&reset.user_id).await?;
        ctx.audit
            .record(
                caller,
                Event::new(Action::ResetPassword, Outcome::Ok)
                    .subject(&reset.user_id)
                    .detail(format!("sessions_ended={}", reset.sessions_ended)),
            )
            .await;
        Ok(())
    }

    /// Spends a verification token and answers the user with its email verified.
    pub async fn verify_email(&self, caller: &Caller, token: Secret) -> DomainResult<User> {
        validation::required("verification_token", token.expose())?;
        if token.expose().len() > MAX_TOKEN_BYTES {
            return Err(DomainError::Unauthenticated(INVALID_VERIFICATION));
        }
        let ctx = &self.ctx;
        let user_id = ctx
            .store
            .spend_email_verification(&digest_hex(token.expose()), ctx.now_ms())
            .await?
            .ok_or(DomainError::Unauthenticated(INVALID_VERIFICATION))?;
        ctx.audit
            .record(
                caller,
                Event::new(Action::VerifyEmail, Outcome::Ok).subject(&user_id),
            )
            .await;
        ctx.store
            .find_user(&user_id)
            .await?
            .map(User::from)
            .ok_or_else(|| DomainError::internal(StoreError::Missing("verified user")))
    }
}

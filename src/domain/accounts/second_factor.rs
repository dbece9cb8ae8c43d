//! The second factor (TOTP, RFC 6238) in the login flow: enrolling, confirming,
//! turning it off, and the second step of a login (`VerifyMfa`). Every check of a
//! code is one of the account's turns and counts toward its failed-login
//! throttling as a wrong password does; each time step and each recovery code
//! works once (the store's conditional updates decide, across replicas).

use super::{Accounts, CheckPurpose, LoggedIn};
use crate::{
    domain::{
        audit::{Action, Event, Outcome},
        caller::{Caller, UserCaller},
        error::{DomainError, DomainResult},
        sealing::KeyEncryptionKey,
        secrets::{digest_hex, random_token, Secret},
        throttle::Counter,
        totp::{self, open, seal, Code, TotpSecret},
        validation,
    },
    store::{Confirmation, Enrolment},
};

/// Wrong codes a login challenge survives.
pub const MFA_MAX_FAILURES: i32 = 5;
const WRONG_CODE: &str = "the code is wrong or was already used";
const BAD_MFA_TOKEN: &str = "the mfa_token is invalid, expired or already used";

/// What enrolling answers: the secret for the authenticator, shown only here.
pub struct TotpEnrolment {
    pub secret: Secret,
    pub otpauth_uri: String,
}

impl Accounts {
    /// A fresh pending secret for the caller (replacing a pending one); TOTP counts
    /// only once confirmed. `FAILED_PRECONDITION` when it is on already.
    pub async fn enroll_totp(&self, caller: &UserCaller) -> DomainResult<TotpEnrolment> {
        let user = self.caller_account(caller).await?;
        let secret = TotpSecret::generate();
        let stored = seal(self.kek(), &user.id, &secret)?;
        match self
            .ctx
            .store
            .put_pending_totp(&user.id, stored, self.ctx.now_ms())
            .await?
        {
            Enrolment::AlreadyOn => {
                return Err(DomainError::FailedPrecondition(
                    "TOTP is already on; turn it off (DisableTotp) before enrolling again".into(),
                ))
            }
            Enrolment::Pending => {}
        }
        self.ctx
            .audit
            .record(
                caller.caller(),
                Event::new(Action::EnrollTotp, Outcome::Ok).subject(&user.id),
            )
            .await;
        Ok(TotpEnrolment {
            secret: Secret::new(secret.base32()?),
            otpauth_uri: secret.otpauth_uri(&self.ctx.settings.issuer, &user.username)?,
        })
    }

    /// Turns TOTP on with a valid code of the pending secret; answers the ten
    /// recovery codes, shown only here.
    pub async fn confirm_totp(&self, caller: &UserCaller, code: &str) -> DomainResult<Vec<Secret>> {
        let code = Code::parse(code)?;
        let user_id = caller.user_id();
        let credential = self.ctx.store.totp_credential(user_id).await?;
        let Some(credential) = credential.filter(|c| c.confirmed_at.is_none()) else {
            return Err(DomainError::FailedPrecondition(
                "nothing to confirm: call EnrollTotp first".into(),
            ));
        };
        let secret = open(self.kek(), user_id, &credential.secret)?;
        let counter = Counter::Account(user_id);
        let purpose = CheckPurpose::SecondFactor(Action::ConfirmTotp);
        let turn = self.take_turn(caller.caller(), counter, purpose).await?;
        let step = match &code {
            Code::Totp(digits) => secret.matching_step(digits, self.ctx.now_ms())?,
            _ => None,
        };
        let codes = totp::recovery_codes();
        let confirmed = match step {
            Some(step) => {
                self.ctx
                    .store
                    .confirm_totp(Confirmation {
                        user_id,
                        step,
                        recovery_code_hashes: codes.iter().map(|c| recovery_hash(c)).collect(),
                        now_ms: self.ctx.now_ms(),
                    })
                    .await?
            }
            None => false,
        };
        if !confirmed {
            return Err(self.wrong_code(caller.caller(), counter, purpose).await);
        }
        self.ctx.store.clear_login_failures(counter.key()).await?;
        drop(turn);
        self.ctx
            .audit
            .record(
                caller.caller(),
                Event::new(Action::ConfirmTotp, Outcome::Ok).subject(user_id),
            )
            .await;
        Ok(codes
            .into_iter()
            .map(|code| Secret::new(code.to_string()))
            .collect())
    }

    /// Turns TOTP off with a TOTP code or a recovery code.
    pub async fn disable_totp(&self, caller: &UserCaller, code: &str) -> DomainResult<()> {
        let code = Code::parse(code)?;
        let user_id = caller.user_id();
        if !self.has_confirmed_totp(user_id).await? {
            return Err(DomainError::FailedPrecondition("TOTP is not on".into()));
        }
        let counter = Counter::Account(user_id);
        let purpose = CheckPurpose::SecondFactor(Action::DisableTotp);
        let turn = self.take_turn(caller.caller(), counter, purpose).await?;
        if !self.spend_code(user_id, &code).await? {
            return Err(self.wrong_code(caller.caller(), counter, purpose).await);
        }
        self.ctx.store.clear_login_failures(counter.key()).await?;
        drop(turn);
        self.ctx
            .store
            .remove_totp(user_id, self.ctx.now_ms())
            .await?;
        self.ctx
            .audit
            .record(
                caller.caller(),
                Event::new(Action::DisableTotp, Outcome::Ok).subject(user_id),
            )
            .await;
        Ok(())
    }

    /// The second step of a login: the challenge's token and a TOTP or recovery
    /// code give what Login gives. The token works once and dies after
    /// [`MFA_MAX_FAILURES`] wrong codes; every wrong code also counts toward the
    /// account's throttling.
    pub async fn verify_mfa(
        &self,
        caller: &Caller,
        mfa_token: Secret,
        code: &str,
    ) -> DomainResult<LoggedIn> {
        validation::required("mfa_token", mfa_token.expose())?;
        let code = Code::parse(code)?;
        let token_hash = digest_hex(mfa_token.expose());
        let now_ms = self.ctx.now_ms();
        let Some(challenge) = self
            .ctx
            .store
            .open_mfa_challenge(&token_hash, now_ms, MFA_MAX_FAILURES)
            .await?
        else {
            return Err(DomainError::Unauthenticated(BAD_MFA_TOKEN));
        };
        let user_id = challenge.user_id.as_str();
        let counter = Counter::Account(user_id);
        let purpose = CheckPurpose::SecondFactor(Action::VerifyMfa);
        let turn = self.take_turn(caller, counter, purpose).await?;
        if !self.spend_code(user_id, &code).await? {
            self.ctx.store.fail_mfa_challenge(&token_hash).await?;
            return Err(self.wrong_code(caller, counter, purpose).await);
        }
        if !self
            .ctx
            .store
            .spend_mfa_challenge(&token_hash, self.ctx.now_ms(), MFA_MAX_FAILURES)
            .await?
        {
            // Spent, expired or killed meanwhile (a concurrent VerifyMfa).
            return Err(DomainError::Unauthenticated(BAD_MFA_TOKEN));
        }
        self.ctx.store.clear_login_failures(counter.key()).await?;
        drop(turn);
        self.finish_login(caller, user_id, super::SignIn::Password)
            .await
    }

    /// After the right password of an account with TOTP: the challenge whose token
    /// `VerifyMfa` takes.
    pub(super) async fn start_challenge(&self, user_id: &str) -> DomainResult<Secret> {
        let token = Secret::new(random_token(32));
        let ttl_ms = i64::try_from(self.ctx.settings.mfa_token_ttl.as_millis()).unwrap_or(i64::MAX);
        self.ctx
            .store
            .insert_mfa_challenge(
                digest_hex(token.expose()),
                user_id,
                self.ctx.now_ms().saturating_add(ttl_ms),
            )
            .await?;
        Ok(token)
    }

    pub(super) async fn has_confirmed_totp(&self, user_id: &str) -> DomainResult<bool> {
        Ok(self
            .ctx
            .store
            .totp_credential(user_id)
            .await?
            .is_some_and(|c| c.confirmed_at.is_some()))
    }

    /// Spends `code` for the user: a TOTP code's time step, or a recovery code.
    async fn spend_code(&self, user_id: &str, code: &Code) -> DomainResult<bool> {
        match code {
            Code::Totp(digits) => {
                let Some(credential) = self.ctx.store.totp_credential(user_id).await? else {
                    return Ok(false);
                };
                if credential.confirmed_at.is_none() {
                    return Ok(false);
                }
                let secret = open(self.kek(), user_id, &credential.secret)?;
                match secret.matching_step(digits, self.ctx.now_ms())? {
                    Some(step) => Ok(self.ctx.store.claim_totp_step(user_id, step).await?),
                    None => Ok(false),
                }
            }
            Code::Recovery(normalised) => Ok(self
                .ctx
                .store
                .use_recovery_code(user_id, &digest_hex(normalised), self.ctx.now_ms())
                .await?),
            Code::Malformed => Ok(false),
        }
    }

    async fn wrong_code(
        &self,
        caller: &Caller,
        counter: Counter<'_>,
        purpose: CheckPurpose<'_>,
    ) -> DomainError {
        match self.count_failure(caller, counter, purpose).await {
            DomainError::BadCredentials => DomainError::Unauthenticated(WRONG_CODE),
            other => other,
        }
    }

    /// The caller's own account; `UNAUTHENTICATED` when it is gone.
    async fn caller_account(
        &self,
        caller: &UserCaller,
    ) -> DomainResult<crate::store::entities::user::Model> {
        self.ctx
            .store
            .find_user(caller.user_id())
            .await?
            .map(|found| found.user)
            .ok_or(DomainError::InvalidToken)
    }

    fn kek(&self) -> Option<&KeyEncryptionKey> {
        self.ctx.settings.key_encryption.as_ref()
    }
}

/// The hash a recovery code is stored by: of its normal form (no dashes, lower case).
fn recovery_hash(code: &str) -> String {
    match Code::parse(code) {
        Ok(Code::Recovery(normalised)) => digest_hex(&normalised),
        _ => digest_hex(code),
    }
}

//! Passwords after registration: a user changing their own (the current one checked
//! as a login's is, in the account's turn and against its throttling counter) and an
//! operator setting one from the shell. Both end sessions in the transaction that
//! stores the new hash.

use super::{Accounts, CheckPurpose};
use crate::{
    domain::{
        audit::{Action, Event, Outcome},
        caller::{Caller, UserCaller},
        error::{DomainError, DomainResult},
        secrets::Password,
        throttle::Counter,
        validation,
    },
    store::{ChangeKind, PasswordSet},
};

impl Accounts {
    /// Changes the caller's password. The current one is checked as a login's is,
    /// in the account's turn and against its throttling counter (a wrong one counts
    /// as a failed login); then every other session of the user ends, in the
    /// transaction that stores the new hash, and the caller's stays.
    pub async fn change_password(
        &self,
        caller: &UserCaller,
        current: Password,
        new: Password,
    ) -> DomainResult<()> {
        validation::required("current_password", current.expose())?;
        if current.expose().len() > validation::PASSWORD_MAX_BYTES {
            return Err(DomainError::invalid(
                "current_password",
                "must be at most 128 characters",
            ));
        }
        validation::password("new_password", new.expose())?;
        let account = self
            .ctx
            .store
            .find_user(caller.user_id())
            .await?
            .ok_or(DomainError::InvalidToken)?
            .user;
        let (counter, purpose) = (Counter::Account(&account.id), CheckPurpose::ChangePassword);
        let who = caller.caller();
        let turn = self.take_turn(who, counter, purpose).await?;
        let verified = self
            .ctx
            .hasher
            .verify(current, Some(account.password_hash.clone()))
            .await?;
        if !verified.matches {
            return Err(self.count_failure(who, counter, purpose).await);
        }
        self.ctx.store.clear_login_failures(counter.key()).await?;
        drop(turn);
        let hash = self.ctx.hasher.hash(new).await?;
        let ended = self
            .set_hash(
                &account.id,
                hash,
                Some(caller.session_id()),
                "password_changed",
            )
            .await?
            .ok_or(DomainError::InvalidToken)?;
        self.ctx
            .audit
            .record(
                who,
                Event::new(Action::ChangePassword, Outcome::Ok)
                    .subject(&account.id)
                    .detail(format!("other_sessions_ended={ended}")),
            )
            .await;
        Ok(())
    }

    /// Sets a user's password from the shell (`authd user set-password`), with
    /// Register's rules, ending every session of the user and lifting a lockout
    /// (the operator vouches for the person). Answers the sessions ended.
    pub async fn set_password(
        &self,
        caller: &Caller,
        username: &str,
        password: Password,
    ) -> DomainResult<u64> {
        validation::required("username", username)?;
        validation::no_nul("username", username)?;
        validation::password("password", password.expose())?;
        let user = self
            .ctx
            .store
            .find_user_by_username(&username.to_lowercase())
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("no user is named {username}")))?
            .user;
        let hash = self.ctx.hasher.hash(password).await?;
        let ended = self
            .set_hash(&user.id, hash, None, "password_set")
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("no user is named {username}")))?;
        self.ctx.store.clear_login_failures(&user.id).await?;
        self.ctx
            .audit
            .record(
                caller,
                Event::new(Action::SetPassword, Outcome::Ok)
                    .subject(&user.id)
                    .detail(format!("sessions_ended={ended}")),
            )
            .await;
        Ok(ended)
    }

    /// Stores a new hash and ends the user's sessions but `keep`, telling the hot
    /// path; `None` when the user no longer exists.
    async fn set_hash(
        &self,
        user_id: &str,
        hash: String,
        keep: Option<&str>,
        reason: &str,
    ) -> DomainResult<Option<u64>> {
        let set = self
            .ctx
            .store
            .set_password(user_id, hash, keep, reason, self.ctx.now_ms())
            .await?;
        let PasswordSet::Done { sessions_ended } = set else {
            return Ok(None);
        };
        if sessions_ended > 0 {
            self.ctx
                .hot
                .apply(ChangeKind::UserSessionsEnded, user_id)
                .await;
        }
        Ok(Some(sessions_ended))
    }
}

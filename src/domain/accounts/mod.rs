//! Accounts: registering, logging in (with throttling and the dummy-hash path),
//! creating users from the command line, and passwords: a user changing their own
//! (checked and throttled as a login is), an operator setting one from the shell.
//!
//! A login takes its account's turn (see [`throttle`](super::throttle)) from reading
//! the failure counter to recording the outcome, so a burst of guesses is checked
//! one after another and stops at the lockout. A locked counter refuses before any
//! turn or hash, and writes one audit row per lockout, not one per attempt.

mod external_identity;
mod passwords;
mod second_factor;

pub use external_identity::ExternalIdentity;
pub use second_factor::{TotpEnrolment, MFA_MAX_FAILURES};

use std::{sync::Arc, time::Duration};

use super::{
    audit::{self, Action, Event, Outcome},
    caller::Caller,
    context::Context,
    error::{DomainError, DomainResult},
    hot::{AccessGrant, RoleList},
    model::User,
    secrets::{digest_hex, random_token, Password, Secret},
    throttle::{Counter, LockoutPolicy, Turn, Turns},
    validation::{self, Email, FullName, LoginName},
};
use crate::store::{
    entities::user, ChangeKind, LoginFailures, NewSession, NewUser, StoreError, Taken,
    UserWithRoles,
};

/// How long a caller refused for a crowded line is asked to wait.
const CROWDED_RETRY: Duration = Duration::from_secs(1);

/// The role every new user holds.
pub const DEFAULT_ROLE: &str = "user";

/// A new account as a caller describes it.
#[derive(Debug)]
pub struct Registration {
    pub username: String,
    pub email: String,
    pub password: Password,
    pub full_name: String,
    /// Empty means the default role.
    pub roles: Vec<String>,
}

/// What a successful login returns.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
}

/// What a password check is for, as its audit rows tell it.
#[derive(Clone, Copy, Debug)]
enum CheckPurpose<'a> {
    /// A login by this name (canonical form).
    Login(&'a LoginName),
    /// A user changing their own password.
    ChangePassword,
    /// A TOTP or recovery code, for this action.
    SecondFactor(Action),
}

impl CheckPurpose<'_> {
    fn action(self) -> Action {
        match self {
            CheckPurpose::Login(_) => Action::Login,
            CheckPurpose::ChangePassword => Action::ChangePassword,
            CheckPurpose::SecondFactor(action) => action,
        }
    }

    /// The detail's first part: the login as typed, or what failed.
    fn what(self) -> String {
        match self {
            CheckPurpose::Login(login) => format!("login={}", login.as_str()),
            CheckPurpose::ChangePassword => "wrong current password".to_owned(),
            CheckPurpose::SecondFactor(_) => "wrong code".to_owned(),
        }
    }
}

/// How the first step of a login proved who the caller is, as its audit rows tell
/// it.
#[derive(Clone, Copy, Debug)]
enum SignIn<'a> {
    /// A password (Login), or a second-factor code after one (VerifyMfa).
    Password,
    /// An ID token of an external provider: its name and the token's `sub`.
    IdToken { provider: &'a str, subject: &'a str },
}

impl SignIn<'_> {
    fn event<'e>(self, outcome: Outcome) -> Event<'e> {
        match self {
            SignIn::Password => Event::new(Action::Login, outcome),
            SignIn::IdToken { provider, subject } => Event::new(Action::IdTokenLogin, outcome)
                .detail(audit::identity_detail(provider, subject)),
        }
    }
}

/// A session's refresh token, handed out with a new access token.
pub(super) struct SessionRefresh<'a> {
    pub session_id: &'a str,
    pub session_expires_at_ms: i64,
    pub refresh: Secret,
    pub refresh_expires_at_ms: i64,
}

/// Registering and logging in.
#[derive(Clone)]
pub struct Accounts {
    ctx: Arc<Context>,
    turns: Turns,
}

impl Accounts {
    pub(super) fn new(ctx: Arc<Context>) -> Self {
        Accounts {
            ctx,
            turns: Turns::default(),
        }
    }

    fn lockout_policy(&self) -> LockoutPolicy {
        let settings = &self.ctx.settings;
        LockoutPolicy {
            max_failures: settings.login_max_failures,
            lockout_ms: i64::try_from(settings.login_lockout.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Creates an account. The unique indexes decide races: of concurrent
    /// registrations of one name exactly one succeeds.
    pub async fn register(
        &self,
        caller: &Caller,
        registration: Registration,
    ) -> DomainResult<User> {
        validation::username("username", &registration.username)?;
        let email = Email::parse("email", &registration.email)?;
        validation::password("password", registration.password.expose())?;
        let full_name = FullName::parse("full_name", &registration.full_name)?;
        let roles = if registration.roles.is_empty() {
            vec![DEFAULT_ROLE.to_owned()]
        } else {
            registration.roles
        };
        self.ctx.hot.catalog().require_all(&roles)?;
        let (username_lc, email_lc) = (
            registration.username.to_lowercase(),
            email.as_str().to_lowercase(),
        );
        // A cheap early answer; the unique index below is what really decides.
        self.refuse_taken(&username_lc, &email_lc).await?;

        let password_hash = self.ctx.hasher.hash(registration.password).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let roles_text = roles.join(",");
        let now_ms = self.ctx.now_ms();
        let inserted = self
            .ctx
            .store
            .insert_user(NewUser {
                id: id.clone(),
                username: registration.username,
                email: email.into_string(),
                full_name: full_name.into_string(),
                password_hash,
                email_verified: false,
                roles,
                now_ms,
            })
            .await;
        match inserted {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                self.refuse_taken(&username_lc, &email_lc).await?;
                return Err(DomainError::AlreadyExists(
                    "username or email is already taken".into(),
                ));
            }
            Err(other) => return Err(other.into()),
        }
        let detail = format!("roles={}", roles_text);
        self.registered(caller, &id, detail).await.map(User::from)
    }

    /// After a new account's rows are stored: tells the hot path, audits the
    /// registration with `detail`, and answers the account as stored.
    async fn registered(
        &self,
        caller: &Caller,
        id: &str,
        detail: String,
    ) -> DomainResult<UserWithRoles> {
        self.ctx.hot.apply(ChangeKind::User, id).await;
        self.ctx
            .audit
            .record(
                caller,
                Event::new(Action::Register, Outcome::Ok)
                    .subject(id)
                    .detail(detail),
            )
            .await;
        self.ctx
            .store
            .find_user(id)
            .await?
            .ok_or_else(|| DomainError::internal(StoreError::Missing("user")))
    }

    async fn refuse_taken(&self, username_lc: &str, email_lc: &str) -> DomainResult<()> {
        match self.ctx.store.taken(username_lc, email_lc).await? {
            Taken::Username => Err(DomainError::AlreadyExists(
                "username is already taken".into(),
            )),
            Taken::Email => Err(DomainError::AlreadyExists(
                "email is already registered".into(),
            )),
            Taken::Neither => Ok(()),
        }
    }

    /// Checks a password and starts a session. `login` is a username or an email.
    pub async fn login(
        &self,
        caller: &Caller,
        login: &str,
        password: Password,
    ) -> DomainResult<LoginOutcome> {
        let login = LoginName::parse("username", login)?;
        validation::required("password", password.expose())?;
        if password.expose().len() > validation::PASSWORD_MAX_BYTES {
            return Err(DomainError::invalid(
                "password",
                "must be at most 128 characters",
            ));
        }
        let account = self.ctx.store.find_user_by_login(login.as_str()).await?;
        let account_id = account.as_ref().map(|account| account.id.clone());
        let counter = match &account_id {
            Some(id) => Counter::Account(id),
            None => Counter::UnknownLogin(login.as_str()),
        };
        let purpose = CheckPurpose::Login(&login);
        let turn = self.take_turn(caller, counter, purpose).await?;
        let verified = self
            .ctx
            .hasher
            .verify(
                password.clone(),
                account.as_ref().map(|u| u.password_hash.clone()),
            )
            .await?;
        let account = match account {
            Some(account) if verified.matches => account,
            _ => return Err(self.count_failure(caller, counter, purpose).await),
        };
        // The right password resets the count, whatever else refuses the login.
        self.ctx.store.clear_login_failures(counter.key()).await?;
        drop(turn);
        if !account.active {
            return Err(self
                .refuse_deactivated(caller, &account.id, SignIn::Password)
                .await);
        }
        if verified.needs_rehash {
            self.rehash(&account, password).await;
        }
        self.second_factor_or_session(caller, &account.id, SignIn::Password)
            .await
    }

    /// After every check of the first step passed: the challenge of the second
    /// factor for an account with TOTP, else the session.
    async fn second_factor_or_session(
        &self,
        caller: &Caller,
        user_id: &str,
        how: SignIn<'_>,
    ) -> DomainResult<LoginOutcome> {
        if self.has_confirmed_totp(user_id).await? {
            let mfa_token = self.start_challenge(user_id).await?;
            self.ctx
                .audit
                .record(caller, how.event(Outcome::MfaRequired).subject(user_id))
                .await;
            return Ok(LoginOutcome::MfaRequired { mfa_token });
        }
        self.finish_login(caller, user_id, how)
            .await
            .map(LoginOutcome::LoggedIn)
    }

    /// Starts the session of a login whose checks all passed.
    async fn finish_login(
        &self,
        caller: &Caller,
        user_id: &str,
        how: SignIn<'_>,
    ) -> DomainResult<LoggedIn> {
        let user = self
            .ctx
            .store
            .find_user(user_id)
            .await?
            .ok_or(DomainError::BadCredentials)?;
        let Some(tokens) = self.start_session(&user.user.id, &user.roles).await? else {
            // Deactivated after the check above: the session was not started.
            return Err(self.refuse_deactivated(caller, user_id, how).await);
        };
        self.ctx
            .audit
            .record(caller, how.event(Outcome::Ok).subject(user_id))
            .await;
        Ok(LoggedIn {
            tokens,
            user: user.into(),
        })
    }

    async fn refuse_deactivated(
        &self,
        caller: &Caller,
        user_id: &str,
        how: SignIn<'_>,
    ) -> DomainError {
        self.ctx
            .audit
            .record(caller, how.event(Outcome::Deactivated).subject(user_id))
            .await;
        DomainError::AccountDisabled
    }

    /// The account's turn to check a secret (a password or a code), refused while
    /// the counter is locked: checked before taking the turn (no wait, no hash) and
    /// again with it (the checks before this one may have locked it).
    async fn take_turn(
        &self,
        caller: &Caller,
        counter: Counter<'_>,
        purpose: CheckPurpose<'_>,
    ) -> DomainResult<Turn> {
        self.refuse_if_locked(caller, counter, purpose).await?;
        let max_waiting =
            usize::try_from(self.ctx.settings.login_max_failures).unwrap_or(usize::MAX);
        let Some(turn) = self.turns.take(counter.key(), max_waiting).await else {
            return Err(DomainError::Throttled {
                retry_after: CROWDED_RETRY,
            });
        };
        self.refuse_if_locked(caller, counter, purpose).await?;
        Ok(turn)
    }

    /// `Throttled` while the counter is locked. The first refusal of each lockout
    /// (on any replica) writes its one audit row; the others write nothing.
    async fn refuse_if_locked(
        &self,
        caller: &Caller,
        counter: Counter<'_>,
        purpose: CheckPurpose<'_>,
    ) -> DomainResult<()> {
        let Some(failures) = self.ctx.store.login_failures(counter.key()).await? else {
            return Ok(());
        };
        let now_ms = self.ctx.now_ms();
        let Some(until) = self.lockout_policy().locked_until(&failures, now_ms) else {
            return Ok(());
        };
        if failures.refusals_audited_until != Some(until)
            && self
                .ctx
                .store
                .note_refusals_audited(counter.key(), until)
                .await?
        {
            let mut event = Event::new(purpose.action(), Outcome::Throttled).detail(format!(
                "{}; locked {} s (lockout {} in a row); further refusals until it ends are not recorded",
                purpose.what(),
                whole_seconds(until - now_ms),
                failures.lockouts,
            ));
            if let Some(id) = counter.account() {
                event = event.subject(id);
            }
            self.ctx.audit.record(caller, event).await;
        }
        Err(DomainError::Throttled {
            retry_after: Duration::from_millis(u64::try_from(until - now_ms).unwrap_or(0)),
        })
    }

    /// Counts a failed check; the one that reaches the limit locks the counter.
    async fn count_failure(
        &self,
        caller: &Caller,
        counter: Counter<'_>,
        purpose: CheckPurpose<'_>,
    ) -> DomainError {
        let now_ms = self.ctx.now_ms();
        let policy = self.lockout_policy();
        let mut before = LoginFailures::default();
        let recorded = self
            .ctx
            .store
            .record_login_failure(counter.key(), now_ms, |current| {
                before = current;
                policy.after_failure(current, now_ms)
            })
            .await;
        let after = match recorded {
            Ok(after) => after,
            Err(err) => return err.into(),
        };
        let locked = after.locked_until != before.locked_until;
        let (outcome, detail) = if locked {
            let lock_s = whole_seconds(after.locked_until.unwrap_or(now_ms) - now_ms);
            (
                Outcome::FailedAndLocked,
                format!(
                    "{}; locked {lock_s} s (lockout {} in a row)",
                    purpose.what(),
                    after.lockouts
                ),
            )
        } else {
            (Outcome::Failed, purpose.what())
        };
        // A failed login names the login only, as it always has; the lock is an
        // event about the account, so its row names the account as well, and so
        // does a failed change of password (the caller's account is known).
        let mut event = Event::new(purpose.action(), outcome).detail(detail);
        let names_account = locked
            || matches!(
                purpose,
                CheckPurpose::ChangePassword | CheckPurpose::SecondFactor(_)
            );
        if let (true, Some(id)) = (names_account, counter.account()) {
            event = event.subject(id);
        }
        self.ctx.audit.record(caller, event).await;
        DomainError::BadCredentials
    }

    /// Upgrades a hash made with weaker parameters; a failure only delays it.
    async fn rehash(&self, account: &user::Model, password: Password) {
        match self.ctx.hasher.hash(password).await {
            Ok(hash) => {
                if let Err(err) = self
                    .ctx
                    .store
                    .set_password_hash(&account.id, hash, self.ctx.now_ms())
                    .await
                {
                    tracing::warn!(error = %err, user = %account.id, "could not store the upgraded password hash");
                } else {
                    tracing::info!(user = %account.id, "password hash upgraded to current parameters");
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, user = %account.id, "could not upgrade the password hash")
            }
        }
    }

    /// Opens a session for the user and issues its first token pair; `None` when the
    /// user is no longer active (nothing was started).
    async fn start_session(
        &self,
        user_id: &str,
        roles: &[String],
    ) -> DomainResult<Option<IssuedTokens>> {
        let ctx = &self.ctx;
        let now_ms = ctx.now_ms();
        let session_id = uuid::Uuid::new_v4().to_string();
        let session_expires_at = now_ms + ctx.settings.session_max_ttl.as_millis() as i64;
        let refresh = Secret::new(random_token(32));
        let refresh_expires_at =
            (now_ms + ctx.settings.refresh_ttl.as_millis() as i64).min(session_expires_at);
        let started = ctx
            .store
            .insert_session(NewSession {
                id: session_id.clone(),
                user_id: user_id.to_owned(),
                expires_at: session_expires_at,
                refresh_hash: digest_hex(refresh.expose()),
                refresh_expires_at,
                access_expires_at: access_expiry_bound(ctx, now_ms),
                now_ms,
            })
            .await?;
        if !started {
            return Ok(None);
        }
        ctx.hot
            .session_started(&session_id, user_id, session_expires_at);
        issue_pair(
            ctx,
            user_id,
            &ctx.hot.catalog().grants(roles).roles,
            SessionRefresh {
                session_id: &session_id,
                session_expires_at_ms: session_expires_at,
                refresh,
                refresh_expires_at_ms: refresh_expires_at,
            },
            now_ms,
        )
        .map(Some)
    }
}

/// Milliseconds as seconds, rounded up (for audit details).
fn whole_seconds(ms: i64) -> i64 {
    ms.saturating_add(999) / 1000
}

/// What a login with the right password answers: a session, or (for an account
/// with TOTP) the challenge for the second step.
#[derive(Debug)]
pub enum LoginOutcome {
    LoggedIn(LoggedIn),
    MfaRequired { mfa_token: Secret },
}

/// What a successful login answers.
#[derive(Debug)]
pub struct LoggedIn {
    pub tokens: IssuedTokens,
    pub user: User,
}

/// The latest moment (Unix ms) an access token issued at `now_ms` can expire,
/// recorded with the session so that revocation outlives a shorter TTL setting.
pub(super) fn access_expiry_bound(ctx: &Context, now_ms: i64) -> i64 {
    now_ms.saturating_add(i64::try_from(ctx.settings.access_ttl.as_millis()).unwrap_or(i64::MAX))
}

/// Signs an access token for `user_id` (capped at the session's end) to go with the
/// session's new refresh token.
pub(super) fn issue_pair(
    ctx: &Context,
    user_id: &str,
    effective_roles: &RoleList,
    session: SessionRefresh<'_>,
    now_ms: i64,
) -> DomainResult<IssuedTokens> {
    let SessionRefresh {
        session_id,
        session_expires_at_ms,
        refresh,
        refresh_expires_at_ms,
    } = session;
    let now = now_ms.div_euclid(1000);
    let expires_at =
        (now + ctx.settings.access_ttl.as_secs() as i64).min(session_expires_at_ms / 1000);
    let access = ctx.hot.sign(AccessGrant {
        user_id,
        session_id,
        roles: effective_roles.iter().map(|r| r.to_string()).collect(),
        issued_at_ms: now_ms,
        expires_at,
    })?;
    Ok(IssuedTokens {
        access_token: Secret::new(access),
        refresh_token: refresh,
        expires_in: expires_at - now,
        refresh_expires_in: (refresh_expires_at_ms - now_ms) / 1000,
    })
}

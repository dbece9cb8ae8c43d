//! Accounts: registering, logging in (with throttling and the dummy-hash path) and
//! creating users from the command line.

use std::{sync::Arc, time::Duration};

use super::{
    audit::{Action, Event, Outcome},
    caller::Caller,
    context::Context,
    error::{DomainError, DomainResult},
    hot::{AccessGrant, RoleList},
    model::User,
    secrets::{digest_hex, random_token, Password, Secret},
    validation::{self, Email, FullName, LoginName},
};
use crate::store::{entities::user, ChangeKind, NewSession, NewUser, StoreError, Taken};

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
}

impl Accounts {
    pub(super) fn new(ctx: Arc<Context>) -> Self {
        Accounts { ctx }
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
        self.ctx.hot.apply(ChangeKind::User, &id).await;
        let user = self
            .ctx
            .store
            .find_user(&id)
            .await?
            .ok_or_else(|| DomainError::internal(StoreError::Missing("user")))?;
        let detail = format!("roles={}", user.roles.join(","));
        self.ctx
            .audit
            .record(
                caller,
                Event::new(Action::Register, Outcome::Ok)
                    .subject(&id)
                    .detail(detail),
            )
            .await;
        Ok(user.into())
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
    ) -> DomainResult<LoggedIn> {
        let login = LoginName::parse("username", login)?;
        validation::required("password", password.expose())?;
        if password.expose().len() > validation::PASSWORD_MAX_BYTES {
            return Err(DomainError::invalid(
                "password",
                "must be at most 128 characters",
            ));
        }
        let login_lc = login.as_str();
        let now_ms = self.ctx.now_ms();
        // Checked before hashing, so a locked username costs no CPU.
        if let Some(until) = self
            .ctx
            .store
            .locked_until(login_lc)
            .await?
            .filter(|until| *until > now_ms)
        {
            self.ctx
                .audit
                .record(
                    caller,
                    Event::new(Action::Login, Outcome::Throttled)
                        .detail(format!("login={login_lc}")),
                )
                .await;
            return Err(DomainError::Throttled {
                retry_after: Duration::from_millis((until - now_ms) as u64),
            });
        }
        let account = self.ctx.store.find_user_by_login(login_lc).await?;
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
            _ => return Err(self.count_failure(caller, login_lc).await),
        };
        if !account.active {
            return Err(self.refuse_deactivated(caller, &account.id).await);
        }
        self.ctx.store.clear_login_failures(login_lc).await?;
        if verified.needs_rehash {
            self.rehash(&account, password).await;
        }
        let user = self
            .ctx
            .store
            .find_user(&account.id)
            .await?
            .ok_or(DomainError::BadCredentials)?;
        let Some(tokens) = self.start_session(&user.user.id, &user.roles).await? else {
            // Deactivated after the check above: the session was not started.
            return Err(self.refuse_deactivated(caller, &account.id).await);
        };
        self.ctx
            .audit
            .record(
                caller,
                Event::new(Action::Login, Outcome::Ok).subject(&account.id),
            )
            .await;
        Ok(LoggedIn {
            tokens,
            user: user.into(),
        })
    }

    async fn refuse_deactivated(&self, caller: &Caller, user_id: &str) -> DomainError {
        self.ctx
            .audit
            .record(
                caller,
                Event::new(Action::Login, Outcome::Deactivated).subject(user_id),
            )
            .await;
        DomainError::AccountDisabled
    }

    async fn count_failure(&self, caller: &Caller, login_lc: &str) -> DomainError {
        let now_ms = self.ctx.now_ms();
        let settings = &self.ctx.settings;
        let lock_until = now_ms + settings.login_lockout.as_millis() as i64;
        match self
            .ctx
            .store
            .record_login_failure(login_lc, settings.login_max_failures, lock_until, now_ms)
            .await
        {
            Ok(locked) => {
                let outcome = if locked {
                    Outcome::FailedAndLocked
                } else {
                    Outcome::Failed
                };
                self.ctx
                    .audit
                    .record(
                        caller,
                        Event::new(Action::Login, outcome).detail(format!("login={login_lc}")),
                    )
                    .await;
                DomainError::BadCredentials
            }
            Err(err) => err.into(),
        }
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
                now_ms,
            })
            .await?;
        if !started {
            return Ok(None);
        }
        issue_pair(
            ctx,
            user_id,
            &ctx.hot.catalog().effective(roles),
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

/// What a successful login answers.
#[derive(Debug)]
pub struct LoggedIn {
    pub tokens: IssuedTokens,
    pub user: User,
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

//! The domain: what authd does, apart from how it is called and where it is kept.
//! Knows neither protobuf nor tonic; talks to the database only through `store`.
//!
//! Two paths with opposite needs (see DESIGN.md):
//! - [`hot`]: `ValidateToken`, `CheckRole` and `CheckPermission`, from memory, behind one owner,
//!   [`hot::HotPath`];
//! - the slow path, one owner per capability: [`accounts::Accounts`] (register,
//!   login), [`sessions::Sessions`] (refresh, logout), [`admin::Admin`] (user
//!   administration and who may do it), [`api_keys::ApiKeys`], [`recovery::Recovery`]
//!   (password-reset and email-verification tokens), [`audit_trail::AuditTrail`]
//!   (reading the audit trail), [`roles::Roles`] (the role graph),
//!   [`oidc::OidcSignIn`] (sign-in with an external identity provider's ID token).
//!   They write to the
//!   database, then tell the hot path what changed; they never reach into its parts.
//!
//! [`Domain`] is all of them, built once at start-up.

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod audit_trail;
pub mod caller;
mod context;
pub mod error;
pub mod hot;
pub mod model;
pub mod oidc;
pub mod paging;
pub mod passwords;
pub mod recovery;
pub mod retention;
pub mod roles;
pub mod sealing;
pub mod secrets;
pub mod sessions;
pub mod signing_keys;
mod throttle;
pub mod totp;
pub mod validation;

use std::{sync::Arc, time::Duration};

pub use error::{DomainError, DomainResult};

use self::{
    accounts::Accounts,
    admin::Admin,
    api_keys::ApiKeys,
    audit_trail::AuditTrail,
    context::Context,
    hot::HotPath,
    oidc::{IdentityProviders, OidcSignIn},
    passwords::PasswordHasher,
    recovery::Recovery,
    roles::Roles,
    sessions::Sessions,
};
use crate::{clock::Clock, store::Store};

/// The lifetimes and limits the slow path enforces.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_max_ttl: Duration,
    pub login_max_failures: u32,
    pub login_lockout: Duration,
    pub password_reset_ttl: Duration,
    pub email_verification_ttl: Duration,
    /// How long the second step of a login may wait for its code.
    pub mfa_token_ttl: Duration,
    /// The issuer an authenticator app shows beside the account (`AUTHD_ISSUER`).
    pub issuer: String,
    /// Seals TOTP secrets at rest when set (`AUTHD_KEY_ENCRYPTION_KEY`).
    pub key_encryption: Option<sealing::KeyEncryptionKey>,
}

/// Every capability, sharing one store, one hot path and one clock.
#[derive(Clone)]
pub struct Domain {
    pub hot: HotPath,
    pub accounts: Accounts,
    pub sessions: Sessions,
    pub admin: Admin,
    pub api_keys: ApiKeys,
    pub audit: AuditTrail,
    pub recovery: Recovery,
    pub oidc: OidcSignIn,
    pub roles: Roles,
    context: Arc<Context>,
}

impl Domain {
    pub fn new(
        store: Store,
        hot: HotPath,
        hasher: PasswordHasher,
        settings: AuthSettings,
        providers: IdentityProviders,
        clock: Clock,
    ) -> Self {
        let context = Arc::new(Context::new(store, hot.clone(), hasher, settings, clock));
        let sessions = Sessions::new(context.clone());
        let accounts = Accounts::new(context.clone());
        Domain {
            oidc: OidcSignIn::new(context.clone(), accounts.clone(), providers),
            accounts,
            admin: Admin::new(context.clone(), sessions.clone()),
            api_keys: ApiKeys::new(context.clone()),
            audit: AuditTrail::new(context.clone()),
            recovery: Recovery::new(context.clone()),
            roles: Roles::new(context.clone()),
            sessions,
            hot,
            context,
        }
    }

    /// Sets the state gauges: hashing pool, memory views, database pool, the
    /// process. All from memory: a scrape costs no query (a COUNT per scrape once
    /// slowed logins).
    pub async fn sample_gauges(&self) {
        let hasher = &self.context.hasher;
        metrics::gauge!("authd_hash_queue_depth").set(hasher.waiting() as f64);
        metrics::gauge!("authd_hash_queue_capacity").set(hasher.queue_capacity() as f64);
        metrics::gauge!("authd_hash_in_flight").set(hasher.in_flight() as f64);
        let up = *self.hot.database_up().borrow();
        metrics::gauge!("authd_database_up").set(if up { 1.0 } else { 0.0 });
        let hot = self.hot.stats();
        metrics::gauge!("authd_view_staleness_seconds").set(hot.staleness_ms as f64 / 1000.0);
        metrics::gauge!("authd_ended_sessions_tracked").set(hot.ended_sessions as f64);
        metrics::gauge!("authd_token_cache_entries").set(hot.cached_tokens as f64);
        metrics::gauge!("authd_live_sessions").set(hot.live_sessions as f64);
        metrics::gauge!("authd_revocation_watchers").set(hot.revocation_watchers as f64);
        let pool = self.context.store.pool_stats();
        metrics::gauge!("authd_db_pool_connections", "state" => "idle").set(pool.idle as f64);
        metrics::gauge!("authd_db_pool_connections", "state" => "in_use")
            .set(pool.open.saturating_sub(pool.idle) as f64);
        crate::telemetry::sample_process();
    }

    /// The pruner of this replica, on the domain's store and clock; run it with
    /// [`retention::Pruner::run`].
    pub fn pruner(&self, settings: retention::RetentionSettings) -> retention::Pruner {
        retention::Pruner::new(
            self.context.store.clone(),
            self.context.clock.clone(),
            settings,
        )
    }

    /// Closes the database connections (after the last call has finished).
    pub async fn close(self) {
        self.context.store.clone().close().await;
    }
}

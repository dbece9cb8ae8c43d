//! The hot path: what every service behind authd calls on every request it serves.
//! [`HotPath`] answers `ValidateToken`, `CheckRole`, `CheckPermission` and Envoy's
//! ext_authz Check from memory only, and owns
//! everything that memory is made of: the views of users, ended sessions and API
//! keys, the change feed that keeps them fresh, the signing-key ring, the cache of
//! verified tokens and the role catalogue. Its parts are private; this file is its
//! whole API.
//!
//! For an access token it checks the verified-token cache (or the signature), then
//! the ended-session and user views on every call, so no cached answer outlives a
//! revocation or a role change; for an API key, the key view. The database is read
//! only on a cold miss: a user registered on another replica a moment ago, a key
//! rotated or an API key created elsewhere. The slow path writes to the database
//! and then tells the hot path what it changed ([`HotPath::apply`]).

mod api_keys;
mod feed;
mod keys;
mod principal;
mod requirements;
mod revocations;
mod roles;
mod tokens;
mod views;
mod watchers;

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use super::signing_keys::SIGNING_ALGORITHM;
pub use api_keys::{ApiKeyUse, KEY_SCHEME};
#[cfg(test)]
pub use principal::testing as principal_testing;
pub use principal::{Principal, RoleCheck};
pub use requirements::Requirements;
pub use revocations::{Cursor, RevocationEvent, RevocationKind};
pub use roles::{Grants, PermissionList, RoleCatalog, RoleList, ADMIN_ROLE};
pub use tokens::{AccessGrant, MAX_TOKEN_BYTES};
pub use views::UserEntry;
pub use watchers::{RevocationStream, WatchSettings};

use self::{
    api_keys::{looks_like_api_key, ApiKeyEntry, MAX_KEY_BYTES},
    feed::ChangeFeed,
    keys::KeyRing,
    tokens::{AccessTokens, Rejection, VerifiedToken},
    views::Views,
    watchers::Watchers,
};
use super::{
    error::{DomainError, DomainResult},
    sealing::KeyEncryptionKey,
    secrets::digest,
    validation,
};
use crate::{
    clock::Clock,
    store::{ChangeKind, Store, StoreError},
};

/// What the hot path is configured with.
#[derive(Clone, Debug)]
pub struct HotSettings {
    pub issuer: String,
    pub audience: String,
    /// Tokens live this long; ended sessions and retired keys are kept as long.
    pub access_ttl: Duration,
    /// How long memory may answer without a successful sync with the database.
    pub max_staleness: Duration,
    pub token_cache_capacity: u64,
    /// Opens the private signing keys sealed at rest (`AUTHD_KEY_ENCRYPTION_KEY`).
    pub key_encryption: Option<KeyEncryptionKey>,
    /// The revocation stream's bounds.
    pub watch: WatchSettings,
}

/// The state of the memory, for the gauges.
#[derive(Clone, Copy, Debug)]
pub struct HotStats {
    pub staleness_ms: i64,
    pub ended_sessions: usize,
    /// Sessions started and not ended, as far as this replica knows.
    pub live_sessions: usize,
    pub cached_tokens: u64,
    /// Revocation watchers connected.
    pub revocation_watchers: usize,
}

/// The hot path's one owner. Cheap to clone; every clone shares the same memory.
#[derive(Clone)]
pub struct HotPath {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Clock,
    views: Arc<Views>,
    keys: Arc<KeyRing>,
    tokens: AccessTokens,
    feed: ChangeFeed,
    watchers: Watchers,
    max_staleness_ms: i64,
}

impl HotPath {
    /// Loads every view from the database.
    pub async fn load(
        store: Store,
        clock: Clock,
        settings: HotSettings,
    ) -> Result<HotPath, StoreError> {
        let views = Arc::new(Views::default());
        let keys = Arc::new(KeyRing::with_key_encryption(
            settings.access_ttl,
            settings.key_encryption,
        ));
        let max_staleness_ms =
            i64::try_from(settings.max_staleness.as_millis()).unwrap_or(i64::MAX);
        let feed = ChangeFeed::new(
            store.clone(),
            clock.clone(),
            views.clone(),
            keys.clone(),
            max_staleness_ms,
            settings.watch.buffer,
        );
        feed.load().await?;
        let watchers = Watchers::new(
            store.clone(),
            clock.clone(),
            settings.watch,
            settings.access_ttl,
        );
        let tokens = AccessTokens::new(
            &settings.issuer,
            &settings.audience,
            settings.token_cache_capacity,
            clock.clone(),
        );
        Ok(HotPath {
            inner: Arc::new(Inner {
                store,
                clock,
                views,
                keys,
                tokens,
                feed,
                watchers,
                max_staleness_ms,
            }),
        })
    }

    /// Verifies an access token or API key and answers for its holder as of now.
    pub async fn validate(&self, token: &str) -> DomainResult<Principal> {
        let now_ms = self.inner.clock.now_ms();
        self.ensure_fresh(now_ms)?;
        if looks_like_api_key(token) {
            return self
                .validate_api_key(token, now_ms)
                .await
                .map(Principal::ApiKey);
        }
        let inner = &*self.inner;
        let verified = match inner.tokens.verify(&inner.keys, token, now_ms) {
            Ok(verified) => verified,
            Err(Rejection::UnknownKey) => {
                // Another replica may have rotated the key a moment ago.
                if !inner
                    .keys
                    .reload_for_unknown_kid(&inner.store, now_ms)
                    .await?
                {
                    return Err(DomainError::InvalidToken);
                }
                inner
                    .tokens
                    .verify(&inner.keys, token, now_ms)
                    .map_err(|_| DomainError::InvalidToken)?
            }
            Err(Rejection::Invalid) => return Err(DomainError::InvalidToken),
        };
        self.check_session(&verified).await?;
        let user = self
            .active_user(&verified.user_id)
            .await?
            .ok_or(DomainError::InvalidToken)?;
        Ok(Principal::User {
            token: verified,
            user,
        })
    }

    /// A token's session must be one this server issued, to the token's user, and
    /// not ended. A session started on another replica a moment ago is read once.
    async fn check_session(&self, token: &VerifiedToken) -> DomainResult<()> {
        let views = &self.inner.views;
        if views.session_ended(token.session_key) {
            return Err(DomainError::InvalidToken);
        }
        let owner = match views.session_owner(token.session_key) {
            Some(owner) => Some(owner),
            None => self.inner.feed.load_session(&token.session_id).await?,
        };
        if owner != Some(token.user_key) {
            return Err(DomainError::InvalidToken);
        }
        Ok(())
    }

    /// Whether the holder has `role` now, directly or through the role graph.
    pub async fn check_role(&self, token: &str, role: &str) -> DomainResult<RoleCheck> {
        if role.is_empty() {
            return Err(DomainError::invalid("role", "must not be empty"));
        }
        let principal = self.validate(token).await?;
        self.catalog().require("role", role)?;
        Ok(RoleCheck {
            allowed: principal.has_role(role),
            principal,
        })
    }

    /// Whether the holder has `permission` now, through any effective role.
    /// Permissions are open strings: one no role names is simply not held.
    pub async fn check_permission(&self, token: &str, permission: &str) -> DomainResult<RoleCheck> {
        validation::permission("permission", permission)?;
        let principal = self.validate(token).await?;
        Ok(RoleCheck {
            allowed: principal.has_permission(permission),
            principal,
        })
    }

    /// The holder of `token` if they meet a route's `requirements` now: what a proxy
    /// asks before it lets a request through (Envoy's ext_authz). Bad credentials
    /// are `InvalidToken`, as for [`HotPath::validate`]; an unmet requirement is
    /// `PermissionDenied`.
    pub async fn authorize(
        &self,
        token: &str,
        requirements: Requirements<'_>,
    ) -> DomainResult<Principal> {
        let principal = self.validate(token).await?;
        requirements.check(&principal)?;
        Ok(principal)
    }

    /// The user as the views know it now (loading one registered on another replica
    /// a moment ago); `None` when there is no such user or it is deactivated.
    pub async fn active_user(&self, id: &str) -> DomainResult<Option<Arc<UserEntry>>> {
        let user = match self.inner.views.user(id) {
            Some(user) => Some(user),
            None => self.inner.feed.load_user(id).await?,
        };
        Ok(user.filter(|user| user.active))
    }

    /// The roles that exist and what each includes.
    pub fn catalog(&self) -> Arc<RoleCatalog> {
        self.inner.views.catalog()
    }

    /// Signs a new access token with the key that signs now.
    pub fn sign(&self, grant: AccessGrant<'_>) -> DomainResult<String> {
        self.inner
            .tokens
            .issue(&self.inner.keys, grant)
            .map_err(DomainError::internal)
    }

    /// The JWK Set of the keys that verify access tokens.
    pub fn jwks_json(&self) -> String {
        self.inner.keys.current().jwks_json.clone()
    }

    /// Follows whether the last sync with the database succeeded and writes reach it.
    pub fn database_up(&self) -> watch::Receiver<bool> {
        self.inner.feed.database_up()
    }

    /// Follows whether this replica can answer the hot path: its views are fresh
    /// within `AUTHD_MAX_STALENESS` and the database is not refusing writes while it
    /// answers reads. Readiness follows this, so a database blip shorter than the
    /// staleness bound keeps every replica in service.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.inner.feed.ready()
    }

    /// The revocation stream after `after` (a cursor from an earlier event, or
    /// empty: a snapshot first), fanned out from this replica's change feed. See
    /// `watchers.rs` for its bounds and the statuses that end it.
    pub async fn watch_revocations(&self, after: &str) -> DomainResult<RevocationStream> {
        self.ensure_fresh(self.inner.clock.now_ms())?;
        let inner = &*self.inner;
        inner
            .watchers
            .watch(&inner.feed, inner.feed.ready(), after)
            .await
    }

    /// Follows the change feed every `interval` until `shutdown`.
    pub async fn follow_feed(&self, interval: Duration, shutdown: CancellationToken) {
        self.inner.feed.run(interval, shutdown).await;
    }

    /// Remembers a session this replica has just started, so its tokens validate
    /// here without a read.
    pub fn session_started(&self, session_id: &str, user_id: &str, expires_at_ms: i64) {
        self.inner
            .feed
            .put_session(session_id, user_id, expires_at_ms);
    }

    /// Brings this replica's memory up to date with a change it has just committed.
    /// A failure is logged and left to the next poll of the feed.
    pub async fn apply(&self, kind: ChangeKind, subject: &str) {
        self.inner.feed.apply(kind, subject).await;
    }

    /// API-key use recorded since the last call, for the slow path to write.
    pub fn take_api_key_use(&self) -> ApiKeyUse {
        self.inner.views.take_api_key_use()
    }

    /// Puts back use that could not be written.
    pub fn restore_api_key_use(&self, taken: ApiKeyUse) {
        self.inner.views.restore_api_key_use(taken);
    }

    pub fn stats(&self) -> HotStats {
        let inner = &*self.inner;
        HotStats {
            staleness_ms: inner.clock.now_ms() - inner.views.synced_at_ms(),
            ended_sessions: inner.views.ended_session_count(),
            live_sessions: inner.views.live_session_count(),
            cached_tokens: inner.tokens.cached(),
            revocation_watchers: inner.watchers.count(),
        }
    }

    /// A key from memory. A key this replica does not know may have been created on
    /// another one a moment ago: the feed is read once (shared by every concurrent
    /// miss, so garbage keys cost one indexed read at a time, not one each) before
    /// the key is refused.
    async fn validate_api_key(&self, token: &str, now_ms: i64) -> DomainResult<Arc<ApiKeyEntry>> {
        if token.len() > MAX_KEY_BYTES {
            return Err(DomainError::InvalidToken);
        }
        let views = &self.inner.views;
        let key = digest(token);
        let entry = match views.api_key(&key) {
            Some(entry) => entry,
            None => {
                self.inner.feed.catch_up().await?;
                views.api_key(&key).ok_or(DomainError::InvalidToken)?
            }
        };
        if entry.expired(now_ms) {
            return Err(DomainError::InvalidToken);
        }
        if let Some(first) = entry.claim_use_record(now_ms) {
            views.record_api_key_use(&entry.id, now_ms, first);
        }
        Ok(entry)
    }

    /// Memory may answer only while it was confirmed against the database recently.
    fn ensure_fresh(&self, now_ms: i64) -> DomainResult<()> {
        let age = now_ms - self.inner.views.synced_at_ms();
        if age > self.inner.max_staleness_ms {
            return Err(DomainError::Unavailable);
        }
        Ok(())
    }
}

/// The token parser on its own, for the fuzz targets in `fuzz/`: the same
/// verification `ValidateToken` runs before it looks at sessions and users. Not an
/// API: hidden from the docs, and nothing in the server uses it.
#[doc(hidden)]
pub mod fuzzing {
    use std::time::Duration;

    use super::{keys::KeyRing, tokens::AccessTokens};
    use crate::{clock::Clock, store::entities::signing_key};

    /// What a token that verified says: user, session, `exp`.
    pub type Verified = (String, String, i64);

    pub struct TokenVerifier {
        tokens: AccessTokens,
        keys: KeyRing,
        clock: Clock,
    }

    impl TokenVerifier {
        /// Verifies tokens of issuer and audience `authd` signed by `keys`.
        pub fn new(keys: &[signing_key::Model]) -> Self {
            let clock = Clock::system();
            let ring = KeyRing::new(Duration::from_secs(900));
            ring.install(keys);
            TokenVerifier {
                tokens: AccessTokens::new("authd", "authd", 1000, clock.clone()),
                keys: ring,
                clock,
            }
        }

        pub fn verify(&self, token: &str) -> Option<Verified> {
            let verified = self
                .tokens
                .verify(&self.keys, token, self.clock.now_ms())
                .ok()?;
            Some((
                verified.user_id.clone(),
                verified.session_id.clone(),
                verified.expires_at,
            ))
        }
    }
}

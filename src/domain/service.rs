//! [`Auth`]: the domain's entry point, built once at start-up and shared by the
//! transport. Each capability lives in its own file as an `impl Auth` block.

use std::{sync::Arc, time::Duration};

use super::{
    feed::ChangeFeed, keys::KeyRing, passwords::PasswordHasher, tokens::AccessTokens, views::Views,
};
use crate::store::Store;

/// The lifetimes and limits the domain enforces.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_max_ttl: Duration,
    pub login_max_failures: u32,
    pub login_lockout: Duration,
    /// How long the hot path may answer from memory without a successful sync.
    pub max_staleness: Duration,
}

/// Everything the domain needs, passed in explicitly.
#[derive(Clone)]
pub struct Auth {
    pub(crate) store: Store,
    pub(crate) views: Arc<Views>,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) tokens: Arc<AccessTokens>,
    pub(crate) hasher: Arc<PasswordHasher>,
    pub(crate) feed: Arc<ChangeFeed>,
    pub(crate) settings: Arc<AuthSettings>,
}

impl Auth {
    pub fn new(
        store: Store,
        views: Arc<Views>,
        keys: Arc<KeyRing>,
        tokens: Arc<AccessTokens>,
        hasher: Arc<PasswordHasher>,
        feed: Arc<ChangeFeed>,
        settings: AuthSettings,
    ) -> Self {
        Auth {
            store,
            views,
            keys,
            tokens,
            hasher,
            feed,
            settings: Arc::new(settings),
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub fn views(&self) -> &Views {
        &self.views
    }

    /// The JWK Set of the keys that verify access tokens.
    pub fn jwks_json(&self) -> String {
        self.keys.current().jwks_json.clone()
    }
}

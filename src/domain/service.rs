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

impl Auth {
    /// Sets the state gauges: hashing pool, memory views, sessions, database pool.
    pub async fn sample_gauges(&self) {
        let now_ms = super::unix_now_ms();
        metrics::gauge!("authd_hash_queue_depth").set(self.hasher.waiting() as f64);
        metrics::gauge!("authd_hash_in_flight").set(self.hasher.in_flight() as f64);
        metrics::gauge!("authd_view_staleness_seconds")
            .set((now_ms - self.views.synced_at_ms()) as f64 / 1000.0);
        metrics::gauge!("authd_ended_sessions_tracked")
            .set(self.views.ended_session_count() as f64);
        metrics::gauge!("authd_token_cache_entries").set(self.tokens.cached() as f64);
        let (size, idle) = self.store.pool_stats();
        metrics::gauge!("authd_db_pool_connections", "state" => "idle").set(idle as f64);
        metrics::gauge!("authd_db_pool_connections", "state" => "in_use")
            .set((size as usize).saturating_sub(idle) as f64);
        let live = tokio::time::timeout(
            Duration::from_secs(1),
            self.store.count_live_sessions(now_ms),
        )
        .await;
        if let Ok(Ok(live)) = live {
            metrics::gauge!("authd_live_sessions").set(live as f64);
        }
    }
}

//! The state one verifier's clones, its stream task and its layer share: the
//! connection to authd, the keys, what the revocation stream said, the decisions,
//! and whether the stream is followed.

use std::{
    sync::atomic::{AtomicBool, AtomicI64, Ordering},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    cache::Decisions,
    keys::{KeySet, TokenRules},
    pb::{auth_service_client::AuthServiceClient, GetJwksRequest},
    revocations::Revocations,
};

pub(crate) struct Inner {
    pub authd: AuthServiceClient<Channel>,
    pub jwks_url: Option<String>,
    pub http: reqwest::Client,
    pub rules: TokenRules,
    pub keys: ArcSwap<KeySet>,
    /// One refetch of the keys at a time, and when the last one was (ms).
    pub refetching: Mutex<i64>,
    pub revocations: Revocations,
    pub decisions: Decisions,
    pub health: StreamHealth,
    pub max_stream_outage_ms: i64,
    pub max_token_lifetime_ms: i64,
    pub jwks_refresh: Duration,
    pub stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Whether the revocation stream is followed, and since when.
pub(crate) struct StreamHealth {
    up: AtomicBool,
    /// When the stream went down (ms); `i64::MIN` before it was ever up.
    down_since_ms: AtomicI64,
    /// Tokens issued before this (ms) were not covered by the stream: when the
    /// current run of it started. `i64::MAX` before the first snapshot.
    pub covers_from_ms: AtomicI64,
}

impl StreamHealth {
    pub fn new() -> Self {
        StreamHealth {
            up: AtomicBool::new(false),
            down_since_ms: AtomicI64::new(i64::MIN),
            covers_from_ms: AtomicI64::new(i64::MAX),
        }
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::Release);
    }

    pub fn down(&self, now_ms: i64) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.down_since_ms.store(now_ms, Ordering::Release);
        }
    }

    /// A new run of the stream (with a snapshot) covers tokens issued from here.
    pub fn covers_from(&self, at_ms: i64) {
        self.covers_from_ms.store(at_ms, Ordering::Release);
    }

    pub fn trusted(&self, now_ms: i64, max_outage_ms: i64) -> bool {
        self.up.load(Ordering::Acquire)
            || (now_ms.saturating_sub(self.down_since_ms.load(Ordering::Acquire)) < max_outage_ms)
    }
}

/// The wall clock in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Inner {
    pub async fn fetch_keys(&self) -> Result<KeySet, String> {
        let json = match &self.jwks_url {
            Some(url) => {
                let response = self
                    .http
                    .get(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("GET {url}: {}", response.status()));
                }
                response
                    .text()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?
            }
            None => {
                self.authd
                    .clone()
                    .get_jwks(GetJwksRequest {})
                    .await
                    .map_err(|status| format!("GetJwks: {}", status.message()))?
                    .into_inner()
                    .jwks_json
            }
        };
        KeySet::parse(&json)
    }

    /// Fetches the JWK Set again unless it was within `min_interval`; a failure
    /// keeps the keys held (logged).
    pub async fn refetch_keys(&self, min_interval: Duration) {
        let mut last = self.refetching.lock().await;
        let now = now_ms();
        if now.saturating_sub(*last) < i64::try_from(min_interval.as_millis()).unwrap_or(i64::MAX) {
            return;
        }
        *last = now;
        match self.fetch_keys().await {
            Ok(keys) => {
                self.keys.store(Arc::new(keys));
                // Decisions of a kid withdrawn meanwhile are judged again.
                self.revocations.bump();
            }
            Err(err) => tracing::warn!(error = %err, "could not fetch authd's JWK Set"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_local_while_followed_and_for_a_bounded_outage_after() {
        let health = StreamHealth::new();
        assert!(!health.trusted(1_000, 2_000), "never followed yet");
        health.covers_from(500);
        assert!(!health.trusted(1_000, 2_000), "run begun, snapshot not in");
        health.up();
        assert!(health.trusted(1_000, 2_000));
        health.down(10_000);
        assert!(health.trusted(11_999, 2_000), "within the outage bound");
        assert!(!health.trusted(12_000, 2_000), "past it: ask authd");
        health.up();
        assert!(health.trusted(50_000, 2_000));
    }
}

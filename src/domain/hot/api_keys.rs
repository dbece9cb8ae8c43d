//! API keys as the hot path knows them: the live keys by the SHA-256 of the key
//! string, checked from memory, and their use, recorded at most every 30 s per key
//! and drained in batches by the slow path.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use super::roles::{Grants, RoleCatalog};
use crate::store::entities::api_key;

/// Every API key starts with this; access tokens (JWTs) never do.
pub const KEY_SCHEME: &str = "authd_";
/// Longer strings cannot be one of our keys; refused before hashing.
pub const MAX_KEY_BYTES: usize = 256;
/// Use is recorded again only after this long.
const USE_RECORD_INTERVAL_MS: i64 = 30_000;

/// What the hot path knows about a live key.
#[derive(Debug)]
pub struct ApiKeyEntry {
    pub id: String,
    pub name: String,
    /// The roles it was created with, from which `grants` is computed again whenever
    /// the role graph changes.
    pub direct_roles: Vec<String>,
    pub grants: Grants,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    /// When use was last recorded (0: never used).
    last_recorded_ms: AtomicI64,
}

impl ApiKeyEntry {
    pub fn new(row: &api_key::Model, catalog: &RoleCatalog) -> Self {
        let direct_roles = row.role_list();
        ApiKeyEntry {
            id: row.id.clone(),
            name: row.name.clone(),
            grants: catalog.grants(&direct_roles),
            direct_roles,
            created_at_ms: row.created_at,
            expires_at_ms: row.expires_at,
            last_recorded_ms: AtomicI64::new(row.last_used_at.unwrap_or(0)),
        }
    }

    /// A key that was never used, for tests that need a principal.
    #[cfg(test)]
    pub fn unused(
        id: &str,
        name: &str,
        grants: Grants,
        created_at_ms: i64,
        expires_at_ms: Option<i64>,
    ) -> Self {
        ApiKeyEntry {
            id: id.to_owned(),
            name: name.to_owned(),
            direct_roles: grants.roles.iter().map(|r| r.to_string()).collect(),
            grants,
            created_at_ms,
            expires_at_ms,
            last_recorded_ms: AtomicI64::new(0),
        }
    }

    /// The same key with its grants computed from `catalog`.
    pub fn regranted(&self, catalog: &RoleCatalog) -> Self {
        ApiKeyEntry {
            id: self.id.clone(),
            name: self.name.clone(),
            grants: catalog.grants(&self.direct_roles),
            direct_roles: self.direct_roles.clone(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            last_recorded_ms: AtomicI64::new(self.last_recorded_ms.load(Ordering::Relaxed)),
        }
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Claims the right to record a use at `now_ms`: true at most once per interval,
    /// whichever call gets there first. Answers `Some(first_use_ever)` when claimed.
    pub fn claim_use_record(&self, now_ms: i64) -> Option<bool> {
        let last = self.last_recorded_ms.load(Ordering::Relaxed);
        let due = now_ms - last >= USE_RECORD_INTERVAL_MS;
        (due && self
            .last_recorded_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok())
        .then_some(last == 0)
    }
}

/// True when `token` has the shape of an API key (not a JWT).
pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(KEY_SCHEME)
}

/// Key use waiting to be written: the latest use of each key, and the keys used
/// for the first time ever (those get an audit event).
#[derive(Debug, Default)]
pub struct ApiKeyUse {
    pub last_used: Vec<(String, i64)>,
    pub first_used: Vec<String>,
}

impl ApiKeyUse {
    pub fn is_empty(&self) -> bool {
        self.last_used.is_empty()
    }
}

pub(super) type ApiKeyTable = dashmap::DashMap<[u8; 32], Arc<ApiKeyEntry>>;

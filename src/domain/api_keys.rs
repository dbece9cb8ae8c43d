//! API keys: service-to-service credentials checked on the same hot path as access
//! tokens. A key is `authd_<prefix>_<secret>` (base62; the secret carries over 256
//! random bits); only its SHA-256 is stored and held in memory. Use is recorded
//! off the hot path: at most about once a minute per key, written in batches.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use rand::{distributions::Alphanumeric, Rng};
use sha2::{Digest, Sha256};

use super::{
    audit::Caller,
    error::{DomainError, DomainResult},
    paging,
    roles::RoleList,
    secrets::Secret,
    service::Auth,
    unix_now_ms, validation,
};
use crate::store::{entities::api_key, ChangeKind, NewApiKey, StoreError};

pub const KEY_SCHEME: &str = "authd_";
const PREFIX_CHARS: usize = 8;
/// 44 base62 characters: 44 × log2(62) ≈ 262 bits.
const SECRET_CHARS: usize = 44;
const MAX_NAME_CHARS: usize = 64;
/// Longest TTL accepted: 100 years.
const MAX_TTL_SECONDS: i64 = 100 * 365 * 24 * 3600;
/// Use is recorded again only after this long.
const USE_RECORD_INTERVAL_MS: i64 = 30_000;

/// What the hot path knows about a live key.
#[derive(Debug)]
pub struct ApiKeyEntry {
    pub id: String,
    pub name: String,
    pub effective_roles: RoleList,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    /// When use was last recorded (0: never used).
    last_recorded_ms: AtomicI64,
}

impl ApiKeyEntry {
    pub fn new(row: &api_key::Model, effective_roles: RoleList) -> Self {
        ApiKeyEntry {
            id: row.id.clone(),
            name: row.name.clone(),
            effective_roles,
            created_at_ms: row.created_at,
            expires_at_ms: row.expires_at,
            last_recorded_ms: AtomicI64::new(row.last_used_at.unwrap_or(0)),
        }
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// A key as created: the secret is shown to the caller once, here.
#[derive(Debug)]
pub struct IssuedApiKey {
    pub secret: Secret,
    pub key: api_key::Model,
}

/// The digest that identifies a key in the store and in memory.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn random_base62(len: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// True when `token` has the shape of an API key (not a JWT).
pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(KEY_SCHEME)
}

impl Auth {
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        name: &str,
        roles: Vec<String>,
        ttl_seconds: i64,
    ) -> DomainResult<IssuedApiKey> {
        validation::required("name", name)?;
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(DomainError::invalid(
                "name",
                "must be at most 64 characters",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(DomainError::invalid("name", "must be printable characters"));
        }
        if !(0..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(DomainError::invalid(
                "ttl_seconds",
                "must be 0 (no expiry) or a positive number of seconds up to 100 years",
            ));
        }
        let catalog = self.views.catalog();
        if let Some(unknown) = roles.iter().find(|r| !catalog.exists(r)) {
            return Err(DomainError::NotFound(format!(
                "role {unknown:?} does not exist"
            )));
        }
        let prefix = random_base62(PREFIX_CHARS);
        let secret = Secret::new(format!(
            "{KEY_SCHEME}{prefix}_{}",
            random_base62(SECRET_CHARS)
        ));
        let now_ms = unix_now_ms();
        let new = NewApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            prefix,
            secret_hash: hex::encode(key_digest(secret.expose())),
            roles,
            created_at: now_ms,
            expires_at: (ttl_seconds > 0).then(|| now_ms + ttl_seconds * 1000),
            created_by: caller.user_id(),
        };
        let key = match self.store.insert_api_key(new).await {
            Ok(key) => key,
            Err(StoreError::Conflict) => {
                return Err(DomainError::AlreadyExists(format!(
                    "a live API key named {name:?} already exists"
                )))
            }
            Err(other) => return Err(other.into()),
        };
        self.feed.apply(ChangeKind::ApiKey, &key.id).await;
        let detail = format!("name={} roles={}", key.name, key.roles);
        self.audit(caller, "create_api_key", "ok", Some(&key.id), Some(detail))
            .await;
        Ok(IssuedApiKey { secret, key })
    }

    pub async fn list_api_keys(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<(Vec<api_key::Model>, String)> {
        let limit = paging::page_size(page_size)?;
        let after = paging::decode(page_token)?;
        let page = self.store.list_api_keys(after, limit).await?;
        let next = match page.keys.last() {
            Some(last) if page.has_more => paging::encode(last.created_at, &last.id),
            _ => String::new(),
        };
        Ok((page.keys, next))
    }

    /// Revokes at once on this replica (other replicas follow the change feed).
    /// Revoking twice is fine.
    pub async fn revoke_api_key(
        &self,
        caller: &Caller,
        key_id: &str,
    ) -> DomainResult<api_key::Model> {
        validation::uuid("key_id", key_id)?;
        let key = self
            .store
            .revoke_api_key(key_id, unix_now_ms())
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("API key {key_id} does not exist")))?;
        self.feed.apply(ChangeKind::ApiKey, &key.id).await;
        self.audit(
            caller,
            "revoke_api_key",
            "ok",
            Some(&key.id),
            Some(format!("name={}", key.name)),
        )
        .await;
        Ok(key)
    }

    /// The hot-path check of a key: memory only.
    pub(super) fn validate_api_key(
        &self,
        token: &str,
        now_ms: i64,
    ) -> DomainResult<Arc<ApiKeyEntry>> {
        if token.len() > 256 {
            return Err(DomainError::InvalidToken);
        }
        let entry = self
            .views
            .api_key(&key_digest(token))
            .ok_or(DomainError::InvalidToken)?;
        if entry.expired(now_ms) {
            return Err(DomainError::InvalidToken);
        }
        let last = entry.last_recorded_ms.load(Ordering::Relaxed);
        if now_ms - last >= USE_RECORD_INTERVAL_MS
            && entry
                .last_recorded_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.views.record_api_key_use(&entry.id, now_ms, last == 0);
        }
        Ok(entry)
    }

    /// Writes recorded key use to the database; run periodically and at shutdown.
    pub async fn flush_api_key_use(&self) {
        let (used, first_uses) = self.views.take_api_key_use();
        if used.is_empty() {
            return;
        }
        if let Err(err) = self.store.touch_api_keys(&used).await {
            tracing::warn!(error = %err, keys = used.len(), "could not record API key use; will retry");
            self.views.restore_api_key_use(used, first_uses);
            return;
        }
        for id in first_uses {
            self.audit(
                &Caller::default(),
                "api_key_first_use",
                "ok",
                Some(&id),
                None,
            )
            .await;
        }
    }
}

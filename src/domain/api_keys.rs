//! API keys, the slow half: creating, listing and revoking them, and writing their
//! recorded use. A key is `authd_<prefix>_<secret>` (base62; the secret carries
//! over 256 random bits); only its SHA-256 is stored. Checking a key is the hot
//! path's job.

use std::sync::Arc;

use rand::{distributions::Alphanumeric, Rng};

use super::{
    admin::AdminCaller,
    audit::{Action, Event, Outcome},
    caller::{Caller, Peer},
    context::Context,
    error::{DomainError, DomainResult},
    hot::KEY_SCHEME,
    model::{ApiKey, Page},
    paging,
    secrets::{digest_hex, Secret},
    validation,
};
use crate::store::{ChangeKind, NewApiKey, StoreError};

const PREFIX_CHARS: usize = 8;
/// 44 base62 characters: 44 × log2(62) ≈ 262 bits.
const SECRET_CHARS: usize = 44;
const MAX_NAME_CHARS: usize = 64;
/// Longest TTL accepted: 100 years.
const MAX_TTL_SECONDS: i64 = 100 * 365 * 24 * 3600;

/// A key as created: the secret is shown to the caller once, here.
#[derive(Debug)]
pub struct IssuedApiKey {
    pub secret: Secret,
    pub key: ApiKey,
}

/// What a new key is asked to be.
#[derive(Debug)]
pub struct NewKey<'a> {
    pub name: &'a str,
    pub roles: Vec<String>,
    /// 0: no expiry.
    pub ttl_seconds: i64,
}

fn random_base62(len: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The API-key capability.
#[derive(Clone)]
pub struct ApiKeys {
    ctx: Arc<Context>,
}

impl ApiKeys {
    pub(super) fn new(ctx: Arc<Context>) -> Self {
        ApiKeys { ctx }
    }

    /// Creates a key. It works on every replica as soon as this returns.
    pub async fn create(
        &self,
        caller: &AdminCaller,
        new: NewKey<'_>,
    ) -> DomainResult<IssuedApiKey> {
        let NewKey {
            name,
            roles,
            ttl_seconds,
        } = new;
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
        self.ctx.hot.catalog().require_all(&roles)?;
        for role in &roles {
            caller.may_grant_role(role)?;
        }
        let prefix = random_base62(PREFIX_CHARS);
        let secret = Secret::new(format!(
            "{KEY_SCHEME}{prefix}_{}",
            random_base62(SECRET_CHARS)
        ));
        let now_ms = self.ctx.now_ms();
        let new = NewApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            prefix,
            secret_hash: digest_hex(secret.expose()),
            roles,
            created_at: now_ms,
            expires_at: (ttl_seconds > 0).then(|| now_ms + ttl_seconds * 1000),
            created_by: caller.caller().actor_id().map(str::to_owned),
        };
        let key = match self.ctx.store.insert_api_key(new).await {
            Ok(key) => key,
            Err(StoreError::Conflict) => {
                return Err(DomainError::AlreadyExists(format!(
                    "a live API key named {name:?} already exists"
                )))
            }
            Err(other) => return Err(other.into()),
        };
        self.ctx.hot.apply(ChangeKind::ApiKey, &key.id).await;
        let event = Event::new(Action::CreateApiKey, Outcome::Ok)
            .subject(&key.id)
            .detail(format!("name={} roles={}", key.name, key.roles));
        self.ctx.audit.record(caller.caller(), event).await;
        Ok(IssuedApiKey {
            secret,
            key: key.into(),
        })
    }

    /// A page of keys, oldest first.
    pub async fn list(&self, page_size: i32, page_token: &str) -> DomainResult<Page<ApiKey>> {
        let limit = paging::page_size(page_size)?;
        let after = paging::decode(page_token)?;
        let page = self.ctx.store.list_api_keys(after, limit).await?;
        let last = page.items.last().map(|k| (k.created_at, k.id.as_str()));
        Ok(Page {
            next_page_token: paging::next_token(page.has_more, last),
            items: page.items.into_iter().map(ApiKey::from).collect(),
        })
    }

    /// Revokes at once on this replica (other replicas follow the change feed).
    /// Revoking twice is fine.
    pub async fn revoke(&self, caller: &AdminCaller, key_id: &str) -> DomainResult<ApiKey> {
        validation::uuid("key_id", key_id)?;
        let key = self
            .ctx
            .store
            .revoke_api_key(key_id, self.ctx.now_ms())
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("API key {key_id} does not exist")))?;
        self.ctx.hot.apply(ChangeKind::ApiKey, &key.id).await;
        let event = Event::new(Action::RevokeApiKey, Outcome::Ok)
            .subject(&key.id)
            .detail(format!("name={}", key.name));
        self.ctx.audit.record(caller.caller(), event).await;
        Ok(key.into())
    }

    /// Writes recorded key use to the database; run periodically and at shutdown.
    pub async fn flush_use(&self) {
        let taken = self.ctx.hot.take_api_key_use();
        if taken.is_empty() {
            return;
        }
        if let Err(err) = self.ctx.store.touch_api_keys(&taken.last_used).await {
            tracing::warn!(error = %err, keys = taken.last_used.len(), "could not record API key use; will retry");
            self.ctx.hot.restore_api_key_use(taken);
            return;
        }
        for id in &taken.first_used {
            let event = Event::new(Action::ApiKeyFirstUse, Outcome::Ok).subject(id);
            self.ctx
                .audit
                .record(&Caller::anonymous(Peer::default()), event)
                .await;
        }
    }
}

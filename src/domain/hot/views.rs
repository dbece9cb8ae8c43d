//! The memory views the hot path answers from: users (active flag, direct roles and
//! effective grants), the sessions this server issued and those that ended (by UUID, as
//! 128-bit keys), live API keys, and the role catalog. Written by the change feed and by
//! the replica's own writes; read lock-free-ish (sharded maps, `ArcSwap`) by every
//! ValidateToken and CheckRole call.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use super::{
    api_keys::{ApiKeyEntry, ApiKeyTable, ApiKeyUse},
    roles::{Grants, RoleCatalog},
};
use crate::store::{entities::api_key, UserWithRoles};

/// A session this server issued and that has not ended.
#[derive(Clone, Copy, Debug)]
pub struct KnownSession {
    pub user: u128,
    /// Its absolute end (Unix ms): no token of the session outlives it.
    pub expires_at_ms: i64,
}

/// A UUID as the 128-bit key the views use; `None` for anything else.
pub fn uuid_key(id: &str) -> Option<u128> {
    uuid::Uuid::try_parse(id).ok().map(|id| id.as_u128())
}

/// What the hot path needs to know about a user.
#[derive(Debug)]
pub struct UserEntry {
    pub username: String,
    pub active: bool,
    /// The roles granted directly, from which `grants` is computed again whenever
    /// the role graph changes.
    pub direct_roles: Vec<String>,
    pub grants: Grants,
}

impl UserEntry {
    /// The same user with its grants computed from `catalog`.
    pub fn regranted(&self, catalog: &RoleCatalog) -> Self {
        UserEntry {
            username: self.username.clone(),
            active: self.active,
            grants: catalog.grants(&self.direct_roles),
            direct_roles: self.direct_roles.clone(),
        }
    }
}

#[derive(Default)]
pub(super) struct Views {
    catalog: ArcSwap<RoleCatalog>,
    users: DashMap<String, Arc<UserEntry>>,
    /// Live sessions: session id → its user and absolute end.
    sessions: DashMap<u128, KnownSession>,
    /// Ended sessions → until when one of their tokens may still be unexpired (ms).
    ended_sessions: DashMap<u128, i64>,
    /// Live API keys by the SHA-256 of the key.
    api_keys: ApiKeyTable,
    /// Key id → (last use to record, first use ever), drained in batches.
    api_key_use: DashMap<String, (i64, bool)>,
    /// When the views were last confirmed against the database (Unix ms).
    synced_at_ms: AtomicI64,
}

impl Views {
    pub fn catalog(&self) -> Arc<RoleCatalog> {
        self.catalog.load_full()
    }

    pub fn set_catalog(&self, catalog: RoleCatalog) {
        self.catalog.store(Arc::new(catalog));
    }

    /// Installs a new role graph and computes every user's and key's effective
    /// grants again from their direct roles (a few hundred roles and thousands of
    /// holders is milliseconds, once per change of the graph).
    pub fn regrant(&self, catalog: RoleCatalog) {
        let catalog = Arc::new(catalog);
        self.catalog.store(catalog.clone());
        for mut user in self.users.iter_mut() {
            let regranted = user.value().regranted(&catalog);
            *user.value_mut() = Arc::new(regranted);
        }
        for mut key in self.api_keys.iter_mut() {
            let regranted = key.value().regranted(&catalog);
            *key.value_mut() = Arc::new(regranted);
        }
    }

    pub fn user(&self, id: &str) -> Option<Arc<UserEntry>> {
        self.users.get(id).map(|entry| entry.value().clone())
    }

    pub fn put_user(&self, row: &UserWithRoles) {
        let entry = UserEntry {
            username: row.user.username.clone(),
            active: row.user.active,
            grants: self.catalog.load().grants(&row.roles),
            direct_roles: row.roles.clone(),
        };
        self.users.insert(row.user.id.clone(), Arc::new(entry));
    }

    /// A user with no row (erased): kept as an inactive entry, so that its
    /// unexpired tokens are refused from memory rather than with a read each, and
    /// its live sessions forgotten. Ids are UUIDs, never reused.
    pub fn forget_user(&self, id: &str) {
        let entry = UserEntry {
            username: String::new(),
            active: false,
            direct_roles: Vec::new(),
            grants: Grants::default(),
        };
        self.users.insert(id.to_owned(), Arc::new(entry));
        if let Some(user) = uuid_key(id) {
            self.sessions.retain(|_, known| known.user != user);
        }
    }

    pub fn replace_users(&self, rows: &[UserWithRoles]) {
        let ids: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.user.id.as_str()).collect();
        self.users.retain(|id, _| ids.contains(id.as_str()));
        for row in rows {
            self.put_user(row);
        }
    }

    pub fn session_ended(&self, session: u128) -> bool {
        self.ended_sessions.contains_key(&session)
    }

    /// The live session's user, if this view knows the session.
    pub fn session_owner(&self, session: u128) -> Option<u128> {
        self.sessions.get(&session).map(|known| known.user)
    }

    pub fn put_session(&self, session: u128, known: KnownSession) {
        self.sessions.insert(session, known);
    }

    /// Marks a session ended until `tokens_expire_by` (ms).
    pub fn end_session(&self, session: u128, tokens_expire_by: i64) {
        self.sessions.remove(&session);
        self.ended_sessions.insert(session, tokens_expire_by);
    }

    /// Forgets sessions none of whose tokens can be unexpired after `after_ms`.
    pub fn prune_sessions(&self, after_ms: i64) {
        self.ended_sessions.retain(|_, until| *until >= after_ms);
        self.sessions
            .retain(|_, known| known.expires_at_ms >= after_ms);
    }

    pub fn ended_session_count(&self) -> usize {
        self.ended_sessions.len()
    }

    pub fn live_session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn api_key(&self, digest: &[u8; 32]) -> Option<Arc<ApiKeyEntry>> {
        self.api_keys.get(digest).map(|entry| entry.value().clone())
    }

    /// Puts a live key in the view (or takes a revoked or expired one out).
    pub fn put_api_key(&self, row: &api_key::Model, now_ms: i64) {
        self.api_keys.retain(|_, entry| entry.id != row.id);
        let live = row.revoked_at.is_none() && row.expires_at.is_none_or(|at| at > now_ms);
        let Ok(digest) = hex::decode(&row.secret_hash) else {
            return;
        };
        let Ok(digest) = <[u8; 32]>::try_from(digest) else {
            return;
        };
        if live {
            let entry = ApiKeyEntry::new(row, &self.catalog.load());
            self.api_keys.insert(digest, Arc::new(entry));
        }
    }

    pub fn remove_api_key(&self, id: &str) {
        self.api_keys.retain(|_, entry| entry.id != id);
    }

    pub fn replace_api_keys(&self, rows: &[api_key::Model], now_ms: i64) {
        self.api_keys.clear();
        for row in rows {
            self.put_api_key(row, now_ms);
        }
    }

    pub fn record_api_key_use(&self, id: &str, at_ms: i64, first: bool) {
        let mut slot = self
            .api_key_use
            .entry(id.to_owned())
            .or_insert((at_ms, first));
        slot.0 = slot.0.max(at_ms);
        slot.1 |= first;
    }

    /// Drains recorded use.
    pub fn take_api_key_use(&self) -> ApiKeyUse {
        let ids: Vec<String> = self.api_key_use.iter().map(|e| e.key().clone()).collect();
        let mut taken = ApiKeyUse::default();
        for id in ids {
            if let Some((id, (at, is_first))) = self.api_key_use.remove(&id) {
                if is_first {
                    taken.first_used.push(id.clone());
                }
                taken.last_used.push((id, at));
            }
        }
        taken
    }

    /// Puts back use that could not be written, to be tried again.
    pub fn restore_api_key_use(&self, taken: ApiKeyUse) {
        for (id, at) in taken.last_used {
            let is_first = taken.first_used.contains(&id);
            self.record_api_key_use(&id, at, is_first);
        }
    }

    pub fn mark_synced(&self, now_ms: i64) {
        self.synced_at_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn synced_at_ms(&self) -> i64 {
        self.synced_at_ms.load(Ordering::Relaxed)
    }
}
